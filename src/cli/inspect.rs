//! `trustmount inspect`: reads a bundle file or a rendered directory and reports on it.

use std::path::Path;

use anyhow::Context;
use trustmount::bundle;
use trustmount::clock::Clock;

use super::Failure;
use super::args::InspectArgs;

/// Where each layout keeps its merged bundle, relative to the volume root.
const MERGED_BUNDLES: &[&str] = &["ca-certificates.crt", "pem/tls-ca-bundle.pem", "ca-bundle.pem"];

pub fn inspect(args: InspectArgs) -> Result<(), Failure> {
    let inputs = inspect_inputs(&args.path)
        .with_context(|| format!("reading {}", args.path.display()))
        .map_err(Failure::Config)?;
    let now = Clock::system().unix_seconds();
    let mut reports = Vec::new();
    let mut ignored = Vec::new();
    for (name, bytes) in inputs {
        reports.extend(bundle::inspect(&name, &bytes, now).map_err(|e| Failure::Config(e.into()))?);
        ignored.extend(bundle::ignored_keys(&bytes));
    }
    if args.json {
        let inspection = bundle::Inspection::new(reports).with_ignored(&ignored);
        let json = serde_json::to_string_pretty(&inspection).map_err(|e| Failure::Runtime(e.into()))?;
        write_stdout(&format!("{json}\n"))?;
    } else {
        write_stdout(&format!("{}{}", bundle::to_text(&reports), bundle::ignored_text(&ignored)))?;
    }
    Ok(())
}

/// `inspect … | head` closes the pipe early; that is the reader's choice, not an error.
fn write_stdout(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Runtime(error.into())),
        _ => Ok(()),
    }
}

/// A file is read as it is. In a directory, the merged bundle file of any layout if there is one
/// (it carries each certificate's source), else every regular file.
fn inspect_inputs(path: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let read = |p: &Path| -> anyhow::Result<(String, Vec<u8>)> {
        Ok((p.display().to_string(), std::fs::read(p).with_context(|| format!("reading {}", p.display()))?))
    };
    if !path.is_dir() {
        return Ok(vec![read(path)?]);
    }
    if let Some(merged) = MERGED_BUNDLES.iter().map(|name| path.join(name)).find(|p| p.is_file()) {
        return Ok(vec![read(&merged)?]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    files.iter().map(|p| read(p)).collect()
}

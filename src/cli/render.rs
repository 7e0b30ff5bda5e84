//! `trustmount render`: the files a volume would get, written to a local directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use trustmount::bundle::{Entry, Files};
use trustmount::clock::Clock;
use trustmount::domain::{self, VolumeSpec};
use trustmount::sources::{self, Catalog};

use super::Failure;
use super::args::{RenderArgs, SourceArgs};

pub fn render(args: RenderArgs) -> Result<(), Failure> {
    let now = Clock::system().unix_seconds();
    let catalog = load_catalog(args.sources, args.pem)?;
    // Through the volume-attribute parser, so a flag accepts exactly what a volume would (no
    // cluster kinds: render reads local sources only).
    let attributes: HashMap<String, String> = [
        (domain::ATTR_LAYOUT, args.layout),
        (domain::ATTR_JAVA_TRUSTSTORE, args.java_truststore),
        (domain::ATTR_EXPIRED, args.expired),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.map(|v| (key.to_owned(), v)))
    .collect();
    let (spec, _) = VolumeSpec::from_attributes(&attributes, &[]).map_err(|e| Failure::Config(e.into()))?;
    let rendered =
        catalog.render(&spec, &[], Vec::new(), now).context("rendering the bundle").map_err(Failure::Config)?;
    write_files(&args.out, &rendered.files)
        .with_context(|| format!("writing {}", args.out.display()))
        .map_err(Failure::Runtime)?;
    eprintln!(
        "wrote {} certificates ({} files) to {}",
        rendered.certificate_count,
        rendered.files.entries.len(),
        args.out.display()
    );
    Ok(())
}

fn load_catalog(source_args: SourceArgs, extra_pem: Vec<PathBuf>) -> Result<Catalog, Failure> {
    Catalog::load(&sources::Config {
        system_roots: source_args.system_roots,
        extra_pem,
        max_source_size: source_args.max_source_size,
    })
    .context("loading certificate sources")
    .map_err(Failure::Config)
}

/// Plain files for a local directory: no `..data` generations (that is the volume store's
/// concern) and ordinary permissions, so the user can delete what they rendered.
fn write_files(out: &Path, files: &Files) -> std::io::Result<()> {
    // Into a directory we create, nothing can be in the way: skip the per-file checks.
    let fresh = match std::fs::create_dir(out) {
        Ok(()) => true,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(_) => {
            std::fs::create_dir_all(out)?;
            true
        }
    };
    let mut made = std::collections::HashSet::new();
    for (relative, entry) in &files.entries {
        let path = out.join(relative);
        if let Some(parent) = path.parent()
            && parent != out
            && made.insert(parent.to_owned())
        {
            std::fs::create_dir_all(parent)?;
        }
        if !fresh {
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path)?,
                Ok(_) => std::fs::remove_file(&path)?,
                Err(_) => {}
            }
        }
        match entry {
            Entry::File(bytes) => std::fs::write(&path, bytes)?,
            Entry::Symlink(target) => std::os::unix::fs::symlink(target, &path)?,
        }
    }
    Ok(())
}

//! `trustmount`: the CSI daemon (`serve`), a local renderer (`render`) and a bundle reader
//! (`inspect`). The whole configuration is parsed and checked before anything is bound or
//! mounted; bad configuration exits 64 (EX_USAGE).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{Parser, Subcommand};
use trustmount::bundle::{self, Entry, Files};
use trustmount::csi::{self, Endpoint, IdentityService, NodeService};
use trustmount::rotation::Rotation;
use trustmount::sources::{self, Catalog, Sources, SystemRoots};
use trustmount::spec::{self, VolumeSpec};
use trustmount::volume::{Store, StoreConfig};

const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(name = "trustmount", version, about = "CSI node driver that mounts a merged CA trust bundle into pods")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the CSI node driver.
    Serve(ServeArgs),
    /// Write a bundle directory locally: the same files a volume gets.
    Render(RenderArgs),
    /// List the certificates in a bundle file or directory.
    Inspect(InspectArgs),
}

#[derive(clap::Args)]
struct SourceArgs {
    /// `auto` (the host's /etc/ssl/certs/ca-certificates.crt, else embedded), `embedded`
    /// (Mozilla roots built in), `none`, or a PEM file.
    #[arg(long, env = "TRUSTMOUNT_SYSTEM_ROOTS", default_value = "auto")]
    system_roots: SystemRoots,
    /// Largest certificate source file accepted, e.g. 4194304, 4Mi or 1Gi; larger files are
    /// refused before they are read.
    #[arg(long, env = "TRUSTMOUNT_MAX_SOURCE_SIZE", default_value = "4Mi", value_parser = parse_size)]
    max_source_size: u64,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// CSI socket: unix:///path/csi.sock or a bare absolute path.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    endpoint: Endpoint,
    #[arg(long, env = "DRIVER_NAME", default_value = "csi.trustmount.io", value_parser = parse_driver_name)]
    driver_name: String,
    /// This node's name, as the kubelet knows it.
    #[arg(long, env = "NODE_NAME")]
    node_id: String,
    /// Targets outside its `pods/` directory are refused.
    #[arg(long, env = "KUBELET_DIR", default_value = "/var/lib/kubelet")]
    kubelet_dir: PathBuf,
    /// Holds the driver's tmpfs (store/) and the per-volume records (volumes/).
    #[arg(long, env = "TRUSTMOUNT_STATE_DIR", default_value = "/var/lib/trustmount")]
    state_dir: PathBuf,
    /// Size limit of the driver's tmpfs, e.g. 268435456, 256Mi or 1Gi.
    #[arg(long, env = "TRUSTMOUNT_STORE_SIZE", default_value = "256Mi", value_parser = parse_size)]
    store_size: u64,
    #[command(flatten)]
    sources: SourceArgs,
    /// A PEM or DER file whose certificates every volume trusts (repeatable).
    #[arg(long = "extra-pem", value_name = "FILE")]
    extra_pem: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct RenderArgs {
    /// Directory to write; created if missing. Existing files of the same names are replaced.
    #[arg(long)]
    out: PathBuf,
    /// A PEM or DER file to add (repeatable).
    #[arg(long = "pem", value_name = "FILE")]
    pem: Vec<PathBuf>,
    #[command(flatten)]
    sources: SourceArgs,
    /// Same as the volume attribute `layout`.
    #[arg(long)]
    layout: Option<String>,
    /// Same as the volume attribute `javaTruststore`.
    #[arg(long)]
    java_truststore: Option<String>,
    /// Same as the volume attribute `expired` (`drop` or `keep`).
    #[arg(long)]
    expired: Option<String>,
}

#[derive(clap::Args)]
struct InspectArgs {
    /// A bundle file (PEM or DER) or a directory such as a rendered volume.
    path: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(EX_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Render(args) => render(args),
        Command::Inspect(args) => inspect(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(error)) => {
            eprintln!("trustmount: configuration error: {error:#}");
            ExitCode::from(EX_USAGE)
        }
        Err(Failure::Runtime(error)) => {
            eprintln!("trustmount: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Config errors exit 64 so an operator can tell "fix the flags" from "something broke".
enum Failure {
    Config(anyhow::Error),
    Runtime(anyhow::Error),
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

fn serve(args: ServeArgs) -> Result<(), Failure> {
    if args.node_id.is_empty() {
        return Err(Failure::Config(anyhow::anyhow!("--node-id (or NODE_NAME) must not be empty")));
    }
    let ready = Arc::new(AtomicBool::new(false));
    let sources = Sources::load(sources::Config {
        system_roots: args.sources.system_roots,
        extra_pem: args.extra_pem,
        max_source_size: args.sources.max_source_size,
    })
    .context("loading certificate sources")
    .map_err(Failure::Config)?;
    let sources = Arc::new(sources);
    let store = Store::open(StoreConfig {
        state_dir: args.state_dir,
        kubelet_dir: args.kubelet_dir,
        tmpfs_size_bytes: args.store_size,
    })
    .context("opening the volume store")
    .map_err(Failure::Runtime)?;
    tracing::info!(system_roots = sources.catalog().system_count(), "certificate sources loaded");
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime").map_err(Failure::Runtime)?;
    let _guard = runtime.enter();
    let (watch, changes) = sources::watch_files(&sources.watched_files())
        .context("watching the source files")
        .map_err(Failure::Runtime)?;
    let rotation = Rotation::new(Arc::clone(&sources), store.clone());
    runtime.spawn(Arc::clone(&rotation).run(changes));
    // Spec directories adopted from a previous run were rendered from the sources of that run,
    // which may have changed (new flags, edited files) while the driver was down.
    rotation.request_refresh();
    ready.store(true, Ordering::Release);

    let identity = IdentityService::new(args.driver_name, ready);
    let node = NodeService::new(args.node_id, sources, store, rotation);
    let served = runtime.block_on(csi::serve(&args.endpoint, identity, node, shutdown_signal()));
    drop(watch);
    served.with_context(|| format!("serving on {}", args.endpoint.path().display())).map_err(Failure::Runtime)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers we can still serve; the process then dies by default action.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("shutting down");
}

fn render(args: RenderArgs) -> Result<(), Failure> {
    let catalog = load_catalog(args.sources, args.pem)?;
    // Through the volume-attribute parser, so a flag accepts exactly what a volume would.
    let attributes: HashMap<String, String> = [
        (spec::ATTR_LAYOUT, args.layout),
        (spec::ATTR_JAVA_TRUSTSTORE, args.java_truststore),
        (spec::ATTR_EXPIRED, args.expired),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.map(|v| (key.to_owned(), v)))
    .collect();
    let (spec, _) = VolumeSpec::from_attributes(&attributes).map_err(|e| Failure::Config(e.into()))?;
    let rendered = catalog.render(&spec).context("rendering the bundle").map_err(Failure::Config)?;
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

fn inspect(args: InspectArgs) -> Result<(), Failure> {
    let inputs = inspect_inputs(&args.path)
        .with_context(|| format!("reading {}", args.path.display()))
        .map_err(Failure::Config)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut reports = Vec::new();
    for (name, bytes) in inputs {
        reports.extend(bundle::inspect(&name, &bytes, now).map_err(|e| Failure::Config(e.into()))?);
    }
    if args.json {
        let json =
            serde_json::to_string_pretty(&bundle::Inspection::new(reports)).map_err(|e| Failure::Runtime(e.into()))?;
        write_stdout(&format!("{json}\n"))?;
    } else {
        write_stdout(&bundle::to_text(&reports))?;
    }
    Ok(())
}

/// Where each layout keeps its merged bundle, relative to the volume root.
const MERGED_BUNDLES: &[&str] = &["ca-certificates.crt", "pem/tls-ca-bundle.pem", "ca-bundle.pem"];

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

fn parse_size(value: &str) -> Result<u64, String> {
    let (digits, multiplier) = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)]
        .into_iter()
        .find_map(|(suffix, m)| value.strip_suffix(suffix).map(|d| (d, m)))
        .unwrap_or((value, 1));
    let number: u64 =
        digits.parse().map_err(|_| format!("{value:?} is not a size; use bytes or a Ki/Mi/Gi suffix, e.g. 256Mi"))?;
    number
        .checked_mul(multiplier)
        .filter(|size| *size >= 1 << 20)
        .ok_or_else(|| format!("{value:?} is out of range; use at least 1Mi"))
}

/// CSI: at most 63 characters, starting and ending with an alphanumeric, with dashes, dots and
/// alphanumerics between.
fn parse_driver_name(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.');
    if valid {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "driver name {value:?} must be ≤ 63 characters of [a-zA-Z0-9.-], starting and ending with a letter or digit"
        ))
    }
}

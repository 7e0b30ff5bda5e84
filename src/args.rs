//! The command line: every flag with its env var, default and help text, plus the value
//! parsers that reject bad sizes and driver names before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::csi::Endpoint;
use crate::sources::SystemRoots;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "trustmount", version, about = "CSI node driver that mounts a merged CA trust bundle into pods")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines on stderr as `text` (for people) or `json` (one object a line, for log
    /// collectors). `RUST_LOG` sets the level (default info).
    #[arg(long, global = true, env = "TRUSTMOUNT_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// One value, parsed once at start: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Run the CSI node driver.
    Serve(ServeArgs),
    /// Write a bundle directory locally: the same files a volume gets.
    Render(RenderArgs),
    /// List the certificates in a bundle file or directory.
    Inspect(InspectArgs),
}

#[derive(clap::Args)]
pub struct SourceArgs {
    /// `auto` (the host's /etc/ssl/certs/ca-certificates.crt, else embedded), `embedded`
    /// (Mozilla roots built in), `none`, or a PEM file.
    #[arg(long, env = "TRUSTMOUNT_SYSTEM_ROOTS", default_value = "auto")]
    pub system_roots: SystemRoots,
    /// Largest certificate source file accepted, e.g. 4194304, 4Mi or 1Gi; larger files are
    /// refused before they are read.
    #[arg(long, env = "TRUSTMOUNT_MAX_SOURCE_SIZE", default_value = "4Mi", value_parser = parse_size)]
    pub max_source_size: u64,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// CSI socket: unix:///path/csi.sock or a bare absolute path.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: Endpoint,
    #[arg(long, env = "DRIVER_NAME", default_value = "csi.trustmount.io", value_parser = parse_driver_name)]
    pub driver_name: String,
    /// This node's name, as the kubelet knows it.
    #[arg(long, env = "NODE_NAME")]
    pub node_id: String,
    /// Targets outside its `pods/` directory are refused.
    #[arg(long, env = "KUBELET_DIR", default_value = "/var/lib/kubelet")]
    pub kubelet_dir: PathBuf,
    /// Holds the driver's tmpfs (tmpfs/: spec dirs and content blobs), its bind mount store/ and
    /// the per-volume records (volumes/).
    #[arg(long, env = "TRUSTMOUNT_STATE_DIR", default_value = "/var/lib/trustmount")]
    pub state_dir: PathBuf,
    /// Size limit of the driver's tmpfs, e.g. 268435456, 256Mi or 1Gi.
    #[arg(long, env = "TRUSTMOUNT_STORE_SIZE", default_value = "256Mi", value_parser = parse_size)]
    pub store_size: u64,
    #[command(flatten)]
    pub sources: SourceArgs,
    /// A PEM or DER file whose certificates every volume trusts (repeatable).
    #[arg(long = "extra-pem", value_name = "FILE")]
    pub extra_pem: Vec<PathBuf>,
    /// The kubeconfig the driver reads cluster sources with. Without it, the driver uses its
    /// pod's ServiceAccount when running in a pod, and runs standalone otherwise.
    #[arg(long, env = "KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Local sources only: never talk to the Kubernetes API. Volumes naming cluster sources
    /// fail with FAILED_PRECONDITION.
    #[arg(long, env = "TRUSTMOUNT_STANDALONE")]
    pub standalone: bool,
    /// The driver's own namespace (the downward API's metadata.namespace): where
    /// --default-config-map ConfigMaps are read.
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub defaults: DefaultArgs,
    /// Serve Prometheus metrics on http://ADDR/metrics, e.g. 0.0.0.0:9808 (port 0: any free
    /// port, logged). Unset: no metrics endpoint.
    #[arg(long, env = "TRUSTMOUNT_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Serve the liveness check on http://ADDR/healthz, e.g. 0.0.0.0:9809: 200 while the CSI
    /// socket answers Probe ready, 503 with the reason otherwise. The same address as
    /// --metrics-addr serves both on one port. Unset: no health endpoint.
    #[arg(long, env = "TRUSTMOUNT_HEALTH_ADDR", value_name = "ADDR")]
    pub health_addr: Option<SocketAddr>,
    #[command(flatten)]
    pub registration: RegistrationArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// What one volume may ask of the driver that every namespace on the node shares. Over a
/// limit, the publish fails naming it and its flag.
#[derive(clap::Args)]
pub struct LimitArgs {
    /// Bytes of one volume's attributes, keys and values (the kubelet's csi.storage.k8s.io/*
    /// keys not counted), e.g. 16Ki.
    #[arg(long, env = "TRUSTMOUNT_MAX_VOLUME_ATTRIBUTE_BYTES", default_value = "16Ki", value_parser = parse_limit_bytes)]
    pub max_volume_attribute_bytes: u64,
    /// Sources one volume names: objects and signer selections of every kind together.
    #[arg(long, env = "TRUSTMOUNT_MAX_VOLUME_SOURCES", default_value_t = 64)]
    pub max_volume_sources: usize,
    /// Certificates in one volume's bundle, system roots included.
    #[arg(long, env = "TRUSTMOUNT_MAX_VOLUME_CERTIFICATES", default_value_t = 2000)]
    pub max_volume_certificates: usize,
    /// Bytes of one value of a cluster object (a ConfigMap or Secret key, a
    /// ClusterTrustBundle); larger values are refused before they are parsed.
    #[arg(long, env = "TRUSTMOUNT_MAX_SOURCE_OBJECT_BYTES", default_value = "512Ki", value_parser = parse_limit_bytes)]
    pub max_source_object_bytes: u64,
    /// Certificates in one value of a cluster object.
    #[arg(long, env = "TRUSTMOUNT_MAX_SOURCE_CERTIFICATES", default_value_t = 500)]
    pub max_source_certificates: usize,
    /// ConfigMap watches one namespace's volumes on this node may hold together (the driver's
    /// own namespace not counted).
    #[arg(long, env = "TRUSTMOUNT_MAX_NAMESPACE_WATCHES", default_value_t = 256)]
    pub max_namespace_watches: usize,
    /// Distinct volume specs (sets of volume attributes) the pods of one namespace may use on
    /// this node together.
    #[arg(long, env = "TRUSTMOUNT_MAX_NAMESPACE_SPECS", default_value_t = 32)]
    pub max_namespace_specs: usize,
    /// Store bytes (whole tmpfs pages) the distinct volume specs of one namespace's pods may
    /// take on this node together, each counted as if it were alone, e.g. 32Mi.
    #[arg(long, env = "TRUSTMOUNT_MAX_NAMESPACE_STORE_BYTES", default_value = "32Mi", value_parser = parse_limit_bytes)]
    pub max_namespace_store_bytes: u64,
    /// Files, links and directories (kernel dentries and inodes) those specs may take together.
    #[arg(long, env = "TRUSTMOUNT_MAX_NAMESPACE_STORE_FILES", default_value_t = 32 * 1024)]
    pub max_namespace_store_files: u64,
    /// Percent of --store-size that new volume specs may not fill: kept free so that every
    /// published volume can always get its next generation when its sources change.
    #[arg(long, env = "TRUSTMOUNT_STORE_ROTATION_RESERVE", default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=90))]
    pub store_rotation_reserve: u8,
}

impl LimitArgs {
    pub fn limits(&self) -> crate::domain::Limits {
        let bytes = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
        crate::domain::Limits {
            attribute_bytes: bytes(self.max_volume_attribute_bytes),
            sources: self.max_volume_sources,
            volume_certificates: self.max_volume_certificates,
            source_bytes: bytes(self.max_source_object_bytes),
            source_certificates: self.max_source_certificates,
            namespace_watches: self.max_namespace_watches,
            namespace_specs: self.max_namespace_specs,
            namespace_store_bytes: self.max_namespace_store_bytes,
            namespace_store_files: self.max_namespace_store_files,
            store_rotation_reserve_percent: self.store_rotation_reserve,
        }
    }
}

/// The kubelet's plugin registration, which the driver serves itself (node-driver-registrar's
/// job, with its flag names).
#[derive(clap::Args)]
pub struct RegistrationArgs {
    /// Register with the kubelet: serve its plugin registration API on
    /// <plugin-registration-path>/<driver-name>-reg.sock. `false` when the upstream
    /// node-driver-registrar sidecar registers the driver instead.
    #[arg(
        long,
        env = "TRUSTMOUNT_KUBELET_REGISTRATION",
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub kubelet_registration: bool,
    /// The CSI socket's path as the kubelet sees it (on the host, not in the driver's
    /// container), given to the kubelet at registration. Default:
    /// <kubelet-dir>/plugins/<driver-name>/csi.sock.
    #[arg(long, env = "TRUSTMOUNT_KUBELET_REGISTRATION_PATH", value_name = "PATH")]
    pub kubelet_registration_path: Option<Endpoint>,
    /// The directory the kubelet's plugin watcher reads, as the driver sees it; made if missing.
    /// Default: <kubelet-dir>/plugins_registry.
    #[arg(long, env = "TRUSTMOUNT_PLUGIN_REGISTRATION_PATH", value_name = "DIR")]
    pub plugin_registration_path: Option<PathBuf>,
}

impl RegistrationArgs {
    /// The registration socket and the endpoint to announce, with the defaults filled in from
    /// `kubelet_dir` and `driver_name`; `None` when registration is off.
    pub fn resolve(&self, kubelet_dir: &std::path::Path, driver_name: &str) -> Option<(PathBuf, PathBuf)> {
        if !self.kubelet_registration {
            return None;
        }
        let dir = self.plugin_registration_path.clone().unwrap_or_else(|| kubelet_dir.join("plugins_registry"));
        let endpoint = match &self.kubelet_registration_path {
            Some(endpoint) => endpoint.path().to_owned(),
            None => kubelet_dir.join("plugins").join(driver_name).join("csi.sock"),
        };
        Some((dir.join(crate::csi::socket_name(driver_name)), endpoint))
    }
}

/// Cluster sources added to every volume unless it sets `defaults: "false"` (repeatable; the
/// env vars take comma-separated lists).
#[derive(clap::Args)]
pub struct DefaultArgs {
    /// A ClusterTrustBundle by name.
    #[arg(
        long = "default-cluster-trust-bundle",
        env = "TRUSTMOUNT_DEFAULT_CLUSTER_TRUST_BUNDLES",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub cluster_trust_bundles: Vec<String>,
    /// Every ClusterTrustBundle of this signer (matching --default-label-selector, if given).
    #[arg(
        long = "default-signer-name",
        env = "TRUSTMOUNT_DEFAULT_SIGNER_NAMES",
        value_name = "SIGNER",
        value_delimiter = ','
    )]
    pub signer_names: Vec<String>,
    /// Label selector for the --default-signer-name bundles; absent: every bundle of the signer.
    #[arg(long = "default-label-selector", env = "TRUSTMOUNT_DEFAULT_LABEL_SELECTOR", value_name = "SELECTOR")]
    pub label_selector: Option<String>,
    /// A ConfigMap in the driver's own namespace (--namespace): NAME (every key holding
    /// certificates) or NAME:KEY.
    #[arg(
        long = "default-config-map",
        env = "TRUSTMOUNT_DEFAULT_CONFIG_MAPS",
        value_name = "NAME[:KEY]",
        value_delimiter = ','
    )]
    pub config_maps: Vec<String>,
}

#[derive(clap::Args)]
pub struct RenderArgs {
    /// Directory to write; created if missing. Existing files of the same names are replaced.
    #[arg(long)]
    pub out: PathBuf,
    /// A PEM or DER file to add (repeatable).
    #[arg(long = "pem", value_name = "FILE")]
    pub pem: Vec<PathBuf>,
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Same as the volume attribute `layout`.
    #[arg(long)]
    pub layout: Option<String>,
    /// Same as the volume attribute `javaTruststore`.
    #[arg(long)]
    pub java_truststore: Option<String>,
    /// Same as the volume attribute `expired` (`drop` or `keep`).
    #[arg(long)]
    pub expired: Option<String>,
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// A bundle file (PEM or DER) or a directory such as a rendered volume.
    pub path: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A size of at least 1 MiB (a store, a file): smaller ones are typos.
fn parse_size(value: &str) -> Result<u64, String> {
    parse_bytes(value).and_then(|size| {
        (size >= 1 << 20).then_some(size).ok_or_else(|| format!("{value:?} is out of range; use at least 1Mi"))
    })
}

/// A size of at least 1 KiB: a limit on something a pod author writes.
fn parse_limit_bytes(value: &str) -> Result<u64, String> {
    parse_bytes(value).and_then(|size| {
        (size >= 1 << 10).then_some(size).ok_or_else(|| format!("{value:?} is out of range; use at least 1Ki"))
    })
}

fn parse_bytes(value: &str) -> Result<u64, String> {
    let (digits, multiplier) = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)]
        .into_iter()
        .find_map(|(suffix, m)| value.strip_suffix(suffix).map(|d| (d, m)))
        .unwrap_or((value, 1));
    let number: u64 =
        digits.parse().map_err(|_| format!("{value:?} is not a size; use bytes or a Ki/Mi/Gi suffix, e.g. 256Mi"))?;
    number.checked_mul(multiplier).ok_or_else(|| format!("{value:?} is out of range"))
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn registration(args: &[&str]) -> Option<(PathBuf, PathBuf)> {
        let argv = ["trustmount", "serve", "--node-id", "n", "--kubelet-dir", "/var/lib/k0s/kubelet"];
        let cli = Cli::try_parse_from(argv.iter().chain(args)).unwrap();
        let Command::Serve(serve) = cli.command else { panic!("not serve") };
        serve.registration.resolve(&serve.kubelet_dir, &serve.driver_name)
    }

    #[test]
    fn limit_flags_default_to_the_domain_limits_and_are_the_flags_messages_name() {
        let cli = Cli::try_parse_from(["trustmount", "serve", "--node-id", "n"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("serve") };
        assert_eq!(args.limits.limits(), crate::domain::Limits::default());
        let flags = [
            (crate::domain::ATTRIBUTE_BYTES_FLAG, "1Ki"),
            (crate::domain::SOURCES_FLAG, "2"),
            (crate::domain::VOLUME_CERTIFICATES_FLAG, "3"),
            (crate::domain::SOURCE_BYTES_FLAG, "4Ki"),
            (crate::domain::SOURCE_CERTIFICATES_FLAG, "5"),
            (crate::domain::NAMESPACE_WATCHES_FLAG, "6"),
            (crate::domain::NAMESPACE_SPECS_FLAG, "7"),
            (crate::domain::NAMESPACE_STORE_BYTES_FLAG, "8Ki"),
            (crate::domain::NAMESPACE_STORE_FILES_FLAG, "9"),
            (crate::domain::STORE_ROTATION_RESERVE_FLAG, "10"),
        ];
        let mut argv = vec!["trustmount", "serve", "--node-id", "n"];
        argv.extend(flags.iter().flat_map(|(flag, value)| [*flag, *value]));
        let Command::Serve(args) = Cli::try_parse_from(argv).unwrap().command else { panic!("serve") };
        let expected = crate::domain::Limits {
            attribute_bytes: 1024,
            sources: 2,
            volume_certificates: 3,
            source_bytes: 4096,
            source_certificates: 5,
            namespace_watches: 6,
            namespace_specs: 7,
            namespace_store_bytes: 8192,
            namespace_store_files: 9,
            store_rotation_reserve_percent: 10,
        };
        assert_eq!(args.limits.limits(), expected);
    }

    #[test]
    fn registration_is_on_by_default_where_node_driver_registrar_would_put_it() {
        let (socket, endpoint) = registration(&[]).expect("on by default");
        assert_eq!(socket, Path::new("/var/lib/k0s/kubelet/plugins_registry/csi.trustmount.io-reg.sock"));
        assert_eq!(endpoint, Path::new("/var/lib/k0s/kubelet/plugins/csi.trustmount.io/csi.sock"));
    }

    #[test]
    fn registration_flags_override_each_default_and_false_turns_it_off() {
        let (socket, endpoint) = registration(&[
            "--driver-name=csi.example.com",
            "--kubelet-registration-path=unix:///host/plugins/x/csi.sock",
            "--plugin-registration-path=/registration",
        ])
        .unwrap();
        assert_eq!(socket, Path::new("/registration/csi.example.com-reg.sock"));
        assert_eq!(endpoint, Path::new("/host/plugins/x/csi.sock"));
        assert_eq!(registration(&["--kubelet-registration=false"]), None);
        let maybe = ["trustmount", "serve", "--node-id", "n", "--kubelet-registration=maybe"];
        assert!(Cli::try_parse_from(maybe).is_err(), "only true or false");
    }
}

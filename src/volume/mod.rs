//! Volumes on disk: the driver's own tmpfs, one directory per volume spec written like
//! kubelet's AtomicWriter (`..data` swap), read-only bind mounts onto targets, and one record
//! per published volume.

// TODO(helper): mount.rs (thin nix wrappers), atomic.rs (generation + `..data` swap),
// record.rs (per-volume records, written atomically), store.rs or here (publish/unpublish).

use std::path::{Path, PathBuf};

use crate::bundle::Files;
use crate::sources;
use crate::spec::{PodInfo, SpecDigest, VolumeSpec};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("target path {target} is outside the kubelet directory {kubelet_dir}; trustmount only mounts into pod volume directories")]
    TargetOutsideKubeletDir { target: PathBuf, kubelet_dir: PathBuf },
    #[error("target path {target} already holds volume {existing_volume_id} with {difference}; unpublish it first")]
    AlreadyPublished {
        target: PathBuf,
        existing_volume_id: String,
        difference: String,
    },
    #[error("volume {volume_id} is not published at {path}")]
    NotPublished { volume_id: String, path: PathBuf },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {op} {path}: {source}")]
    Mount {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("the driver's tmpfs at {path} is full; raise --store-size")]
    StoreFull { path: PathBuf },
    #[error("record {path} is unreadable: {reason}")]
    Record { path: PathBuf, reason: String },
    #[error(transparent)]
    Render(#[from] sources::Error),
    #[error("volume task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `--state-dir`: holds the tmpfs (`store/`) and the records (`volumes/`).
    pub state_dir: PathBuf,
    /// `--kubelet-dir`: every target must be below it.
    pub kubelet_dir: PathBuf,
    /// Size limit of the driver's tmpfs.
    pub tmpfs_size_bytes: u64,
}

/// One NodePublishVolume, already validated by `csi/`.
#[derive(Clone, Debug)]
pub struct Publication {
    pub volume_id: String,
    pub target: PathBuf,
    pub readonly: bool,
    pub spec: VolumeSpec,
    pub pod: PodInfo,
}

/// What NodeGetVolumeStats reports.
#[derive(Clone, Debug)]
pub struct VolumeStats {
    pub spec: VolumeSpec,
    pub digest: SpecDigest,
    pub used_bytes: u64,
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_inodes: u64,
    pub total_inodes: u64,
    pub available_inodes: u64,
}

/// The driver's volumes: tmpfs, spec directories, bind mounts, records.
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
}

impl Store {
    /// Mounts the driver's tmpfs under the state dir (or adopts it after a restart), and loads
    /// the records. Blocking; call before serving.
    ///
    /// # Errors
    /// The tmpfs cannot be mounted or the state dir cannot be created.
    pub fn open(config: StoreConfig) -> Result<Self> {
        let _ = config;
        todo!("volume helper")
    }

    /// Publishes a volume: ensures the spec's directory exists (calling `render` only when it
    /// does not), then bind-mounts it read-only onto the target and records it. Idempotent for
    /// an identical publication; a failure leaves nothing behind.
    ///
    /// # Errors
    /// See [`Error`]; `AlreadyPublished` for an incompatible publication at the same target.
    pub async fn publish<R>(&self, publication: Publication, render: R) -> Result<()>
    where
        R: FnOnce() -> Result<Files, sources::Error> + Send + 'static,
    {
        let _ = (publication, render);
        todo!("volume helper")
    }

    /// Unmounts and removes the target, forgets the record, and removes the spec directory once
    /// no volume uses it. Idempotent: an unknown volume or a missing target is OK.
    pub async fn unpublish(&self, volume_id: &str, target: &Path) -> Result<()> {
        let _ = (volume_id, target);
        todo!("volume helper")
    }

    /// # Errors
    /// `NotPublished` when `volume_id` is not published at `path`.
    pub async fn stats(&self, volume_id: &str, path: &Path) -> Result<VolumeStats> {
        let _ = (volume_id, path, &self.config);
        todo!("volume helper")
    }
}

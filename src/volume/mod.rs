//! Volumes on disk: the driver's own tmpfs, one directory per volume spec written like
//! kubelet's AtomicWriter (`..data` swap), read-only bind mounts onto targets, and one record
//! per published volume.

mod atomic;
mod keyed;
mod mount;
mod record;
mod store;

pub use atomic::{current_generation, write_generation};
pub use mount::{is_mount_root, is_mountpoint, is_mountpoint_by_mountinfo};
pub use record::Record;
pub use store::Store;

use std::path::PathBuf;

use crate::sources;
use crate::spec::{PodInfo, SpecDigest, VolumeSpec};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "target path {target} is outside the kubelet's pods directory {kubelet_dir}; trustmount only mounts into pod volume directories (check --kubelet-dir)"
    )]
    TargetOutsideKubeletDir { target: PathBuf, kubelet_dir: PathBuf },
    #[error("target path {target} already holds volume {existing_volume_id} with {difference}; unpublish it first")]
    AlreadyPublished { target: PathBuf, existing_volume_id: String, difference: String },
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
    #[error("rendered entry {path:?} cannot be written: {reason}; this is a bug in the bundle layout")]
    InvalidFiles { path: String, reason: &'static str },
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

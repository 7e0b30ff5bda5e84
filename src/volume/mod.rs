//! Volumes on disk: the driver's own tmpfs, one directory per volume spec written like
//! kubelet's AtomicWriter (`..data` swap), read-only bind mounts onto targets, and one record
//! per published volume. Files in, mounts out: where the files come from is the caller's business
//! (a publish or refresh takes a render callback typed on the caller's error).
//!
//! - [`store`]: the handle, and the blocking hop each call makes.
//! - [`flows`]: publish, unpublish, refresh, stats.
//! - [`index`]: live specs and publish reservations.
//! - [`target`]: a target checked once and held by fd; [`unmount`]: peeling stacked mounts.
//! - [`tmpfs`]: mounting or adopting the tmpfs; [`reconcile`]: records, mounts and spec dirs
//!   made to agree at start, whatever a crash interrupted.
//! - [`atomic`], [`record`], [`mount`], [`mountinfo`]: files, records, syscalls, the mount table;
//!   [`fsutil`]: the I/O helpers they share (the ground floor here).
//! - [`budget`]: what a spec directory costs, and the budgets per namespace and for the store.
//! - [`blobs`]: the content-addressed files and symlinks every spec directory hard-links.
//! - [`format`](mod@format): what goes to disk for the next driver (records, store names and marker), versioned.

mod atomic;
mod blobs;
mod budget;
mod flows;
mod format;
mod fsutil;
mod index;
mod mount;
mod mountinfo;
mod reconcile;
mod record;
mod retired;
mod store;
mod target;
mod tmpfs;
mod unmount;

pub use atomic::current_generation;
pub use budget::{Budgets, Bytes};
pub use mount::{is_mount_root, is_mountpoint};
pub use mountinfo::{MountEntry, is_mountpoint as is_mountpoint_by_mountinfo, mounts};
pub use record::Record;
pub use store::Store;

use std::fmt;
use std::path::PathBuf;

use crate::domain::{PodInfo, SpecDigest, VolumeSpec};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "target path {target} is outside the kubelet's pods directory {kubelet_dir}; trustmount only mounts into pod volume directories (check --kubelet-dir)"
    )]
    TargetOutsideKubeletDir { target: PathBuf, kubelet_dir: PathBuf },
    #[error(
        "target path {target} changed while it was being published: a symlink appeared in it; trustmount follows no symlink it has not checked"
    )]
    TargetChanged { target: PathBuf },
    #[error("target path {target} already holds volume {existing_volume_id} with {differences}; unpublish it first")]
    AlreadyPublished { target: PathBuf, existing_volume_id: String, differences: Differences },
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
    #[error(
        "the pods of namespace {namespace} use {budget} distinct volume specs on this node, its budget ({flag}); other namespaces' volumes are unaffected. Give more of this namespace's pods the same volume attributes (they then share one bundle), or have the cluster operator raise {flag}"
    )]
    OverNamespaceBudget { namespace: String, budget: usize, flag: &'static str },
    #[error(
        "the pods of namespace {namespace} would take {wanted} of the driver's store on this node, over its budget of {budget} ({flag}); other namespaces' volumes are unaffected. Use fewer or smaller sources, give more of this namespace's pods the same volume attributes (they then share one bundle), or have the cluster operator raise {flag}"
    )]
    OverNamespaceStore { namespace: String, wanted: budget::Amount, budget: budget::Amount, flag: &'static str },
    #[error(
        "the driver's tmpfs at {path} holds {used}, and this volume's {adding} more would pass the {fill_limit} that new bundles may fill: the rest is kept free ({flag} {reserve_percent}%) so that every published volume has room to rotate. Unpublish unused volumes, or have the cluster operator raise --store-size"
    )]
    OverFillLimit {
        path: PathBuf,
        used: Bytes,
        adding: Bytes,
        fill_limit: Bytes,
        reserve_percent: u8,
        flag: &'static str,
    },
    #[error("rendered entry {path:?} cannot be written: {reason}; this is a bug in the bundle layout")]
    InvalidFiles { path: String, reason: &'static str },
    #[error("record {path} is unreadable: {reason}")]
    Record { path: PathBuf, reason: String },
    /// Not damaged: a newer driver wrote it. Its volume is left alone.
    #[error("record {path} cannot be read by this driver: {source}")]
    NewerRecord {
        path: PathBuf,
        #[source]
        source: format::Error,
    },
    #[error(
        "the driver's tmpfs at {path} cannot be adopted: {source}; no volume was touched (to start afresh, drain the node, unmount it and remove the state dir)"
    )]
    StoreFormat {
        path: PathBuf,
        #[source]
        source: format::Error,
    },
    #[error("volume task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One way the publication already at a target differs from a new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    /// The new publication has another volume id.
    VolumeId { requested: String },
    /// Its volume attributes give another spec.
    Attributes,
    /// The existing publication has the other readonly flag.
    Readonly { existing: bool },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VolumeId { requested } => write!(f, "a different volume id than {requested}"),
            Self::Attributes => f.write_str("different volume attributes"),
            Self::Readonly { existing } => write!(f, "readonly={existing}"),
        }
    }
}

/// Every way an existing publication differs from a new one (never empty in an error).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Differences(pub Vec<Difference>);

impl Differences {
    pub fn contains(&self, difference: &Difference) -> bool {
        self.0.contains(difference)
    }
}

impl fmt::Display for Differences {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, difference) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            write!(f, "{difference}")?;
        }
        Ok(())
    }
}

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

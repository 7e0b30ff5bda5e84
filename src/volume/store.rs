//! The [`Store`]: the handle on the driver's volumes. It opens them (tmpfs, records, index) and
//! runs each flow ([`flows`](super::flows)) whole on a blocking thread, inside the caller's span.
//!
//! Locking: a per-target lock, then a per-spec lock (always in that order). Under the per-spec
//! lock a publish makes sure the spec dir exists and reserves its target in the index; it then
//! mounts and records with only the target lock held, and takes the reservation back if that
//! fails. Publishes of one spec mount in parallel. The blob lock comes last of all and is held
//! for one link or one collection at a time, never while taking another lock.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::bundle::Files;
use crate::clock::Clock;
use crate::domain::{PodInfo, SpecDigest, VolumeSpec};
use crate::keyed_locks::KeyedLocks;

use super::blobs::Blobs;
use super::format::{
    self,
    store::{BLOBS_DIR, MARKER_FILE, RECORDS_DIR, SPECS_DIR, STORE_DIR, TMPFS_DIR},
};
use super::index::Index;
use super::retired::{self, Retired};
use super::target::Targets;
use super::{Error, Publication, Result, StoreConfig, VolumeStats, reconcile, record, tmpfs};

const RECORDS_DIR_MODE: u32 = 0o700;

/// The driver's volumes: tmpfs, spec directories, bind mounts, records.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    /// `<state_dir>/store`, the tmpfs's spec directories as shown (a bind mount).
    pub(super) root: PathBuf,
    /// `<state_dir>/volumes`, the records.
    pub(super) records: PathBuf,
    pub(super) targets: Targets,
    pub(super) index: Index,
    pub(super) target_locks: KeyedLocks<PathBuf>,
    /// Generations swapped out by a refresh, removed once their grace is over.
    pub(super) retired: Retired,
    /// What `published_at` says and when a retired generation's grace ends.
    pub(super) clock: Clock,
}

/// The clock's Unix seconds as records keep them (a clock before 1970 reads as 0).
pub(super) fn unix_seconds(clock: &Clock) -> u64 {
    u64::try_from(clock.unix_seconds()).unwrap_or(0)
}

fn io_error(op: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io { op, path: path.to_owned(), source }
}

/// Reads the store-format marker of the tmpfs at `tmpfs_dir`, writing it when there is none (a
/// new tmpfs, or one laid out by 02e7ca2, which is store format 1). A store of another format
/// is an error before anything in it is touched.
fn check_store_format(tmpfs_dir: &Path) -> Result<()> {
    let path = tmpfs_dir.join(MARKER_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            format::store::parse_marker(&text)
                .map_err(|source| Error::StoreFormat { path: tmpfs_dir.to_owned(), source })?;
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::write(&path, format::store::marker()).map_err(|e| io_error("write", &path, e))
        }
        Err(e) => Err(io_error("read", &path, e)),
    }
}

/// Runs `work` on a blocking thread inside the caller's span, so what it logs carries the
/// call's fields (volume id, target).
async fn blocking<T, E>(work: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<Error> + Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work)).await.map_err(|e| E::from(Error::Task(e)))?
}

impl Store {
    /// Mounts the driver's tmpfs under the state dir (or adopts it after a restart), then
    /// reconciles records, mounts and spec dirs ([`reconcile`](super::reconcile)): what a crash
    /// left half-done is completed or rolled back, and unreadable records are moved aside.
    /// Blocking; call before serving. `clock` stamps records and times retired generations.
    ///
    /// # Errors
    /// The tmpfs cannot be mounted, the state dir cannot be created, or the records dir or the
    /// mount table cannot be read.
    pub fn open(config: StoreConfig, clock: Clock) -> Result<Self> {
        fs::create_dir_all(&config.state_dir).map_err(|e| io_error("create", &config.state_dir, e))?;
        let state_dir = fs::canonicalize(&config.state_dir).map_err(|e| io_error("resolve", &config.state_dir, e))?;
        let tmpfs_dir = state_dir.join(TMPFS_DIR);
        fs::create_dir_all(&tmpfs_dir).map_err(|e| io_error("create", &tmpfs_dir, e))?;
        tmpfs::mount_or_adopt(&tmpfs_dir, config.tmpfs_size_bytes)?;
        check_store_format(&tmpfs_dir)?;
        let specs = tmpfs_dir.join(SPECS_DIR);
        fs::create_dir_all(&specs).map_err(|e| io_error("create", &specs, e))?;
        let blobs = Blobs::open(&tmpfs_dir.join(BLOBS_DIR))?;
        let root = state_dir.join(STORE_DIR);
        fs::create_dir_all(&root).map_err(|e| io_error("create", &root, e))?;
        tmpfs::bind_or_adopt(&specs, &root)?;

        let records = state_dir.join(RECORDS_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(RECORDS_DIR_MODE)
            .create(&records)
            .and_then(|()| fs::set_permissions(&records, fs::Permissions::from_mode(RECORDS_DIR_MODE)))
            .map_err(|e| io_error("create", &records, e))?;

        let index = Index::new(root.clone(), specs, blobs);
        let targets = Targets::new(&config.kubelet_dir);
        let layout = reconcile::Layout { records: &records, tmpfs: &tmpfs_dir, specs_name: SPECS_DIR };
        let outcome = reconcile::reconcile(&layout, &targets, &index, unix_seconds(&clock))?;
        // Adopted specs count against their namespaces' budgets from the start.
        index.measure_adopted();
        let (specs, volumes) = index.counts();
        tracing::info!(
            volumes,
            specs,
            adopted = outcome.adopted,
            completed = outcome.completed,
            remounted = outcome.remounted,
            rolled_back = outcome.rolled_back,
            dropped = outcome.dropped,
            unmounted = outcome.unmounted,
            corrupt = outcome.corrupt,
            newer = outcome.newer,
            left = outcome.left,
            "volume store open"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                records,
                targets,
                index,
                target_locks: KeyedLocks::default(),
                retired: Retired::new(clock.clone()),
                clock,
            }),
        })
    }

    /// Publishes a volume: ensures the spec's directory exists (calling `render` only when it
    /// does not), then bind-mounts it read-only onto the target and records it. Idempotent for
    /// an identical publication; a failure leaves nothing behind. `E` is the caller's error,
    /// which carries both its render's failures and the store's.
    ///
    /// # Errors
    /// See [`Error`]; `AlreadyPublished` for an incompatible publication at the same target.
    pub async fn publish<R, E>(&self, publication: Publication, render: R) -> Result<(), E>
    where
        R: FnOnce() -> Result<Files, E> + Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.publish(publication, render)).await
    }

    /// Unmounts and removes the target, forgets the record, and removes the spec directory once
    /// no volume uses it. Idempotent: an unknown volume or a missing target is OK.
    ///
    /// # Errors
    /// A target outside the kubelet's pods dir, or a failed unmount or removal.
    pub async fn unpublish(&self, volume_id: &str, target: &Path) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        let volume_id = volume_id.to_owned();
        let target = target.to_owned();
        blocking(move || inner.unpublish(&volume_id, &target)).await
    }

    /// # Errors
    /// `NotPublished` when `volume_id` is not published at `path`.
    pub async fn stats(&self, volume_id: &str, path: &Path) -> Result<VolumeStats> {
        let inner = Arc::clone(&self.inner);
        let volume_id = volume_id.to_owned();
        let path = path.to_owned();
        blocking(move || inner.stats(&volume_id, &path)).await
    }

    /// What the specs of one namespace's pods may take on this node (`--max-namespace-*`), and
    /// the share of the store new specs leave free (`--store-rotation-reserve`).
    pub fn set_budgets(&self, budgets: super::Budgets) {
        self.inner.index.set_budgets(budgets);
    }

    /// The specs at least one published volume uses, ordered by digest.
    pub fn live_specs(&self) -> Vec<VolumeSpec> {
        self.inner.index.live_specs()
    }

    /// A number that changes whenever [`Store::live_specs`] does (a spec joins or leaves the
    /// live set). Read it first, then the specs.
    pub fn live_changes(&self) -> u64 {
        self.inner.index.live_changes()
    }

    /// Gives a live spec a new generation from `render` (one `..data` swap that every volume of
    /// the spec sees at once). Returns false, without calling `render`, when no volume uses it.
    ///
    /// # Errors
    /// A render failure or a failed write; the current generation then stays in place.
    pub async fn refresh<R, E>(&self, spec: VolumeSpec, render: R) -> Result<bool, E>
    where
        R: FnOnce() -> Result<Files, E> + Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let digest = spec.digest();
        let inner = Arc::clone(&self.inner);
        let refreshed = blocking(move || inner.refresh(&spec, render)).await?;
        if refreshed {
            // The swapped-out generation goes once readers resolving `..data` are done with it.
            let inner = Arc::clone(&self.inner);
            tokio::spawn(async move {
                tokio::time::sleep(retired::GRACE).await;
                let swept = blocking(move || inner.sweep(&digest)).await;
                if let Err(error) = swept {
                    tracing::warn!(%error, "cannot remove a swapped-out generation; the next refresh tries again");
                }
            });
        }
        Ok(refreshed)
    }

    /// The pods of the volumes published from `digest`, from their records (for events on
    /// them). A target whose record cannot be read is left out.
    pub async fn pods_of(&self, digest: &SpecDigest) -> Vec<PodInfo> {
        let inner = Arc::clone(&self.inner);
        let digest = digest.clone();
        let pods = blocking(move || {
            let pods = inner
                .index
                .targets_of(&digest)
                .into_iter()
                .filter_map(|target| record::load(&inner.records, &target).ok().flatten())
                .map(|rec| rec.pod)
                .collect();
            Ok::<_, Error>(pods)
        });
        pods.await.unwrap_or_default()
    }

    /// How many volumes are published from `digest`'s spec directory.
    pub fn volumes_of(&self, digest: &SpecDigest) -> usize {
        self.inner.index.target_count(digest)
    }

    /// The driver's tmpfs (`<state_dir>/store`, symlinks resolved).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where the records live (`<state_dir>/volumes`, symlinks resolved).
    pub fn records_dir(&self) -> &Path {
        &self.inner.records
    }

    /// The directory volumes of a spec are bind-mounted from (it may not exist).
    pub fn spec_dir(&self, digest: &SpecDigest) -> PathBuf {
        self.inner.root.join(digest.as_str())
    }

    /// How many spec directories exist in the store. Blocking (one `readdir`).
    ///
    /// # Errors
    /// The store cannot be listed.
    pub fn spec_dir_count(&self) -> Result<usize> {
        let root = &self.inner.root;
        let entries = fs::read_dir(root).map_err(|e| io_error("list", root, e))?;
        let mut count = 0;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", root, e))?;
            if entry.file_name().to_str().and_then(SpecDigest::parse).is_some() {
                count += 1;
            }
        }
        Ok(count)
    }

    /// How many volumes are published (from the in-memory index; a publish in flight counts from
    /// its reservation on).
    pub fn published_count(&self) -> usize {
        self.inner.index.counts().1
    }
}

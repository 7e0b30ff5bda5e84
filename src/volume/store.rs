//! The [`Store`]: the driver's tmpfs, spec directories shared by every volume with the same
//! spec, read-only bind mounts onto targets, and the records that survive a restart.
//!
//! Locking: a per-target lock, then a per-spec lock (always in that order). Under the per-spec
//! lock a publish makes sure the spec dir exists and reserves its target in the index; it then
//! mounts and records with only the target lock held, and takes the reservation back if that
//! fails. An unpublish removes a spec dir only when its index entry is empty (under the same
//! lock), so a spec dir is rendered once and never removed while a publication of it is under
//! way, and publishes of one spec mount in parallel.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;

use crate::bundle::Files;
use crate::sources;
use crate::spec::{SpecDigest, VolumeSpec};

use super::keyed::{self, KeyedLocks};
use super::record::{self, Record};
use super::{Error, Publication, Result, StoreConfig, VolumeStats, atomic, mount};

const STORE_DIR: &str = "store";
/// Below `--kubelet-dir`: every pod volume's target (`pods/<uid>/volumes/<plugin>/<name>/mount`).
const PODS_DIR: &str = "pods";
const RECORDS_DIR: &str = "volumes";
const TARGET_DIR_MODE: u32 = 0o750;
const RECORDS_DIR_MODE: u32 = 0o700;
const SELINUX_ENFORCE: &str = "/sys/fs/selinux/enforce";
const SELINUX_CONTEXT: &str = "system_u:object_r:container_file_t:s0";
/// How many stacked mounts on one target we peel off before giving up.
const MAX_STACKED_MOUNTS: usize = 8;

/// The driver's volumes: tmpfs, spec directories, bind mounts, records.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: StoreConfig,
    /// `<state_dir>/store`, the tmpfs.
    root: PathBuf,
    /// `<state_dir>/volumes`, the records.
    records: PathBuf,
    /// `<kubelet_dir>/pods` with symlinks resolved: resolved at open, or at first use when it
    /// did not exist yet then.
    kubelet_real: OnceLock<PathBuf>,
    index: Mutex<Index>,
    spec_locks: KeyedLocks<SpecDigest>,
    target_locks: KeyedLocks<PathBuf>,
}

fn io_error(op: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io { op, path: path.to_owned(), source }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What one publish call made on the target, so a failure can take exactly that back.
#[derive(Default)]
struct Undo {
    target_dir: bool,
    mounted: bool,
}

/// A publish's claim on its spec dir (see the module doc).
struct Reservation {
    /// The target was not in the index before: a failure takes it out again.
    new_target: bool,
    /// The spec dir may go with the reservation: this publish rendered it, or the index already
    /// knew it. Not one the store found on disk unused (kept at open because some record was
    /// unreadable): a failed publish leaves that as it was.
    dir_is_ours: bool,
}

/// Spec digest → the spec and the targets published from it (record targets, as the kubelet
/// gave them), plus targets a publish is mounting right now (reserved, so their spec dir stays).
type Index = HashMap<SpecDigest, SpecUse>;

#[derive(Debug)]
struct SpecUse {
    /// Kept so rotation can re-render every live spec without reading the records back.
    spec: VolumeSpec,
    targets: BTreeSet<PathBuf>,
}

impl SpecUse {
    fn entry<'a>(index: &'a mut Index, digest: &SpecDigest, spec: &VolumeSpec) -> &'a mut SpecUse {
        index.entry(digest.clone()).or_insert_with(|| SpecUse { spec: spec.clone(), targets: BTreeSet::new() })
    }
}

impl Store {
    /// Mounts the driver's tmpfs under the state dir (or adopts it after a restart), and loads
    /// the records. Blocking; call before serving.
    ///
    /// # Errors
    /// The tmpfs cannot be mounted or the state dir cannot be created.
    pub fn open(config: StoreConfig) -> Result<Self> {
        fs::create_dir_all(&config.state_dir).map_err(|e| io_error("create", &config.state_dir, e))?;
        let state_dir = fs::canonicalize(&config.state_dir).map_err(|e| io_error("resolve", &config.state_dir, e))?;
        let root = state_dir.join(STORE_DIR);
        fs::create_dir_all(&root).map_err(|e| io_error("create", &root, e))?;
        if mount::mounts_at(&root)?.last().is_some_and(|m| m.fs_type == "tmpfs") {
            tracing::info!(path = %root.display(), "adopting the driver's tmpfs");
        } else {
            let context = Path::new(SELINUX_ENFORCE).exists().then_some(SELINUX_CONTEXT);
            mount::mount_tmpfs(&root, config.tmpfs_size_bytes, context)?;
            tracing::info!(path = %root.display(), size = config.tmpfs_size_bytes, "mounted the driver's tmpfs");
        }

        let records = state_dir.join(RECORDS_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(RECORDS_DIR_MODE)
            .create(&records)
            .and_then(|()| fs::set_permissions(&records, fs::Permissions::from_mode(RECORDS_DIR_MODE)))
            .map_err(|e| io_error("create", &records, e))?;

        let mut index = Index::new();
        let mut unreadable = 0usize;
        for (path, loaded) in record::load_all(&records)? {
            match loaded {
                Ok(rec) => {
                    SpecUse::entry(&mut index, &rec.digest, &rec.spec).targets.insert(rec.target);
                }
                Err(e) => {
                    unreadable += 1;
                    tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable record");
                }
            }
        }
        collect_garbage(&root, &index, unreadable);
        let kubelet_real = OnceLock::new();
        // Once here rather than on every call; a kubelet dir that does not exist yet is resolved
        // on first use instead.
        if let Ok(path) = fs::canonicalize(config.kubelet_dir.join(PODS_DIR)) {
            let _ = kubelet_real.set(path);
        }
        tracing::info!(
            volumes = index.values().map(|spec_use| spec_use.targets.len()).sum::<usize>(),
            specs = index.len(),
            "volume store open"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                root,
                records,
                kubelet_real,
                index: Mutex::new(index),
                spec_locks: KeyedLocks::default(),
                target_locks: KeyedLocks::default(),
            }),
        })
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
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.publish(publication, render)).await?
    }

    /// Unmounts and removes the target, forgets the record, and removes the spec directory once
    /// no volume uses it. Idempotent: an unknown volume or a missing target is OK.
    pub async fn unpublish(&self, volume_id: &str, target: &Path) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        let volume_id = volume_id.to_owned();
        let target = target.to_owned();
        tokio::task::spawn_blocking(move || inner.unpublish(&volume_id, &target)).await?
    }

    /// # Errors
    /// `NotPublished` when `volume_id` is not published at `path`.
    pub async fn stats(&self, volume_id: &str, path: &Path) -> Result<VolumeStats> {
        let inner = Arc::clone(&self.inner);
        let volume_id = volume_id.to_owned();
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || inner.stats(&volume_id, &path)).await?
    }

    /// The specs at least one published volume uses, ordered by digest.
    pub fn live_specs(&self) -> Vec<VolumeSpec> {
        let index = self.inner.index();
        let mut live: Vec<(&SpecDigest, &VolumeSpec)> =
            index.iter().map(|(digest, spec_use)| (digest, &spec_use.spec)).collect();
        live.sort_by(|a, b| a.0.cmp(b.0));
        live.into_iter().map(|(_, spec)| spec.clone()).collect()
    }

    /// Gives a live spec a new generation from `render` (one `..data` swap that every volume of
    /// the spec sees at once). Returns false, without calling `render`, when no volume uses it.
    ///
    /// # Errors
    /// A render failure or a failed write; the current generation then stays in place.
    pub async fn refresh<R>(&self, spec: VolumeSpec, render: R) -> Result<bool>
    where
        R: FnOnce() -> Result<Files, sources::Error> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.refresh(&spec, render)).await?
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
        self.inner.index().values().map(|spec_use| spec_use.targets.len()).sum()
    }
}

/// Removes what a crash left in the store: temporary spec dirs, spec dirs no record uses
/// (unless some record was unreadable: it might be theirs), stray generations.
fn collect_garbage(root: &Path, index: &Index, unreadable: usize) {
    let entries = match fs::read_dir(root).and_then(|e| e.collect::<io::Result<Vec<_>>>()) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(path = %root.display(), error = %e, "cannot list the store for cleanup");
            return;
        }
    };
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let result = if name.starts_with(atomic::TMP_PREFIX) {
            tracing::info!(path = %path.display(), "removing a half-made spec directory");
            atomic::remove_tree(&path)
        } else if let Some(digest) = SpecDigest::parse(&name) {
            if index.contains_key(&digest) {
                atomic::remove_stray_generations(&path)
            } else if unreadable == 0 {
                tracing::info!(path = %path.display(), "removing a spec directory no volume uses");
                atomic::remove_tree(&path)
            } else {
                tracing::warn!(path = %path.display(), "keeping an unused spec directory: some records are unreadable");
                Ok(())
            }
        } else {
            tracing::warn!(path = %path.display(), "unexpected entry in the store; leaving it");
            Ok(())
        };
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "store cleanup failed");
        }
    }
}

impl Inner {
    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spec-dir errors name the tmpfs, not the file that did not fit.
    fn in_store(&self, error: Error) -> Error {
        match error {
            Error::StoreFull { .. } => Error::StoreFull { path: self.root.clone() },
            other => other,
        }
    }

    /// The kubelet's pods dir, symlinks resolved (cached: see `kubelet_real`).
    fn kubelet_real(&self) -> Result<&Path> {
        if let Some(path) = self.kubelet_real.get() {
            return Ok(path);
        }
        let pods = self.config.kubelet_dir.join(PODS_DIR);
        let resolved = fs::canonicalize(&pods).map_err(|e| io_error("resolve", &pods, e))?;
        Ok(self.kubelet_real.get_or_init(|| resolved))
    }

    /// Checks that `target` is inside the kubelet's pods dir (every pod volume's mount point
    /// is), lexically and with symlinks resolved; returns it resolved (the path every syscall
    /// then uses). Creates nothing.
    fn check_target(&self, target: &Path) -> Result<PathBuf> {
        let pods_dir = self.config.kubelet_dir.join(PODS_DIR);
        let outside = || Error::TargetOutsideKubeletDir { target: target.to_owned(), kubelet_dir: pods_dir.clone() };
        let lexically_inside = target.is_absolute()
            && !target.components().any(|c| matches!(c, Component::ParentDir))
            && target.starts_with(&pods_dir)
            && target != pods_dir.as_path();
        if !lexically_inside {
            return Err(outside());
        }
        let kubelet_real = self.kubelet_real()?;
        // The nearest existing ancestor, resolved, plus the names below it that do not exist.
        let mut existing = target;
        let mut missing = Vec::new();
        loop {
            match fs::symlink_metadata(existing) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing.push(existing.file_name().ok_or_else(outside)?);
                    existing = existing.parent().ok_or_else(outside)?;
                }
                Err(e) => return Err(io_error("inspect", existing, e)),
            }
        }
        let mut resolved = match resolve(existing) {
            Ok(path) => path,
            // A dangling symlink: where it points cannot be checked.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(outside()),
            Err(e) => return Err(io_error("resolve", existing, e)),
        };
        resolved.extend(missing.iter().rev());
        if !resolved.starts_with(kubelet_real) || resolved == kubelet_real {
            return Err(outside());
        }
        Ok(resolved)
    }

    fn publish<R>(&self, publication: Publication, render: R) -> Result<()>
    where
        R: FnOnce() -> Result<Files, sources::Error>,
    {
        let resolved = self.check_target(&publication.target)?;
        let target_lock = self.target_locks.get(&publication.target);
        let _target_guard = keyed::lock(&target_lock);

        let digest = publication.spec.digest();
        let existing = record::load(&self.records, &publication.target)?;
        if let Some(rec) = &existing {
            let mut differences = Vec::new();
            if rec.volume_id != publication.volume_id {
                differences.push(format!("a different volume id than {}", publication.volume_id));
            }
            if rec.digest != digest {
                differences.push("different volume attributes".to_owned());
            }
            if rec.readonly != publication.readonly {
                differences.push(format!("readonly={}", rec.readonly));
            }
            if !differences.is_empty() {
                return Err(Error::AlreadyPublished {
                    target: publication.target,
                    existing_volume_id: rec.volume_id.clone(),
                    difference: differences.join(" and "),
                });
            }
            if mount::is_mountpoint(&resolved)? {
                tracing::debug!(volume_id = %publication.volume_id, target = %publication.target.display(), "already published");
                return Ok(());
            }
            tracing::info!(volume_id = %publication.volume_id, target = %publication.target.display(), "recorded but not mounted; mounting again");
        }

        let reservation =
            self.reserve(&publication.target, &publication.spec, &digest, render).map_err(|e| self.in_store(e))?;
        let mut undo = Undo::default();
        match self.mount_and_record(&publication, &resolved, &digest, &mut undo) {
            Ok(()) => {
                tracing::info!(
                    volume_id = %publication.volume_id,
                    target = %publication.target.display(),
                    spec = %digest,
                    "published"
                );
                Ok(())
            }
            Err(e) => {
                undo_target(&undo, &resolved);
                self.release(&reservation, &publication.target, &digest);
                Err(self.in_store(e))
            }
        }
    }

    /// Under the spec lock: renders the spec dir if it does not exist, and puts `target` in the
    /// index, so no unpublish removes the dir until this publish is done or has failed.
    fn reserve<R>(&self, target: &Path, spec: &VolumeSpec, digest: &SpecDigest, render: R) -> Result<Reservation>
    where
        R: FnOnce() -> Result<Files, sources::Error>,
    {
        let spec_lock = self.spec_locks.get(digest);
        let _spec_guard = keyed::lock(&spec_lock);
        let spec_dir = self.root.join(digest.as_str());
        let rendered = match fs::symlink_metadata(&spec_dir) {
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let files = render()?;
                atomic::create_spec_dir(&self.root, digest.as_str(), &files)?;
                true
            }
            Err(e) => return Err(io_error("inspect", &spec_dir, e)),
        };
        let mut index = self.index();
        let targets = &mut SpecUse::entry(&mut index, digest, spec).targets;
        let known = !targets.is_empty();
        let new_target = targets.insert(target.to_owned());
        Ok(Reservation { new_target, dir_is_ours: rendered || known })
    }

    /// Takes a failed publish's reservation back; removes the spec dir if that leaves it
    /// unused.
    fn release(&self, reservation: &Reservation, target: &Path, digest: &SpecDigest) {
        if !reservation.new_target {
            return;
        }
        let spec_lock = self.spec_locks.get(digest);
        let _spec_guard = keyed::lock(&spec_lock);
        let unused = self.forget(digest, target);
        if unused
            && reservation.dir_is_ours
            && let Err(e) = atomic::remove_tree(&self.root.join(digest.as_str()))
        {
            tracing::warn!(spec = %digest, error = %e, "undo: cannot remove the spec directory");
        }
    }

    /// Removes `target` from the index; true when no target of `digest` is left. Call with the
    /// spec lock held.
    fn forget(&self, digest: &SpecDigest, target: &Path) -> bool {
        let mut index = self.index();
        let Some(spec_use) = index.get_mut(digest) else {
            return true;
        };
        spec_use.targets.remove(target);
        let unused = spec_use.targets.is_empty();
        if unused {
            index.remove(digest);
        }
        unused
    }

    /// The part of a publish after the reservation: under the target lock only.
    fn mount_and_record(
        &self,
        publication: &Publication,
        resolved: &Path,
        digest: &SpecDigest,
        undo: &mut Undo,
    ) -> Result<()> {
        let spec_dir = self.root.join(digest.as_str());
        match fs::symlink_metadata(resolved) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io_error(
                    "mount onto",
                    resolved,
                    io::Error::new(io::ErrorKind::NotADirectory, "the target exists and is not a directory"),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(TARGET_DIR_MODE)
                    .create(resolved)
                    .map_err(|e| io_error("create", resolved, e))?;
                undo.target_dir = true;
                fs::set_permissions(resolved, fs::Permissions::from_mode(TARGET_DIR_MODE))
                    .map_err(|e| io_error("chmod", resolved, e))?;
            }
            Err(e) => return Err(io_error("inspect", resolved, e)),
        }

        // A mount without a record: a crash between mounting and recording. Replace it. (A
        // directory made just now holds no mount.)
        if !undo.target_dir && mount::is_mountpoint(resolved)? {
            tracing::warn!(target = %resolved.display(), "target is mounted but not recorded; unmounting it first");
            unmount_all(resolved)?;
        }

        mount::bind(&spec_dir, resolved)?;
        undo.mounted = true;
        mount::remount_bind_readonly(resolved)?;

        let rec = Record {
            volume_id: publication.volume_id.clone(),
            target: publication.target.clone(),
            readonly: publication.readonly,
            spec: publication.spec.clone(),
            digest: digest.clone(),
            pod: publication.pod.clone(),
            published_at: now_unix(),
        };
        record::write(&self.records, &rec)
    }

    fn refresh<R>(&self, spec: &VolumeSpec, render: R) -> Result<bool>
    where
        R: FnOnce() -> Result<Files, sources::Error>,
    {
        let digest = spec.digest();
        let spec_lock = self.spec_locks.get(&digest);
        let _spec_guard = keyed::lock(&spec_lock);
        if !self.index().contains_key(&digest) {
            return Ok(false);
        }
        let files = render()?;
        atomic::write_generation(&self.root.join(digest.as_str()), &files).map_err(|e| self.in_store(e))?;
        tracing::info!(spec = %digest, "spec refreshed");
        Ok(true)
    }

    fn unpublish(&self, volume_id: &str, target: &Path) -> Result<()> {
        let resolved = self.check_target(target)?;
        let target_lock = self.target_locks.get(&target.to_owned());
        let _target_guard = keyed::lock(&target_lock);

        let Some(rec) = record::load(&self.records, target)? else {
            // No record: nothing of ours, unless a crash lost it after mounting.
            if mount::is_mountpoint(&resolved)? {
                tracing::warn!(volume_id, target = %target.display(), "unmounting a target without a record");
                unmount_all(&resolved)?;
            }
            remove_target_dir(&resolved);
            return Ok(());
        };
        if rec.volume_id != volume_id {
            tracing::warn!(
                volume_id,
                recorded = %rec.volume_id,
                target = %target.display(),
                "unpublish of a volume that is not the one at this target; leaving it"
            );
            return Ok(());
        }

        unmount_all(&resolved)?;
        remove_target_dir(&resolved);
        record::remove(&self.records, target)?;
        // Only the index and the spec dir need the spec lock: the target is ours alone.
        let spec_lock = self.spec_locks.get(&rec.digest);
        let _spec_guard = keyed::lock(&spec_lock);
        if self.forget(&rec.digest, target) {
            atomic::remove_tree(&self.root.join(rec.digest.as_str()))?;
            tracing::info!(spec = %rec.digest, "removed an unused spec directory");
        }
        tracing::info!(volume_id, target = %target.display(), "unpublished");
        Ok(())
    }

    // statvfs fields are u32 on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    fn stats(&self, volume_id: &str, path: &Path) -> Result<VolumeStats> {
        let not_published = || Error::NotPublished { volume_id: volume_id.to_owned(), path: path.to_owned() };
        let rec =
            record::load(&self.records, path)?.filter(|rec| rec.volume_id == volume_id).ok_or_else(not_published)?;
        let generation = atomic::current_generation(&self.root.join(rec.digest.as_str()))?;
        let (used_bytes, used_inodes) = atomic::usage(&generation)?;
        let vfs = nix::sys::statvfs::statvfs(&self.root).map_err(|source| Error::Mount {
            op: "statvfs",
            path: self.root.clone(),
            source,
        })?;
        let fragment = u64::from(vfs.fragment_size());
        Ok(VolumeStats {
            spec: rec.spec,
            digest: rec.digest,
            used_bytes,
            total_bytes: u64::from(vfs.blocks()).saturating_mul(fragment),
            available_bytes: u64::from(vfs.blocks_available()).saturating_mul(fragment),
            used_inodes,
            total_inodes: u64::from(vfs.files()),
            available_inodes: u64::from(vfs.files_available()),
        })
    }
}

/// Takes back what a failed publish did to its target.
fn undo_target(undo: &Undo, resolved: &Path) {
    if undo.mounted
        && let Err(e) = mount::unmount(resolved)
    {
        tracing::warn!(target = %resolved.display(), error = %e, "undo: cannot unmount");
    }
    if undo.target_dir
        && let Err(e) = fs::remove_dir(resolved)
    {
        tracing::warn!(target = %resolved.display(), error = %e, "undo: cannot remove the target");
    }
}

/// `fs::canonicalize` in three syscalls instead of a `readlink` per component: the kernel
/// resolves the path once (open `O_PATH`) and names what it found (`/proc/self/fd`). Falls
/// back to `canonicalize` without `/proc`, or when the kernel's name is not a plain path.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    let fd = rustix::fs::open(path, rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC, rustix::fs::Mode::empty())?;
    match fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
        // Not absolute: not reachable from our root. " (deleted)": gone meanwhile.
        Ok(name) if name.is_absolute() && !name.as_os_str().as_encoded_bytes().ends_with(b" (deleted)") => Ok(name),
        _ => fs::canonicalize(path),
    }
}

/// Unmounts everything stacked on `target`; busy mounts are detached lazily.
fn unmount_all(target: &Path) -> Result<()> {
    for _ in 0..MAX_STACKED_MOUNTS {
        match mount::unmount(target) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(Error::Mount { source: Errno::EBUSY, .. }) => {
                tracing::warn!(target = %target.display(), "target busy; detaching it lazily");
                mount::unmount_lazy(target)?;
            }
            Err(e) => return Err(e),
        }
        if !mount::is_mountpoint(target)? {
            return Ok(());
        }
    }
    Err(Error::Mount { op: "unmount all mounts stacked on", path: target.to_owned(), source: Errno::EBUSY })
}

/// Removes an empty target directory; anything else is only logged (never delete a pod's data).
fn remove_target_dir(target: &Path) {
    match fs::remove_dir(target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(target = %target.display(), error = %e, "cannot remove the target directory")
        }
    }
}

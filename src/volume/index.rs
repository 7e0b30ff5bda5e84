//! The index of live specs (spec digest → the spec and the targets published from it) and the
//! reservations a publish holds on its spec directory while it mounts.
//!
//! Under a spec's lock a publish makes sure the spec dir exists and reserves its target here;
//! an unpublish removes a spec dir only when its entry is empty (under the same lock). So a spec
//! dir is rendered once and never removed while a publication of it is under way.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::bundle::Files;
use crate::domain::{SpecDigest, VolumeSpec};
use crate::keyed_locks::{self, KeyedLocks};

use super::blobs::Blobs;
use super::{Error, Result, atomic};

#[derive(Debug)]
pub(super) struct Index {
    /// The store as it is shown (`<state_dir>/store`), named in errors.
    root: PathBuf,
    /// The same directory through the tmpfs's own mount (`<tmpfs>/specs`), one directory per
    /// spec digest: spec dirs are written here, so their hard links reach the blobs.
    dir: PathBuf,
    blobs: Blobs,
    specs: Mutex<HashMap<SpecDigest, SpecUse>>,
    /// Bumped (under the `specs` lock) whenever a spec joins or leaves the live set, so a caller
    /// can tell the set is unchanged without reading it.
    live_changes: AtomicU64,
    /// Spec dirs that a mount the driver does not manage still binds (found at start): never
    /// removed while this driver runs, whatever its own volumes do.
    pinned: Mutex<HashSet<SpecDigest>>,
    locks: KeyedLocks<SpecDigest>,
}

#[derive(Debug)]
struct SpecUse {
    /// Kept so rotation can re-render every live spec without reading the records back.
    spec: VolumeSpec,
    /// Record targets, as the kubelet gave them, plus targets a publish is mounting right now.
    targets: BTreeSet<PathBuf>,
}

/// A publish's claim on its spec dir (see the module doc).
pub(super) struct Reservation {
    /// The target was not in the index before: a failure takes it out again.
    new_target: bool,
    /// The spec dir may go with the reservation: this publish rendered it, or the index already
    /// knew it. Not one the store found on disk unused (kept at open because a mount still binds
    /// it): a failed publish leaves that as it was.
    dir_is_ours: bool,
}

impl Index {
    pub fn new(root: PathBuf, dir: PathBuf, blobs: Blobs) -> Self {
        Self {
            root,
            dir,
            blobs,
            specs: Mutex::default(),
            live_changes: AtomicU64::new(0),
            pinned: Mutex::default(),
            locks: KeyedLocks::default(),
        }
    }

    /// Where spec dirs are written (see the field).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    fn specs(&self) -> MutexGuard<'_, HashMap<SpecDigest, SpecUse>> {
        self.specs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a recorded publication (at open, before anyone else sees the index).
    pub fn insert(&self, digest: &SpecDigest, spec: &VolumeSpec, target: PathBuf) {
        self.entry(&mut self.specs(), digest, spec).targets.insert(target);
    }

    /// Keeps the spec dir of `digest` for as long as this driver runs (see the field).
    pub fn pin(&self, digest: SpecDigest) {
        self.pinned.lock().unwrap_or_else(PoisonError::into_inner).insert(digest);
    }

    fn is_pinned(&self, digest: &SpecDigest) -> bool {
        self.pinned.lock().unwrap_or_else(PoisonError::into_inner).contains(digest)
    }

    pub fn contains(&self, digest: &SpecDigest) -> bool {
        self.specs().contains_key(digest)
    }

    /// The lock every change to a spec dir and its entry is made under.
    pub fn spec_lock(&self, digest: &SpecDigest) -> std::sync::Arc<Mutex<()>> {
        self.locks.get(digest)
    }

    /// How many specs and how many targets the index holds.
    pub fn counts(&self) -> (usize, usize) {
        let specs = self.specs();
        (specs.len(), specs.values().map(|spec_use| spec_use.targets.len()).sum())
    }

    /// How many targets use `digest` (those being mounted included).
    pub fn target_count(&self, digest: &SpecDigest) -> usize {
        self.specs().get(digest).map_or(0, |spec_use| spec_use.targets.len())
    }

    /// Changes whenever [`Index::live_specs`] does. Read it before the specs: a change in
    /// between then shows as a newer value next time.
    pub fn live_changes(&self) -> u64 {
        self.live_changes.load(Ordering::SeqCst)
    }

    /// The specs at least one published volume uses, ordered by digest.
    pub fn live_specs(&self) -> Vec<VolumeSpec> {
        let specs = self.specs();
        let mut live: Vec<(&SpecDigest, &VolumeSpec)> =
            specs.iter().map(|(digest, spec_use)| (digest, &spec_use.spec)).collect();
        live.sort_by(|a, b| a.0.cmp(b.0));
        live.into_iter().map(|(_, spec)| spec.clone()).collect()
    }

    /// The targets published (or being published) from `digest`.
    pub fn targets_of(&self, digest: &SpecDigest) -> Vec<PathBuf> {
        self.specs().get(digest).map(|spec_use| spec_use.targets.iter().cloned().collect()).unwrap_or_default()
    }

    /// The spec directory of `digest` (it may not exist).
    pub fn spec_dir(&self, digest: &SpecDigest) -> PathBuf {
        self.dir.join(digest.as_str())
    }

    /// Spec-dir errors name the tmpfs, not the file that did not fit.
    pub fn in_store(&self, error: Error) -> Error {
        match error {
            Error::StoreFull { .. } => Error::StoreFull { path: self.root.clone() },
            other => other,
        }
    }

    /// Under the spec lock: renders the spec dir if it does not exist, and puts `target` in the
    /// index, so no unpublish removes the dir until this publish is done or has failed.
    pub fn reserve<R, E>(
        &self,
        target: &Path,
        spec: &VolumeSpec,
        digest: &SpecDigest,
        render: R,
    ) -> Result<Reservation, E>
    where
        R: FnOnce() -> Result<Files, E>,
        E: From<Error>,
    {
        let spec_lock = self.spec_lock(digest);
        let _spec_guard = keyed_locks::lock(&spec_lock);
        let spec_dir = self.spec_dir(digest);
        let rendered = match fs::symlink_metadata(&spec_dir) {
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let files = render()?;
                atomic::create_spec_dir(&self.blobs, &self.dir, digest.as_str(), &files)
                    .map_err(|e| self.in_store(e))?;
                true
            }
            Err(e) => return Err(Error::Io { op: "inspect", path: spec_dir, source: e }.into()),
        };
        let mut specs = self.specs();
        let targets = &mut self.entry(&mut specs, digest, spec).targets;
        let known = !targets.is_empty();
        let new_target = targets.insert(target.to_owned());
        Ok(Reservation { new_target, dir_is_ours: rendered || known })
    }

    /// Takes a failed publish's reservation back; removes the spec dir if that leaves it
    /// unused.
    pub fn release(&self, reservation: &Reservation, target: &Path, digest: &SpecDigest) {
        if !reservation.new_target {
            return;
        }
        let spec_lock = self.spec_lock(digest);
        let _spec_guard = keyed_locks::lock(&spec_lock);
        let unused = self.forget(digest, target);
        if unused
            && reservation.dir_is_ours
            && !self.is_pinned(digest)
            && let Err(e) = atomic::remove_spec_dir(&self.blobs, &self.dir, digest.as_str())
        {
            tracing::warn!(spec = %digest, error = %e, "undo: cannot remove the spec directory");
        }
    }

    /// Takes an unpublished target out, and its spec dir with it when no target is left.
    pub fn remove(&self, digest: &SpecDigest, target: &Path) -> Result<()> {
        let spec_lock = self.spec_lock(digest);
        let _spec_guard = keyed_locks::lock(&spec_lock);
        if self.forget(digest, target) && !self.is_pinned(digest) {
            atomic::remove_spec_dir(&self.blobs, &self.dir, digest.as_str())?;
            tracing::info!(spec = %digest, "removed an unused spec directory");
        }
        Ok(())
    }

    /// Takes `target` out of every spec that holds it (and their spec dirs when that leaves
    /// them unused): for a target whose record is gone while the index still held it (an
    /// unpublish whose unmount failed after the record went).
    pub fn remove_everywhere(&self, target: &Path) -> Result<()> {
        let holders: Vec<SpecDigest> = self
            .specs()
            .iter()
            .filter(|(_, spec_use)| spec_use.targets.contains(target))
            .map(|(digest, _)| digest.clone())
            .collect();
        for digest in holders {
            self.remove(&digest, target)?;
        }
        Ok(())
    }

    /// Removes `target` from the index; true when no target of `digest` is left. Call with the
    /// spec lock held.
    fn forget(&self, digest: &SpecDigest, target: &Path) -> bool {
        let mut specs = self.specs();
        let Some(spec_use) = specs.get_mut(digest) else {
            return true;
        };
        spec_use.targets.remove(target);
        let unused = spec_use.targets.is_empty();
        if unused {
            specs.remove(digest);
            self.live_changes.fetch_add(1, Ordering::SeqCst);
        }
        unused
    }

    /// The entry of `digest` in `specs` (the locked map), made if new.
    fn entry<'a>(
        &self,
        specs: &'a mut HashMap<SpecDigest, SpecUse>,
        digest: &SpecDigest,
        spec: &VolumeSpec,
    ) -> &'a mut SpecUse {
        specs.entry(digest.clone()).or_insert_with(|| {
            self.live_changes.fetch_add(1, Ordering::SeqCst);
            SpecUse { spec: spec.clone(), targets: BTreeSet::new() }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Entry;

    fn files() -> Files {
        Files { entries: vec![("ca-certificates.crt".into(), Entry::File(b"pem".to_vec()))] }
    }

    #[test]
    fn the_live_set_version_moves_only_when_a_spec_joins_or_leaves() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("specs");
        fs::create_dir(&dir).unwrap();
        let index = Index::new(tmp.path().to_owned(), dir, Blobs::open(&tmp.path().join("blobs")).unwrap());
        let (shop, bank) = (
            VolumeSpec { namespace: "shop".into(), ..VolumeSpec::default() },
            VolumeSpec { namespace: "bank".into(), ..VolumeSpec::default() },
        );
        let reserve = |target: &str, spec: &VolumeSpec| {
            index.reserve(Path::new(target), spec, &spec.digest(), || Ok::<_, Error>(files())).map(|_| ()).unwrap();
        };
        let start = index.live_changes();
        reserve("/k/a", &shop);
        let shop_live = index.live_changes();
        assert_ne!(shop_live, start, "a new spec");
        reserve("/k/b", &shop);
        index.insert(&shop.digest(), &shop, PathBuf::from("/k/c"));
        index.remove(&shop.digest(), Path::new("/k/b")).unwrap();
        assert_eq!(index.live_changes(), shop_live, "more and fewer volumes of a live spec");
        reserve("/k/d", &bank);
        let bank_live = index.live_changes();
        assert_ne!(bank_live, shop_live, "another spec");
        index.remove(&shop.digest(), Path::new("/k/a")).unwrap();
        index.remove(&shop.digest(), Path::new("/k/c")).unwrap();
        assert_ne!(index.live_changes(), bank_live, "the last volume of a spec");
        assert_eq!(index.live_specs(), [bank]);
    }
}

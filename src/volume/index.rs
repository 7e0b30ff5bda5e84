//! The index of live specs (spec digest → the spec and the targets published from it) and the
//! reservations a publish holds on its spec directory while it mounts.
//!
//! Under a spec's lock a publish makes sure the spec dir exists and reserves its target here;
//! an unpublish removes a spec dir only when its entry is empty (under the same lock). So a spec
//! dir is rendered once and never removed while a publication of it is under way.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use crate::bundle::Files;
use crate::domain::{SpecDigest, VolumeSpec};
use crate::keyed_locks::{self, KeyedLocks};

use super::blobs::Blobs;
use super::budget::{Budgets, Bytes, Cost};
use super::{Error, Result, atomic, fsutil};

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
    /// What one namespace's specs may take on this node, and the store's rotation reserve
    /// (see [`Index::reserve`]).
    budgets: RwLock<Budgets>,
    /// Per namespace, the specs being published for it now that its pods did not use before:
    /// counted against its budgets before they are in `specs`, so a burst of concurrent
    /// publishes cannot overshoot them.
    pending: Mutex<HashMap<String, Pending>>,
}

/// A namespace's specs on their way into the index (see the field).
#[derive(Debug, Default)]
struct Pending {
    specs: usize,
    cost: Cost,
}

#[derive(Debug)]
struct SpecUse {
    /// Kept so rotation can re-render every live spec without reading the records back.
    spec: VolumeSpec,
    /// Record targets, as the kubelet gave them, plus targets a publish is mounting right now,
    /// each with its pod's namespace.
    targets: BTreeMap<PathBuf, String>,
    /// What its current generation takes; `None` until measured (a spec adopted at start).
    cost: Option<Cost>,
}

impl SpecUse {
    fn used_by(&self, namespace: &str) -> bool {
        self.targets.values().any(|used_by| used_by == namespace)
    }
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
            budgets: RwLock::new(Budgets::default()),
            pending: Mutex::default(),
        }
    }

    pub fn set_budgets(&self, budgets: Budgets) {
        *self.budgets.write().unwrap_or_else(PoisonError::into_inner) = budgets;
    }

    fn budgets(&self) -> Budgets {
        *self.budgets.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims one of `namespace`'s specs for `digest` unless its pods use it already; `None`
    /// when they do (nothing to give back). The claim's cost is charged later, once known
    /// ([`Index::charge`]).
    ///
    /// # Errors
    /// [`Error::OverNamespaceBudget`]: the namespace's pods use as many distinct specs as its
    /// budget, counting those being published for it.
    fn claim_spec(&self, namespace: &str, digest: &SpecDigest) -> Result<Option<SpecClaim<'_>>> {
        let budget = self.budgets().namespace_specs;
        let specs = self.specs();
        if specs.get(digest).is_some_and(|spec_use| spec_use.used_by(namespace)) {
            return Ok(None);
        }
        let mut pending = self.pending();
        let in_use = specs.values().filter(|spec_use| spec_use.used_by(namespace)).count();
        let claimed = pending.get(namespace).map_or(0, |pending| pending.specs);
        if in_use + claimed >= budget {
            return Err(Error::OverNamespaceBudget {
                namespace: namespace.to_owned(),
                budget,
                flag: crate::domain::NAMESPACE_SPECS_FLAG,
            });
        }
        pending.entry(namespace.to_owned()).or_default().specs += 1;
        Ok(Some(SpecClaim { index: self, namespace: namespace.to_owned(), cost: Cost::default() }))
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the specs `namespace`'s pods use take together (specs not measured yet count
    /// nothing).
    fn namespace_cost(specs: &HashMap<SpecDigest, SpecUse>, namespace: &str) -> Cost {
        specs
            .values()
            .filter(|spec_use| spec_use.used_by(namespace))
            .fold(Cost::default(), |sum, spec_use| sum.plus(spec_use.cost.unwrap_or_default()))
    }

    /// Charges a claimed spec's `cost` to its namespace, and, for a spec directory about to be
    /// written (`new_dir`), checks that the store stays under its fill limit.
    ///
    /// # Errors
    /// [`Error::OverNamespaceStore`], [`Error::OverFillLimit`]; the claim is unchanged.
    fn charge(&self, claim: &mut SpecClaim<'_>, cost: Cost, new_dir: bool) -> Result<()> {
        let budgets = self.budgets();
        let specs = self.specs();
        let mut pending = self.pending();
        let namespace = &claim.namespace;
        let claimed = pending.get(namespace).map_or(Cost::default(), |pending| pending.cost);
        budgets.check_namespace(namespace, Self::namespace_cost(&specs, namespace).plus(claimed).plus(cost))?;
        if new_dir {
            // Specs being written count too: statvfs does not see them all yet.
            let writing = pending.values().map(|pending| pending.cost.bytes).sum::<u64>();
            self.check_fill_limit(&budgets, writing + cost.bytes)?;
        }
        pending.entry(namespace.clone()).or_default().cost = claimed.plus(cost);
        claim.cost = cost;
        Ok(())
    }

    /// Refuses `adding` more bytes of new specs past the store's fill limit.
    fn check_fill_limit(&self, budgets: &Budgets, adding: u64) -> Result<()> {
        let space = fsutil::space(&self.dir, &self.root)?;
        let used = space.total_bytes.saturating_sub(space.free_bytes);
        let fill_limit = budgets.fill_limit(space.total_bytes);
        if used.saturating_add(adding) > fill_limit {
            return Err(Error::OverFillLimit {
                path: self.root.clone(),
                used: Bytes(used),
                adding: Bytes(adding),
                fill_limit: Bytes(fill_limit),
                reserve_percent: budgets.rotation_reserve_percent,
                flag: crate::domain::STORE_ROTATION_RESERVE_FLAG,
            });
        }
        Ok(())
    }

    /// The cost of the existing spec dir of `digest`: from the index, or measured on disk (a
    /// dir found at start, or adopted and not measured yet).
    fn known_cost(&self, digest: &SpecDigest) -> Result<Cost> {
        if let Some(cost) = self.specs().get(digest).and_then(|spec_use| spec_use.cost) {
            return Ok(cost);
        }
        let cost = Cost::measure(&self.spec_dir(digest))?;
        if let Some(spec_use) = self.specs().get_mut(digest) {
            spec_use.cost = Some(cost);
        }
        Ok(cost)
    }

    /// Measures every live spec whose cost is not known (adopted at start). A spec dir that
    /// cannot be measured counts nothing until its next generation.
    pub fn measure_adopted(&self) {
        let unmeasured: Vec<SpecDigest> =
            self.specs().iter().filter(|(_, spec_use)| spec_use.cost.is_none()).map(|(d, _)| d.clone()).collect();
        for digest in unmeasured {
            if let Err(e) = self.known_cost(&digest) {
                tracing::warn!(spec = %digest, error = %e, "cannot measure an adopted spec directory");
            }
        }
    }

    /// Before a rotation writes `cost` as the next generation of `digest`: every namespace that
    /// uses the spec must still be within its budgets with the new cost in place of the old.
    /// The new cost is charged at once (so concurrent rotations of one namespace's specs cannot
    /// overshoot together); the old one is returned for [`Index::restore_cost`] if the write
    /// fails. Growth is never refused for the store's fill limit: the reserve is for this.
    ///
    /// # Errors
    /// [`Error::OverNamespaceStore`] for the first namespace the growth would put over.
    pub fn charge_growth(&self, digest: &SpecDigest, cost: Cost) -> Result<Option<Cost>> {
        let budgets = self.budgets();
        let mut specs = self.specs();
        let Some(old) = specs.get(digest).map(|spec_use| spec_use.cost) else {
            return Ok(None);
        };
        let grows = old.is_none_or(|old| cost.bytes > old.bytes || cost.files > old.files);
        if grows {
            let pending = self.pending();
            let namespaces: BTreeSet<&String> = specs[digest].targets.values().collect();
            let current = old.unwrap_or_default();
            for namespace in namespaces {
                let others = Self::namespace_cost(&specs, namespace).minus(current);
                let claimed = pending.get(namespace).map_or(Cost::default(), |pending| pending.cost);
                budgets.check_namespace(namespace, others.plus(claimed).plus(cost))?;
            }
        }
        if let Some(spec_use) = specs.get_mut(digest) {
            spec_use.cost = Some(cost);
        }
        Ok(old)
    }

    /// Puts back the cost [`Index::charge_growth`] replaced, after a failed write.
    pub fn restore_cost(&self, digest: &SpecDigest, old: Option<Cost>) {
        if let Some(spec_use) = self.specs().get_mut(digest) {
            spec_use.cost = old;
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

    /// Adds a recorded publication (at open, before anyone else sees the index). Not charged
    /// to a budget: the volume exists already.
    pub fn insert(&self, digest: &SpecDigest, spec: &VolumeSpec, target: PathBuf, namespace: &str) {
        self.entry(&mut self.specs(), digest, spec).targets.insert(target, namespace.to_owned());
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
        self.specs().get(digest).map(|spec_use| spec_use.targets.keys().cloned().collect()).unwrap_or_default()
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

    /// Under the spec lock: renders the spec dir if it does not exist, and puts `target` (of a
    /// pod in `namespace`) in the index, so no unpublish removes the dir until this publish is
    /// done or has failed. A spec new to `namespace` is charged to its budgets, whether or not
    /// another namespace's pods use it already: first its count of distinct specs (before
    /// anything is rendered), then its cost. A spec dir written anew must also leave the
    /// store's rotation reserve free.
    ///
    /// # Errors
    /// [`Error::OverNamespaceBudget`] before anything is rendered; [`Error::OverNamespaceStore`]
    /// and [`Error::OverFillLimit`] before anything is written; the render's and the store's
    /// errors.
    pub fn reserve<R, E>(
        &self,
        target: &Path,
        namespace: &str,
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
        // Held until the target is in `specs`, where it counts from then on.
        let mut claim = self.claim_spec(namespace, digest)?;
        let spec_dir = self.spec_dir(digest);
        // The cost of a dir written now; an existing dir's is in the index already.
        let (rendered, cost) = match fs::symlink_metadata(&spec_dir) {
            Ok(_) => {
                // Only a spec new to the namespace needs its cost: a warm publish reads nothing.
                if let Some(claim) = claim.as_mut() {
                    let cost = self.known_cost(digest).map_err(|e| self.in_store(e))?;
                    self.charge(claim, cost, false)?;
                }
                (false, None)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let files = render()?;
                let cost = Cost::of(&files);
                // No claim: the namespace uses this spec already and its dir is gone (removed
                // by hand, or adopted from before blobs); writing it again is a repair.
                if let Some(claim) = claim.as_mut() {
                    self.charge(claim, cost, true)?;
                }
                atomic::create_spec_dir(&self.blobs, &self.dir, digest.as_str(), &files)
                    .map_err(|e| self.in_store(e))?;
                (true, Some(cost))
            }
            Err(e) => return Err(Error::Io { op: "inspect", path: spec_dir, source: e }.into()),
        };
        let mut specs = self.specs();
        let spec_use = self.entry(&mut specs, digest, spec);
        if cost.is_some() {
            spec_use.cost = cost;
        }
        let targets = &mut spec_use.targets;
        let known = !targets.is_empty();
        let new_target = targets.insert(target.to_owned(), namespace.to_owned()).is_none();
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
            .filter(|(_, spec_use)| spec_use.targets.contains_key(target))
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
            SpecUse { spec: spec.clone(), targets: BTreeMap::new(), cost: None }
        })
    }
}

/// A spec being published for a namespace that did not use it, counted against its budgets
/// until dropped (by then it is in the index, or it failed).
struct SpecClaim<'a> {
    index: &'a Index,
    namespace: String,
    /// Charged by [`Index::charge`].
    cost: Cost,
}

impl Drop for SpecClaim<'_> {
    fn drop(&mut self) {
        let mut pending = self.index.pending();
        if let Some(entry) = pending.get_mut(&self.namespace) {
            entry.specs = entry.specs.saturating_sub(1);
            entry.cost = entry.cost.minus(self.cost);
            if entry.specs == 0 {
                pending.remove(&self.namespace);
            }
        }
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
            index
                .reserve(Path::new(target), &spec.namespace, spec, &spec.digest(), || Ok::<_, Error>(files()))
                .map(|_| ())
                .unwrap();
        };
        let start = index.live_changes();
        reserve("/k/a", &shop);
        let shop_live = index.live_changes();
        assert_ne!(shop_live, start, "a new spec");
        reserve("/k/b", &shop);
        index.insert(&shop.digest(), &shop, PathBuf::from("/k/c"), "shop");
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

    #[test]
    fn a_namespace_over_its_spec_budget_is_refused_before_rendering_and_others_are_not() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("specs");
        fs::create_dir(&dir).unwrap();
        let index = Index::new(tmp.path().to_owned(), dir, Blobs::open(&tmp.path().join("blobs")).unwrap());
        index.set_budgets(Budgets { namespace_specs: 2, ..Budgets::default() });
        // Three distinct specs (the namespace left out of them, as without podInfoOnMount).
        let spec = |system_roots, keep_expired| VolumeSpec { system_roots, keep_expired, ..VolumeSpec::default() };
        let (first, second, third) = (spec(false, false), spec(true, false), spec(false, true));
        let rendered = std::cell::Cell::new(0);
        let reserve = |target: &str, namespace: &str, spec: &VolumeSpec| {
            index
                .reserve(Path::new(target), namespace, spec, &spec.digest(), || {
                    rendered.set(rendered.get() + 1);
                    Ok::<_, Error>(files())
                })
                .map(|_| ())
        };
        reserve("/k/a", "shop", &first).unwrap();
        reserve("/k/b", "shop", &second).unwrap();
        reserve("/k/c", "shop", &first).expect("a spec the namespace uses already costs nothing");
        let before = rendered.get();
        let over = reserve("/k/d", "shop", &third).unwrap_err();
        assert_eq!(rendered.get(), before, "refused before rendering");
        let message = over.to_string();
        assert!(message.contains("namespace shop use 2 distinct volume specs"), "{message}");
        assert!(message.contains(crate::domain::NAMESPACE_SPECS_FLAG), "{message}");

        reserve("/k/e", "bank", &third).expect("another namespace has a budget of its own");
        assert!(reserve("/k/f", "shop", &third).is_err(), "a spec another namespace rendered is still charged");
        index.remove(&second.digest(), Path::new("/k/b")).unwrap();
        reserve("/k/f", "shop", &third).expect("room again once a spec is no longer used");
        let adopted = third.clone();
        index.insert(&adopted.digest(), &adopted, PathBuf::from("/k/g"), "shop");
        assert_eq!(index.target_count(&third.digest()), 3, "adopted volumes are never refused");
    }
}

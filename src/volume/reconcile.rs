//! Start-up reconciliation: before the driver serves, records, mounts (`/proc/self/mountinfo`)
//! and spec dirs are brought to agree, so every volume is either published (mounted read-only
//! from a complete spec dir, with a published record) or cleanly absent (no mount, no record,
//! no target dir), whatever instant a crash (`kill -9`, OOM) hit.
//!
//! A mount is ours when it is a bind of a directory of the driver's tmpfs below `specs/` (its
//! mountinfo device is the tmpfs's and its root is `/specs/<name>` or below, `//deleted` appended
//! once that directory is gone). The rules:
//!
//! - a record that cannot be read is moved to `volumes/corrupt/` and logged; its mount, if any,
//!   is then a mount without a record;
//! - a record of an older format is read as it is (see [`format`](super::format)); one of a
//!   newer format (a downgrade) is not corrupt: it stays where it is, its volume is not touched,
//!   and while any such record exists no mount without a record is unmounted (it may be the one
//!   that record names);
//! - a mount of ours without a record is unmounted and its (empty) target dir removed, when it
//!   is in a pod's `volumes/` dir (the kubelet's `subPath` binds elsewhere are left, and keep
//!   their spec dir);
//! - a pending record whose target has exactly one mount, ours, of its spec dir, complete, is
//!   completed (made read-only if the crash came before that, then marked published); otherwise
//!   it is rolled back (our mount off, the target dir and the record removed): the kubelet was
//!   never told, and retries;
//! - a published record whose mount is that is kept; one whose mount is missing or wrong (the
//!   spec dir deleted under it, another spec) is mounted again when its spec dir is complete,
//!   else dropped;
//! - spec dirs are kept when a surviving record names them or any mount of ours still binds
//!   them (a mount this driver cannot touch, outside the kubelet dir, keeps its spec dir); the
//!   kept ones are repaired (stray generations, visible links), the rest removed; then blobs
//!   nothing links are swept.
//!
//! Why each crash point ends in one of the two states:
//!
//! - Publish: reserve (spec dir made as `.tmp-*`, renamed to its digest when whole), pending
//!   record (temp file + rename to `.pending`), target dir, bind, read-only remount, published
//!   record (renamed to `.json`). Before the pending record: nothing names the target; a `.tmp-*` or unused spec dir is
//!   removed. Pending without a mount: rolled back. Pending with a mount (read-write or not):
//!   completed. Published: kept. The reported bug (a mount on an emptied spec dir with no record)
//!   came from mounting before recording and then removing the spec dir no record named; now no
//!   mount exists without a record naming it, and no mounted spec dir is removed.
//! - Unpublish: record removed, unmount, target dir removed, spec dir removed if unused. After
//!   the record went: a mount without a record, unmounted at start: the unpublish finishes, and
//!   the kubelet's retry finds nothing (OK).
//! - Spec dir removal (unpublish, a failed publish): renamed to `.tmp-gone-*` under the spec
//!   lock, then removed; a crash leaves the `.tmp-*` name, removed at start, never a half-removed
//!   dir under a digest's name.
//! - Refresh: a new generation written beside the current one, `..data` swapped by one rename,
//!   visible links brought in line, the old generation removed. Before the swap: a stray
//!   generation (removed at start), the old content in place. After: the new content, with
//!   possibly a missing or a dangling visible link (repaired at start) and the old generation
//!   (removed). Records do not change, so no volume changes state.
//! - Start-up itself: each step above leaves one of these states (a completion remounts
//!   read-only before it marks the record published; a rollback unmounts before it removes the
//!   record), so a crash during the reconciliation is reconciled by the next start.
//! - Blobs: written as `.tmp-*` and renamed into place; a spec dir holds hard links, so removing
//!   a blob name never changes what a volume shows. A crash leaves temporaries or blobs with no
//!   other link, swept at start after the unused spec dirs went.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::domain::SpecDigest;

use super::index::Index;
use super::mountinfo::{self, MountEntry};
use super::record::{self, Record, State};
use super::target::{Found, TARGET_DIR_MODE, Target, Targets};
use super::unmount::unmount_all;
use super::{Error, Result, atomic, fsutil};

/// Where things are, for the reconciliation.
pub(super) struct Layout<'a> {
    /// `<state_dir>/volumes`.
    pub records: &'a Path,
    /// `<state_dir>/tmpfs`, the tmpfs's own mount point.
    pub tmpfs: &'a Path,
    /// The spec dirs' directory inside the tmpfs (`specs`).
    pub specs_name: &'a str,
}

/// What the reconciliation did, for the start-up log line.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Published records whose mount was in place.
    pub adopted: usize,
    /// Pending records whose mount was in place: now published.
    pub completed: usize,
    /// Published records whose mount was missing or wrong: mounted again.
    pub remounted: usize,
    /// Pending records rolled back.
    pub rolled_back: usize,
    /// Published records that could not be mounted again (their spec dir is gone).
    pub dropped: usize,
    /// Mounts of ours that no record named, unmounted.
    pub unmounted: usize,
    /// Unreadable records moved aside.
    pub corrupt: usize,
    /// Records of a newer format, left with their volumes as they are.
    pub newer: usize,
    /// Records left as they were (their target cannot be checked, or a step failed).
    pub left: usize,
}

/// One mount of a directory of the driver's tmpfs below `specs/`.
struct OurMount<'a> {
    /// The spec dir's name below `specs/` (a digest, or a `.tmp-*` name).
    name: &'a str,
    /// The spec dir itself, not a directory inside it (the kubelet binds those for `subPath`).
    whole: bool,
    deleted: bool,
}

struct Reconciler<'a> {
    layout: &'a Layout<'a>,
    targets: &'a Targets,
    index: &'a Index,
    /// `major:minor` of the driver's tmpfs; `None` if it is not in the mount table.
    device: Option<String>,
    /// `/<specs_name>/`: how the roots of our mounts start.
    root_prefix: String,
    /// Unix seconds of this start, in the names of records moved aside.
    now: u64,
    outcome: Outcome,
}

/// Brings records, mounts and spec dirs to agree (see the module doc), and puts the surviving
/// records in `index`. Failures about one volume are logged and leave it as it was; only a
/// records dir or a mount table that cannot be read at all is an error.
///
/// # Errors
/// The records dir cannot be listed, or `/proc/self/mountinfo` cannot be read.
pub(super) fn reconcile(layout: &Layout<'_>, targets: &Targets, index: &Index, now: u64) -> Result<Outcome> {
    let table = mountinfo::mounts()?;
    let device = table
        .iter()
        .rev()
        .find(|m| m.mount_point == layout.tmpfs && m.fs_type == "tmpfs" && m.root == Path::new("/"))
        .map(|m| m.device.clone());
    if device.is_none() {
        tracing::warn!(path = %layout.tmpfs.display(), "the driver's tmpfs is not in the mount table; no mount is taken for ours");
    }
    let mut reconciler = Reconciler {
        layout,
        targets,
        index,
        device,
        root_prefix: format!("/{}/", layout.specs_name),
        now,
        outcome: Outcome::default(),
    };
    let records = reconciler.load_records()?;
    reconciler.repair_candidates(&records, &table);

    let mut at: HashMap<&Path, Vec<&MountEntry>> = HashMap::new();
    for entry in &table {
        at.entry(entry.mount_point.as_path()).or_default().push(entry);
    }
    let mut survivors = Vec::new();
    let mut checked: HashSet<PathBuf> = HashSet::new();
    for rec in records {
        let target = match targets.resolve(&rec.target) {
            Ok(target) => target,
            Err(error) => {
                tracing::warn!(target = %rec.target.display(), %error, "cannot check the target of a record; leaving it as it is");
                reconciler.outcome.left += 1;
                survivors.push(rec);
                continue;
            }
        };
        checked.insert(target.resolved().to_owned());
        let mounts = at.get(target.resolved()).map(Vec::as_slice).unwrap_or_default();
        match reconciler.volume(rec.clone(), &target, mounts) {
            Ok(Some(kept)) => survivors.push(kept),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(target = %rec.target.display(), %error, "cannot reconcile a volume; leaving it as it is");
                reconciler.outcome.left += 1;
                survivors.push(rec);
            }
        }
    }
    reconciler.unmount_unrecorded(&table, &checked);

    // The mounts as they are now: what still binds a spec dir keeps it.
    let mut keep: BTreeSet<String> = survivors.iter().map(|rec| rec.digest.as_str().to_owned()).collect();
    for entry in &mountinfo::mounts()? {
        if let Some(ours) = reconciler.ours(entry)
            && !ours.deleted
        {
            keep.insert(ours.name.to_owned());
        }
    }
    reconciler.collect_spec_dirs(&keep);
    index.blobs().sweep();
    let recorded: BTreeSet<&str> = survivors.iter().map(|rec| rec.digest.as_str()).collect();
    for name in keep.iter().filter(|name| !recorded.contains(name.as_str())) {
        if let Some(digest) = SpecDigest::parse(name) {
            index.pin(digest);
        }
    }
    for rec in survivors {
        index.insert(&rec.digest, &rec.spec, rec.target, &rec.pod.namespace);
    }
    Ok(reconciler.outcome)
}

impl Reconciler<'_> {
    fn ours<'m>(&self, entry: &'m MountEntry) -> Option<OurMount<'m>> {
        if self.device.as_deref() != Some(entry.device.as_str()) {
            return None;
        }
        let root = entry.root.to_str()?;
        let below = root.strip_prefix(&self.root_prefix)?;
        let (below, deleted) = match below.strip_suffix("//deleted") {
            Some(below) => (below, true),
            None => (below, false),
        };
        let (name, inside) = below.split_once('/').unwrap_or((below, ""));
        (!name.is_empty()).then_some(OurMount { name, whole: inside.is_empty(), deleted })
    }

    /// Every record, with the unreadable ones moved aside.
    fn load_records(&mut self) -> Result<Vec<Record>> {
        let dir = self.layout.records;
        let mut records = Vec::new();
        for (path, loaded) in record::load_all(dir)? {
            match loaded {
                Ok(rec) => records.push(rec),
                Err(error @ Error::NewerRecord { .. }) => {
                    self.outcome.newer += 1;
                    tracing::warn!(
                        path = %path.display(),
                        %error,
                        "left a record of a newer format and its volume as they are; run the newer trustmount that wrote it, or unpublish the volume with it before downgrading"
                    );
                }
                Err(error) => {
                    self.outcome.corrupt += 1;
                    match record::move_aside(dir, &path, self.now) {
                        Ok(aside) => tracing::error!(
                            path = %path.display(),
                            aside = %aside.display(),
                            %error,
                            "moved an unreadable record aside; a volume mounted at its target is unmounted, and the kubelet's next publish mounts it again"
                        ),
                        Err(move_error) => tracing::error!(
                            path = %path.display(),
                            %error,
                            %move_error,
                            "an unreadable record cannot be moved aside; ignoring it"
                        ),
                    }
                }
            }
        }
        Ok(records)
    }

    /// Repairs, before anything is mounted from them, the spec dirs a record or a mount names.
    fn repair_candidates(&self, records: &[Record], table: &[MountEntry]) {
        let mut names: BTreeSet<&str> = records.iter().map(|rec| rec.digest.as_str()).collect();
        names.extend(table.iter().filter_map(|m| self.ours(m)).filter(|m| !m.deleted).map(|m| m.name));
        for name in names {
            let spec_dir = self.index.dir().join(name);
            if SpecDigest::parse(name).is_some()
                && atomic::is_complete(&spec_dir)
                && let Err(error) = atomic::repair(self.index.blobs(), &spec_dir)
            {
                tracing::warn!(path = %spec_dir.display(), %error, "cannot repair a spec directory");
            }
        }
    }

    /// One record and the mounts at its target (bottom first): the record to keep, or `None`
    /// when it is gone.
    fn volume(&mut self, mut rec: Record, target: &Target, mounts: &[&MountEntry]) -> Result<Option<Record>> {
        let spec_dir = self.index.spec_dir(&rec.digest);
        let complete = atomic::is_complete(&spec_dir);
        let ours: Vec<OurMount<'_>> = mounts.iter().filter_map(|m| self.ours(m)).collect();
        let in_place = complete
            && mounts.len() == 1
            && ours.first().is_some_and(|m| m.whole && !m.deleted && m.name == rec.digest.as_str());
        if in_place {
            if !mounts[0].read_only {
                target.remount_read_only()?;
            }
            if rec.state == State::Pending {
                record::mark_published(self.layout.records, &rec.target)?;
                rec.state = State::Published;
                tracing::info!(volume_id = %rec.volume_id, target = %rec.target.display(), "completed a publish a crash interrupted");
                self.outcome.completed += 1;
            } else {
                self.outcome.adopted += 1;
            }
            return Ok(Some(rec));
        }
        if ours.is_empty() && !mounts.is_empty() && rec.state == State::Published {
            // Mounted, but not from this store (a store of the layout before blobs): trusted,
            // as the record says it is published.
            self.outcome.adopted += 1;
            return Ok(Some(rec));
        }
        if !ours.is_empty() {
            unmount_all(target)?;
        }
        if rec.state == State::Published && complete {
            match mount(target, &spec_dir) {
                Ok(()) => {
                    tracing::info!(volume_id = %rec.volume_id, target = %rec.target.display(), "mounted a recorded volume again");
                    self.outcome.remounted += 1;
                    return Ok(Some(rec));
                }
                Err(error) => {
                    tracing::warn!(volume_id = %rec.volume_id, target = %rec.target.display(), %error, "cannot mount a recorded volume again; dropping its record");
                }
            }
        }
        target.remove_empty_dir();
        record::remove(self.layout.records, &rec.target)?;
        if rec.state == State::Pending {
            tracing::info!(volume_id = %rec.volume_id, target = %rec.target.display(), "rolled back a publish a crash interrupted");
            self.outcome.rolled_back += 1;
        } else {
            tracing::warn!(volume_id = %rec.volume_id, target = %rec.target.display(), "dropped the record of a volume that cannot be mounted again; the kubelet's next publish mounts it");
            self.outcome.dropped += 1;
        }
        Ok(None)
    }

    /// Unmounts every mount of ours at a path no record named (`checked` holds those that
    /// one did), and removes its target dir.
    fn unmount_unrecorded(&mut self, table: &[MountEntry], checked: &HashSet<PathBuf>) {
        let mut seen = HashSet::new();
        for entry in table {
            if self.ours(entry).is_none()
                || checked.contains(&entry.mount_point)
                || !seen.insert(entry.mount_point.as_path())
            {
                continue;
            }
            let point = &entry.mount_point;
            if self.outcome.newer > 0 {
                tracing::warn!(target = %point.display(), "a mount of the store that no record this driver reads names; leaving it, since a record of a newer format may name it");
                continue;
            }
            if !self.targets.is_volume_path(point) {
                tracing::warn!(target = %point.display(), "a mount of the store outside the pods' volume dirs (a subPath bind, or by hand); leaving it and its spec directory");
                continue;
            }
            let unmounted = self.targets.resolve(point).and_then(|target| {
                unmount_all(&target)?;
                target.remove_empty_dir();
                Ok(())
            });
            match unmounted {
                Ok(()) => {
                    tracing::info!(target = %point.display(), "unmounted a volume no record names");
                    self.outcome.unmounted += 1;
                }
                Err(error) => {
                    tracing::warn!(target = %point.display(), %error, "cannot unmount a mount of the store that no record names; its spec directory stays");
                }
            }
        }
    }

    /// Removes every entry of the spec dirs' directory not in `keep` that is ours (a `.tmp-*`
    /// name or a digest).
    fn collect_spec_dirs(&self, keep: &BTreeSet<String>) {
        let dir = self.index.dir();
        let entries = match fs::read_dir(dir).and_then(|e| e.collect::<std::io::Result<Vec<_>>>()) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(path = %dir.display(), %error, "cannot list the store for cleanup");
                return;
            }
        };
        for entry in entries {
            let path = entry.path();
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                tracing::warn!(path = %path.display(), "unexpected entry in the store; leaving it");
                continue;
            };
            let digest = SpecDigest::parse(name);
            let result = if keep.contains(name) {
                // A kept digest was named by a record or a mount at the start, so it is repaired.
                if digest.is_none() {
                    tracing::warn!(path = %path.display(), "keeping a half-made or half-removed spec directory: it is still mounted");
                }
                Ok(())
            } else if name.starts_with(atomic::TMP_PREFIX) {
                tracing::info!(path = %path.display(), "removing a half-made or half-removed spec directory");
                // Its blobs go with the sweep that follows.
                fsutil::remove_tree(&path)
            } else if digest.is_some() {
                tracing::info!(path = %path.display(), "removing a spec directory no volume uses");
                atomic::remove_spec_dir(self.index.blobs(), dir, name)
            } else {
                tracing::warn!(path = %path.display(), "unexpected entry in the store; leaving it");
                Ok(())
            };
            if let Err(error) = result {
                tracing::warn!(path = %path.display(), %error, "store cleanup failed");
            }
        }
    }
}

/// Mounts `spec_dir` read-only on `target` (making the target dir if it is missing), or leaves
/// nothing mounted.
fn mount(target: &Target, spec_dir: &Path) -> Result<()> {
    match target.found()? {
        Found::Directory => {}
        Found::Nothing => {
            target.create_dir(TARGET_DIR_MODE)?;
            target.set_mode(TARGET_DIR_MODE)?;
        }
        Found::Other => {
            return Err(Error::Io {
                op: "mount onto",
                path: target.resolved().to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "the target is not a directory"),
            });
        }
    }
    target.bind(spec_dir)?;
    if let Err(e) = target.remount_read_only() {
        let _ = unmount_all(target);
        return Err(e);
    }
    Ok(())
}

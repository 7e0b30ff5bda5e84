//! The store's flows, each run whole on a blocking thread: publish (reserve the spec dir, record
//! the intent, mount, record it published; a failure takes back its own steps), unpublish
//! (forget the record, then unmount), refresh and stats. The order of each is what makes every
//! crash point recoverable at start: see [`reconcile`](super::reconcile).

use std::io;
use std::path::Path;

use crate::bundle::Files;
use crate::domain::{SpecDigest, VolumeSpec};
use crate::keyed_locks;

use super::budget::Cost;
use super::record::{self, Record, State};
use super::store::{Inner, unix_seconds};
use super::target::{Found, TARGET_DIR_MODE, Target};
use super::unmount::unmount_all;
use super::{Difference, Differences, Error, Publication, Result, VolumeStats, atomic, fsutil};

/// What one publish call made on the target, so a failure can take exactly that back.
#[derive(Default)]
struct Undo {
    target_dir: bool,
    mounted: bool,
    /// A pending record was written (a publish that was already recorded writes none).
    pending: bool,
}

impl Differences {
    /// How `publication` differs from the record already at its target.
    fn between(rec: &Record, publication: &Publication, digest: &SpecDigest) -> Self {
        let mut differences = Vec::new();
        if rec.volume_id != publication.volume_id {
            differences.push(Difference::VolumeId { requested: publication.volume_id.clone() });
        }
        if rec.digest != *digest {
            differences.push(Difference::Attributes);
        }
        if rec.readonly != publication.readonly {
            differences.push(Difference::Readonly { existing: rec.readonly });
        }
        Self(differences)
    }
}

impl Inner {
    pub(super) fn publish<R, E>(&self, publication: Publication, render: R) -> Result<(), E>
    where
        R: FnOnce() -> Result<Files, E>,
        E: From<Error>,
    {
        let target = self.targets.resolve(&publication.target)?;
        let target_lock = self.target_locks.get(&publication.target);
        let _target_guard = keyed_locks::lock(&target_lock);

        let digest = publication.spec.digest();
        let mut recorded = false;
        match record::load(&self.records, &publication.target)? {
            Some(rec) if rec.state == State::Published => {
                let differences = Differences::between(&rec, &publication, &digest);
                if !differences.0.is_empty() {
                    return Err(Error::AlreadyPublished {
                        target: publication.target,
                        existing_volume_id: rec.volume_id,
                        differences,
                    }
                    .into());
                }
                if target.is_mounted()? {
                    tracing::debug!(volume_id = %publication.volume_id, target = %publication.target.display(), "already published");
                    return Ok(());
                }
                tracing::info!(volume_id = %publication.volume_id, target = %publication.target.display(), "recorded but not mounted; mounting again");
                recorded = true;
            }
            Some(rec) => {
                // Pending: an earlier publish that never answered OK and could not take its own
                // steps back. Nobody was told it is published: take it back, then start afresh.
                tracing::warn!(volume_id = %rec.volume_id, target = %publication.target.display(), "an earlier publish of this target did not finish; taking it back");
                self.take_back(&rec, &target)?;
            }
            None => {}
        }

        let reservation =
            self.index.reserve(&publication.target, &publication.pod.namespace, &publication.spec, &digest, render)?;
        let mut undo = Undo::default();
        let rec = Record {
            volume_id: publication.volume_id.clone(),
            target: publication.target.clone(),
            readonly: publication.readonly,
            spec: publication.spec.clone(),
            digest: digest.clone(),
            pod: publication.pod.clone(),
            published_at: unix_seconds(&self.clock),
            state: if recorded { State::Published } else { State::Pending },
        };
        match self.record_and_mount(rec, &target, &digest, &mut undo) {
            Ok(()) => {
                // The call's own line (csi/) says it answered; this one adds the spec, for debugging.
                tracing::debug!(
                    volume_id = %publication.volume_id,
                    target = %publication.target.display(),
                    spec = %digest,
                    "published"
                );
                Ok(())
            }
            Err(e) => {
                if self.undo(&undo, &target) {
                    self.index.release(&reservation, &publication.target, &digest);
                }
                Err(self.index.in_store(e).into())
            }
        }
    }

    /// The part of a publish after the reservation, under the target lock only: the intent
    /// (a pending record), the read-only mount, then the record marked published.
    fn record_and_mount(&self, rec: Record, target: &Target, digest: &SpecDigest, undo: &mut Undo) -> Result<()> {
        if rec.state == State::Pending {
            record::write(&self.records, &rec)?;
            undo.pending = true;
        }
        match target.found()? {
            Found::Directory => {}
            Found::Other => {
                return Err(Error::Io {
                    op: "mount onto",
                    path: target.resolved().to_owned(),
                    source: io::Error::new(io::ErrorKind::NotADirectory, "the target exists and is not a directory"),
                });
            }
            Found::Nothing => {
                target.create_dir(TARGET_DIR_MODE)?;
                undo.target_dir = true;
                target.set_mode(TARGET_DIR_MODE)?;
            }
        }

        // A mount without a record (made by hand, or left by a driver before intent records).
        // Replace it. (A directory made just now holds no mount.)
        if !undo.target_dir && target.is_mounted()? {
            tracing::warn!(target = %target.resolved().display(), "target is mounted but not recorded; unmounting it first");
            unmount_all(target)?;
        }

        target.bind(&self.index.spec_dir(digest))?;
        undo.mounted = true;
        target.remount_read_only()?;

        if rec.state == State::Pending {
            record::mark_published(&self.records, &rec.target)?;
        }
        Ok(())
    }

    /// Takes back what a failed publish did to its target and its record. False when the mount
    /// could not be taken off: the pending record then stays (and the caller keeps its
    /// reservation, so the spec dir stays), and the next publish, unpublish or start finishes it.
    fn undo(&self, undo: &Undo, target: &Target) -> bool {
        if undo.mounted
            && let Err(e) = unmount_all(target)
        {
            tracing::warn!(target = %target.resolved().display(), error = %e, "undo: cannot unmount; leaving the publish pending");
            return false;
        }
        if undo.target_dir
            && let Err(e) = target.remove_dir()
        {
            tracing::warn!(target = %target.resolved().display(), error = %e, "undo: cannot remove the target");
        }
        if undo.pending
            && let Err(e) = record::remove(&self.records, target.given())
        {
            // Pending and not mounted: the next publish or start takes it back.
            tracing::warn!(target = %target.resolved().display(), error = %e, "undo: cannot remove the pending record");
        }
        true
    }

    /// Rolls back a pending publication found at run time: unmount, then the record (a crash
    /// between them leaves a pending record without a mount, which start-up rolls back too),
    /// then its place in the index.
    fn take_back(&self, rec: &Record, target: &Target) -> Result<()> {
        unmount_all(target)?;
        target.remove_empty_dir();
        record::remove(&self.records, target.given())?;
        self.index.remove(&rec.digest, target.given())
    }

    pub(super) fn refresh<R, E>(&self, spec: &VolumeSpec, render: R) -> Result<bool, E>
    where
        R: FnOnce() -> Result<Files, E>,
        E: From<Error>,
    {
        let digest = spec.digest();
        let spec_lock = self.index.spec_lock(&digest);
        let _spec_guard = keyed_locks::lock(&spec_lock);
        if !self.index.contains(&digest) {
            return Ok(false);
        }
        let files = render()?;
        // A spec that outgrows a namespace's budget keeps its current generation (and the
        // rotation reports the reason on its volumes).
        let old_cost = self.index.charge_growth(&digest, Cost::of(&files))?;
        let spec_dir = self.index.spec_dir(&digest);
        let written = if spec_dir.exists() {
            atomic::write_generation(self.index.blobs(), &spec_dir, &files, &|path| self.retired.is_recent(path))
                .map(|swapped_out| swapped_out.into_iter().for_each(|generation| self.retired.add(generation)))
        } else {
            // A live spec without its directory: adopted from a store of the layout before
            // blobs (its volumes are bound to the old tmpfs underneath), or removed by hand.
            // New publishes of the spec then find it.
            tracing::warn!(spec = %digest, "a live spec has no directory; writing it again");
            atomic::create_spec_dir(self.index.blobs(), self.index.dir(), digest.as_str(), &files).map(|_| ())
        };
        if let Err(e) = written {
            self.index.restore_cost(&digest, old_cost);
            return Err(self.index.in_store(e).into());
        }
        // The rotation pass logs one line for all the specs it refreshed.
        tracing::debug!(spec = %digest, "spec refreshed");
        Ok(true)
    }

    /// Removes the generations of `digest` whose grace (`retired::GRACE`) is over.
    pub(super) fn sweep(&self, digest: &SpecDigest) -> Result<()> {
        let spec_lock = self.index.spec_lock(digest);
        let _spec_guard = keyed_locks::lock(&spec_lock);
        let spec_dir = self.index.spec_dir(digest);
        self.retired.expire(&spec_dir);
        if !self.index.contains(digest) || !spec_dir.exists() {
            return Ok(());
        }
        atomic::remove_stray_generations(self.index.blobs(), &spec_dir, &|path| self.retired.is_recent(path))
            .map_err(|e| self.index.in_store(e))
    }

    pub(super) fn unpublish(&self, volume_id: &str, target: &Path) -> Result<()> {
        let target = self.targets.resolve(target)?;
        let given = target.given();
        let target_lock = self.target_locks.get(given);
        let _target_guard = keyed_locks::lock(&target_lock);

        let Some(rec) = record::load(&self.records, given)? else {
            // No record: nothing of ours, unless an unpublish lost it and then failed to
            // unmount (or a driver before intent records crashed after mounting).
            if target.is_mounted()? {
                tracing::warn!(volume_id, target = %given.display(), "unmounting a target without a record");
                unmount_all(&target)?;
            }
            target.remove_empty_dir();
            return self.index.remove_everywhere(given);
        };
        if rec.volume_id != volume_id {
            tracing::warn!(
                volume_id,
                recorded = %rec.volume_id,
                target = %given.display(),
                "unpublish of a volume that is not the one at this target; leaving it"
            );
            return Ok(());
        }

        // The record goes first: from here on a crash leaves a mount without a record, which
        // start-up unmounts, so an interrupted unpublish finishes instead of coming back.
        record::remove(&self.records, given)?;
        if let Err(e) = unmount_all(&target) {
            // Still mounted: describe it again, so the kubelet's retry (or a start) finds it.
            if let Err(restore) = record::write(&self.records, &rec) {
                tracing::warn!(target = %given.display(), error = %restore, "cannot restore the record of a volume that could not be unmounted");
            }
            return Err(e);
        }
        target.remove_empty_dir();
        // Only the index and the spec dir need the spec lock: the target is ours alone.
        self.index.remove(&rec.digest, given)?;
        tracing::debug!(volume_id, target = %given.display(), "unpublished");
        Ok(())
    }

    pub(super) fn stats(&self, volume_id: &str, path: &Path) -> Result<VolumeStats> {
        // A record is looked up by the exact path: one that is relative or unclean names none
        // (publish refuses those), so it is NOT_FOUND like any path without this volume.
        let not_published = || Error::NotPublished { volume_id: volume_id.to_owned(), path: path.to_owned() };
        let rec = record::load(&self.records, path)?
            .filter(|rec| rec.volume_id == volume_id && rec.state == State::Published)
            .ok_or_else(not_published)?;
        let generation = atomic::current_generation(&self.index.spec_dir(&rec.digest))?;
        let (used_bytes, used_inodes) = atomic::usage(&generation)?;
        let space = fsutil::space(&self.root, &self.root)?;
        Ok(VolumeStats {
            spec: rec.spec,
            digest: rec.digest,
            used_bytes,
            total_bytes: space.total_bytes,
            available_bytes: space.available_bytes,
            used_inodes,
            total_inodes: space.total_inodes,
            available_inodes: space.available_inodes,
        })
    }
}

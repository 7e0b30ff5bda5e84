//! One record per volume, keyed by target path, in `<state_dir>/volumes/`. A publish writes it
//! [`State::Pending`] (`<name>.pending`) before it mounts (the intent) and renames it
//! [`State::Published`] (`<name>.json`) once the mount is read-only, so at every instant a crash can hit, what is mounted is named by a record; start-up
//! ([`reconcile`](super::reconcile)) completes or rolls back what a crash left pending. Written
//! atomically (temporary file, rename), so after a driver crash a record is either the old one,
//! the new one, or absent — never half-written. A record that cannot be read is moved aside to
//! `corrupt/` at start, never a reason not to start; one of a newer format is left alone. The
//! bytes are [`format::record`]'s business.
//!
//! No fsync: a record describes a mount, and mounts die with the kernel. It must outlive the
//! driver process (`kill -9`, an OOM kill, a rolling update), which the page cache guarantees,
//! rename included; after a power loss or a kernel crash the mounts and the tmpfs it would
//! describe are gone anyway, start-up drops the records (their spec dirs are gone) and moves aside
//! a torn one, and the kubelet publishes again. An fsync of the file and of the directory would
//! cost every publish two disk flushes (10.7 ms against 2.2 ms per record write on the CI
//! machine's ext4) for no state it could recover. The state is in the file name, not the content,
//! so marking a record published is one rename onto a new name: a second write renamed over the
//! first would make ext4 flush its data (`auto_da_alloc`), which quadrupled the warm publish
//! latency with 32 in flight.

use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::domain::{PodInfo, SpecDigest, VolumeSpec};

use super::{Error, Result, format};

const EXTENSION: &str = "json";
const PENDING_EXTENSION: &str = "pending";
const TMP_PREFIX: &str = ".tmp-";
/// Below the records dir: records that could not be read, kept for a person to look at.
pub const CORRUPT_DIR: &str = "corrupt";

/// How far the publish a record describes got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum State {
    /// Written before the mount: the target may or may not be mounted yet, and the kubelet has
    /// not been told it is published.
    Pending,
    /// The mount is in place and read-only.
    #[default]
    Published,
}

/// What the driver remembers about one published volume; on disk as `format::record` spells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub volume_id: String,
    pub target: PathBuf,
    pub readonly: bool,
    pub spec: VolumeSpec,
    pub digest: SpecDigest,
    pub pod: PodInfo,
    /// Unix seconds.
    pub published_at: u64,
    /// From the file name, not the content.
    pub state: State,
}

/// `<dir>/<first 32 hex digits of sha256(target)>.json`: the published record's file.
pub fn path_for(dir: &Path, target: &Path) -> PathBuf {
    path_in_state(dir, target, State::Published)
}

/// The file of `target`'s record in `state` (`.pending` or `.json`).
fn path_in_state(dir: &Path, target: &Path, state: State) -> PathBuf {
    let hash = Sha256::digest(target.as_os_str().as_bytes());
    let name = hex::encode(&hash[..16]);
    let extension = match state {
        State::Pending => PENDING_EXTENSION,
        State::Published => EXTENSION,
    };
    dir.join(format!("{name}.{extension}"))
}

/// The state a record file's name says, if it is one.
fn state_of(path: &Path) -> Option<State> {
    match path.extension()?.to_str()? {
        EXTENSION => Some(State::Published),
        PENDING_EXTENSION => Some(State::Pending),
        _ => None,
    }
}

/// Records live on the real disk: ENOSPC there is not the tmpfs being full.
fn io_error(op: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io { op, path: path.to_owned(), source }
}

fn record_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Record {
        path: path.to_owned(),
        reason: format!("{reason}; remove the file if no volume is mounted at its target"),
    }
}

/// Reads and checks one record file: it must parse as a record of a known format, its digest
/// must match its spec, and its name must match its target (so a copied or renamed record is
/// never trusted).
///
/// # Errors
/// [`Error::NewerRecord`] for a record of a newer format (not damaged: leave it and its volume
/// alone); [`Error::Record`] for anything else that is not a good record.
pub fn read(path: &Path) -> Result<Record> {
    let state = state_of(path).ok_or_else(|| record_error(path, "its name is not that of a record"))?;
    let bytes = fs::read(path).map_err(|e| io_error("read", path, e))?;
    let (mut record, _version) = format::decode(&bytes).map_err(|e| match e {
        newer @ format::Error::Newer { .. } => Error::NewerRecord { path: path.to_owned(), source: newer },
        other => record_error(path, other),
    })?;
    record.state = state;
    if SpecDigest::parse(record.digest.as_str()).is_none() || record.digest != record.spec.digest() {
        return Err(record_error(path, "its spec digest does not match its spec"));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    if path_in_state(dir, &record.target, state) != path {
        return Err(record_error(path, "its file name does not match its target"));
    }
    Ok(record)
}

/// The record for `target`, if any: the published one, else a pending one.
pub fn load(dir: &Path, target: &Path) -> Result<Option<Record>> {
    for state in [State::Published, State::Pending] {
        let path = path_in_state(dir, target, state);
        match fs::symlink_metadata(&path) {
            Ok(_) => return read(&path).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("inspect", &path, e)),
        }
    }
    Ok(None)
}

/// Every record file in `dir` with what reading it gave. Removes temporary files a crash left.
pub fn load_all(dir: &Path) -> Result<Vec<(PathBuf, Result<Record>)>> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| io_error("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list", dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        if name.as_bytes().starts_with(TMP_PREFIX.as_bytes()) {
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a temporary record");
            }
            continue;
        }
        match state_of(&path) {
            // A published record beside it wins: it is the newer (a pending one is only ever
            // written where none is published).
            Some(State::Pending) if path.with_extension(EXTENSION).exists() => {
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a superseded pending record");
                }
            }
            Some(_) => {
                let record = read(&path);
                out.push((path, record));
            }
            None => {}
        }
    }
    Ok(out)
}

/// Writes `record` atomically, under the name of its state.
pub fn write(dir: &Path, record: &Record) -> Result<()> {
    let path = path_in_state(dir, &record.target, record.state);
    let json = format::encode(record).map_err(|e| record_error(&path, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| io_error("create a temporary record in", dir, e))?;
    tmp.write_all(&json).map_err(|e| io_error("write", tmp.path(), e))?;
    tmp.persist(&path).map_err(|e| io_error("rename a record to", &path, e.error))?;
    Ok(())
}

/// Moves an unreadable record file to `<dir>/corrupt/` (under a name not taken yet), so start-up
/// goes on without it and a person can still read it; `now` (Unix seconds) is in its name.
/// Returns where it went.
///
/// # Errors
/// The `corrupt` directory cannot be made or the file cannot be moved.
pub fn move_aside(dir: &Path, path: &Path, now: u64) -> Result<PathBuf> {
    let corrupt = dir.join(CORRUPT_DIR);
    match fs::create_dir(&corrupt) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error("create", &corrupt, e)),
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for attempt in 0..1000u32 {
        let aside = corrupt.join(format!("{name}.{now}.{attempt}"));
        match fs::symlink_metadata(&aside) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::rename(path, &aside).map_err(|e| io_error("move aside", path, e))?;
                return Ok(aside);
            }
            Err(e) => return Err(io_error("inspect", &aside, e)),
            Ok(_) => {}
        }
    }
    Err(io_error("move aside", path, io::Error::new(io::ErrorKind::AlreadyExists, "too many corrupt records of it")))
}

/// Marks `target`'s pending record published: one rename onto a name that does not exist.
pub fn mark_published(dir: &Path, target: &Path) -> Result<()> {
    let pending = path_in_state(dir, target, State::Pending);
    fs::rename(&pending, path_for(dir, target)).map_err(|e| io_error("rename a record", &pending, e))
}

/// Removes the record for `target`, in either state; a missing one is fine.
pub fn remove(dir: &Path, target: &Path) -> Result<()> {
    for state in [State::Published, State::Pending] {
        let path = path_in_state(dir, target, state);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove", &path, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(target: &str) -> Record {
        let spec = VolumeSpec { namespace: "shop".into(), ..VolumeSpec::default() };
        Record {
            volume_id: "csi-1".into(),
            target: target.into(),
            readonly: true,
            digest: spec.digest(),
            spec,
            pod: PodInfo::default(),
            published_at: 1,
            state: State::Published,
        }
    }

    #[test]
    fn write_load_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let target = Path::new("/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount");
        assert_eq!(load(dir.path(), target).unwrap(), None);
        let rec = record(target.to_str().unwrap());
        write(dir.path(), &rec).unwrap();
        assert_eq!(load(dir.path(), target).unwrap(), Some(rec.clone()));
        // Overwrite in place.
        let mut changed = rec.clone();
        changed.published_at = 2;
        write(dir.path(), &changed).unwrap();
        assert_eq!(load(dir.path(), target).unwrap(), Some(changed));
        let all = load_all(dir.path()).unwrap();
        assert_eq!(all.len(), 1);
        let name = all[0].0.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(name.len(), 32 + 5);
        remove(dir.path(), target).unwrap();
        remove(dir.path(), target).unwrap();
        assert_eq!(load(dir.path(), target).unwrap(), None);
    }

    #[test]
    fn a_pending_record_is_its_own_file_until_it_is_marked_published() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = record("/k/a");
        rec.state = State::Pending;
        write(dir.path(), &rec).unwrap();
        assert!(!path_for(dir.path(), &rec.target).exists());
        assert_eq!(load(dir.path(), &rec.target).unwrap().unwrap().state, State::Pending);
        let all = load_all(dir.path()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1.as_ref().unwrap().state, State::Pending);

        mark_published(dir.path(), &rec.target).unwrap();
        assert_eq!(load(dir.path(), &rec.target).unwrap().unwrap().state, State::Published);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        // Both (never written so, but found): the published one wins, the pending one goes.
        write(dir.path(), &rec).unwrap();
        let all = load_all(dir.path()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1.as_ref().unwrap().state, State::Published);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        write(dir.path(), &rec).unwrap();
        remove(dir.path(), &rec.target).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_corrupt_record_is_moved_aside_and_no_longer_listed() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), Path::new("/k/a"));
        fs::write(&path, b"{not json").unwrap();
        let first = move_aside(dir.path(), &path, 1_000).unwrap();
        fs::write(&path, b"again").unwrap();
        let second = move_aside(dir.path(), &path, 1_000).unwrap();
        assert_ne!(first, second);
        assert_eq!(fs::read(&first).unwrap(), b"{not json");
        assert_eq!(fs::read(&second).unwrap(), b"again");
        assert!(!path.exists());
        assert!(load_all(dir.path()).unwrap().is_empty(), "the corrupt dir is not a record");
    }

    #[test]
    fn damaged_or_misplaced_records_are_errors_and_temp_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let a = Path::new("/k/a");
        fs::write(path_for(dir.path(), a), b"{not json").unwrap();
        assert!(matches!(load(dir.path(), a), Err(Error::Record { .. })));

        // A valid record stored under another target's name.
        let b = Path::new("/k/b");
        let json = format::encode(&record("/k/c")).unwrap();
        fs::write(path_for(dir.path(), b), json).unwrap();
        assert!(matches!(load(dir.path(), b), Err(Error::Record { .. })));

        // A digest that does not match the spec.
        let mut bad = record("/k/d");
        bad.spec.system_roots = false;
        fs::write(path_for(dir.path(), Path::new("/k/d")), format::encode(&bad).unwrap()).unwrap();
        assert!(matches!(load(dir.path(), Path::new("/k/d")), Err(Error::Record { .. })));

        // A record of a newer format: not damaged, and told apart.
        let newer = path_for(dir.path(), Path::new("/k/e"));
        fs::write(&newer, br#"{"format": 4}"#).unwrap();
        assert!(matches!(load(dir.path(), Path::new("/k/e")), Err(Error::NewerRecord { .. })));
        fs::remove_file(&newer).unwrap();

        fs::write(dir.path().join(".tmp-xyz"), b"half").unwrap();
        let all = load_all(dir.path()).unwrap();
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|(_, r)| r.is_err()));
        assert!(!dir.path().join(".tmp-xyz").exists());
    }
}

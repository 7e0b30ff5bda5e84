//! Content-addressed blobs: every file and symlink of every spec directory is a hard link of one
//! blob here, so identical content costs its pages and its inode once, however many specs hold it.
//!
//! ```text
//! <tmpfs>/blobs/f-<sha256("file\0" | mode | bytes)>     a file (0444), written once
//! <tmpfs>/blobs/l-<sha256("symlink\0" | target)>        a symlink (Linux hard-links symlinks too)
//! <tmpfs>/blobs/.tmp-<n>                                 a blob being written (a crash leaves it)
//! ```
//!
//! A blob whose only name is its own (link count 1) is garbage. Linking takes the store-wide
//! lock shared, collecting takes it alone, so a blob is never removed between "found" and
//! "linked"; a blob that is missing is written again, never an error.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use sha2::{Digest, Sha256};

use super::Result;
use super::fsutil::{io_error, remove_tree, rustix_error};

const DIR_MODE: u32 = 0o700;
const TMP_PREFIX: &str = ".tmp-";
/// A blob can only vanish under a linker if something outside the driver removes it: a few
/// rewrites, then the failure is reported.
const LINK_ATTEMPTS: usize = 3;

#[derive(Debug)]
pub(super) struct Blobs {
    dir: PathBuf,
    fd: OwnedFd,
    /// Shared while linking, exclusive while collecting (see the module doc).
    lock: RwLock<()>,
    /// Temporary names: unique within this process; the start-up sweep removes those of a
    /// previous one before anyone writes.
    next_tmp: AtomicU64,
}

fn file_hasher(mode: u32) -> Sha256 {
    let mut hasher = Sha256::new();
    hasher.update(b"file\0");
    hasher.update(mode.to_le_bytes());
    hasher
}

fn file_name(hasher: Sha256) -> String {
    format!("f-{}", hex::encode(hasher.finalize()))
}

fn symlink_name(target: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"symlink\0");
    hasher.update(target);
    format!("l-{}", hex::encode(hasher.finalize()))
}

impl Blobs {
    /// Opens (creating it if needed) the blob directory `dir`, which must be on the same mount
    /// as the spec directories: hard links do not cross mounts.
    ///
    /// # Errors
    /// The directory cannot be created or opened.
    pub fn open(dir: &Path) -> Result<Self> {
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("create", dir, e)),
        }
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| rustix_error("open", dir, e))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(DIR_MODE)).map_err(|e| rustix_error("chmod", dir, e))?;
        Ok(Self { dir: dir.to_owned(), fd, lock: RwLock::default(), next_tmp: AtomicU64::new(0) })
    }

    /// Makes `at/path` a file holding `bytes` with `mode`: a link of the blob, written first if
    /// no spec has it yet.
    ///
    /// # Errors
    /// An I/O failure (`StoreFull` on ENOSPC); `path` then does not exist.
    pub fn link_file(&self, bytes: &[u8], mode: u32, at: BorrowedFd<'_>, path: &str, full: &Path) -> Result<()> {
        let mut hasher = file_hasher(mode);
        hasher.update(bytes);
        let name = file_name(hasher);
        self.link(&name, at, path, full, |tmp| {
            let fd = rustix::fs::openat(
                self.fd.as_fd(),
                tmp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode),
            )
            .map_err(|e| rustix_error("create", &self.dir.join(tmp), e))?;
            let mut file = fs::File::from(fd);
            file.write_all(bytes).map_err(|e| io_error("write", &self.dir.join(tmp), e))?;
            // Exactly `mode` whatever the umask: a blob is shared, so its mode is everyone's.
            rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
                .map_err(|e| rustix_error("chmod", &self.dir.join(tmp), e))
        })
    }

    /// Makes `at/path` a symlink to `target`: a link of the symlink blob.
    ///
    /// # Errors
    /// An I/O failure (`StoreFull` on ENOSPC); `path` then does not exist.
    pub fn link_symlink(&self, target: &str, at: BorrowedFd<'_>, path: &str, full: &Path) -> Result<()> {
        let name = symlink_name(target.as_bytes());
        self.link(&name, at, path, full, |tmp| {
            rustix::fs::symlinkat(target, self.fd.as_fd(), tmp)
                .map_err(|e| rustix_error("create symlink", &self.dir.join(tmp), e))
        })
    }

    /// Links blob `name` as `at/path`, writing it with `make` (under a temporary name, then
    /// renamed into place without replacing) when it does not exist.
    fn link(
        &self,
        name: &str,
        at: BorrowedFd<'_>,
        path: &str,
        full: &Path,
        make: impl Fn(&str) -> Result<()>,
    ) -> Result<()> {
        let linked = self.link_shared(name, at, path, full, make);
        if linked.is_err() {
            // A blob written just now and then not linked (ENOSPC on the link) would otherwise
            // hold its pages until the next start.
            self.collect(&BTreeSet::from([name.to_owned()]));
        }
        linked
    }

    fn link_shared(
        &self,
        name: &str,
        at: BorrowedFd<'_>,
        path: &str,
        full: &Path,
        make: impl Fn(&str) -> Result<()>,
    ) -> Result<()> {
        let _linking = self.lock.read().unwrap_or_else(PoisonError::into_inner);
        for _ in 0..LINK_ATTEMPTS {
            // No AT_SYMLINK_FOLLOW: a symlink blob is linked itself, not what it points at.
            match rustix::fs::linkat(self.fd.as_fd(), name, at, path, AtFlags::empty()) {
                Ok(()) => return Ok(()),
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(rustix_error("link", full, e)),
            }
            let tmp = format!("{TMP_PREFIX}{}", self.next_tmp.fetch_add(1, Ordering::Relaxed));
            let placed = make(&tmp).and_then(|()| {
                match rustix::fs::renameat_with(
                    self.fd.as_fd(),
                    tmp.as_str(),
                    self.fd.as_fd(),
                    name,
                    RenameFlags::NOREPLACE,
                ) {
                    // Another writer placed the same blob first: link theirs.
                    Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
                    Err(e) => Err(rustix_error("rename", &self.dir.join(&tmp), e)),
                }
            });
            // Gone after a successful rename; what a failed write left otherwise.
            let _ = rustix::fs::unlinkat(self.fd.as_fd(), tmp.as_str(), AtFlags::empty());
            placed?;
        }
        Err(io_error(
            "link",
            full,
            io::Error::new(io::ErrorKind::NotFound, format!("blob {name} kept vanishing from {}", self.dir.display())),
        ))
    }

    /// Removes a file, symlink or directory tree of a spec directory, then the blobs nothing
    /// links any more. Only a failure to remove `path` is an error: a blob that could not be
    /// collected is logged and left for the start-up sweep.
    ///
    /// # Errors
    /// `path` cannot be removed.
    pub fn remove_tree(&self, path: &Path) -> Result<()> {
        let mut names = BTreeSet::new();
        blob_names(path, &mut names);
        remove_tree(path)?;
        self.collect(&names);
        Ok(())
    }

    /// Removes those of `names` whose link count is 1.
    fn collect(&self, names: &BTreeSet<String>) {
        if names.is_empty() {
            return;
        }
        let _collecting = self.lock.write().unwrap_or_else(PoisonError::into_inner);
        let mut removed = 0usize;
        for name in names {
            match self.remove_if_unlinked(name) {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot collect a blob"),
            }
        }
        tracing::debug!(candidates = names.len(), removed, "blobs collected");
    }

    /// Call with the lock held exclusively.
    fn remove_if_unlinked(&self, name: &str) -> Result<bool> {
        match rustix::fs::statat(self.fd.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if stat.st_nlink == 1 => {}
            Ok(_) | Err(rustix::io::Errno::NOENT) => return Ok(false),
            Err(e) => return Err(rustix_error("inspect", &self.dir.join(name), e)),
        }
        match rustix::fs::unlinkat(self.fd.as_fd(), name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(rustix_error("remove", &self.dir.join(name), e)),
        }
    }

    /// The start-up sweep: removes every temporary blob (a writer killed mid-write) and every
    /// blob no spec directory links (its spec went while the driver was down, or a crash came
    /// between unlinking a generation and collecting).
    pub fn sweep(&self) {
        let _collecting = self.lock.write().unwrap_or_else(PoisonError::into_inner);
        let entries = match fs::read_dir(&self.dir).and_then(|e| e.collect::<io::Result<Vec<_>>>()) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(path = %self.dir.display(), error = %e, "cannot list the blobs for cleanup");
                return;
            }
        };
        let (mut kept, mut removed) = (0usize, 0usize);
        for entry in entries {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                tracing::warn!(path = %entry.path().display(), "unexpected entry among the blobs; leaving it");
                continue;
            };
            let result = if name.starts_with(TMP_PREFIX) {
                rustix::fs::unlinkat(self.fd.as_fd(), name, AtFlags::empty())
                    .map(|()| true)
                    .map_err(|e| rustix_error("remove", &entry.path(), e))
            } else {
                self.remove_if_unlinked(name)
            };
            match result {
                Ok(true) => removed += 1,
                Ok(false) => kept += 1,
                Err(e) => tracing::warn!(error = %e, "blob cleanup failed"),
            }
        }
        tracing::info!(kept, removed, "blobs swept");
    }
}

/// The blob names of what is below `path` (or `path` itself), from content and targets:
/// best-effort, since an entry missed only leaves its blob to the start-up sweep.
fn blob_names(path: &Path, names: &mut BTreeSet<String>) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    let file_type = meta.file_type();
    if file_type.is_dir() {
        for entry in fs::read_dir(path).into_iter().flatten().flatten() {
            blob_names(&entry.path(), names);
        }
    } else if file_type.is_symlink() {
        if let Ok(target) = fs::read_link(path) {
            names.insert(symlink_name(target.as_os_str().as_encoded_bytes()));
        }
    } else if file_type.is_file() {
        use std::os::unix::fs::PermissionsExt;
        let mut hasher = file_hasher(meta.permissions().mode() & 0o7777);
        if fs::File::open(path).and_then(|mut file| io::copy(&mut file, &mut hasher)).is_ok() {
            names.insert(file_name(hasher));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn open(root: &Path) -> (Blobs, OwnedFd, PathBuf) {
        let blobs = Blobs::open(&root.join("blobs")).unwrap();
        let out = root.join("out");
        fs::create_dir(&out).unwrap();
        let fd = rustix::fs::open(&out, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        (blobs, fd, out)
    }

    fn blob_count(root: &Path) -> usize {
        fs::read_dir(root.join("blobs")).unwrap().count()
    }

    #[test]
    fn same_content_is_one_inode_and_goes_with_its_last_link() {
        let root = tempfile::tempdir().unwrap();
        let (blobs, fd, out) = open(root.path());
        blobs.link_file(b"pem", 0o444, fd.as_fd(), "a", &out.join("a")).unwrap();
        blobs.link_file(b"pem", 0o444, fd.as_fd(), "b", &out.join("b")).unwrap();
        blobs.link_file(b"pem", 0o400, fd.as_fd(), "c", &out.join("c")).unwrap();
        blobs.link_symlink("a", fd.as_fd(), "l1", &out.join("l1")).unwrap();
        blobs.link_symlink("a", fd.as_fd(), "l2", &out.join("l2")).unwrap();
        let meta = |name: &str| fs::symlink_metadata(out.join(name)).unwrap();
        assert_eq!(meta("a").ino(), meta("b").ino());
        assert_ne!(meta("a").ino(), meta("c").ino(), "another mode is another blob");
        assert_eq!(meta("l1").ino(), meta("l2").ino());
        assert!(meta("l1").file_type().is_symlink());
        assert_eq!(fs::read_link(out.join("l2")).unwrap(), Path::new("a"));
        assert_eq!(meta("a").mode() & 0o7777, 0o444);
        assert_eq!(meta("a").nlink(), 3);
        assert_eq!(blob_count(root.path()), 3);

        blobs.remove_tree(&out.join("a")).unwrap();
        assert_eq!(blob_count(root.path()), 3, "b still links it");
        blobs.remove_tree(&out).unwrap();
        assert_eq!(blob_count(root.path()), 0);
    }

    #[test]
    fn a_vanished_blob_is_written_again() {
        let root = tempfile::tempdir().unwrap();
        let (blobs, fd, out) = open(root.path());
        blobs.link_file(b"x", 0o444, fd.as_fd(), "a", &out.join("a")).unwrap();
        for entry in fs::read_dir(root.path().join("blobs")).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
        blobs.link_file(b"x", 0o444, fd.as_fd(), "b", &out.join("b")).unwrap();
        assert_eq!(fs::read(out.join("b")).unwrap(), b"x");
        assert_eq!(blob_count(root.path()), 1);
    }

    #[test]
    fn sweep_removes_temporaries_and_unlinked_blobs() {
        let root = tempfile::tempdir().unwrap();
        let (blobs, fd, out) = open(root.path());
        blobs.link_file(b"kept", 0o444, fd.as_fd(), "a", &out.join("a")).unwrap();
        fs::write(root.path().join("blobs/.tmp-7"), b"half").unwrap();
        blobs.link_file(b"orphan", 0o444, fd.as_fd(), "b", &out.join("b")).unwrap();
        fs::remove_file(out.join("b")).unwrap();
        assert_eq!(blob_count(root.path()), 3);
        blobs.sweep();
        assert_eq!(blob_count(root.path()), 1);
        assert_eq!(fs::read(out.join("a")).unwrap(), b"kept");
    }

    #[test]
    fn concurrent_linkers_and_collectors_never_lose_a_file() {
        let root = tempfile::tempdir().unwrap();
        let (blobs, _fd, out) = open(root.path());
        std::thread::scope(|scope| {
            for t in 0..4 {
                let blobs = &blobs;
                let dir = out.join(format!("t{t}"));
                scope.spawn(move || {
                    for round in 0..200 {
                        fs::create_dir(&dir).unwrap();
                        let fd = rustix::fs::open(&dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
                        blobs.link_file(b"shared", 0o444, fd.as_fd(), "f", &dir.join("f")).unwrap();
                        blobs.link_symlink("f", fd.as_fd(), "l", &dir.join("l")).unwrap();
                        assert_eq!(fs::read(dir.join("l")).unwrap(), b"shared", "thread {t} round {round}");
                        blobs.remove_tree(&dir).unwrap();
                    }
                });
            }
        });
        assert_eq!(blob_count(root.path()), 0);
    }
}

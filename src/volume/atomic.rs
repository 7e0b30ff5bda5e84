//! Spec directories laid out like kubelet's AtomicWriter, so a refresh never shows a reader a
//! half-written volume:
//!
//! ```text
//! <spec_dir>/..2025_01_02_03_04_05.Ab12Cd/   one generation: the files (0444), dirs (0555)
//! <spec_dir>/..data -> ..2025_01_02_03_04_05.Ab12Cd
//! <spec_dir>/ca-certificates.crt -> ..data/ca-certificates.crt
//! <spec_dir>/java -> ..data/java
//! ```
//!
//! A new generation is written next to the old one, its visible top-level symlinks are added,
//! `..data` is swapped to it with one `rename`, the names only the old one had are removed, and
//! the old generation goes.
//!
//! Every file and symlink (the visible ones too, whose targets are the same in every spec) is a
//! hard link of a [`Blobs`] blob, so a spec whose content another spec has costs only its
//! directories and their entries. Removing anything goes through [`Blobs::remove_tree`], which
//! collects the blobs it leaves unlinked.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags};

use crate::bundle::{Entry, Files};

use super::blobs::Blobs;
use super::fsutil::{io_error, read_dir, rustix_error, walk};
use super::{Error, Result};

/// `..data`: the symlink readers go through.
pub use super::format::store::DATA_LINK;
const DATA_LINK_TMP: &str = "..data_tmp";
/// Prefix of a spec directory still being made (renamed to its digest when complete).
pub const TMP_PREFIX: &str = ".tmp-";

const FILE_MODE: u32 = 0o444;
/// Directories, the spec directory (a volume's root) included: pods only read. The driver runs
/// as root, which writes new generations regardless.
const DIR_MODE: u32 = 0o555;

fn invalid(path: &str, reason: &'static str) -> Error {
    Error::InvalidFiles { path: path.to_owned(), reason }
}

/// Checks every entry before anything is written: relative `/`-separated paths without `.`,
/// `..` or empty components, top-level names not starting with `..` (reserved for generations),
/// relative symlink targets.
fn validate(files: &Files) -> Result<()> {
    for (path, entry) in &files.entries {
        if path.is_empty() || path.starts_with('/') || path.contains('\0') {
            return Err(invalid(path, "the path must be relative and non-empty"));
        }
        if path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(invalid(path, "the path has an empty, `.` or `..` component"));
        }
        if path.starts_with("..") || path.starts_with(TMP_PREFIX) {
            return Err(invalid(path, "names starting with `..` or `.tmp-` are reserved"));
        }
        if let Entry::Symlink(target) = entry
            && (target.is_empty() || target.starts_with('/') || target.contains('\0'))
        {
            return Err(invalid(path, "a symlink target must be relative and non-empty"));
        }
    }
    // A name that is an entry and also a parent of another: the second write would go through
    // the first (and through a symlink, possibly out of the generation).
    let names: HashSet<&str> = files.entries.iter().map(|(p, _)| p.as_str()).collect();
    if names.len() != files.entries.len() {
        let mut seen = HashSet::new();
        if let Some((path, _)) = files.entries.iter().find(|(p, _)| !seen.insert(p.as_str())) {
            return Err(invalid(path, "the path appears twice"));
        }
    }
    for (path, _) in &files.entries {
        if path.match_indices('/').any(|(i, _)| names.contains(&path[..i])) {
            return Err(invalid(path, "a parent of this path is itself a file or symlink"));
        }
    }
    Ok(())
}

/// Opens a directory for the `*at` calls, so each entry costs a one-component lookup instead
/// of a walk of the whole store path.
fn open_dir(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW, Mode::empty())
        .map_err(|e| rustix_error("open", path, e))
}

fn generation_prefix() -> String {
    let format = time::macros::format_description!("[year]_[month]_[day]_[hour]_[minute]_[second].");
    let stamp = time::OffsetDateTime::now_utc().format(&format).unwrap_or_default();
    format!("..{stamp}")
}

/// Writes `files` as the new generation of an existing `spec_dir` and swaps readers to it.
/// Readers that opened a file before the swap keep reading the old content. Returns the
/// generation swapped out, which is left in place for readers still resolving `..data` (the
/// caller removes it later); other old generations are removed unless `keep` says otherwise.
///
/// # Errors
/// Invalid entries (nothing written), or an I/O failure (`StoreFull` on ENOSPC); a failure
/// before the swap leaves the current generation in place.
pub(super) fn write_generation(
    blobs: &Blobs,
    spec_dir: &Path,
    files: &Files,
    keep: &dyn Fn(&Path) -> bool,
) -> Result<Option<PathBuf>> {
    validate(files)?;
    let spec_fd = open_dir(spec_dir)?;
    let previous = current_generation(spec_dir).ok();
    write_generation_in(blobs, spec_fd.as_fd(), spec_dir, files, false)?;
    remove_stray_generations(blobs, spec_dir, &|path| previous.as_deref() == Some(path) || keep(path))?;
    Ok(previous)
}

/// Writes a generation into `spec_dir` (open as `spec_fd`). `fresh`: the directory was just
/// made empty and nobody sees it yet, so `..data` is linked directly and the visible links
/// are created without looking at what is there.
fn write_generation_in(
    blobs: &Blobs,
    spec_fd: BorrowedFd<'_>,
    spec_dir: &Path,
    files: &Files,
    fresh: bool,
) -> Result<()> {
    let generation = tempfile::Builder::new()
        .prefix(&generation_prefix())
        .rand_bytes(6)
        .tempdir_in(spec_dir)
        .map_err(|e| io_error("create a generation directory in", spec_dir, e))?
        .keep();
    if let Err(e) = open_dir(&generation).and_then(|fd| fill_generation(blobs, fd, &generation, files)) {
        let _ = blobs.remove_tree(&generation);
        return Err(e);
    }
    let name = generation.file_name().ok_or_else(|| invalid("", "generation directory has no name"))?.to_owned();

    if fresh {
        rustix::fs::symlinkat(name.as_os_str(), spec_fd, DATA_LINK)
            .map_err(|e| rustix_error("create symlink", &spec_dir.join(DATA_LINK), e))?;
    } else {
        // The swap: a fresh `..data_tmp` renamed over `..data`.
        let tmp_link = || spec_dir.join(DATA_LINK_TMP);
        match rustix::fs::unlinkat(spec_fd, DATA_LINK_TMP, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(rustix_error("remove", &tmp_link(), e)),
        }
        // The new visible names first (each `..data/<name>`, dangling until the swap), so at
        // no instant, crash included, is a name of the current generation missing; old names
        // dangle from the swap until they are removed after it.
        let names = top_level_names(files);
        add_visible_links(blobs, spec_fd, spec_dir, &names)?;
        let swap = rustix::fs::symlinkat(name.as_os_str(), spec_fd, DATA_LINK_TMP)
            .map_err(|e| rustix_error("create symlink", &tmp_link(), e))
            .and_then(|()| {
                rustix::fs::renameat(spec_fd, DATA_LINK_TMP, spec_fd, DATA_LINK)
                    .map_err(|e| rustix_error("rename", &tmp_link(), e))
            });
        if let Err(e) = swap {
            let _ = rustix::fs::unlinkat(spec_fd, DATA_LINK_TMP, AtFlags::empty());
            let _ = blobs.remove_tree(&generation);
            // The names just added for the generation that did not come: best effort, a
            // dangling name is what the next refresh or start-up repair removes anyway.
            if let Ok(current) = current_generation(spec_dir)
                && let Ok(owned) = generation_names(&current)
            {
                let _ = remove_other_names(blobs, spec_dir, &owned.iter().map(String::as_str).collect());
            }
            return Err(e);
        }
        return remove_other_names(blobs, spec_dir, &names);
    }

    update_visible_links(blobs, spec_fd, spec_dir, &top_level_names(files), fresh)
}

fn fill_generation(blobs: &Blobs, generation_fd: OwnedFd, generation: &Path, files: &Files) -> Result<()> {
    let at = generation_fd.as_fd();
    // `validate` made sure no directory name is also an entry, so every name here is new.
    let mut dirs = BTreeSet::new();
    for (path, entry) in &files.entries {
        for (end, _) in path.match_indices('/') {
            let dir = &path[..end];
            if dirs.insert(dir) {
                rustix::fs::mkdirat(at, dir, Mode::from_raw_mode(0o755))
                    .map_err(|e| rustix_error("create directory", &generation.join(dir), e))?;
            }
        }
        match entry {
            Entry::File(bytes) => blobs.link_file(bytes, FILE_MODE, at, path, &generation.join(path))?,
            Entry::Symlink(target) => blobs.link_symlink(target, at, path, &generation.join(path))?,
        }
    }
    // Read-only last, so writing them did not depend on overriding permissions.
    for dir in &dirs {
        rustix::fs::chmodat(at, *dir, Mode::from_raw_mode(DIR_MODE), AtFlags::empty())
            .map_err(|e| rustix_error("chmod", &generation.join(dir), e))?;
    }
    rustix::fs::fchmod(at, Mode::from_raw_mode(DIR_MODE)).map_err(|e| rustix_error("chmod", generation, e))
}

/// Top-level names of `files`: what the spec directory shows.
fn top_level_names(files: &Files) -> BTreeSet<&str> {
    files.entries.iter().filter_map(|(path, _)| path.split('/').next()).collect()
}

/// Makes the visible names of `spec_dir` exactly `names`, each `name -> ..data/name`.
fn update_visible_links(
    blobs: &Blobs,
    spec_fd: BorrowedFd<'_>,
    spec_dir: &Path,
    names: &BTreeSet<&str>,
    fresh: bool,
) -> Result<()> {
    if fresh {
        // Nothing else was ever in it.
        for name in names {
            blobs.link_symlink(&format!("{DATA_LINK}/{name}"), spec_fd, name, &spec_dir.join(name))?;
        }
        return Ok(());
    }
    add_visible_links(blobs, spec_fd, spec_dir, names)?;
    remove_other_names(blobs, spec_dir, names)
}

/// Gives each of `names` its `name -> ..data/name` link, replacing whatever else has the name.
fn add_visible_links(blobs: &Blobs, spec_fd: BorrowedFd<'_>, spec_dir: &Path, names: &BTreeSet<&str>) -> Result<()> {
    // One buffer for every `..data/<name>` link target.
    let mut wanted = String::with_capacity(DATA_LINK.len() + 1 + 64);
    for name in names {
        wanted.truncate(0);
        wanted.push_str(DATA_LINK);
        wanted.push('/');
        wanted.push_str(name);
        // One readlink tells both "is a symlink" (EINVAL if not) and where it points.
        match rustix::fs::readlinkat(spec_fd, *name, Vec::new()) {
            Ok(current) if current.as_bytes() == wanted.as_bytes() => continue,
            Ok(_) | Err(rustix::io::Errno::INVAL) => blobs.remove_tree(&spec_dir.join(name))?,
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(rustix_error("inspect", &spec_dir.join(name), e)),
        }
        blobs.link_symlink(&wanted, spec_fd, name, &spec_dir.join(name))?;
    }
    Ok(())
}

/// Removes every visible name of `spec_dir` (not `..*`) that is not one of `names`.
fn remove_other_names(blobs: &Blobs, spec_dir: &Path, names: &BTreeSet<&str>) -> Result<()> {
    for entry in read_dir(spec_dir)? {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            blobs.remove_tree(&entry.path())?;
            continue;
        };
        if !name.starts_with("..") && !names.contains(name) {
            blobs.remove_tree(&entry.path())?;
        }
    }
    Ok(())
}

/// The top-level entries of a generation directory.
fn generation_names(generation: &Path) -> Result<Vec<String>> {
    Ok(read_dir(generation)?.iter().filter_map(|e| e.file_name().to_str().map(str::to_owned)).collect())
}

/// Removes every `..*` entry of `spec_dir` except `..data`, the generation it points at, and
/// those `keep` names: swapped-out generations, and leftovers of a crash in the middle of a
/// write.
pub(super) fn remove_stray_generations(blobs: &Blobs, spec_dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<()> {
    let current = current_generation(spec_dir)?;
    for entry in read_dir(spec_dir)? {
        let path = entry.path();
        let name = entry.file_name();
        let reserved = name.to_str().is_some_and(|n| n.starts_with(".."));
        if reserved && name != DATA_LINK && path != current && !keep(&path) {
            blobs.remove_tree(&path)?;
        }
    }
    Ok(())
}

/// Whether `spec_dir` can be bound: `..data` names a generation directory that exists. A spec
/// dir only ever takes its digest's name with a whole first generation in it, a new generation is
/// only swapped in whole, and a spec dir is renamed away before it is removed, so this holds for
/// every spec dir under its digest's name, whatever a crash interrupted.
pub(super) fn is_complete(spec_dir: &Path) -> bool {
    current_generation(spec_dir).is_ok_and(|generation| generation.is_dir())
}

/// Brings a spec dir back in line after a crash in the middle of a refresh: removes stray
/// generations (see [`remove_stray_generations`]) and makes the visible names exactly the
/// current generation's top-level entries (a crash after the `..data` swap can leave an old
/// name dangling).
///
/// # Errors
/// The spec dir or its current generation cannot be read, or a link cannot be made.
pub(super) fn repair(blobs: &Blobs, spec_dir: &Path) -> Result<()> {
    remove_stray_generations(blobs, spec_dir, &|_| false)?;
    let owned = generation_names(&current_generation(spec_dir)?)?;
    let names: BTreeSet<&str> = owned.iter().map(String::as_str).collect();
    let spec_fd = open_dir(spec_dir)?;
    update_visible_links(blobs, spec_fd.as_fd(), spec_dir, &names, false)
}

/// Removes `<store_root>/<name>`: renamed to a temporary name first (one rename, under the
/// caller's spec lock), then removed, so a crash in the middle never leaves a half-removed
/// directory under the digest's name for a publish to bind; start-up removes the rest.
///
/// # Errors
/// The rename or the removal fails.
pub(super) fn remove_spec_dir(blobs: &Blobs, store_root: &Path, name: &str) -> Result<()> {
    use rustix::fs::{CWD, RenameFlags};
    let spec_dir = store_root.join(name);
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    for attempt in 0..8 {
        let retired = store_root.join(format!("{TMP_PREFIX}gone-{name}-{stamp}-{attempt}"));
        match rustix::fs::renameat_with(CWD, &spec_dir, CWD, &retired, RenameFlags::NOREPLACE) {
            Ok(()) => return blobs.remove_tree(&retired),
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(rustix_error("rename for removal", &spec_dir, e)),
        }
    }
    Err(io_error("rename for removal", &spec_dir, io::ErrorKind::AlreadyExists.into()))
}

/// The generation directory `..data` points at.
///
/// # Errors
/// `..data` is missing or does not name a generation in `spec_dir`.
pub fn current_generation(spec_dir: &Path) -> Result<PathBuf> {
    let link = spec_dir.join(DATA_LINK);
    let target = fs::read_link(&link).map_err(|e| io_error("read symlink", &link, e))?;
    let mut components = target.components();
    let valid = matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(name)), None)
            if name.to_str().is_some_and(|n| n.starts_with("..") && n != DATA_LINK && n != DATA_LINK_TMP)
    );
    if !valid {
        return Err(Error::Io {
            op: "follow",
            path: link,
            source: io::Error::new(io::ErrorKind::InvalidData, "does not name a generation directory"),
        });
    }
    Ok(spec_dir.join(target))
}

/// Creates `<store_root>/<name>` holding a first generation of `files`, atomically: it is
/// written under a temporary name and renamed, so a crash never leaves a half-made spec dir
/// under its real name.
pub(super) fn create_spec_dir(blobs: &Blobs, store_root: &Path, name: &str, files: &Files) -> Result<PathBuf> {
    validate(files)?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{TMP_PREFIX}{name}-"))
        .tempdir_in(store_root)
        .map_err(|e| io_error("create a directory in", store_root, e))?
        .keep();
    let spec_dir = store_root.join(name);
    let made = open_dir(&tmp).and_then(|fd| {
        write_generation_in(blobs, fd.as_fd(), &tmp, files, true)?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(DIR_MODE)).map_err(|e| rustix_error("chmod", &tmp, e))?;
        fs::rename(&tmp, &spec_dir).map_err(|e| io_error("rename", &tmp, e))
    });
    if let Err(e) = made {
        let _ = blobs.remove_tree(&tmp);
        return Err(e);
    }
    Ok(spec_dir)
}

/// Bytes in regular files and number of entries below `dir` (symlinks not followed).
pub(super) fn usage(dir: &Path) -> Result<(u64, u64)> {
    let (mut bytes, mut entries) = (0, 0);
    walk(dir, &mut |meta| {
        entries += 1;
        if meta.is_file() {
            bytes += meta.len();
        }
    })?;
    Ok((bytes, entries))
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::fs::symlink;

    use super::*;

    /// A store root and a blob directory beside it (same file system, as hard links need).
    fn store() -> (tempfile::TempDir, tempfile::TempDir, Blobs) {
        let root = tempfile::tempdir().unwrap();
        let blob_dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(&blob_dir.path().join("blobs")).unwrap();
        (root, blob_dir, blobs)
    }

    fn files(bundle: &[u8], java: &[u8]) -> Files {
        Files {
            entries: vec![
                ("ca-certificates.crt".into(), Entry::File(bundle.to_vec())),
                ("cert.pem".into(), Entry::Symlink("ca-certificates.crt".into())),
                ("java/cacerts".into(), Entry::File(java.to_vec())),
                ("java/nested/deep.txt".into(), Entry::File(b"deep".to_vec())),
            ],
        }
    }

    fn generations(spec_dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(spec_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA_LINK)
            .collect();
        names.sort();
        names
    }

    fn visible(spec_dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(spec_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".."))
            .collect();
        names.sort();
        names
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn first_generation_is_laid_out_like_atomic_writer() {
        let (root, _blob_dir, blobs) = store();
        let spec_dir = create_spec_dir(&blobs, root.path(), "abc", &files(b"one", b"jks")).unwrap();
        assert_eq!(spec_dir, root.path().join("abc"));
        assert_eq!(mode(&spec_dir), 0o555);
        assert_eq!(fs::read(spec_dir.join("ca-certificates.crt")).unwrap(), b"one");
        assert_eq!(fs::read(spec_dir.join("cert.pem")).unwrap(), b"one");
        assert_eq!(fs::read(spec_dir.join("java/cacerts")).unwrap(), b"jks");
        assert_eq!(visible(&spec_dir), ["ca-certificates.crt", "cert.pem", "java"]);
        assert_eq!(fs::read_link(spec_dir.join("java")).unwrap(), Path::new("..data/java"));
        let generation = current_generation(&spec_dir).unwrap();
        assert_eq!(generations(&spec_dir).len(), 1);
        assert_eq!(mode(&generation), 0o555);
        assert_eq!(mode(&generation.join("java")), 0o555);
        assert_eq!(mode(&generation.join("java/nested")), 0o555);
        assert_eq!(mode(&generation.join("ca-certificates.crt")), 0o444);
        assert_eq!(fs::read_link(generation.join("cert.pem")).unwrap(), Path::new("ca-certificates.crt"));
        // No temporary directory left in the store.
        let leftovers: Vec<_> = fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
        assert_eq!(usage(&generation).unwrap(), (3 + 3 + 4, 6));
    }

    #[test]
    fn second_generation_swaps_atomically_and_old_readers_keep_old_content() {
        let (root, _blob_dir, blobs) = store();
        let spec_dir = create_spec_dir(&blobs, root.path(), "abc", &files(b"old", b"jks")).unwrap();
        let first = current_generation(&spec_dir).unwrap();
        let mut reader = fs::File::open(spec_dir.join("ca-certificates.crt")).unwrap();

        let next = Files {
            entries: vec![
                ("ca-certificates.crt".into(), Entry::File(b"new".to_vec())),
                ("1234abcd.0".into(), Entry::Symlink("ca-certificates.crt".into())),
            ],
        };
        let swapped_out = write_generation(&blobs, &spec_dir, &next, &|_| false).unwrap();

        let second = current_generation(&spec_dir).unwrap();
        assert_ne!(first, second);
        assert_eq!(swapped_out.as_ref(), Some(&first));
        assert!(first.join("ca-certificates.crt").exists(), "the old generation stays for readers resolving `..data`");
        remove_stray_generations(&blobs, &spec_dir, &|_| false).unwrap();
        assert!(!first.exists(), "old generation removed");
        assert_eq!(generations(&spec_dir), [second.file_name().unwrap().to_string_lossy().into_owned()]);
        assert_eq!(visible(&spec_dir), ["1234abcd.0", "ca-certificates.crt"]);
        assert_eq!(fs::read(spec_dir.join("ca-certificates.crt")).unwrap(), b"new");
        assert_eq!(fs::read(spec_dir.join("1234abcd.0")).unwrap(), b"new");
        assert!(!spec_dir.join("java").exists() && fs::symlink_metadata(spec_dir.join("java")).is_err());
        assert!(fs::symlink_metadata(spec_dir.join(DATA_LINK_TMP)).is_err());

        let mut old = String::new();
        reader.read_to_string(&mut old).unwrap();
        assert_eq!(old, "old");
    }

    #[test]
    fn crash_leftovers_are_removed_on_the_next_write() {
        let (root, _blob_dir, blobs) = store();
        let spec_dir = create_spec_dir(&blobs, root.path(), "abc", &files(b"a", b"b")).unwrap();
        fs::create_dir(spec_dir.join("..2020_01_01_00_00_00.half")).unwrap();
        symlink("..nowhere", spec_dir.join(DATA_LINK_TMP)).unwrap();
        let previous = write_generation(&blobs, &spec_dir, &files(b"c", b"d"), &|_| false).unwrap().unwrap();
        let current = current_generation(&spec_dir).unwrap();
        let mut left = generations(&spec_dir);
        left.sort();
        let mut expected = [previous, current].map(|p| p.file_name().unwrap().to_string_lossy().into_owned());
        expected.sort();
        assert_eq!(left, expected, "only the current and the swapped-out generation are left");
        assert!(fs::symlink_metadata(spec_dir.join(DATA_LINK_TMP)).is_err());
        assert_eq!(fs::read(spec_dir.join("ca-certificates.crt")).unwrap(), b"c");
    }

    #[test]
    fn invalid_entries_are_rejected_before_writing() {
        let (root, _blob_dir, blobs) = store();
        for (path, entry) in [
            ("../escape", Entry::File(vec![])),
            ("/abs", Entry::File(vec![])),
            ("a//b", Entry::File(vec![])),
            ("..data", Entry::File(vec![])),
            ("", Entry::File(vec![])),
            ("link", Entry::Symlink("/etc/passwd".into())),
        ] {
            let bad = Files { entries: vec![(path.into(), entry)] };
            let err = create_spec_dir(&blobs, root.path(), "abc", &bad).unwrap_err();
            assert!(matches!(err, Error::InvalidFiles { .. }), "{path}: {err}");
        }
        // A name that is both an entry and a parent: writing through it could leave the
        // generation, so it is refused up front too.
        for clash in [
            vec![("x".to_owned(), Entry::Symlink("../..".into())), ("x/y".to_owned(), Entry::File(vec![]))],
            vec![("a/b".to_owned(), Entry::File(vec![])), ("a/b".to_owned(), Entry::File(vec![]))],
        ] {
            let bad = Files { entries: clash };
            let err = create_spec_dir(&blobs, root.path(), "abc", &bad).unwrap_err();
            assert!(matches!(err, Error::InvalidFiles { .. }), "{err}");
        }
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn failed_write_leaves_nothing_behind() {
        let (root, _blob_dir, blobs) = store();
        // A file and a directory of the same name: the second entry fails.
        let clash = Files {
            entries: vec![
                ("java".into(), Entry::File(b"x".to_vec())),
                ("java/cacerts".into(), Entry::File(b"y".to_vec())),
            ],
        };
        assert!(create_spec_dir(&blobs, root.path(), "abc", &clash).is_err());
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);

        let spec_dir = create_spec_dir(&blobs, root.path(), "abc", &files(b"keep", b"j")).unwrap();
        assert!(write_generation(&blobs, &spec_dir, &clash, &|_| false).is_err());
        assert_eq!(fs::read(spec_dir.join("ca-certificates.crt")).unwrap(), b"keep");
        assert_eq!(generations(&spec_dir).len(), 1);
    }

    #[test]
    fn repair_makes_the_visible_names_those_of_the_current_generation() {
        let (root, _blob_dir, blobs) = store();
        let spec_dir = create_spec_dir(&blobs, root.path(), "abc", &files(b"one", b"jks")).unwrap();
        // What a crash after the `..data` swap can leave: a name missing, an old one dangling, a
        // stray generation and swap link.
        fs::remove_file(spec_dir.join("cert.pem")).unwrap();
        symlink("..data/gone.pem", spec_dir.join("gone.pem")).unwrap();
        fs::create_dir(spec_dir.join("..2020_01_01_00_00_00.x")).unwrap();
        symlink("..2020_01_01_00_00_00.x", spec_dir.join(DATA_LINK_TMP)).unwrap();
        assert!(is_complete(&spec_dir));
        repair(&blobs, &spec_dir).unwrap();
        assert_eq!(visible(&spec_dir), ["ca-certificates.crt", "cert.pem", "java"]);
        assert_eq!(fs::read(spec_dir.join("cert.pem")).unwrap(), b"one");
        assert_eq!(generations(&spec_dir).len(), 1);
        assert!(fs::symlink_metadata(spec_dir.join(DATA_LINK_TMP)).is_err());
    }

    #[test]
    fn a_spec_dir_without_a_current_generation_is_not_complete() {
        let (root, _blob_dir, blobs) = store();
        let spec_dir = create_spec_dir(&blobs, root.path(), "abc", &files(b"one", b"jks")).unwrap();
        let generation = current_generation(&spec_dir).unwrap();
        crate::volume::fsutil::remove_tree(&generation).unwrap();
        assert!(!is_complete(&spec_dir));
        assert!(!is_complete(&root.path().join("missing")));
    }

    #[test]
    fn removing_a_spec_dir_leaves_nothing_and_a_missing_one_is_fine() {
        let (root, _blob_dir, blobs) = store();
        create_spec_dir(&blobs, root.path(), "abc", &files(b"one", b"jks")).unwrap();
        remove_spec_dir(&blobs, root.path(), "abc").unwrap();
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
        remove_spec_dir(&blobs, root.path(), "abc").unwrap();
    }
}

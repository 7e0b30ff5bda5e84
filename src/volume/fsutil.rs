//! The ground floor of `volume/`: error context for I/O, directory listing and tree removal, and
//! the record timestamps. Every other file here may import it; it imports none of them.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{Error, Result};

/// An I/O error with context; ENOSPC becomes [`Error::StoreFull`].
pub(super) fn io_error(op: &'static str, path: &Path, source: io::Error) -> Error {
    if source.raw_os_error() == Some(nix::libc::ENOSPC) {
        Error::StoreFull { path: path.to_owned() }
    } else {
        Error::Io { op, path: path.to_owned(), source }
    }
}

pub(super) fn rustix_error(op: &'static str, path: &Path, source: rustix::io::Errno) -> Error {
    io_error(op, path, source.into())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| io_error("chmod", path, e))
}

/// Calls `visit` with the metadata of every entry below `dir`, recursively (symlinks not
/// followed).
pub(super) fn walk(dir: &Path, visit: &mut dyn FnMut(&fs::Metadata)) -> Result<()> {
    for entry in read_dir(dir)? {
        let meta = entry.metadata().map_err(|e| io_error("inspect", &entry.path(), e))?;
        visit(&meta);
        if meta.is_dir() {
            walk(&entry.path(), visit)?;
        }
    }
    Ok(())
}

/// The size and free room of a file system, from statvfs.
pub(super) struct Space {
    pub total_bytes: u64,
    /// Free for anyone (root's reserve included): what `used` is measured against.
    pub free_bytes: u64,
    pub available_bytes: u64,
    pub total_inodes: u64,
    pub available_inodes: u64,
}

/// The [`Space`] of the file system holding `path`; errors name `shown_as`.
// statvfs fields are u32 on 32-bit targets.
#[allow(clippy::useless_conversion)]
pub(super) fn space(path: &Path, shown_as: &Path) -> Result<Space> {
    let vfs = nix::sys::statvfs::statvfs(path).map_err(|source| Error::Mount {
        op: "statvfs",
        path: shown_as.to_owned(),
        source,
    })?;
    let fragment = u64::from(vfs.fragment_size());
    Ok(Space {
        total_bytes: u64::from(vfs.blocks()).saturating_mul(fragment),
        free_bytes: u64::from(vfs.blocks_free()).saturating_mul(fragment),
        available_bytes: u64::from(vfs.blocks_available()).saturating_mul(fragment),
        total_inodes: u64::from(vfs.files()),
        available_inodes: u64::from(vfs.files_available()),
    })
}

pub(super) fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    fs::read_dir(dir).and_then(|entries| entries.collect::<io::Result<Vec<_>>>()).map_err(|e| io_error("list", dir, e))
}

/// Removes a file, symlink or directory tree; a missing path is fine. Read-only directories
/// are made writable first when that is what stops the removal.
pub(super) fn remove_tree(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("inspect", path, e)),
    };
    if !meta.is_dir() {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("remove", path, e)),
            _ => Ok(()),
        };
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_writable(path)?;
            fs::remove_dir_all(path).map_err(|e| io_error("remove", path, e))
        }
        Err(e) => Err(io_error("remove", path, e)),
    }
}

fn make_writable(dir: &Path) -> Result<()> {
    set_mode(dir, 0o755)?;
    for entry in read_dir(dir)? {
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir {
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}

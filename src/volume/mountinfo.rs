//! The one reader of `/proc/self/mountinfo`: which mounts exist, and where.

use std::path::{Path, PathBuf};

use super::{Error, Result};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of `/proc/self/mountinfo`, the fields we use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// `major:minor` of the filesystem: a bind mount shares its source's.
    pub device: String,
    /// What of that filesystem is mounted here (`/specs/<digest>` for a volume of ours). The
    /// kernel appends `//deleted` when that directory has been removed: see [`Self::deleted`].
    pub root: PathBuf,
    /// Whether the mount itself is read-only (its per-mount `ro` option).
    pub read_only: bool,
}

const DELETED_SUFFIX: &str = "//deleted";

impl MountEntry {
    /// The mounted directory has been removed (its root ends in `//deleted`): a bind mount of
    /// nothing that any path still leads to.
    pub fn deleted(&self) -> bool {
        self.root.as_os_str().as_encoded_bytes().ends_with(DELETED_SUFFIX.as_bytes())
    }
}

/// All mounts in this mount namespace, in mount order.
///
/// # Errors
/// `/proc/self/mountinfo` cannot be read.
pub fn mounts() -> Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string(MOUNTINFO).map_err(|source| Error::Io {
        op: "read",
        path: PathBuf::from(MOUNTINFO),
        source,
    })?;
    Ok(parse(&text))
}

/// The mounts whose mount point is exactly `path` (symlinks in `path` resolved), bottom first.
/// Empty when `path` does not exist.
///
/// # Errors
/// `path` cannot be resolved, or the mount table cannot be read.
pub fn mounts_at(path: &Path) -> Result<Vec<MountEntry>> {
    let canonical = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io { op: "resolve", path: path.to_owned(), source });
        }
    };
    Ok(mounts()?.into_iter().filter(|m| m.mount_point == canonical).collect())
}

/// Whether something is mounted exactly at `path`, by a scan of the mount table: the fallback
/// where `statx` does not report mount roots.
///
/// # Errors
/// As [`mounts_at`].
pub fn is_mountpoint(path: &Path) -> Result<bool> {
    Ok(!mounts_at(path)?.is_empty())
}

/// Parses the text of a mountinfo file; lines it cannot read are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            // `id parent major:minor root mount-point options [optional…] - type source super`
            let fields: Vec<&str> = line.split(' ').collect();
            let device = fields.get(2)?;
            let root = fields.get(3)?;
            let mount_point = fields.get(4)?;
            let options = fields.get(5)?;
            let separator = fields.iter().position(|f| *f == "-")?;
            let fs_type = fields.get(separator + 1)?;
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(mount_point)),
                fs_type: unescape(fs_type).to_string_lossy().into_owned(),
                device: (*device).to_owned(),
                root: PathBuf::from(unescape(root)),
                read_only: options.split(',').any(|option| option == "ro"),
            })
        })
        .collect()
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\134` for a backslash).
fn unescape(field: &str) -> std::ffi::OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(octal) = bytes.get(i + 1..i + 4)
            && octal.iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let value = octal.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt;
    std::ffi::OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_is_parsed_and_unescaped() {
        let text = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    99 27 0:50 / /var/lib/my\\040dir rw shared:5 - tmpfs tmpfs rw,size=1k\n\
                    garbage\n\
                    120 99 0:50 /specs/abc//deleted /k/pods/u/mount ro,nosuid - tmpfs tmpfs rw\n";
        let mounts = parse(text);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[1].mount_point, PathBuf::from("/var/lib/my dir"));
        assert_eq!(mounts[1].fs_type, "tmpfs");
        assert_eq!(mounts[1].device, "0:50");
        assert!(!mounts[1].read_only && !mounts[1].deleted());
        assert_eq!(mounts[2].root, PathBuf::from("/specs/abc//deleted"));
        assert!(mounts[2].read_only && mounts[2].deleted());
    }
}

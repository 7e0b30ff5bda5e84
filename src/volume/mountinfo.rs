//! The one reader of `/proc/self/mountinfo`: which mounts exist, and where.

use std::path::{Path, PathBuf};

use super::{Error, Result};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of `/proc/self/mountinfo`, the fields we use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fs_type: String,
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
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = fields.get(4)?;
            let separator = fields.iter().position(|f| *f == "-")?;
            let fs_type = fields.get(separator + 1)?;
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(mount_point)),
                fs_type: unescape(fs_type).to_string_lossy().into_owned(),
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
                    garbage\n";
        let mounts = parse(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[1].mount_point, PathBuf::from("/var/lib/my dir"));
        assert_eq!(mounts[1].fs_type, "tmpfs");
    }
}

//! Thin wrappers around the mount syscalls: one syscall each (the mountinfo scan aside), errors
//! naming what and where.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use super::{Error, Result};

const MOUNTINFO: &str = "/proc/self/mountinfo";

fn mount_error(op: &'static str, path: &Path, source: Errno) -> Error {
    Error::Mount { op, path: path.to_owned(), source }
}

/// Mounts a fresh tmpfs at `target`: no setuid, no devices, no exec.
pub fn mount_tmpfs(target: &Path, size_bytes: u64, selinux_context: Option<&str>) -> Result<()> {
    let mut data = format!("size={size_bytes},mode=0755");
    if let Some(context) = selinux_context {
        data.push_str(&format!(",context={context}"));
    }
    nix::mount::mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
    .map_err(|e| mount_error("mount a tmpfs on", target, e))
}

/// Bind-mounts `source` onto `target` (not recursive: a spec directory holds no mounts).
pub fn bind(source: &Path, target: &Path) -> Result<()> {
    nix::mount::mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| mount_error("bind-mount onto", target, e))
}

/// Makes an existing bind mount read-only, without setuid, devices or exec.
pub fn remount_bind_readonly(target: &Path) -> Result<()> {
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(|e| mount_error("remount read-only", target, e))
}

/// Unmounts `target` without following a final symlink. `Ok(false)` when nothing was mounted
/// there (EINVAL) or the path is gone (ENOENT).
pub fn unmount(target: &Path) -> Result<bool> {
    match nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL | Errno::ENOENT) => Ok(false),
        Err(e) => Err(mount_error("unmount", target, e)),
    }
}

/// Detaches `target` lazily (the kernel unmounts once the last user is gone).
pub fn unmount_lazy(target: &Path) -> Result<bool> {
    match nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW | MntFlags::MNT_DETACH) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL | Errno::ENOENT) => Ok(false),
        Err(e) => Err(mount_error("detach", target, e)),
    }
}

/// One line of `/proc/self/mountinfo`, the fields we use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fs_type: String,
}

/// All mounts in this mount namespace, in mount order.
pub fn mounts() -> Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string(MOUNTINFO).map_err(|source| Error::Io {
        op: "read",
        path: PathBuf::from(MOUNTINFO),
        source,
    })?;
    Ok(parse_mountinfo(&text))
}

/// The mounts whose mount point is exactly `path` (symlinks in `path` resolved), bottom first.
/// Empty when `path` does not exist.
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

/// Whether something is mounted exactly at `path` (symlinks in `path` resolved). One `statx`
/// where the kernel reports `STATX_ATTR_MOUNT_ROOT` (Linux 5.8+), else a mountinfo scan.
pub fn is_mountpoint(path: &Path) -> Result<bool> {
    match is_mount_root(path)? {
        Some(answer) => Ok(answer),
        None => is_mountpoint_by_mountinfo(path),
    }
}

/// `statx`'s answer: `None` when the kernel (or the filesystem) does not report
/// `STATX_ATTR_MOUNT_ROOT`. `Some(false)` when `path` does not exist. O(1), unlike the mountinfo
/// scan, which costs O(mounts) per call and so O(n²) over n published volumes.
pub fn is_mount_root(path: &Path) -> Result<Option<bool>> {
    use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags};
    // No SYMLINK_NOFOLLOW: like the mountinfo scan, a symlink is judged by what it points at.
    // NO_AUTOMOUNT: asking must not trigger an automount.
    match rustix::fs::statx(CWD, path, AtFlags::NO_AUTOMOUNT, StatxFlags::empty()) {
        Ok(stx) => Ok(stx
            .stx_attributes_mask
            .contains(StatxAttributes::MOUNT_ROOT)
            .then(|| stx.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))),
        Err(rustix::io::Errno::NOENT) => Ok(Some(false)),
        // statx itself missing (seccomp, very old kernels): let the scan answer.
        Err(rustix::io::Errno::NOSYS) => Ok(None),
        Err(e) => Err(Error::Io { op: "inspect", path: path.to_owned(), source: e.into() }),
    }
}

/// The fallback: scans `/proc/self/mountinfo`.
pub fn is_mountpoint_by_mountinfo(path: &Path) -> Result<bool> {
    Ok(!mounts_at(path)?.is_empty())
}

pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
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
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[1].mount_point, PathBuf::from("/var/lib/my dir"));
        assert_eq!(mounts[1].fs_type, "tmpfs");
    }
}

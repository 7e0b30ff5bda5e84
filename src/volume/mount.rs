//! Thin wrappers around the mount syscalls: one syscall each, errors naming what and where.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use super::{Error, Result, mountinfo};

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

/// Whether something is mounted exactly at `path` (symlinks in `path` resolved). One `statx`
/// where the kernel reports `STATX_ATTR_MOUNT_ROOT` (Linux 5.8+), else a mountinfo scan.
pub fn is_mountpoint(path: &Path) -> Result<bool> {
    match is_mount_root(path)? {
        Some(answer) => Ok(answer),
        None => mountinfo::is_mountpoint(path),
    }
}

/// `statx`'s answer: `None` when the kernel (or the filesystem) does not report
/// `STATX_ATTR_MOUNT_ROOT`. `Some(false)` when `path` does not exist. O(1), unlike the mountinfo
/// scan, which costs O(mounts) per call and so O(n²) over n published volumes.
pub fn is_mount_root(path: &Path) -> Result<Option<bool>> {
    // No SYMLINK_NOFOLLOW: like the mountinfo scan, a symlink is judged by what it points at.
    statx_mount_root(rustix::fs::CWD, path, rustix::fs::AtFlags::empty(), path)
}

/// [`is_mount_root`] for `name` in the open directory `dir`; a symlink there is not followed
/// (it is never a mount root).
pub fn is_mount_root_at(dir: impl AsFd, name: &OsStr) -> Result<Option<bool>> {
    statx_mount_root(dir, Path::new(name), rustix::fs::AtFlags::SYMLINK_NOFOLLOW, Path::new(name))
}

fn statx_mount_root(dir: impl AsFd, path: &Path, flags: rustix::fs::AtFlags, shown: &Path) -> Result<Option<bool>> {
    use rustix::fs::{AtFlags, StatxAttributes, StatxFlags};
    // NO_AUTOMOUNT: asking must not trigger an automount.
    match rustix::fs::statx(dir, path, flags | AtFlags::NO_AUTOMOUNT, StatxFlags::empty()) {
        Ok(stx) => Ok(stx
            .stx_attributes_mask
            .contains(StatxAttributes::MOUNT_ROOT)
            .then(|| stx.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))),
        Err(rustix::io::Errno::NOENT) => Ok(Some(false)),
        // statx itself missing (seccomp, very old kernels): let the scan answer.
        Err(rustix::io::Errno::NOSYS) => Ok(None),
        Err(e) => Err(Error::Io { op: "inspect", path: shown.to_owned(), source: e.into() }),
    }
}

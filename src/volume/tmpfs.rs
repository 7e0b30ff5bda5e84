//! The driver's tmpfs: mounted at the first start, adopted after a restart (what a crash left in
//! it is [`reconcile`](super::reconcile)'s business).
//!
//! ```text
//! <state_dir>/tmpfs/          the tmpfs (--store-size)
//! <state_dir>/tmpfs/specs/    one directory per spec digest
//! <state_dir>/tmpfs/blobs/    what the spec directories hard-link (see `blobs`)
//! <state_dir>/store/          a bind mount of tmpfs/specs: the store as it is shown
//! ```
//!
//! Spec directories are written through `tmpfs/`, since a hard link cannot cross mounts.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{Result, fsutil, mount, mountinfo};

const SELINUX_ENFORCE: &str = "/sys/fs/selinux/enforce";
const SELINUX_CONTEXT: &str = "system_u:object_r:container_file_t:s0";

/// Mounts a tmpfs of `size_bytes` at `root`, or adopts the one a previous run mounted there.
pub(super) fn mount_or_adopt(root: &Path, size_bytes: u64) -> Result<()> {
    if mountinfo::mounts_at(root)?.last().is_some_and(|m| m.fs_type == "tmpfs") {
        tracing::info!(path = %root.display(), "adopting the driver's tmpfs");
    } else {
        let context = Path::new(SELINUX_ENFORCE).exists().then_some(SELINUX_CONTEXT);
        mount::mount_tmpfs(root, size_bytes, context)?;
        tracing::info!(path = %root.display(), size = size_bytes, "mounted the driver's tmpfs");
    }
    Ok(())
}

/// Bind-mounts `specs` onto `shown`, or adopts the bind mount a previous run made (the same
/// directory is then already seen through it).
pub(super) fn bind_or_adopt(specs: &Path, shown: &Path) -> Result<()> {
    let identity =
        |path: &Path| fs::metadata(path).map(|m| (m.dev(), m.ino())).map_err(|e| fsutil::io_error("inspect", path, e));
    if identity(specs)? == identity(shown)? {
        tracing::info!(path = %shown.display(), "adopting the store's bind mount");
        return Ok(());
    }
    if mount::is_mountpoint(shown)? {
        // The layout of a driver before blobs: a tmpfs right here. Volumes published from it
        // keep it underneath; new ones use the new store.
        tracing::warn!(path = %shown.display(), "a mount of an older layout is in the way; mounting the store over it");
    }
    mount::bind(specs, shown)?;
    tracing::info!(path = %shown.display(), "bind-mounted the store");
    Ok(())
}

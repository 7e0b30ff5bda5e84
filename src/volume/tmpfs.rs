//! The driver's tmpfs: mounted at the first start, adopted after a restart, and cleaned of what
//! a crash left in it.
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
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::spec::SpecDigest;

use super::index::Index;
use super::{Result, atomic, mount, mountinfo};

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
        |path: &Path| fs::metadata(path).map(|m| (m.dev(), m.ino())).map_err(|e| atomic::io_error("inspect", path, e));
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

/// Removes what a crash left in the store: temporary spec dirs, spec dirs no record uses
/// (unless some record was unreadable: it might be theirs), stray generations; then every blob
/// nothing links any more.
pub(super) fn collect_garbage(root: &Path, index: &Index, unreadable: usize) {
    collect_spec_dirs(root, index, unreadable);
    index.blobs().sweep();
}

fn collect_spec_dirs(root: &Path, index: &Index, unreadable: usize) {
    let entries = match fs::read_dir(root).and_then(|e| e.collect::<io::Result<Vec<_>>>()) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(path = %root.display(), error = %e, "cannot list the store for cleanup");
            return;
        }
    };
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let result = if name.starts_with(atomic::TMP_PREFIX) {
            tracing::info!(path = %path.display(), "removing a half-made spec directory");
            atomic::remove_tree(&path)
        } else if let Some(digest) = SpecDigest::parse(&name) {
            if index.contains(&digest) {
                atomic::remove_stray_generations(index.blobs(), &path, &|_| false)
            } else if unreadable == 0 {
                tracing::info!(path = %path.display(), "removing a spec directory no volume uses");
                atomic::remove_tree(&path)
            } else {
                tracing::warn!(path = %path.display(), "keeping an unused spec directory: some records are unreadable");
                Ok(())
            }
        } else {
            tracing::warn!(path = %path.display(), "unexpected entry in the store; leaving it");
            Ok(())
        };
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "store cleanup failed");
        }
    }
}

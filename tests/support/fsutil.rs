//! Small file-system helpers: mount table look-ups and directory walks.

use std::path::{Path, PathBuf};

/// Mount points of this mount namespace (the driver's own mountinfo reader).
pub fn mount_points() -> Vec<PathBuf> {
    trustmount::volume::mounts().expect("read /proc/self/mountinfo").into_iter().map(|m| m.mount_point).collect()
}

pub fn is_mount_point(path: &Path) -> bool {
    mount_points().iter().any(|m| m == path)
}

/// Unmounts (lazily) every mount at or below `root`, deepest first. Best effort.
pub fn unmount_all_below(root: &Path) {
    let mut points: Vec<PathBuf> = mount_points().into_iter().filter(|m| m.starts_with(root)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Every path below `root` (not following symlinks), relative to it.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(root).unwrap().to_path_buf());
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Runs a command, returning (success, stdout, stderr) as text.
pub fn run(cmd: &mut std::process::Command) -> (bool, String, String) {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| super::tools::spawn_failed(cmd.get_program(), e));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

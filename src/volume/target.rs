//! Targets, checked once: [`Targets::resolve`] refuses a path outside the kubelet's pods dir and
//! returns a [`Target`] holding its parent directory open, opened beneath the pods dir without
//! following a symlink. Every later step (mkdir, mount, unmount, rmdir) goes through that
//! descriptor, so a symlink swapped into the path after the check cannot redirect it.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::{Error, Result, mount};

/// Below `--kubelet-dir`: every pod volume's target (`pods/<uid>/volumes/<plugin>/<name>/mount`).
const PODS_DIR: &str = "pods";
/// `openat2` answers EAGAIN when a rename or mount elsewhere raced a scoped lookup; it is worth
/// a few more tries, not a failed publish.
const OPEN_ATTEMPTS: usize = 8;
/// The mode of a target directory the driver has to make itself.
pub(super) const TARGET_DIR_MODE: u32 = 0o750;

fn io_error(op: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io { op, path: path.to_owned(), source }
}

/// Checks targets against `<kubelet_dir>/pods`.
#[derive(Debug)]
pub(super) struct Targets {
    /// `<kubelet_dir>/pods` as configured: the lexical check.
    pods_dir: PathBuf,
    /// The same with symlinks resolved: resolved at open, or at first use when it did not exist
    /// yet then.
    pods_real: OnceLock<PathBuf>,
}

/// A target path, checked: the path the kubelet gave (records and locks are keyed by it), the
/// path it resolved to, and its parent directory held open.
#[derive(Debug)]
pub struct Target {
    given: PathBuf,
    resolved: PathBuf,
    /// The resolved parent, opened `O_PATH`; `None` when it does not exist (nothing can be
    /// mounted there, and the kubelet makes it before publishing).
    parent: Option<OwnedFd>,
    /// The target's last component, looked up in `parent`.
    name: OsString,
}

/// What is at a target, without following a symlink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Found {
    Nothing,
    Directory,
    /// A file, a symlink, a socket…: never mounted over.
    Other,
}

impl Targets {
    pub fn new(kubelet_dir: &Path) -> Self {
        let pods_dir = kubelet_dir.join(PODS_DIR);
        let pods_real = OnceLock::new();
        // Once here rather than on every call; a kubelet dir that does not exist yet is resolved
        // on first use instead.
        if let Ok(path) = fs::canonicalize(&pods_dir) {
            let _ = pods_real.set(path);
        }
        Self { pods_dir, pods_real }
    }

    fn pods_real(&self) -> Result<&Path> {
        if let Some(path) = self.pods_real.get() {
            return Ok(path);
        }
        let resolved = fs::canonicalize(&self.pods_dir).map_err(|e| io_error("resolve", &self.pods_dir, e))?;
        Ok(self.pods_real.get_or_init(|| resolved))
    }

    /// Whether `mount_point` (resolved) is where the kubelet puts pod volumes,
    /// `<pods>/<uid>/volumes/…`. The kubelet's own binds of a volume elsewhere (`subPath`:
    /// `<pods>/<uid>/volume-subpaths/…`) are not, and are never the driver's to unmount.
    pub fn is_volume_path(&self, mount_point: &Path) -> bool {
        let Ok(pods) = self.pods_real() else {
            return false;
        };
        let mut below = match mount_point.strip_prefix(pods) {
            Ok(below) => below.components(),
            Err(_) => return false,
        };
        matches!(
            (below.next(), below.next(), below.next()),
            (Some(Component::Normal(_)), Some(Component::Normal(volumes)), Some(Component::Normal(_))) if volumes == "volumes"
        )
    }

    /// Checks that `given` is inside the kubelet's pods dir (every pod volume's mount point is),
    /// lexically and with symlinks resolved, and opens its parent beneath the pods dir. Creates
    /// nothing.
    ///
    /// # Errors
    /// `TargetOutsideKubeletDir` for a target outside `<kubelet_dir>/pods` (or a dangling
    /// symlink, whose destination cannot be checked); `TargetChanged` when a symlink appeared in
    /// the resolved path between the check and the open.
    pub fn resolve(&self, given: &Path) -> Result<Target> {
        let outside =
            || Error::TargetOutsideKubeletDir { target: given.to_owned(), kubelet_dir: self.pods_dir.clone() };
        let lexically_inside = given.is_absolute()
            && !given.components().any(|c| matches!(c, Component::ParentDir))
            && given.starts_with(&self.pods_dir)
            && given != self.pods_dir.as_path();
        if !lexically_inside {
            return Err(outside());
        }
        let pods_real = self.pods_real()?;
        // The nearest existing ancestor, resolved, plus the names below it that do not exist.
        let mut existing = given;
        let mut missing = Vec::new();
        loop {
            match fs::symlink_metadata(existing) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing.push(existing.file_name().ok_or_else(outside)?);
                    existing = existing.parent().ok_or_else(outside)?;
                }
                Err(e) => return Err(io_error("inspect", existing, e)),
            }
        }
        let mut resolved = match resolve(existing) {
            Ok(path) => path,
            // A dangling symlink: where it points cannot be checked.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(outside()),
            Err(e) => return Err(io_error("resolve", existing, e)),
        };
        resolved.extend(missing.iter().rev());
        if !resolved.starts_with(pods_real) || resolved == pods_real {
            return Err(outside());
        }
        let (Some(parent_path), Some(name)) = (resolved.parent(), resolved.file_name()) else {
            return Err(outside());
        };
        let below = parent_path.strip_prefix(pods_real).map_err(|_| outside())?;
        let parent = match open_beneath(pods_real, below) {
            Ok(fd) => Some(fd),
            Err(Errno::NOENT) => None,
            // ELOOP: a symlink where the resolution found none; EXDEV: the path now leaves.
            Err(Errno::LOOP | Errno::XDEV) => return Err(Error::TargetChanged { target: given.to_owned() }),
            Err(e) => return Err(io_error("open", parent_path, e.into())),
        };
        let name = name.to_owned();
        Ok(Target { given: given.to_owned(), resolved, parent, name })
    }
}

impl Target {
    /// The path the kubelet gave.
    pub fn given(&self) -> &Path {
        &self.given
    }

    /// The path it resolved to, for logs and errors; syscalls go through the parent's fd.
    pub fn resolved(&self) -> &Path {
        &self.resolved
    }

    fn parent(&self) -> Result<&OwnedFd> {
        self.parent.as_ref().ok_or_else(|| {
            io_error(
                "create",
                &self.resolved,
                io::Error::new(io::ErrorKind::NotFound, "the parent directory is missing"),
            )
        })
    }

    /// `/proc/self/fd/<parent>/<name>`: the target's name in the directory that was checked.
    /// Only for syscalls that do not follow a final symlink.
    fn in_parent(&self) -> Option<PathBuf> {
        self.parent.as_ref().map(|parent| fd_path(parent).join(&self.name))
    }

    /// Errors of syscalls made through `/proc/self/fd` name the target instead.
    fn named(&self, error: Error) -> Error {
        match error {
            Error::Mount { op, source, .. } => Error::Mount { op, path: self.resolved.clone(), source },
            Error::Io { op, source, .. } => Error::Io { op, path: self.resolved.clone(), source },
            other => other,
        }
    }

    pub(super) fn found(&self) -> Result<Found> {
        let Some(parent) = &self.parent else {
            return Ok(Found::Nothing);
        };
        match rustix::fs::statat(parent, &self.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => Ok(Found::Directory),
            Ok(_) => Ok(Found::Other),
            Err(Errno::NOENT) => Ok(Found::Nothing),
            Err(e) => Err(io_error("inspect", &self.resolved, e.into())),
        }
    }

    /// Makes the target directory (with `mode` less the umask: see [`Target::set_mode`]).
    pub(super) fn create_dir(&self, mode: u32) -> Result<()> {
        rustix::fs::mkdirat(self.parent()?, &self.name, Mode::from_raw_mode(mode))
            .map_err(|e| io_error("create", &self.resolved, e.into()))
    }

    /// Gives the target directory exactly `mode`, whatever the umask.
    pub(super) fn set_mode(&self, mode: u32) -> Result<()> {
        let dir = self.open(OFlags::RDONLY)?;
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode)).map_err(|e| io_error("chmod", &self.resolved, e.into()))
    }

    /// Opens the target directory itself (never a symlink put in its place). A lookup crosses
    /// into whatever is mounted there.
    fn open(&self, flags: OFlags) -> Result<OwnedFd> {
        openat2_retrying(self.parent()?, Path::new(&self.name), flags | OFlags::DIRECTORY | OFlags::CLOEXEC, scoped())
            .map_err(|e| self.open_error(e))
    }

    fn open_error(&self, error: Errno) -> Error {
        match error {
            Errno::LOOP | Errno::XDEV => Error::TargetChanged { target: self.given.clone() },
            e => io_error("open", &self.resolved, e.into()),
        }
    }

    /// Bind-mounts `source` onto the target directory.
    pub(super) fn bind(&self, source: &Path) -> Result<()> {
        let dir = self.open(OFlags::PATH)?;
        // Through the fd: the mount lands on the directory just opened, whatever the path says.
        mount::bind(source, &fd_path(&dir)).map_err(|e| self.named(e))
    }

    /// Makes the bind mount on the target read-only, without setuid, devices or exec.
    pub(super) fn remount_read_only(&self) -> Result<()> {
        // Opened after the bind: the fd is the new mount's root, which a remount needs.
        let root = self.open(OFlags::PATH)?;
        mount::remount_bind_readonly(&fd_path(&root)).map_err(|e| self.named(e))
    }

    /// Whether something is mounted on the target (a symlink there is not followed).
    pub fn is_mounted(&self) -> Result<bool> {
        let Some(parent) = &self.parent else {
            return Ok(false);
        };
        match mount::is_mount_root_at(parent, &self.name).map_err(|e| self.named(e))? {
            Some(answer) => Ok(answer),
            None => super::mountinfo::is_mountpoint(&self.resolved),
        }
    }

    /// Unmounts the top mount on the target; `Ok(false)` when nothing was mounted there.
    pub(super) fn unmount(&self) -> Result<bool> {
        // Not through an fd of the mount itself: an open fd would keep it busy.
        let Some(path) = self.in_parent() else {
            return Ok(false);
        };
        mount::unmount(&path).map_err(|e| self.named(e))
    }

    /// Detaches the top mount lazily (the kernel unmounts once the last user is gone).
    pub(super) fn unmount_lazy(&self) -> Result<bool> {
        let Some(path) = self.in_parent() else {
            return Ok(false);
        };
        mount::unmount_lazy(&path).map_err(|e| self.named(e))
    }

    /// Removes the target directory if it is empty.
    pub(super) fn remove_dir(&self) -> io::Result<()> {
        let Some(parent) = &self.parent else {
            return Err(io::ErrorKind::NotFound.into());
        };
        rustix::fs::unlinkat(parent, &self.name, AtFlags::REMOVEDIR).map_err(io::Error::from)
    }

    /// Removes an empty target directory; anything else is only logged (never delete a pod's
    /// data).
    pub(super) fn remove_empty_dir(&self) {
        match self.remove_dir() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(target = %self.resolved.display(), error = %e, "cannot remove the target directory")
            }
        }
    }
}

/// Beneath the opened directory, and no symlink anywhere, the last component included.
fn scoped() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS
}

fn openat2_retrying(dir: &OwnedFd, path: &Path, flags: OFlags, resolve: ResolveFlags) -> rustix::io::Result<OwnedFd> {
    let mut attempts = 0;
    loop {
        match rustix::fs::openat2(dir, path, flags, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if attempts + 1 < OPEN_ATTEMPTS => attempts += 1,
            result => return result,
        }
    }
}

/// Opens `root` (already resolved: no symlink in it) and then `below` beneath it, `O_PATH`,
/// refusing any symlink and any step out of `root`.
pub(super) fn open_beneath(root: &Path, below: &Path) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let root = rustix::fs::openat2(CWD, root, flags, Mode::empty(), ResolveFlags::NO_SYMLINKS)?;
    let below = if below.as_os_str().is_empty() { Path::new(".") } else { below };
    openat2_retrying(&root, below, flags, scoped())
}

/// The name the kernel gives an open fd: a magic link to exactly what was opened.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `fs::canonicalize` in three syscalls instead of a `readlink` per component: the kernel
/// resolves the path once (open `O_PATH`) and names what it found (`/proc/self/fd`). Falls
/// back to `canonicalize` without `/proc`, or when the kernel's name is not a plain path.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    let fd = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
    match fs::read_link(fd_path(&fd)) {
        // Not absolute: not reachable from our root. " (deleted)": gone meanwhile.
        Ok(name) if name.is_absolute() && !name.as_os_str().as_encoded_bytes().ends_with(b" (deleted)") => Ok(name),
        _ => fs::canonicalize(path),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    struct Kubelet {
        dir: tempfile::TempDir,
        targets: Targets,
    }

    impl Kubelet {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join(PODS_DIR)).unwrap();
            let targets = Targets::new(dir.path());
            Self { dir, targets }
        }

        fn pods(&self) -> PathBuf {
            self.dir.path().join(PODS_DIR)
        }

        /// `pods/<uid>/volumes/kubernetes.io~csi/trust`, made as the kubelet makes it.
        fn volume_dir(&self, uid: &str) -> PathBuf {
            let dir = self.pods().join(uid).join("volumes/kubernetes.io~csi/trust");
            fs::create_dir_all(&dir).unwrap();
            dir
        }
    }

    #[test]
    fn a_target_carries_the_given_and_the_resolved_path() {
        let kubelet = Kubelet::new();
        let real = kubelet.volume_dir("pod-a");
        symlink(&real, kubelet.pods().join("alias")).unwrap();
        let given = kubelet.pods().join("alias/mount");
        let target = kubelet.targets.resolve(&given).unwrap();
        assert_eq!(target.given(), given);
        assert_eq!(target.resolved(), fs::canonicalize(&real).unwrap().join("mount"));
        assert_eq!(target.found().unwrap(), Found::Nothing);
    }

    #[test]
    fn open_beneath_refuses_a_symlink_in_the_path_even_one_that_stays_inside() {
        let kubelet = Kubelet::new();
        kubelet.volume_dir("pod-a");
        symlink(kubelet.pods().join("pod-a"), kubelet.pods().join("alias")).unwrap();
        symlink("pod-a", kubelet.pods().join("relative-alias")).unwrap();
        let pods = fs::canonicalize(kubelet.pods()).unwrap();
        assert!(open_beneath(&pods, Path::new("pod-a/volumes")).is_ok());
        assert_eq!(open_beneath(&pods, Path::new("alias/volumes")).unwrap_err(), Errno::LOOP);
        assert_eq!(open_beneath(&pods, Path::new("relative-alias/volumes")).unwrap_err(), Errno::LOOP);
        assert_eq!(open_beneath(&pods, Path::new("alias")).unwrap_err(), Errno::LOOP);
        assert_eq!(open_beneath(&pods, Path::new("../..")).unwrap_err(), Errno::XDEV);
    }

    #[test]
    fn a_symlink_swapped_in_as_the_target_after_the_check_is_refused() {
        let kubelet = Kubelet::new();
        let outside = tempfile::tempdir().unwrap();
        let volume = kubelet.volume_dir("pod-a");
        let given = volume.join("mount");
        let target = kubelet.targets.resolve(&given).unwrap();
        symlink(outside.path(), &given).unwrap();
        assert_eq!(target.found().unwrap(), Found::Other, "the symlink itself, not where it points");
        assert!(matches!(target.open(OFlags::PATH), Err(Error::TargetChanged { .. })));
        assert!(matches!(target.bind(outside.path()), Err(Error::TargetChanged { .. })));
        assert!(matches!(target.create_dir(0o750), Err(Error::Io { .. })), "EEXIST, not a directory made outside");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_parent_swapped_for_a_symlink_after_the_check_does_not_redirect_the_target() {
        let kubelet = Kubelet::new();
        let outside = tempfile::tempdir().unwrap();
        let volume = kubelet.volume_dir("pod-a");
        let target = kubelet.targets.resolve(&volume.join("mount")).unwrap();
        // The checked directory moves away and a symlink to elsewhere takes its name.
        let moved = kubelet.pods().join("moved");
        fs::rename(&volume, &moved).unwrap();
        symlink(outside.path(), &volume).unwrap();
        target.create_dir(0o750).unwrap();
        target.set_mode(0o750).unwrap();
        assert!(moved.join("mount").is_dir(), "made in the directory that was checked");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        target.remove_dir().unwrap();
        assert!(!moved.join("mount").exists());
        // A new resolution sees the symlink, and refuses it: it leads outside.
        assert!(matches!(kubelet.targets.resolve(&volume.join("mount")), Err(Error::TargetOutsideKubeletDir { .. })));
    }

    #[test]
    fn only_pod_volume_dirs_are_volume_paths() {
        let kubelet = Kubelet::new();
        let pods = fs::canonicalize(kubelet.pods()).unwrap();
        assert!(kubelet.targets.is_volume_path(&pods.join("uid/volumes/kubernetes.io~csi/trust/mount")));
        assert!(!kubelet.targets.is_volume_path(&pods.join("uid/volume-subpaths/trust/app/0")));
        assert!(!kubelet.targets.is_volume_path(&pods.join("uid/volumes")));
        assert!(!kubelet.targets.is_volume_path(Path::new("/elsewhere/uid/volumes/x/mount")));
    }

    #[test]
    fn a_missing_parent_is_not_an_error_until_something_is_made() {
        let kubelet = Kubelet::new();
        let target = kubelet.targets.resolve(&kubelet.pods().join("gone/volumes/x/trust/mount")).unwrap();
        assert_eq!(target.found().unwrap(), Found::Nothing);
        assert!(!target.is_mounted().unwrap());
        assert!(!target.unmount().unwrap());
        assert!(matches!(target.create_dir(0o750), Err(Error::Io { op: "create", .. })));
    }
}

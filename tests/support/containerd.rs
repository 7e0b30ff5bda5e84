//! A containerd of a test's own (no CRI plugin: `ctr` drives it), for tests that import and
//! run an image without a node (`tests/suite/slow/image.rs`, `node_images.rs`).

use std::process::{Child, Command, Output, Stdio};

/// A containerd of the test's own: its root, state and socket in a temporary directory, in a
/// private mount namespace of its own (unshare), so the rootfs mounts it and its shims make
/// die with it.
pub struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

fn program(name: &str) -> Command {
    let mut command = Command::new(super::tools::which(name));
    command.stdin(Stdio::null());
    command
}

impl Containerd {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"#,
            root = path.join("root").display(),
            state = path.join("state").display(),
            socket = path.join("containerd.sock").display(),
        );
        std::fs::write(path.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(path.join("containerd.log")).unwrap();
        let child = program("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg(super::tools::which("containerd"))
            .arg("--config")
            .arg(path.join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| super::tools::spawn_failed("containerd".as_ref(), e));
        let containerd = Self { child, dir };
        // Up when it answers; the limit bounds a hang.
        let up = super::poll_until_blocking(std::time::Duration::from_secs(60), super::wait::POLL, || {
            if containerd.ctr(&["version"]).status.success() { Ok(()) } else { Err(()) }
        });
        assert!(up.is_ok(), "containerd did not start:\n{}", containerd.log());
        containerd
    }

    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// `ctr` against this containerd, in its `default` namespace unless `args` name one.
    pub fn command(&self) -> Command {
        let mut command = program("ctr");
        command.arg("--address").arg(self.socket());
        command
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

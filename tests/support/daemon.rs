//! The real `trustmount serve`, started as a child process on a unix socket in a tempdir.
//!
//! Only start it inside a private mount namespace (see `ns.rs`): it mounts a tmpfs and binds.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use trustmount::proto::csi::v1::ProbeRequest;

use super::client::Clients;

pub const BIN: &str = env!("CARGO_BIN_EXE_trustmount");
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub node_id: String,
    /// `auto`, `embedded`, `none` or a file path.
    pub system_roots: String,
    pub extra_pems: Vec<PathBuf>,
    pub driver_name: Option<String>,
    /// Given as `unix://<abs path>` (true) or as a bare path (false).
    pub endpoint_with_scheme: bool,
    pub extra_args: Vec<String>,
    /// Reuse a stopped daemon's directory (kubelet dir, state dir, socket): a driver restart.
    pub restart_in: Option<PathBuf>,
    /// Another build of the driver (a bench's baseline); this build's binary when `None`.
    pub binary: Option<PathBuf>,
    /// A real kubelet's directory (`support::node`) instead of one in the daemon's own
    /// directory; the CSI socket then goes where the kubelet looks for it,
    /// `<kubelet dir>/plugins/<driver>/csi.sock`.
    pub kubelet_dir: Option<PathBuf>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            node_id: "node-under-test".to_string(),
            system_roots: "embedded".to_string(),
            extra_pems: vec![],
            driver_name: None,
            endpoint_with_scheme: true,
            extra_args: vec![],
            restart_in: None,
            binary: None,
            kubelet_dir: None,
        }
    }
}

impl DaemonOptions {
    pub fn extra_pem(mut self, path: impl Into<PathBuf>) -> Self {
        self.extra_pems.push(path.into());
        self
    }
    pub fn restart_in(mut self, root: impl Into<PathBuf>) -> Self {
        self.restart_in = Some(root.into());
        self
    }
    pub fn system_roots(mut self, value: &str) -> Self {
        self.system_roots = value.to_string();
        self
    }
}

pub struct Daemon {
    child: Option<Child>,
    /// Owns the directory below unless this daemon restarted in another one's.
    _owned_dir: Option<tempfile::TempDir>,
    /// Holds everything: socket, kubelet dir, state dir, stderr log.
    pub root: PathBuf,
    pub socket: PathBuf,
    pub kubelet_dir: PathBuf,
    pub state_dir: PathBuf,
    pub stderr_path: PathBuf,
    pub clients: Clients,
}

impl Daemon {
    /// Spawns `trustmount serve` and waits until `Identity/Probe` says ready.
    /// Panics (with the daemon's stderr) if it exits or is not ready within 20 s.
    pub async fn start(opts: DaemonOptions) -> Self {
        let (owned_dir, root) = match &opts.restart_in {
            Some(root) => (None, root.clone()),
            None => {
                let dir = tempfile::Builder::new().prefix("trustmount-e2e-").tempdir().expect("tempdir");
                let root = dir.path().to_path_buf();
                (Some(dir), root)
            }
        };
        let (socket, kubelet_dir) = match &opts.kubelet_dir {
            Some(kubelet_dir) => {
                let driver = opts.driver_name.as_deref().unwrap_or("csi.trustmount.io");
                (kubelet_dir.join("plugins").join(driver).join("csi.sock"), kubelet_dir.clone())
            }
            None => (root.join("csi.sock"), root.join("kubelet")),
        };
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let state_dir = root.join("state");
        std::fs::create_dir_all(&kubelet_dir).unwrap();
        let stderr_path = root.join("daemon.stderr");
        let stderr = File::create(&stderr_path).unwrap();

        let endpoint = if opts.endpoint_with_scheme {
            format!("unix://{}", socket.display())
        } else {
            socket.display().to_string()
        };
        let binary = opts.binary.clone().unwrap_or_else(|| PathBuf::from(BIN));
        let mut cmd = Command::new(&binary);
        cmd.arg("serve")
            .args(["--endpoint", &endpoint])
            .args(["--node-id", &opts.node_id])
            .arg("--kubelet-dir")
            .arg(&kubelet_dir)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(["--system-roots", &opts.system_roots]);
        for pem in &opts.extra_pems {
            cmd.arg("--extra-pem").arg(pem);
        }
        if let Some(name) = &opts.driver_name {
            cmd.args(["--driver-name", name]);
        }
        cmd.args(&opts.extra_args);
        // Hermetic: the cluster a test means is given by flag, never inherited.
        cmd.env_remove("KUBECONFIG").env_remove("KUBERNETES_SERVICE_HOST");
        if std::env::var_os("RUST_LOG").is_none() {
            // (The HTTP/2 stack logs every frame at debug.)
            cmd.env("RUST_LOG", "debug,h2=info,hyper=info,hyper_util=info");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));

        let ready = super::poll_until(READY_TIMEOUT, Duration::from_millis(100), async || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "trustmount serve exited before becoming ready ({status})\n--- stderr\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
            if !socket.exists() {
                return Err(String::from("socket not created yet"));
            }
            let channel = super::client::connect(&socket).await.map_err(|e| format!("connect failed: {e}"))?;
            let mut identity = trustmount::proto::csi::v1::identity_client::IdentityClient::new(channel.clone());
            match identity.probe(ProbeRequest {}).await {
                Ok(resp) if resp.get_ref().ready == Some(true) => {
                    Ok(Clients { identity, node: trustmount::proto::csi::v1::node_client::NodeClient::new(channel) })
                }
                Ok(resp) => Err(format!("probe answered {:?}", resp.get_ref())),
                Err(status) => Err(format!("probe failed: {status}")),
            }
        })
        .await;
        match ready {
            Ok(clients) => Self {
                child: Some(child),
                _owned_dir: owned_dir,
                root,
                socket,
                kubelet_dir,
                state_dir,
                stderr_path,
                clients,
            },
            Err(last_error) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "trustmount serve not ready after {READY_TIMEOUT:?} ({last_error})\n--- stderr\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        }
    }

    pub fn node(&self) -> trustmount::proto::csi::v1::node_client::NodeClient<tonic::transport::Channel> {
        self.clients.node.clone()
    }

    pub fn identity(&self) -> trustmount::proto::csi::v1::identity_client::IdentityClient<tonic::transport::Channel> {
        self.clients.identity.clone()
    }

    /// The daemon's process id (for /proc figures in the benchmark).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The driver's tmpfs.
    pub fn store_dir(&self) -> PathBuf {
        self.state_dir.join("store")
    }

    /// What the daemon logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Creates what the kubelet creates for a CSI inline volume — the directory
    /// `<kubelet>/pods/<pod_uid>/volumes/kubernetes.io~csi/<volume_name>` — and returns the
    /// target path (its `mount` child, which the driver creates).
    pub fn target(&self, pod_uid: &str, volume_name: &str) -> PathBuf {
        kubelet_target(&self.kubelet_dir, pod_uid, volume_name)
    }

    /// Sends SIGTERM and waits for the exit; panics if it does not exit within 15 s.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon already stopped");

        terminate(&mut child).unwrap_or_else(|| {
            panic!("trustmount serve did not exit within {STOP_TIMEOUT:?} of SIGTERM\n--- stderr\n{}", self.stderr())
        })
    }
}

/// SIGTERM, then wait (bounded); SIGKILL on timeout and return None.
fn terminate(child: &mut Child) -> Option<ExitStatus> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if let Some(status) = child.try_wait().ok().flatten() {
        return Some(status);
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let exited =
        super::poll_until_blocking(STOP_TIMEOUT, super::wait::POLL, || child.try_wait().ok().flatten().ok_or(()));
    if exited.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    exited.ok()
}

pub fn kubelet_target(kubelet_dir: &Path, pod_uid: &str, volume_name: &str) -> PathBuf {
    let parent = kubelet_dir.join("pods").join(pod_uid).join("volumes").join("kubernetes.io~csi").join(volume_name);
    std::fs::create_dir_all(&parent).unwrap();
    parent.join("mount")
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = terminate(&mut child);
        }
        if std::thread::panicking() {
            eprintln!("--- trustmount serve stderr ({})\n{}", self.stderr_path.display(), self.stderr());
        }
        // Leave nothing mounted in the tempdir, so it can be removed (by its owner).
        if self._owned_dir.is_some() {
            super::fsutil::unmount_all_below(&self.root);
        }
    }
}

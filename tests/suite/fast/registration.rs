//! The kubelet's plugin registration and the liveness endpoint, from the outside: the real
//! `trustmount serve` with a kubelet directory in a temp dir, and, where the kubelet's plugin
//! watcher would be, a pluginregistration v1 client built from the same proto. It finds the
//! socket in `plugins_registry/`, calls `GetInfo`, dials the endpoint it was told (the kubelet
//! then calls `NodeGetInfo` there) and reports with `NotifyRegistrationStatus`. Then `/healthz`,
//! as the kubelet's liveness probe calls it.

use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trustmount::proto::csi::v1::{NodeGetInfoRequest, node_client::NodeClient};
use trustmount::proto::pluginregistration::{InfoRequest, RegistrationStatus, registration_client::RegistrationClient};

use crate::in_private_mount_namespace;
use crate::support;
use crate::support::block_on;
use crate::support::daemon::{Daemon, DaemonOptions};

const DRIVER: &str = "csi.trustmount.io";
/// Bounds the wait for a log line of a call that has returned (the write is already done).
const LOG_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

fn registration_socket(kubelet_dir: &Path) -> std::path::PathBuf {
    kubelet_dir.join("plugins_registry").join(format!("{DRIVER}-reg.sock"))
}

#[test]
fn the_kubelets_plugin_watcher_registers_the_driver_over_its_registration_socket() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let dir = tempfile::Builder::new().prefix("trustmount-registration-").tempdir().unwrap();
        let root = dir.path();
        let kubelet_dir = root.join("kubelet");
        let socket = registration_socket(&kubelet_dir);
        // What a driver killed with SIGKILL leaves: the socket file, nobody listening.
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        assert!(std::os::unix::net::UnixStream::connect(&socket).is_err(), "the stale socket refuses connections");

        // The CSI socket as "the kubelet sees it": here the driver runs on the host, so its own path.
        let endpoint = root.join("csi.sock");
        let mut options = DaemonOptions::default().restart_in(root);
        options.extra_args = vec![format!("--kubelet-registration-path={}", endpoint.display())];
        let mut daemon = Daemon::start(options).await;
        assert_eq!(daemon.socket, endpoint);

        let kind = std::fs::symlink_metadata(&socket).expect("the registration socket").file_type();
        assert!(kind.is_socket(), "{} is a socket", socket.display());
        let channel = support::client::connect(&socket).await.expect("the stale socket was replaced by a live one");
        let mut watcher = RegistrationClient::new(channel);
        let info = watcher.get_info(InfoRequest {}).await.expect("GetInfo").into_inner();
        assert_eq!(info.r#type, "CSIPlugin");
        assert_eq!(info.name, DRIVER);
        assert_eq!(info.endpoint, endpoint.display().to_string(), "a bare path, which the kubelet dials as is");
        assert_eq!(info.supported_versions, ["1.0.0"]);

        // The kubelet's next step: NodeGetInfo on the endpoint it was given.
        let csi = support::client::connect(Path::new(&info.endpoint)).await.expect("dial the announced endpoint");
        let node = NodeClient::new(csi).node_get_info(NodeGetInfoRequest {}).await.expect("NodeGetInfo");
        assert_eq!(node.into_inner().node_id, "node-under-test");

        // A refusal is the kubelet's error, logged at warn; then a registration, at info.
        let refusal = "RegisterPlugin error -- failed to get plugin info using RPC GetInfo at socket";
        watcher
            .notify_registration_status(RegistrationStatus { plugin_registered: false, error: refusal.to_owned() })
            .await
            .expect("NotifyRegistrationStatus (refused)");
        let warned = support::poll_until(LOG_LIMIT, support::wait::POLL, async || {
            let log = daemon.stderr();
            log.lines()
                .find(|line| {
                    line.contains("WARN") && line.contains("refused the registration") && line.contains(refusal)
                })
                .map(str::to_owned)
                .ok_or(log)
        })
        .await
        .unwrap_or_else(|log| panic!("no warning with the kubelet's error within {LOG_LIMIT:?}\n{log}"));
        assert!(warned.contains("--kubelet-registration-path"), "the warning says what to check: {warned}");
        watcher
            .notify_registration_status(RegistrationStatus { plugin_registered: true, error: String::new() })
            .await
            .expect("NotifyRegistrationStatus (registered)");
        support::eventually("the registration logged at info", LOG_LIMIT, async || {
            daemon.stderr().lines().any(|line| line.contains("INFO") && line.contains("registered with the kubelet"))
        })
        .await;

        // SIGTERM: a clean exit, and the kubelet's plugin watcher sees the socket go (it
        // deregisters the driver), as it did when node-driver-registrar exited.
        let status = daemon.stop();
        assert!(status.success(), "{status}\n{}", daemon.stderr());
        assert!(!socket.exists(), "the registration socket is removed on shutdown");
        assert!(!endpoint.exists(), "and the CSI socket");
        support::fsutil::unmount_all_below(root);
    });
}

#[test]
fn registration_off_leaves_the_plugin_watchers_directory_alone() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let daemon = Daemon::start(with_args(["--kubelet-registration=false".to_owned()])).await;
        let registry = daemon.kubelet_dir.join("plugins_registry");
        assert!(!registry.exists(), "node-driver-registrar owns {} then", registry.display());
    });
}

#[test]
fn healthz_answers_200_once_the_csi_socket_answers_probe_and_reports_the_registration() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let daemon = Daemon::start(with_args(["--health-addr=127.0.0.1:0".to_owned()])).await;
        let addr = logged_addr(&daemon.stderr(), "health.addr")
            .unwrap_or_else(|| panic!("the daemon logged no health address\n{}", daemon.stderr()));

        let (status, body) = get(addr, "/healthz").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("ok: CSI Probe answers ready"), "{body}");
        assert!(body.contains("kubelet registration: the kubelet has not answered yet"), "{body}");

        let channel = support::client::connect(&registration_socket(&daemon.kubelet_dir)).await.unwrap();
        RegistrationClient::new(channel)
            .notify_registration_status(RegistrationStatus { plugin_registered: true, error: String::new() })
            .await
            .unwrap();
        let (status, body) = get(addr, "/healthz").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("kubelet registration: registered by the kubelet"), "{body}");

        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 404, "no --metrics-addr: this port serves /healthz only: {body}");
    });
}

#[test]
fn healthz_and_metrics_share_one_port_when_both_flags_name_it() {
    if !in_private_mount_namespace!() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    block_on(async {
        let _daemon =
            Daemon::start(with_args([format!("--health-addr={addr}"), format!("--metrics-addr={addr}")])).await;
        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("trustmount_"), "{body}");
    });
}

fn with_args(args: impl IntoIterator<Item = String>) -> DaemonOptions {
    DaemonOptions { extra_args: args.into_iter().collect(), ..DaemonOptions::default() }
}

/// The address a daemon's log line gives in `field` (text format).
fn logged_addr(log: &str, field: &str) -> Option<SocketAddr> {
    let key = format!("{field}=");
    let line = log.lines().find(|line| line.contains(&key))?;
    let start = line.find(&key)? + key.len();
    line[start..].chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect::<String>().parse().ok()
}

/// GET `path` over a fresh HTTP/1.1 connection: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: trustmount\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read the response");
    let response = String::from_utf8(response).expect("a UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("headers end with an empty line");
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    (status, body.to_owned())
}

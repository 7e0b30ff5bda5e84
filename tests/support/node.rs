//! A real single-node cluster for tests: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler, a kubelet and containerd (Debian's, with runc and the CNI bridge), all built or
//! installed by `tests/run`, all inside the private mount and network namespaces the test runs in
//! ([`in_node_namespaces!`](crate::in_node_namespaces)).
//!
//! What makes it run on these machines (`../shared/reference.md`, "A real node"):
//! - The namespaces: `lo` up and a veth pair for the node IP (the kubelet refuses a loopback
//!   one; this kernel has no `dummy` links). Private directories are bound over the paths the
//!   kubelet, containerd and CNI write whatever their configuration says (`/var/lib/kubelet`,
//!   `/run/containerd`, `/var/lib/cni`, `/var/log/pods`, `/var/log/containers`);
//!   `/var/lib/kubelet` is a shared mount there, as a CSI node plugin's `Bidirectional` mount
//!   needs.
//! - cgroup v1 (hybrid) and no systemd: `cgroupDriver: cgroupfs`, `failCgroupV1: false`; every
//!   pod cgroup lives below a cgroup root of this node's own, removed at the end.
//! - Root here lacks CAP_SYS_RESOURCE: containerd's `restrict_oom_score_adj = true`.
//! - No registry: images are imported (`support::images`), pods use `imagePullPolicy: Never`.
//!
//! Stopping ([`Drop`]) kills what runs in the node's cgroup root (the pods' processes), the
//! containerd shims of this node's containerd, then the components; it removes the cgroups and,
//! when no other node runs, the host directories nodes had to create as mount points. Mounts
//! and links die with the namespaces.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node as NodeObject, Pod, ServiceAccount};
use kube::Api;

use super::control_plane::{ControlPlane, KUBERNETES_SERVICE_IP, component};
use super::images::Image;
use super::tools;

/// The node IP, on one end of the veth pair; the other end has the gateway.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// Pods' addresses (CNI bridge + host-local); the bridge has the first one.
const POD_SUBNET: &str = "10.88.0.0/24";
pub const NODE_NAME: &str = "trustmount-node";
/// The paths the kubelet, containerd 1.6 and CNI write whatever they are told: a private
/// directory is bound over each.
/// The chart's state directory (`stateDir`) is one of them: the driver's pod writes there.
const PRIVATE_PATHS: &[&str] =
    &["/var/lib/kubelet", "/run/containerd", "/var/lib/cni", "/var/log/pods", "/var/log/containers", STATE_DIR];
/// The private paths a CSI node plugin's `Bidirectional` mounts need to be shared mounts.
const SHARED_PATHS: &[&str] = &[KUBELET_DIR, STATE_DIR];
pub const KUBELET_DIR: &str = "/var/lib/kubelet";
/// The driver's state directory on the node when the chart runs it (its `stateDir`).
pub const STATE_DIR: &str = "/var/lib/trustmount";
/// The kubelet's default `healthzBindAddress` and `healthzPort`.
const KUBELET_HEALTHZ: &str = "http://127.0.0.1:10248/healthz";
const READY_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Node {
    pub plane: ControlPlane,
    /// Holds containerd's root and state, the kubelet's configuration, the logs.
    pub dir: PathBuf,
    pub containerd_socket: PathBuf,
    children: Vec<(&'static str, Child)>,
    kubelet_args: Vec<String>,
    /// `/<name>`: the kubelet's cgroup root, in every cgroup v1 hierarchy.
    cgroup_root: String,
    /// A shared lock on [`HOST_PATHS_LOCK`], held while this node runs.
    host_paths: fs::File,
    _tmp: tempfile::TempDir,
}

impl Node {
    /// Starts the whole node and waits until the Node object is Ready. Call only inside
    /// [`in_node_namespaces!`](crate::in_node_namespaces). `images` are imported before the
    /// kubelet starts (the pause image always); build them before entering the namespaces
    /// (`support::images`), where the Debian mirror is out of reach.
    pub fn start(images: &[&Image]) -> Node {
        tools::require(&["ip", "containerd", "ctr", "runc", "containerd-shim-runc-v2"]);
        let tmp = tempfile::Builder::new().prefix("trustmount-node-").tempdir().expect("node dir");
        let dir = tmp.path().to_owned();
        network();
        let host_paths = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(HOST_PATHS_LOCK)
            .expect("open the node tests' lock");
        // The first node of those running at once saves the host's kernel settings (unless a
        // node that died without stopping left them saved), then shares the lock.
        if host_paths.try_lock().is_ok() && !Path::new(KERNEL_SETTINGS_SAVED).exists() {
            let saved: String = KERNEL_SETTINGS
                .iter()
                .filter_map(|path| Some(format!("{path} {}\n", fs::read_to_string(path).ok()?.trim())))
                .collect();
            fs::write(KERNEL_SETTINGS_SAVED, saved).expect("save the host's kernel settings");
        }
        host_paths.lock_shared().expect("lock the node tests' mount points");
        private_paths(&dir);
        let cgroup_root = format!("trustmount-node-{}", std::process::id());
        make_cgroup_root(&cgroup_root);
        let plane = ControlPlane::for_node(NODE_IP);
        let mut node = Node {
            plane,
            containerd_socket: dir.join("containerd/containerd.sock"),
            dir,
            children: Vec::new(),
            kubelet_args: Vec::new(),
            cgroup_root,
            host_paths,
            _tmp: tmp,
        };
        node.start_containerd();
        node.import(super::images::pause());
        for image in images {
            node.import(image);
        }
        node.start_controllers();
        node.start_kubelet();
        node.wait_ready();
        node
    }

    fn spawn(&mut self, name: &'static str, program: &Path, args: &[String]) {
        // Appended to: a component started again (the kubelet) keeps one log.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .expect("component log");
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = command.spawn().unwrap_or_else(|e| tools::spawn_failed(program.as_os_str(), e));
        self.children.push((name, child));
    }

    /// A component's log, for failure messages.
    pub fn log(&self, name: &str) -> String {
        let text = fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn start_containerd(&mut self) {
        let root = self.dir.join("containerd");
        let cni = self.dir.join("cni");
        fs::create_dir_all(&cni).unwrap();
        fs::write(cni.join("10-trustmount-test.conflist"), cni_config()).unwrap();
        let config = format!(
            r#"version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
            root = root.display(),
            socket = self.containerd_socket.display(),
            pause = super::images::PAUSE,
            cni = cni.display(),
        );
        fs::create_dir_all(&root).unwrap();
        let config_path = self.dir.join("containerd.toml");
        fs::write(&config_path, config).unwrap();
        let containerd = tools::which("containerd");
        self.spawn("containerd", &containerd, &["--config".into(), config_path.display().to_string()]);
        self.wait("containerd", || self.ctr(&["version"]).status.success());
    }

    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.containerd_socket)
            .args(["--namespace", "k8s.io"])
            .args(args)
            .output()
            .expect("run ctr")
    }

    /// Imports an image archive into the node's containerd (where the kubelet finds it).
    pub fn import(&self, image: &Image) {
        let archive = image.archive.display().to_string();
        let imported = self.ctr(&["images", "import", "--no-unpack", &archive]);
        assert!(
            imported.status.success(),
            "ctr images import {archive}: {}\n{}",
            String::from_utf8_lossy(&imported.stderr),
            self.log("containerd")
        );
    }

    fn start_controllers(&mut self) {
        let controller_manager = self.plane.client_kubeconfig("system:kube-controller-manager", None);
        let args = vec![
            format!("--kubeconfig={}", controller_manager.display()),
            format!("--authentication-kubeconfig={}", controller_manager.display()),
            format!("--authorization-kubeconfig={}", controller_manager.display()),
            // Each controller with its own ServiceAccount, as kubeadm runs it (RBAC as shipped).
            "--use-service-account-credentials=true".into(),
            format!("--service-account-private-key-file={}", self.plane.service_account_key().display()),
            // Published as every namespace's kube-root-ca.crt, which pods' token volumes need.
            format!("--root-ca-file={}", self.plane.ca_cert.display()),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
            format!("--cluster-cidr={POD_SUBNET}"),
        ];
        self.spawn("kube-controller-manager", &component("kube-controller-manager"), &args);
        let scheduler = self.plane.client_kubeconfig("system:kube-scheduler", None);
        let args = vec![
            format!("--kubeconfig={}", scheduler.display()),
            format!("--authentication-kubeconfig={}", scheduler.display()),
            format!("--authorization-kubeconfig={}", scheduler.display()),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
        ];
        self.spawn("kube-scheduler", &component("kube-scheduler"), &args);
    }

    fn start_kubelet(&mut self) {
        let kubeconfig = self.plane.client_kubeconfig(&format!("system:node:{NODE_NAME}"), Some("system:nodes"));
        let config = format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: "{ca}"}}
authorization: {{mode: Webhook}}
address: "{ip}"
readOnlyPort: 0
cgroupDriver: cgroupfs
cgroupRoot: "/{cgroup_root}"
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: "unix://{socket}"
volumePluginDir: "{dir}/volume-plugins"
resolvConf: ""
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: "1Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}}
"#,
            ca = self.plane.ca_cert.display(),
            ip = NODE_IP,
            cgroup_root = self.cgroup_root,
            socket = self.containerd_socket.display(),
            dir = self.dir.display(),
        );
        let config_path = self.dir.join("kubelet.yaml");
        fs::write(&config_path, config).unwrap();
        self.kubelet_args = vec![
            format!("--config={}", config_path.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={NODE_IP}"),
            format!("--root-dir={KUBELET_DIR}"),
            "--v=2".into(),
        ];
        self.spawn("kubelet", &component("kubelet"), &self.kubelet_args.clone());
    }

    /// Stops the kubelet (SIGTERM, as a service manager restarting it) and starts it again with
    /// the same configuration; returns once the Node is Ready again. Pods keep running: the
    /// kubelet finds them through containerd.
    pub fn restart_kubelet(&mut self) {
        let index = self.children.iter().position(|(name, _)| *name == "kubelet").expect("the kubelet runs");
        let (_, mut kubelet) = self.children.remove(index);
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(kubelet.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = kubelet.wait();
        self.spawn("kubelet", &component("kubelet"), &self.kubelet_args.clone());
        // The Node stays Ready through a short restart: the new kubelet's own health says it runs.
        self.wait("kubelet", || {
            let healthz = Command::new("curl")
                .args(["--silent", "--fail", "--max-time", "2", "--output", "/dev/null", KUBELET_HEALTHZ])
                .status();
            healthz.is_ok_and(|status| status.success())
        });
    }

    /// Polls `ready` until it holds, or panics with the component's log once it exited or the
    /// time is up.
    fn wait(&self, name: &str, ready: impl Fn() -> bool) {
        let waited = super::poll_until_blocking(READY_TIMEOUT, Duration::from_millis(200), || {
            if ready() { Ok(()) } else { Err(()) }
        });
        assert!(waited.is_ok(), "{name} was not ready within {READY_TIMEOUT:?}; its log:\n{}", self.log(name));
    }

    fn wait_ready(&self) {
        let plane = &self.plane;
        let ready = super::block_on(async {
            let nodes: Api<NodeObject> = Api::all(plane.admin_client().await);
            super::poll_until(READY_TIMEOUT, Duration::from_millis(250), async || {
                let node = nodes.get_opt(NODE_NAME).await.ok().flatten().ok_or(())?;
                let conditions = node.status.and_then(|status| status.conditions).unwrap_or_default();
                conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(()).ok_or(())
            })
            .await
        });
        assert!(
            ready.is_ok(),
            "node {NODE_NAME} was not Ready within {READY_TIMEOUT:?}; kubelet log:\n{}",
            self.log("kubelet")
        );
    }

    /// The processes running in this node's pods (its cgroup root; not another node's).
    pub fn pod_processes(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = cgroup_hierarchies()
            .iter()
            .flat_map(|hierarchy| cgroups_below(&hierarchy.join(&self.cgroup_root)))
            .flat_map(|cgroup| {
                fs::read_to_string(cgroup.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|pid| pid.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// A namespace of the test's own, once the controller manager has given it what pods need:
    /// its `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap.
    pub async fn namespace(&self, prefix: &str) -> String {
        let namespace = self.plane.namespace(prefix).await;
        let client = self.plane.admin_client().await;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
        let config_maps: Api<ConfigMap> = Api::namespaced(client, &namespace);
        let ready = super::poll_until(READY_TIMEOUT, Duration::from_millis(100), async || {
            let account = accounts.get_opt("default").await.ok().flatten();
            let root_ca = config_maps.get_opt("kube-root-ca.crt").await.ok().flatten();
            (account.is_some() && root_ca.is_some()).then_some(()).ok_or(())
        })
        .await;
        assert!(
            ready.is_ok(),
            "namespace {namespace} got no default ServiceAccount or kube-root-ca.crt:\n{}",
            self.log("kube-controller-manager")
        );
        namespace
    }

    /// What `container` of `pod` wrote, as the kubelet keeps it (`/var/log/pods`, private to
    /// this node), every run of it in order, without the CRI log format's time and stream.
    pub fn container_output(&self, pod: &Pod, container: &str) -> String {
        let meta = &pod.metadata;
        let dir = Path::new("/var/log/pods")
            .join(format!(
                "{}_{}_{}",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default(),
                meta.uid.as_deref().unwrap_or_default()
            ))
            .join(container);
        let mut files: Vec<PathBuf> =
            fs::read_dir(&dir).map(|entries| entries.flatten().map(|entry| entry.path()).collect()).unwrap_or_default();
        // `<restart count>.log`.
        files.sort_by_key(|file| file.file_stem().and_then(|stem| stem.to_str()?.parse::<u32>().ok()));
        let mut output = String::new();
        for file in files {
            for line in fs::read_to_string(&file).unwrap_or_default().lines() {
                // `<time> <stdout|stderr> <F|P> <text>`.
                let text = line.splitn(4, ' ').nth(3).unwrap_or_default();
                output.push_str(text);
                output.push('\n');
            }
        }
        output
    }

    /// The last 60 lines of [`Node::container_output`], for failure messages.
    pub fn container_log(&self, pod: &Pod, container: &str) -> String {
        let output = self.container_output(pod, container);
        let lines: Vec<&str> = output.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Waits until a pod of `namespace` matching `selector` is Ready and returns it; panics with
    /// the pods' status, their containers' logs and the kubelet's log otherwise.
    pub async fn ready_pod(&self, namespace: &str, selector: &str, limit: Duration) -> Pod {
        let pods: Api<Pod> = Api::namespaced(self.plane.admin_client().await, namespace);
        let listed = kube::api::ListParams::default().labels(selector);
        let ready = super::poll_until(limit, Duration::from_millis(250), async || {
            let found = pods.list(&listed).await.map_err(|e| e.to_string())?.items;
            found
                .iter()
                .find(|pod| {
                    let conditions = pod.status.as_ref().and_then(|status| status.conditions.as_ref());
                    pod.metadata.deletion_timestamp.is_none()
                        && conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .cloned()
                .ok_or_else(|| format!("{:#?}", found.iter().map(|pod| &pod.status).collect::<Vec<_>>()))
        })
        .await;
        match ready {
            Ok(pod) => pod,
            Err(status) => {
                let found = pods.list(&listed).await.map(|list| list.items).unwrap_or_default();
                let logs: Vec<String> = found
                    .iter()
                    .flat_map(|pod| {
                        let containers = pod.spec.iter().flat_map(|spec| spec.containers.iter());
                        containers
                            .map(|c| {
                                format!(
                                    "{}/{}:\n{}",
                                    pod.metadata.name.clone().unwrap_or_default(),
                                    c.name,
                                    self.container_log(pod, &c.name)
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                panic!(
                    "no pod {selector} in {namespace} was Ready within {limit:?}: {status}\n{}\nkubelet:\n{}",
                    logs.join("\n"),
                    self.log("kubelet")
                )
            }
        }
    }

    /// Waits until the pod `name` in `namespace` has ended (Succeeded or Failed) and returns
    /// it; panics with its status and the kubelet's log if it does not end in time.
    pub async fn finished_pod(&self, namespace: &str, name: &str, limit: Duration) -> Pod {
        let pods: Api<Pod> = Api::namespaced(self.plane.admin_client().await, namespace);
        let ended = super::poll_until(limit, Duration::from_millis(250), async || {
            let pod = pods.get(name).await.map_err(|e| e.to_string())?;
            let phase = pod.status.as_ref().and_then(|status| status.phase.clone()).unwrap_or_default();
            if phase == "Succeeded" || phase == "Failed" { Ok(pod) } else { Err(format!("{:?}", pod.status)) }
        })
        .await;
        ended.unwrap_or_else(|status| {
            panic!(
                "pod {namespace}/{name} did not finish within {limit:?}: {status}\nkubelet:\n{}",
                self.log("kubelet")
            )
        })
    }
}

/// `lo` up and the veth pair with the node IP; a default route through the gateway end. With no
/// kube-proxy, `lo` also has the `kubernetes` Service's cluster IP, where the API server
/// listens on the Service's port: pods (the driver's among them) reach it as in a cluster.
fn network() {
    let ip = |args: &str| {
        let status = Command::new("ip").args(args.split(' ')).status().expect("run ip");
        assert!(status.success(), "ip {args} failed");
    };
    ip("link set lo up");
    ip(&format!("addr add {KUBERNETES_SERVICE_IP}/32 dev lo"));
    ip("link add tm-node type veth peer name tm-gateway");
    ip(&format!("addr add {NODE_IP}/24 dev tm-node"));
    ip(&format!("addr add {GATEWAY}/24 dev tm-gateway"));
    ip("link set tm-node up");
    ip("link set tm-gateway up");
    ip(&format!("route add default via {GATEWAY} dev tm-node"));
}

/// Node tests of any process hold this shared while their node runs; the last one to stop
/// takes it exclusively and removes the mount points nodes made on the host ([`HOST_PATHS_MADE`]).
/// Removing a directory detaches whatever is mounted on it in every other mount namespace, so
/// a node that stops may not remove one while another node has its private directory there.
const HOST_PATHS_LOCK: &str = "/run/trustmount-node-paths.lock";
/// [`KERNEL_SETTINGS`] as the host had them before the first of the nodes running at once
/// started (`<path> <value>` lines); the last node to stop puts them back. A node that saved
/// and restored its own would put back another running node's kubelet's values.
const KERNEL_SETTINGS_SAVED: &str = "/run/trustmount-node-kernel-settings";
/// The mount points nodes made on the host (absent before), one per line.
const HOST_PATHS_MADE: &str = "/run/trustmount-node-paths.made";

/// Binds a directory of `dir` over each of [`PRIVATE_PATHS`] (making the mount point when the
/// host has none, and listing it in [`HOST_PATHS_MADE`]); [`SHARED_PATHS`] are made shared mounts.
fn private_paths(dir: &Path) {
    for path in PRIVATE_PATHS {
        let path = Path::new(path);
        if !path.exists() {
            fs::create_dir_all(path).unwrap();
            let mut made = fs::OpenOptions::new().create(true).append(true).open(HOST_PATHS_MADE).unwrap();
            std::io::Write::write_all(&mut made, format!("{}\n", path.display()).as_bytes()).unwrap();
        }
        let private = dir.join("private").join(path.strip_prefix("/").unwrap());
        fs::create_dir_all(&private).unwrap();
        mount(&["--bind", &private.display().to_string(), &path.display().to_string()]);
    }
    for path in SHARED_PATHS {
        mount(&["--make-rshared", path]);
    }
}

fn mount(args: &[&str]) {
    let status = Command::new("mount").args(args).status().expect("run mount");
    assert!(status.success(), "mount {args:?} failed");
}

/// Every cgroup hierarchy mounted: the v1 ones and the hybrid host's unified one (runc makes
/// the pods' cgroups there too).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields.len() > 2 && (fields[2] == "cgroup" || fields[2] == "cgroup2")).then(|| PathBuf::from(fields[1]))
        })
        .collect()
}

/// The kernel settings the kubelet sets on start (`protectKernelDefaults: false`): they are
/// not namespaced, so the node puts back what the host had.
const KERNEL_SETTINGS: &[&str] =
    &["/proc/sys/vm/overcommit_memory", "/proc/sys/kernel/panic", "/proc/sys/kernel/panic_on_oops"];

/// The kubelet requires its cgroup root to exist in every hierarchy; cpuset's needs its CPUs
/// and memory nodes before a task can join.
fn make_cgroup_root(name: &str) {
    for hierarchy in cgroup_hierarchies() {
        let root = hierarchy.join(name);
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create cgroup {}: {e}", root.display()));
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(value) = fs::read_to_string(hierarchy.join(file)) {
                fs::write(root.join(file), value.trim()).unwrap();
            }
        }
    }
}

/// Every cgroup below `root`, deepest first.
fn cgroups_below(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(root) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                found.extend(cgroups_below(&entry.path()));
            }
        }
    }
    found.push(root.to_owned());
    found
}

fn cni_config() -> String {
    format!(
        r#"{{"cniVersion": "0.4.0", "name": "trustmount-test", "plugins": [
  {{"type": "bridge", "bridge": "tm-cni0", "isGateway": true, "ipMasq": false,
    "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{POD_SUBNET}"}}]], "routes": [{{"dst": "0.0.0.0/0"}}]}}}},
  {{"type": "loopback"}}
]}}"#
    )
}

/// Pids of the containerd shims serving `socket`'s containerd (they outlive it otherwise).
fn shims_of(socket: &Path) -> Vec<i32> {
    let socket = socket.display().to_string();
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_shim = args.first().is_some_and(|arg0| arg0.ends_with(b"containerd-shim-runc-v2"));
            (is_shim && args.contains(&socket.as_bytes())).then_some(pid)
        })
        .collect()
}

fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
}

impl Drop for Node {
    fn drop(&mut self) {
        // The kubelet first, so it starts nothing more.
        for (name, child) in &mut self.children {
            if *name == "kubelet" {
                kill(child.id() as i32);
                let _ = child.wait();
            }
        }
        // The pods' processes, by cgroup (the pids hierarchy lists every task).
        let _ = super::poll_until_blocking(Duration::from_secs(20), Duration::from_millis(100), || {
            let left = self.pod_processes();
            left.iter().for_each(|pid| kill(*pid));
            if left.is_empty() { Ok(()) } else { Err(()) }
        });
        let hierarchies = cgroup_hierarchies();
        for pid in shims_of(&self.containerd_socket) {
            kill(pid);
        }
        for (_, child) in self.children.iter_mut().rev() {
            kill(child.id() as i32);
            let _ = child.wait();
        }
        for hierarchy in &hierarchies {
            for cgroup in cgroups_below(&hierarchy.join(&self.cgroup_root)) {
                let _ = super::poll_until_blocking(Duration::from_secs(5), Duration::from_millis(50), || {
                    fs::remove_dir(&cgroup).or_else(|e| if cgroup.exists() { Err(e) } else { Ok(()) }).map_err(|_| ())
                });
            }
        }
        for path in PRIVATE_PATHS {
            let _ = Command::new("umount").args(["--recursive", "--lazy", path]).status();
        }
        // The last node running removes what nodes made; the others leave it to that one.
        if self.host_paths.try_lock().is_ok() {
            for dir in fs::read_to_string(HOST_PATHS_MADE).unwrap_or_default().lines() {
                let _ = fs::remove_dir(dir);
            }
            let _ = fs::remove_file(HOST_PATHS_MADE);
            for line in fs::read_to_string(KERNEL_SETTINGS_SAVED).unwrap_or_default().lines() {
                if let Some((path, value)) = line.split_once(' ') {
                    let _ = fs::write(path, value);
                }
            }
            let _ = fs::remove_file(KERNEL_SETTINGS_SAVED);
        }
    }
}

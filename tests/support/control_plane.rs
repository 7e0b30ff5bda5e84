//! A real Kubernetes control plane for tests: etcd and kube-apiserver, built from source by
//! `tests/k8s/build` (which `tests/run` calls), started on free 127.0.0.1 ports with a temp data
//! dir, like Kubernetes' own integration framework (`test/integration/framework/etcd.go`).
//!
//! - Secure port only, serving certificate and client CA made here with rcgen; an admin client
//!   certificate (`system:masters`) for test set-up, and a kubeconfig that uses it.
//! - `--authorization-mode=Node,RBAC`: RBAC is real, so tests prove what an identity may not do.
//! - Service-account signing keys, so TokenRequest works and its tokens authenticate.
//! - `certificates.k8s.io/v1beta1` served besides v1 (ClusterTrustBundle's pre-GA version).
//!
//! One control plane per run of the test binary, shared by its tests ([`ControlPlane::shared`]),
//! those of every file of tests/suite/slow/ alike; each test takes a namespace of its own
//! ([`ControlPlane::namespace`]). Statics are never dropped, so stopping does not rely on `Drop`:
//! the processes run in process groups of their own with `PR_SET_PDEATHSIG`, and a janitor process
//! (which ignores the terminal's signals) kills those groups and removes the temp root as soon as
//! the test binary's end of a pipe closes: at exit, on a panic, or on `kill -9`.
//!
//! A test that re-executes itself in a private mount namespace (`ns.rs`) passes the running
//! control plane's directory to the inner run, which attaches to it instead of starting another.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Set in the environment of a re-executed test: the directory of the outer run's control plane.
pub const ATTACH_ENV: &str = "TRUSTMOUNT_TEST_CONTROL_PLANE";
/// Where `tests/run` says the built components are (else the build script's default cache).
const BIN_DIR_ENV: &str = "TRUSTMOUNT_K8S_BIN";
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How to get the components when they are missing.
const INSTALL_HINT: &str =
    "run `tests/run` (it builds the pinned Kubernetes components with tests/k8s/build; the first build takes minutes)";

/// A running control plane. Its files (kubeconfig, certificates, data) live in `dir`.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub ca_cert: PathBuf,
    pub server: String,
    pub audit_log: PathBuf,
    /// The write ends of the janitors' pipes: closing them (process exit) stops everything.
    _janitors: Vec<ChildStdin>,
}

/// The outcome of the one start: a failed start is reported to every test, not retried by each.
static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// Path of a built component, or a panic naming the command that builds it.
pub fn component(name: &str) -> PathBuf {
    let dir = std::env::var_os(BIN_DIR_ENV).map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("TRUSTMOUNT_TOOLS_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
            base.join("trustmount/k8s-tools")
        });
        cache.join("bin")
    });
    let path = dir.join(name);
    assert!(path.exists(), "{name} is not built (looked for {}): {INSTALL_HINT}", path.display());
    path
}

impl ControlPlane {
    /// This run's control plane, started on first use (or attached to, in a re-executed
    /// test). Panics with the API server's log if it does not become ready.
    pub fn shared() -> &'static ControlPlane {
        let started = SHARED.get_or_init(|| match std::env::var_os(ATTACH_ENV) {
            Some(dir) => Ok(Self::attach(PathBuf::from(dir))),
            None => Self::start(RuntimeConfig::default(), Listen::loopback()),
        });
        match started {
            Ok(plane) => plane,
            Err(message) => panic!("the test control plane did not start: {message}"),
        }
    }

    /// A control plane of the caller's own, for a test that needs the API server configured
    /// otherwise (e.g. an API version turned off). Stopped and removed when dropped (and, like
    /// the shared one, when the test binary exits however it exits).
    pub fn dedicated(runtime_config: RuntimeConfig) -> ControlPlane {
        Self::start(runtime_config, Listen::loopback())
            .unwrap_or_else(|message| panic!("a dedicated control plane did not start: {message}"))
    }

    /// A control plane for a node (`node.rs`), started inside the node's network namespace: it
    /// listens on every address there, advertises `address` (the node IP, so the `kubernetes`
    /// Service's endpoint is one pods can reach), and its serving certificate names `address` and
    /// the Service's cluster IP too.
    pub fn for_node(address: std::net::Ipv4Addr) -> ControlPlane {
        let listen = Listen { bind: "0.0.0.0".into(), advertise: address, node: true };
        Self::start(RuntimeConfig::default(), listen)
            .unwrap_or_else(|message| panic!("the node's control plane did not start: {message}"))
    }

    /// A kubeconfig file in this control plane's directory for a client certificate of
    /// `common_name` in `organization` (a node, the controller manager, the scheduler), signed by
    /// the control plane's CA.
    pub fn client_kubeconfig(&self, common_name: &str, organization: Option<&str>) -> PathBuf {
        let ca_key = KeyPair::from_pem(&std::fs::read_to_string(self.dir.join("ca.key")).unwrap()).unwrap();
        // The CA's own parameters (its name) and key are all signing needs.
        let issuer = Issuer::new(ca_params(), ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = name(common_name, organization);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer).unwrap();
        let file = common_name.replace(':', "-");
        let (cert_path, key_path) = (self.dir.join(format!("{file}.crt")), self.dir.join(format!("{file}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let user = format!("client-certificate: '{}', client-key: '{}'", cert_path.display(), key_path.display());
        let path = self.dir.join(format!("{file}.kubeconfig"));
        std::fs::write(&path, kubeconfig(&self.server, &self.ca_cert, &user)).unwrap();
        path
    }

    /// The service-account signing key pair (the controller manager signs legacy tokens with the
    /// private half), and the CA the API server serves with (its `--root-ca-file`).
    pub fn service_account_key(&self) -> PathBuf {
        self.dir.join("service-account.key")
    }

    /// The shared control plane if this process has one already (for `ns.rs` to pass on).
    pub fn running() -> Option<&'static ControlPlane> {
        SHARED.get().and_then(|started| started.as_ref().ok())
    }

    fn attach(dir: PathBuf) -> Self {
        let server = std::fs::read_to_string(dir.join("server")).expect("attached control plane's server file");
        Self {
            kubeconfig: dir.join("kubeconfig"),
            ca_cert: dir.join("ca.crt"),
            audit_log: dir.join("audit.log"),
            server,
            dir,
            _janitors: vec![],
        }
    }

    fn start(runtime_config: RuntimeConfig, listen: Listen) -> Result<Self, String> {
        super::tools::require(&["curl"]);
        let etcd = component("etcd");
        let apiserver = component("kube-apiserver");
        // The children's parent thread must outlive every test (PR_SET_PDEATHSIG fires when the
        // forking *thread* exits), so a thread of its own spawns them and then parks forever
        // (one per control plane: a handful per run of the test binary at most).
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("control-plane".into())
            .spawn(move || {
                let result = std::panic::catch_unwind(|| launch(&etcd, &apiserver, &runtime_config, &listen));
                let _ = sender.send(result);
                loop {
                    std::thread::park();
                }
            })
            .expect("control-plane thread");
        receiver.recv().expect("control-plane thread answers").map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_else(|| "it panicked".to_string())
        })
    }

    /// An admin client (`system:masters`), for test set-up.
    pub async fn admin_client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("kubeconfig");
        kube::Client::try_from(config).expect("admin client")
    }

    /// A client that authenticates with `token` only (no client certificate).
    pub fn token_client(&self, token: &str) -> kube::Client {
        let mut config = kube::Config::new(self.server.parse().expect("server URL"));
        let ca = std::fs::read(&self.ca_cert).expect("read CA");
        config.root_cert = Some(vec![pem_to_der(&ca)]);
        config.auth_info.token = Some(token.to_string().into());
        kube::Client::try_from(config).expect("token client")
    }

    /// A kubeconfig (as text) for this control plane that authenticates with `token` only.
    pub fn token_kubeconfig(&self, token: &str) -> String {
        kubeconfig(&self.server, &self.ca_cert, &format!("token: '{token}'"))
    }

    /// Creates a namespace with a unique name starting with `prefix`; tests never share one.
    pub async fn namespace(&self, prefix: &str) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let namespaces: Api<Namespace> = Api::all(self.admin_client().await);
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(name.clone());
        namespaces.create(&PostParams::default(), &namespace).await.expect("create namespace");
        name
    }
}

fn pem_to_der(pem: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let text = std::str::from_utf8(pem).expect("PEM is text");
    let body: String = text.lines().filter(|line| !line.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).expect("PEM base64")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `program` in a process group of its own, killed when its parent thread dies.
fn spawn_component(program: &Path, args: &[String], log: &Path) -> Child {
    let log_file = std::fs::File::create(log).expect("component log");
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(log_file.try_clone().unwrap()).stderr(log_file).process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    command.spawn().unwrap_or_else(|error| panic!("start {}: {error}", program.display()))
}

/// A process that waits for EOF on its stdin (the test binary exiting, however it exits), then
/// kills the components' process groups and removes `root`. Never waited for: it must outlive
/// this process, and init reaps it.
#[allow(clippy::zombie_processes)]
fn spawn_janitor(root: &Path, children: &[&Child]) -> ChildStdin {
    let groups: Vec<String> = children.iter().map(|child| format!("-{}", child.id())).collect();
    let script = format!(
        "trap '' INT TERM HUP; cat >/dev/null; kill -TERM -- {groups} 2>/dev/null; sleep 1; kill -KILL -- {groups} 2>/dev/null; rm -rf '{root}'",
        groups = groups.join(" "),
        root = root.display()
    );
    let mut janitor = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the control plane's janitor (sh)");
    janitor.stdin.take().expect("janitor stdin")
}

/// API groups, versions or resources served besides (`=true`) or instead of (`=false`) the
/// defaults: the API server's `--runtime-config` entries.
#[derive(Clone, Debug)]
pub struct RuntimeConfig(pub Vec<&'static str>);

impl Default for RuntimeConfig {
    /// ClusterTrustBundle is GA (v1) in 1.37 and v1beta1 is off by default: serve both, so a
    /// driver's choice between them can be tested.
    fn default() -> Self {
        Self(vec!["certificates.k8s.io/v1beta1/clustertrustbundles=true"])
    }
}

impl RuntimeConfig {
    /// ClusterTrustBundles only as v1beta1, as a 1.33–1.36 cluster with the beta enabled.
    pub fn cluster_trust_bundles_v1beta1_only() -> Self {
        Self(vec![
            "certificates.k8s.io/v1beta1/clustertrustbundles=true",
            "certificates.k8s.io/v1/clustertrustbundles=false",
        ])
    }
}

/// Where the API server listens and what it advertises.
struct Listen {
    bind: String,
    advertise: std::net::Ipv4Addr,
    /// A node's control plane: the `kubernetes` Service gets its endpoint (the advertised
    /// address), and the API server can reach kubelets by their InternalIP.
    node: bool,
}

impl Listen {
    fn loopback() -> Self {
        Self { bind: "127.0.0.1".into(), advertise: std::net::Ipv4Addr::LOCALHOST, node: false }
    }
}

/// The `kubernetes` Service's cluster IP: the first address of `--service-cluster-ip-range`.
pub const KUBERNETES_SERVICE_IP: &str = "10.0.0.1";
/// The `kubernetes` Service's port (pods get it as `KUBERNETES_SERVICE_PORT`).
const KUBERNETES_SERVICE_PORT: u16 = 443;

fn launch(etcd: &Path, apiserver: &Path, runtime_config: &RuntimeConfig, listen: &Listen) -> ControlPlane {
    let dir = tempfile::Builder::new().prefix("trustmount-control-plane-").tempdir().expect("temp root").keep();
    let pki = Pki::write(&dir, &[listen.advertise.into(), KUBERNETES_SERVICE_IP.parse().unwrap()]);

    let etcd_client_port = free_port();
    let etcd_peer_port = free_port();
    let etcd_url = format!("http://127.0.0.1:{etcd_client_port}");
    let peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
    let etcd_args: Vec<String> = vec![
        format!("--data-dir={}", dir.join("etcd").display()),
        "--name=default".into(),
        format!("--listen-client-urls={etcd_url}"),
        format!("--advertise-client-urls={etcd_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=default={peer_url}"),
        "--log-level=warn".into(),
        // Test data: durability buys nothing, fsync costs seconds on a slow disk.
        "--unsafe-no-fsync".into(),
    ];
    let mut etcd_child = spawn_component(etcd, &etcd_args, &dir.join("etcd.log"));
    // One janitor per component, started right after it, so a failed start is cleaned too.
    let mut janitors = vec![spawn_janitor(&dir, &[&etcd_child])];
    wait_for(&mut etcd_child, &dir.join("etcd.log"), "etcd", || http_get_ok(etcd_client_port, "/health"));

    // A node has no kube-proxy: it answers the `kubernetes` Service's cluster IP itself (an
    // address of its own, `support::node`), so the API server listens on the Service's port.
    let secure_port = if listen.node { KUBERNETES_SERVICE_PORT } else { free_port() };
    let server = format!("https://{}:{secure_port}", listen.advertise);
    let audit_log = dir.join("audit.log");
    std::fs::write(dir.join("audit-policy.yaml"), AUDIT_POLICY).unwrap();
    let apiserver_args: Vec<String> = vec![
        format!("--etcd-servers={etcd_url}"),
        format!("--bind-address={}", listen.bind),
        format!("--advertise-address={}", listen.advertise),
        // The `kubernetes` Service's endpoints may not be loopback: without a node nothing
        // needs them; a node's pods reach the API server through them.
        format!("--endpoint-reconciler-type={}", if listen.node { "lease" } else { "none" }),
        format!("--secure-port={secure_port}"),
        format!("--cert-dir={}", dir.join("apiserver-certs").display()),
        format!("--tls-cert-file={}", pki.serving_cert.display()),
        format!("--tls-private-key-file={}", pki.serving_key.display()),
        format!("--client-ca-file={}", pki.ca_cert.display()),
        "--authorization-mode=Node,RBAC".into(),
        format!("--service-account-key-file={}", pki.service_account_public_key.display()),
        format!("--service-account-signing-key-file={}", pki.service_account_key.display()),
        format!("--service-account-issuer={server}"),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
        format!("--runtime-config={}", runtime_config.0.join(",")),
        format!("--audit-policy-file={}", dir.join("audit-policy.yaml").display()),
        format!("--audit-log-path={}", audit_log.display()),
        "--profiling=false".into(),
        // As in kubeadm clusters: privileged pods (a CSI node plugin is one) are admitted.
        "--allow-privileged=true".into(),
        // `kubectl logs`/`exec` on a node: the kubelet by its node IP, as the API server's
        // kubelet client (the kubelet trusts this control plane's CA).
        "--kubelet-preferred-address-types=InternalIP".into(),
        format!("--kubelet-client-certificate={}", pki.admin_cert.display()),
        format!("--kubelet-client-key={}", pki.admin_key.display()),
    ];
    let apiserver_log = dir.join("kube-apiserver.log");
    let mut apiserver_child = spawn_component(apiserver, &apiserver_args, &apiserver_log);
    janitors.push(spawn_janitor(&dir, &[&apiserver_child]));

    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, pki.kubeconfig(&server)).unwrap();
    std::fs::write(dir.join("server"), &server).unwrap();
    wait_for(&mut apiserver_child, &apiserver_log, "kube-apiserver", || curl_ok(&pki, &format!("{server}/readyz")));
    ControlPlane { ca_cert: pki.ca_cert.clone(), kubeconfig, server, audit_log, dir, _janitors: janitors }
}

/// Polls `ready` (asking the component, never sleeping blind) until it holds, or panics with
/// the end of the component's log when it exits or the time is up.
fn wait_for(child: &mut Child, log: &Path, name: &str, mut ready: impl FnMut() -> bool) {
    // Ok(None): ready; Ok(Some(exit)): exited, so it never will be; Err: not yet.
    let outcome = super::poll_until_blocking(START_TIMEOUT, Duration::from_millis(200), || {
        if ready() {
            return Ok(None);
        }
        match child.try_wait() {
            Ok(Some(status)) => Ok(Some(format!("exited ({status})"))),
            _ => Err(format!("was not ready within {START_TIMEOUT:?}")),
        }
    });
    let outcome = match outcome {
        Ok(None) => return,
        Ok(Some(exited)) => exited,
        Err(not_ready) => not_ready,
    };
    // klog marks errors and fatals with a leading E or F: those first, then the last lines.
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> =
        text.lines().filter(|line| line.starts_with('E') || line.starts_with('F')).take(20).collect();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(15)..];
    panic!("{name} {outcome}; its errors:\n{}\nend of its log:\n{}", errors.join("\n"), tail.join("\n"));
}

fn http_get_ok(port: u16, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
}

/// `/readyz` through curl with the admin certificate: a plain blocking check, usable before
/// any async runtime exists.
fn curl_ok(pki: &Pki, url: &str) -> bool {
    Command::new("curl")
        .args(["--silent", "--fail", "--max-time", "5", "--output", "/dev/null", "--cacert"])
        .arg(&pki.ca_cert)
        .arg("--cert")
        .arg(&pki.admin_cert)
        .arg("--key")
        .arg(&pki.admin_key)
        .arg(url)
        .status()
        .is_ok_and(|status| status.success())
}

/// Request-level audit of everything but the API server's own health checks: tests count
/// what the server saw, not what a client thinks it sent.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    nonResourceURLs: ['/readyz*', '/livez*', '/healthz*']
  - level: Metadata
";

struct Pki {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    service_account_key: PathBuf,
    service_account_public_key: PathBuf,
}

impl Pki {
    /// `serving_ips`: the serving certificate's IP addresses besides 127.0.0.1.
    fn write(dir: &Path, serving_ips: &[std::net::IpAddr]) -> Self {
        let write = |name: &str, contents: String| {
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        };
        let ca_key = KeyPair::generate().unwrap();
        let ca_params = ca_params();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        // Kept, so node components get client certificates of this CA (`client_kubeconfig`).
        write("ca.key", ca_key.serialize_pem());
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate().unwrap();
        let mut serving = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        serving.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        for ip in serving_ips.iter().filter(|ip| !ip.is_loopback()) {
            serving.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        serving.subject_alt_names.push(SanType::DnsName("kubernetes.default.svc".try_into().unwrap()));
        serving.distinguished_name = name("kube-apiserver", None);
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer).unwrap();

        let admin_key = KeyPair::generate().unwrap();
        let mut admin = CertificateParams::new(Vec::<String>::new()).unwrap();
        admin.distinguished_name = name("trustmount-test-admin", Some("system:masters"));
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer).unwrap();

        // Signs (private half) and verifies (public half) the ServiceAccount tokens.
        let service_account = KeyPair::generate().unwrap();
        Self {
            ca_cert: write("ca.crt", ca.pem()),
            serving_cert: write("apiserver.crt", serving_cert.pem()),
            serving_key: write("apiserver.key", serving_key.serialize_pem()),
            admin_cert: write("admin.crt", admin_cert.pem()),
            admin_key: write("admin.key", admin_key.serialize_pem()),
            service_account_key: write("service-account.key", service_account.serialize_pem()),
            service_account_public_key: write("service-account.pub", service_account.public_key_pem()),
        }
    }

    fn kubeconfig(&self, server: &str) -> String {
        let user =
            format!("client-certificate: '{}', client-key: '{}'", self.admin_cert.display(), self.admin_key.display());
        kubeconfig(server, &self.ca_cert, &user)
    }
}

/// A one-cluster, one-user kubeconfig; `user` is the user's fields (a token or a certificate).
fn kubeconfig(server: &str, ca: &Path, user: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster: {{ server: '{server}', certificate-authority: '{ca}' }}
users:
  - name: user
    user: {{ {user} }}
contexts:
  - name: test
    context: {{ cluster: test, user: user }}
current-context: test
",
        ca = ca.display(),
    )
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = name("trustmount test control plane CA", None);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    params
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(organization) = organization {
        dn.push(DnType::OrganizationName, organization);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

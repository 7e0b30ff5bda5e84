//! A real node: kubelet + containerd run pods, and the kubelet publishes trustmount volumes
//! over the driver's socket (`support::node`).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;

use crate::in_node_namespaces;
use crate::support::certs::TestCa;
use crate::support::daemon::{Daemon, DaemonOptions};
use crate::support::images;
use crate::support::node::{KUBELET_DIR, NODE_IP, NODE_NAME, Node, STATE_DIR};
use crate::support::output::assert_success;
use crate::support::tls::TlsServer;
use crate::support::{block_on, deploy, poll_until};

/// The chart's release and namespace in these tests.
const RELEASE: &str = "trustmount";
const DRIVER_NAMESPACE: &str = "trustmount";
const DRIVER_PODS: &str = "app.kubernetes.io/name=trustmount";

pub(crate) fn pod(name: &str, command: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": images::DEBIAN_TEST,
                "imagePullPolicy": "Never",
                "command": ["/bin/bash", "-c", command],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }],
        },
    }))
    .unwrap()
}

/// [`pod`] with a trustmount inline volume (`attributes`) at /etc/ssl/certs.
pub(crate) fn pod_with_volume(name: &str, command: &str, attributes: serde_json::Value) -> Pod {
    let mut pod = serde_json::to_value(pod(name, command)).unwrap();
    pod["spec"]["volumes"] = serde_json::json!([{
        "name": "trust",
        "csi": {"driver": "csi.trustmount.io", "readOnly": true, "volumeAttributes": attributes},
    }]);
    pod["spec"]["containers"][0]["volumeMounts"] =
        serde_json::json!([{"name": "trust", "mountPath": "/etc/ssl/certs", "readOnly": true}]);
    serde_json::from_value(pod).unwrap()
}

/// [`pod_with_volume`] running as ServiceAccount `account`.
fn pod_as(account: &str, name: &str, command: &str, attributes: serde_json::Value) -> Pod {
    let mut pod = pod_with_volume(name, command, attributes);
    pod.spec.as_mut().unwrap().service_account_name = Some(account.to_owned());
    pod
}

/// A shell command that fetches `url` with curl (verifying against the image's trust, which is
/// what the volume gives it) and exits with curl's code.
fn fetch(url: &str) -> String {
    format!("curl --silent --show-error --fail --max-time 10 {url} >/dev/null && echo fetched")
}

/// `Fetch.class` (`support::programs::FETCH_JAVA`: an HTTPS GET through the JVM's default
/// trust store) compiled here for Java 17, the JRE of the test image, which has no compiler.
fn fetch_class(dir: &std::path::Path) -> Vec<u8> {
    let source = dir.join("Fetch.java");
    std::fs::write(&source, crate::support::programs::FETCH_JAVA).unwrap();
    let compiled = std::process::Command::new("javac").args(["--release", "17", "-d"]).arg(dir).arg(&source).output();
    assert_success("javac Fetch.java", &compiled.expect("run javac"));
    std::fs::read(dir.join("Fetch.class")).unwrap()
}

/// A pod of the JRE image running `Fetch` (from ConfigMap `fetch-java`, at /app) against `url`,
/// with a trustmount volume of `attributes` at /etc/ssl/certs or without one.
fn java_pod(name: &str, url: &str, attributes: Option<serde_json::Value>) -> Pod {
    let command = format!("java -cp /app Fetch {url}");
    let pod = match attributes {
        Some(attributes) => pod_with_volume(name, &command, attributes),
        None => pod(name, &command),
    };
    let mut pod = serde_json::to_value(pod).unwrap();
    pod["spec"]["containers"][0]["image"] = images::DEBIAN_TEST_JRE.into();
    let volumes = pod["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    let mounts = pod["spec"]["containers"][0]["volumeMounts"].as_array().cloned().unwrap_or_default();
    pod["spec"]["volumes"] =
        [volumes, vec![serde_json::json!({"name": "app", "configMap": {"name": "fetch-java"}})]].concat().into();
    pod["spec"]["containers"][0]["volumeMounts"] =
        [mounts, vec![serde_json::json!({"name": "app", "mountPath": "/app", "readOnly": true})]].concat().into();
    serde_json::from_value(pod).unwrap()
}

/// A [`fetch`] pod without the volume: the image trusts nothing, so curl ends with 77 (no CA
/// file to read) or 60 (not verified).
fn assert_curl_trusts_nothing(pod: &Pod) {
    assert!(matches!(exit_code(pod), Some(77 | 60)), "{:?}: {}", exit_code(pod), termination_message(pod));
}

pub(crate) fn termination_message(pod: &Pod) -> String {
    let statuses = pod.status.as_ref().and_then(|status| status.container_statuses.clone()).unwrap_or_default();
    statuses.first().and_then(|status| status.state.as_ref()?.terminated.as_ref()?.message.clone()).unwrap_or_default()
}

pub(crate) fn exit_code(pod: &Pod) -> Option<i32> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    Some(statuses.first()?.state.as_ref()?.terminated.as_ref()?.exit_code)
}

#[test]
fn the_real_kubelet_publishes_the_volume_and_curl_in_the_pod_trusts_the_org_ca() {
    // Built (or found) before the node's network namespace, where no mirror is reachable.
    images::debian_test();
    if !in_node_namespaces!() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let org = TestCa::new(dir.path(), "Org Root CA");
    let leaf = org.issue_server_for(dir.path(), "server", &[&NODE_IP.to_string()]);
    let node = Node::start(&[images::debian_test()]);
    let server = TlsServer::start_on(&NODE_IP.to_string(), &leaf.cert_path, &leaf.key_path);
    let url = format!("https://{NODE_IP}:{}/", server.port);
    block_on(async {
        let admin = node.plane.admin_client().await;
        deploy::apply(&admin, &deploy::manifest("csidriver.yaml")).await;
        // The driver as a process of the node (not yet its DaemonSet pod): it registers with
        // the kubelet through <kubelet dir>/plugins_registry.
        let options = DaemonOptions { kubelet_dir: Some(KUBELET_DIR.into()), ..DaemonOptions::default() }
            .extra_pem(&org.cert_path);
        let driver = Daemon::start(options).await;
        let namespace = node.namespace("node-trust").await;
        let pods: Api<Pod> = Api::namespaced(admin, &namespace);
        let fetch = format!("curl --silent --show-error --fail --max-time 10 {url} >/dev/null && echo fetched");
        pods.create(&PostParams::default(), &pod_with_volume("with-volume", &fetch, serde_json::json!({})))
            .await
            .unwrap();
        pods.create(&PostParams::default(), &pod("without-volume", &fetch)).await.unwrap();

        let with = node.finished_pod(&namespace, "with-volume", Duration::from_secs(120)).await;
        assert_eq!(exit_code(&with), Some(0), "{}\ndriver:\n{}", termination_message(&with), driver.stderr());
        assert_curl_trusts_nothing(&node.finished_pod(&namespace, "without-volume", Duration::from_secs(120)).await);
        assert!(driver.stderr().contains("NodePublishVolume"), "the kubelet called the driver");

        // Deleting the pod unpublishes: the pod object goes, the kubelet calls NodeUnpublishVolume
        // (the API object may go first: the driver's answer is what says the volume is torn
        // down), and then nothing of it is mounted or recorded.
        let uid = with.metadata.uid.clone().unwrap();
        pods.delete("with-volume", &Default::default()).await.unwrap();
        let gone = poll_until(Duration::from_secs(120), Duration::from_millis(250), async || {
            match pods.get_opt("with-volume").await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        assert!(gone.is_ok(), "the pod was not removed: {gone:?}\nkubelet:\n{}", node.log("kubelet"));
        let unpublished = poll_until(Duration::from_secs(60), Duration::from_millis(100), async || {
            let answered =
                driver.stderr().lines().any(|line| line.contains("NodeUnpublishVolume{") && line.contains("answered"));
            if answered { Ok(()) } else { Err(()) }
        })
        .await;
        assert!(unpublished.is_ok(), "the kubelet did not unpublish through the driver:\n{}", node.log("kubelet"));
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&uid), "a mount of the deleted pod is left:\n{mounts}");
        let records: Vec<_> = std::fs::read_dir(driver.state_dir.join("volumes"))
            .unwrap()
            .flatten()
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "json" || ext == "pending"))
            .collect();
        assert!(records.is_empty(), "records left: {records:?}");
    });
}

/// The driver's image and the Debian test image, built (or found) before the node's network
/// namespace is entered, where no mirror is reachable.
pub(crate) fn driver_and_test_images() -> Vec<&'static images::Image> {
    vec![images::debian_test(), images::driver()]
}

/// A CA, and a TLS server on the node whose certificate it issued.
pub(crate) struct Served {
    pub(crate) ca: TestCa,
    server: TlsServer,
}

impl Served {
    pub(crate) fn new(dir: &std::path::Path, name: &str) -> Self {
        let ca = TestCa::new(dir, &format!("{name} CA"));
        let leaf = ca.issue_server_for(dir, &format!("{name}-server"), &[&NODE_IP.to_string()]);
        let server = TlsServer::start_on(&NODE_IP.to_string(), &leaf.cert_path, &leaf.key_path);
        Served { ca, server }
    }

    pub(crate) fn url(&self) -> String {
        format!("https://{NODE_IP}:{}/", self.server.port)
    }
}

pub(crate) fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).unwrap()
}

/// `helm install` of the shipped chart into [`DRIVER_NAMESPACE`] (made first, with the org CA's
/// ConfigMap `org-ca` the chart's `extraPem` names), then the driver's DaemonSet pod Ready.
pub(crate) async fn install_chart(node: &Node, org_ca: &TestCa, values: &[&str]) -> Pod {
    let admin = node.plane.admin_client().await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    namespaces
        .create(&PostParams::default(), &object(serde_json::json!({"metadata": {"name": DRIVER_NAMESPACE}})))
        .await
        .unwrap();
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(admin, DRIVER_NAMESPACE);
    let org = serde_json::json!({"metadata": {"name": "org-ca"}, "data": {"ca.pem": org_ca.pem}});
    config_maps.create(&PostParams::default(), &object(org)).await.unwrap();
    let chart = deploy::chart();
    let mut args = vec!["install", RELEASE, chart.to_str().unwrap(), "--namespace", DRIVER_NAMESPACE];
    args.extend(["--set", "extraPem.configMap=org-ca"]);
    args.extend(values);
    assert_success("helm install", &deploy::run_tool("helm", Some(&node.plane), &args));
    node.ready_pod(DRIVER_NAMESPACE, DRIVER_PODS, Duration::from_secs(180)).await
}

/// GET `path` on `port` of the pod's IP (the node reaches its pods over the CNI bridge), as
/// the kubelet's probes and Prometheus do.
fn http_get(pod: &Pod, port: u16, path: &str) -> std::process::Output {
    let ip = pod.status.as_ref().and_then(|status| status.pod_ip.clone()).expect("the pod has an IP");
    std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "5", "--write-out", "\n%{http_code}"])
        .arg(format!("http://{ip}:{port}{path}"))
        .output()
        .expect("run curl")
}

#[test]
fn helm_installs_the_chart_on_the_node_and_its_pod_serves_pods_every_source_kind() {
    let mut images = driver_and_test_images();
    images.push(images::debian_test_jre());
    if !in_node_namespaces!() {
        return;
    }
    let node = Node::start(&images);
    // On the node's IP, which exists once the node does.
    let dir = tempfile::tempdir().unwrap();
    let org = Served::new(dir.path(), "Org");
    let team = Served::new(dir.path(), "Team");
    let secret = Served::new(dir.path(), "Secret");
    let signed = Served::new(dir.path(), "Signer");
    block_on(async {
        let admin = node.plane.admin_client().await;
        let driver = install_chart(&node, &org.ca, &[]).await;
        let driver_name = driver.metadata.name.clone().unwrap();

        // The driver registered itself: the kubelet lists it on the node's CSINode.
        let csi_nodes: Api<k8s_openapi::api::storage::v1::CSINode> = Api::all(admin.clone());
        let registered = poll_until(Duration::from_secs(60), Duration::from_millis(250), async || {
            let csi_node = csi_nodes.get_opt(NODE_NAME).await.map_err(|e| e.to_string())?.ok_or("no CSINode")?;
            let drivers: Vec<String> = csi_node.spec.drivers.iter().map(|d| d.name.clone()).collect();
            if drivers.iter().any(|d| d == "csi.trustmount.io") { Ok(()) } else { Err(format!("{drivers:?}")) }
        })
        .await;
        assert!(registered.is_ok(), "CSINode: {registered:?}\ndriver:\n{}", node.container_log(&driver, "trustmount"));
        // The probes' endpoint answers, and the startup probe passed with no restart.
        let health = http_get(&driver, 9809, "/healthz");
        assert!(String::from_utf8_lossy(&health.stdout).ends_with("\n200"), "/healthz: {health:?}");
        let restarts = driver.status.as_ref().and_then(|s| s.container_statuses.as_ref()).map(|c| c[0].restart_count);
        assert_eq!(
            restarts,
            Some(0),
            "the driver's container restarted:\n{}",
            node.container_log(&driver, "trustmount")
        );

        // One workload namespace with a source of each kind.
        let namespace = node.namespace("node-chart").await;
        let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(admin.clone(), &namespace);
        let team_ca = serde_json::json!({"metadata": {"name": "team-ca"}, "data": {"ca.crt": team.ca.pem}});
        config_maps.create(&PostParams::default(), &object(team_ca)).await.unwrap();
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(admin.clone(), &namespace);
        let secret_ca = serde_json::json!({"metadata": {"name": "secret-ca"}, "stringData": {"ca.crt": secret.ca.pem}});
        secrets.create(&PostParams::default(), &object(secret_ca)).await.unwrap();
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(admin.clone(), &namespace);
        for account in ["reader", "stranger"] {
            accounts
                .create(&PostParams::default(), &object(serde_json::json!({"metadata": {"name": account}})))
                .await
                .unwrap();
        }
        let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(admin.clone(), &namespace);
        let role = serde_json::json!({"metadata": {"name": "read-secret-ca"}, "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["secret-ca"], "verbs": ["get"]}]});
        roles.create(&PostParams::default(), &object(role)).await.unwrap();
        let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(admin.clone(), &namespace);
        let binding = serde_json::json!({"metadata": {"name": "reader-reads-secret-ca"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-secret-ca"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]});
        bindings.create(&PostParams::default(), &object(binding)).await.unwrap();
        let bundles: Api<k8s_openapi::api::certificates::v1::ClusterTrustBundle> = Api::all(admin.clone());
        let bundle = serde_json::json!({"metadata": {"name": "example.com:node-signer:org"},
            "spec": {"signerName": "example.com/node-signer", "trustBundle": signed.ca.pem}});
        bundles.create(&PostParams::default(), &object(bundle)).await.unwrap();

        let pods: Api<Pod> = Api::namespaced(admin.clone(), &namespace);
        let cases = [
            ("extra-pem", "default", org.url(), serde_json::json!({})),
            ("config-map", "default", team.url(), serde_json::json!({"configMaps": "team-ca"})),
            ("secret", "reader", secret.url(), serde_json::json!({"secrets": "secret-ca"})),
            ("signer", "default", signed.url(), serde_json::json!({"signerName": "example.com/node-signer"})),
        ];
        for (name, account, url, attributes) in &cases {
            pods.create(&PostParams::default(), &pod_as(account, name, &fetch(url), attributes.clone())).await.unwrap();
        }
        // A ServiceAccount with no access to the Secret: the publish is refused, so the pod never starts.
        let refused =
            pod_as("stranger", "stranger", &fetch(&secret.url()), serde_json::json!({"secrets": "secret-ca"}));
        pods.create(&PostParams::default(), &refused).await.unwrap();
        // The org CA's server from a pod without the volume: the image trusts nothing.
        pods.create(&PostParams::default(), &pod("without-volume", &fetch(&org.url()))).await.unwrap();
        // Java through the volume's JKS store (/etc/ssl/certs/java/cacerts, the JRE's default),
        // and without it (no store at all).
        let class = fetch_class(dir.path());
        let program = serde_json::json!({"metadata": {"name": "fetch-java"},
            "binaryData": {"Fetch.class": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, class)}});
        config_maps.create(&PostParams::default(), &object(program)).await.unwrap();
        pods.create(&PostParams::default(), &java_pod("java", &org.url(), Some(serde_json::json!({})))).await.unwrap();
        pods.create(&PostParams::default(), &java_pod("java-without-volume", &org.url(), None)).await.unwrap();

        for (name, ..) in &cases {
            let done = node.finished_pod(&namespace, name, Duration::from_secs(120)).await;
            assert_eq!(
                exit_code(&done),
                Some(0),
                "{name}: {}\ndriver:\n{}",
                termination_message(&done),
                node.container_log(&driver, "trustmount")
            );
        }
        let java = node.finished_pod(&namespace, "java", Duration::from_secs(120)).await;
        assert_eq!(exit_code(&java), Some(0), "java: {}", termination_message(&java));
        let java_without = node.finished_pod(&namespace, "java-without-volume", Duration::from_secs(120)).await;
        assert_ne!(exit_code(&java_without), Some(0), "java trusted the server without the volume");
        assert!(
            termination_message(&java_without).contains("SSL") || termination_message(&java_without).contains("trust"),
            "java failed for another reason than trust: {}",
            termination_message(&java_without)
        );
        assert_curl_trusts_nothing(&node.finished_pod(&namespace, "without-volume", Duration::from_secs(120)).await);

        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(admin.clone(), &namespace);
        let of_stranger = kube::api::ListParams::default().fields("involvedObject.name=stranger");
        let failed_mount = poll_until(Duration::from_secs(60), Duration::from_millis(250), async || {
            let listed = events.list(&of_stranger).await.map_err(|e| e.to_string())?.items;
            let found = listed.iter().find(|e| e.reason.as_deref() == Some("FailedMount")).cloned();
            found.ok_or_else(|| format!("{:?}", listed.iter().map(|e| (&e.reason, &e.message)).collect::<Vec<_>>()))
        })
        .await
        .unwrap_or_else(|events| panic!("no FailedMount for the stranger's pod: {events}"));
        let message = failed_mount.message.unwrap_or_default();
        assert!(
            message.contains(&format!("ServiceAccount {namespace}/stranger may not get Secret {namespace}/secret-ca")),
            "the kubelet's event does not carry the driver's reason: {message}"
        );
        let stranger = pods.get("stranger").await.unwrap();
        assert_ne!(stranger.status.and_then(|s| s.phase).as_deref(), Some("Succeeded"));

        // Still the first driver pod, never restarted.
        let now = pods_of(&admin, DRIVER_NAMESPACE, DRIVER_PODS).await;
        assert_eq!(now.len(), 1, "one driver pod on one node");
        assert_eq!(now[0].metadata.name.as_deref(), Some(driver_name.as_str()));
    });
}

async fn pods_of(admin: &kube::Client, namespace: &str, selector: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), namespace);
    pods.list(&kube::api::ListParams::default().labels(selector)).await.unwrap().items
}

/// A workload that reads its trust all the time: every 50 ms it loads
/// `/etc/ssl/certs/ca-certificates.crt` as a TLS client's trust store and prints `BROKEN …` when
/// that fails or holds fewer CAs than its first read (the bundle only grows in these tests), and
/// `CHANGED <trust|plain> <unix time> <CAs or sha-256>` when the trustmount bundle or the plain
/// ConfigMap volume's `/plain/ca.crt` changes.
const WATCHER: &str = r#"
import hashlib, ssl, time
BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
first = None
last = {}
while True:
    now = time.time()
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=BUNDLE)
        cas = context.cert_store_stats()["x509_ca"]
        first = first or cas
        if cas < first:
            print(f"BROKEN {now:.3f} {cas} CAs, first read {first}", flush=True)
    except Exception as error:
        cas = None
        print(f"BROKEN {now:.3f} {error!r}", flush=True)
    try:
        plain = hashlib.sha256(open("/plain/ca.crt", "rb").read()).hexdigest()
    except OSError as error:
        plain = repr(error)
    for name, seen in (("trust", cas), ("plain", plain)):
        if seen is not None and last.get(name) != seen:
            last[name] = seen
            print(f"CHANGED {name} {now:.3f} {seen}", flush=True)
    time.sleep(0.05)
"#;

/// A long-running [`WATCHER`] pod with a trustmount volume of ConfigMap `config_map` (plus
/// the chart's extraPem and the system roots) at /etc/ssl/certs, and the same ConfigMap as a
/// plain ConfigMap volume at /plain.
fn watcher_pod(name: &str, config_map: &str) -> Pod {
    let mut pod = serde_json::to_value(pod_with_volume(
        name,
        &format!("exec python3 -u -c '{WATCHER}'"),
        serde_json::json!({"configMaps": config_map}),
    ))
    .unwrap();
    pod["spec"]["restartPolicy"] = "Always".into();
    pod["spec"]["terminationGracePeriodSeconds"] = 1.into();
    pod["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "plain", "configMap": {"name": config_map}}));
    pod["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "plain", "mountPath": "/plain", "readOnly": true}));
    serde_json::from_value(pod).unwrap()
}

/// The watcher's `CHANGED` lines for `what`: (unix time, value).
fn changes(output: &str, what: &str) -> Vec<(f64, String)> {
    output
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            (fields.next()? == "CHANGED" && fields.next()? == what)
                .then(|| Some((fields.next()?.parse().ok()?, fields.next()?.to_owned())))?
        })
        .collect()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Polls the watcher's output until its trustmount bundle holds `cas` CAs; returns when it
/// saw that (unix time).
async fn trust_reaches(node: &Node, watcher: &Pod, cas: usize, what: &str) -> f64 {
    let reached = poll_until(Duration::from_secs(60), Duration::from_millis(100), async || {
        let output = node.container_output(watcher, "main");
        let found = changes(&output, "trust").into_iter().find(|(_, seen)| seen == &cas.to_string());
        found.map(|(at, _)| at).ok_or(())
    })
    .await;
    reached.unwrap_or_else(|()| {
        panic!(
            "{what}: the workload's bundle never held {cas} CAs:\n{}\nkubelet:\n{}",
            node.container_log(watcher, "main"),
            node.log("kubelet")
        )
    })
}

/// The driver pod's metrics (`/metrics` on its pod IP, as Prometheus scrapes it): the value of
/// the sample named `sample` (with its labels), 0 when absent.
fn metric(driver: &Pod, sample: &str) -> f64 {
    let scraped = http_get(driver, 9808, "/metrics");
    let text = String::from_utf8_lossy(&scraped.stdout).into_owned();
    assert!(text.ends_with("\n200"), "/metrics: {scraped:?}");
    text.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

/// [`Node::ready_pod`] for the driver's DaemonSet, waiting for a pod other than `previous`.
async fn next_driver_pod(node: &Node, admin: &kube::Client, previous: &str) -> Pod {
    let replaced = poll_until(Duration::from_secs(120), Duration::from_millis(250), async || {
        let pods = pods_of(admin, DRIVER_NAMESPACE, DRIVER_PODS).await;
        let others = pods.iter().any(|pod| pod.metadata.name.as_deref() != Some(previous));
        if others && pods.len() == 1 { Ok(()) } else { Err(()) }
    })
    .await;
    assert!(
        replaced.is_ok(),
        "the DaemonSet did not replace driver pod {previous}:\n{}",
        node.log("kube-controller-manager")
    );
    node.ready_pod(DRIVER_NAMESPACE, DRIVER_PODS, Duration::from_secs(120)).await
}

#[test]
fn workloads_keep_whole_bundles_through_rotation_driver_restarts_an_upgrade_and_a_kubelet_restart() {
    let images = driver_and_test_images();
    if !in_node_namespaces!() {
        return;
    }
    let mut node = Node::start(&images);
    let dir = tempfile::tempdir().unwrap();
    let org = TestCa::new(dir.path(), "Org CA");
    let team: Vec<TestCa> = (0..5).map(|n| TestCa::new(dir.path(), &format!("Team CA {n}"))).collect();
    let pem_of = |count: usize| team[..count].iter().map(|ca| ca.pem.as_str()).collect::<String>();
    block_on(async {
        let admin = node.plane.admin_client().await;
        // Metrics on the pod IP: this test reads the republish count from them.
        let mut driver = install_chart(&node, &org, &["--set", "metrics.expose=true"]).await;
        let namespace = node.namespace("node-life").await;
        let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(admin.clone(), &namespace);
        crate::support::objects::put_config_map(&config_maps, "team-ca", &pem_of(1)).await;
        let pods: Api<Pod> = Api::namespaced(admin.clone(), &namespace);
        pods.create(&PostParams::default(), &watcher_pod("watcher", "team-ca")).await.unwrap();
        let watcher = node.ready_pod(&namespace, "", Duration::from_secs(120)).await;
        let first = poll_until(Duration::from_secs(30), Duration::from_millis(100), async || {
            let trust = changes(&node.container_output(&watcher, "main"), "trust");
            trust.first().map(|(_, cas)| cas.parse::<usize>().unwrap()).ok_or(())
        })
        .await
        .unwrap_or_else(|()| panic!("the watcher printed nothing:\n{}", node.container_log(&watcher, "main")));
        let publishes = |driver: &Pod| {
            let ok = r#"{method="NodePublishVolume",grpc_code="OK"}"#;
            (
                metric(driver, &format!("trustmount_csi_request_duration_seconds_count{ok}")),
                metric(driver, &format!("trustmount_csi_request_duration_seconds_sum{ok}")),
            )
        };
        let (calls_before, seconds_before) = publishes(&driver);

        // A rotation: the CA appended to the ConfigMap reaches the running pod through the
        // driver's watch; the plain ConfigMap volume gets it at the kubelet's next sync of the pod.
        let written = unix_now();
        crate::support::objects::put_config_map(&config_maps, "team-ca", &pem_of(2)).await;
        let trusted = trust_reaches(&node, &watcher, first + 1, "the first rotation").await;
        let plain_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(pem_of(2).as_bytes()));
        let plain = poll_until(Duration::from_secs(180), Duration::from_millis(250), async || {
            let plain = changes(&node.container_output(&watcher, "main"), "plain");
            plain.into_iter().find(|(_, sha)| *sha == plain_sha).map(|(at, _)| at).ok_or(())
        })
        .await
        .unwrap_or_else(|()| {
            panic!("the plain ConfigMap volume never changed:\n{}", node.container_log(&watcher, "main"))
        });
        eprintln!(
            "ConfigMap change → pod reads it: trustmount {:.0} ms, plain ConfigMap volume {:.0} ms",
            (trusted - written) * 1000.0,
            (plain - written) * 1000.0
        );
        // The kubelet republished the volume meanwhile (requiresRepublish: at each sync of the pod).
        let (calls_after, seconds_after) = publishes(&driver);
        let republished = calls_after - calls_before;
        assert!(republished >= 1.0, "no NodePublishVolume from the kubelet in {:.0} s", unix_now() - written);
        eprintln!(
            "requiresRepublish: {republished} calls in {:.0} s, {:.2} ms each on average (the driver's metrics)",
            unix_now() - written,
            (seconds_after - seconds_before) / republished * 1000.0
        );

        // The driver's pod deleted: the DaemonSet's next one adopts the volume, and a later
        // rotation reaches the workload through it.
        let name = driver.metadata.name.clone().unwrap();
        Api::<Pod>::namespaced(admin.clone(), DRIVER_NAMESPACE).delete(&name, &Default::default()).await.unwrap();
        driver = next_driver_pod(&node, &admin, &name).await;
        let written = unix_now();
        crate::support::objects::put_config_map(&config_maps, "team-ca", &pem_of(3)).await;
        let trusted = trust_reaches(&node, &watcher, first + 2, "a rotation after the driver's pod was replaced").await;
        eprintln!(
            "a rotation after the driver's pod was replaced: the pod reads it {:.0} ms after the write",
            (trusted - written) * 1000.0
        );

        // helm upgrade to changed values rolls the DaemonSet.
        let name = driver.metadata.name.clone().unwrap();
        let chart = deploy::chart();
        let upgrade = [
            "upgrade",
            RELEASE,
            chart.to_str().unwrap(),
            "--namespace",
            DRIVER_NAMESPACE,
            "--reuse-values",
            "--set",
            "logLevel=debug",
        ];
        assert_success("helm upgrade", &deploy::run_tool("helm", Some(&node.plane), &upgrade));
        driver = next_driver_pod(&node, &admin, &name).await;
        let written = unix_now();
        crate::support::objects::put_config_map(&config_maps, "team-ca", &pem_of(4)).await;
        let trusted = trust_reaches(&node, &watcher, first + 3, "a rotation after helm upgrade").await;
        eprintln!(
            "a rotation after helm upgrade: the pod reads it {:.0} ms after the write",
            (trusted - written) * 1000.0
        );

        // The kubelet restarted: it registers the driver again, and a new pod gets its volume.
        node.restart_kubelet();
        let written = unix_now();
        crate::support::objects::put_config_map(&config_maps, "team-ca", &pem_of(5)).await;
        let trusted = trust_reaches(&node, &watcher, first + 4, "a rotation after the kubelet restarted").await;
        eprintln!(
            "a rotation after the kubelet restarted: the pod reads it {:.0} ms after the write",
            (trusted - written) * 1000.0
        );
        pods.create(
            &PostParams::default(),
            &pod_with_volume("after-restart", "test -s /etc/ssl/certs/ca-certificates.crt", serde_json::json!({})),
        )
        .await
        .unwrap();
        let done = node.finished_pod(&namespace, "after-restart", Duration::from_secs(120)).await;
        assert_eq!(
            exit_code(&done),
            Some(0),
            "{}\ndriver:\n{}",
            termination_message(&done),
            node.container_log(&driver, "trustmount")
        );

        // Not one read of the bundle failed, the whole time.
        let output = node.container_output(&watcher, "main");
        let broken: Vec<&str> = output.lines().filter(|line| line.starts_with("BROKEN")).collect();
        assert!(broken.is_empty(), "the workload read a broken bundle:\n{}", broken.join("\n"));
        let restarts =
            pods.get("watcher").await.unwrap().status.and_then(|s| s.container_statuses).map(|c| c[0].restart_count);
        assert_eq!(restarts, Some(0), "the workload restarted");
    });
}

/// The pids of the driver's processes on `node` (`/trustmount serve`, as its image runs it).
fn driver_processes(node: &Node) -> Vec<i32> {
    let is_driver = |pid: &i32| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        cmdline.starts_with(b"/trustmount\0serve\0")
    };
    node.pod_processes().into_iter().filter(is_driver).collect()
}

/// The driver's records left in its state directory on the node.
fn records_on_node() -> Vec<std::path::PathBuf> {
    let volumes = std::path::Path::new(STATE_DIR).join("volumes");
    std::fs::read_dir(volumes)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "json" || ext == "pending"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kubectl_apply_k_runs_the_driver_and_pods_survive_an_early_publish_a_killed_driver_and_a_kubelet_restart() {
    let images = driver_and_test_images();
    if !in_node_namespaces!() {
        return;
    }
    let mut node = Node::start(&images);
    block_on(async {
        let admin = node.plane.admin_client().await;
        let namespace = node.namespace("node-kustomize").await;
        let pods: Api<Pod> = Api::namespaced(admin.clone(), &namespace);
        let has_bundle = "test -s /etc/ssl/certs/ca-certificates.crt && ls /etc/ssl/certs/java/cacerts";

        // A pod scheduled before the driver runs (a node booting): the kubelet finds no such
        // CSI driver and retries, and the pod starts once the driver has registered.
        pods.create(&PostParams::default(), &pod_with_volume("early", has_bundle, serde_json::json!({})))
            .await
            .unwrap();
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(admin.clone(), &namespace);
        let of_early = kube::api::ListParams::default().fields("involvedObject.name=early");
        let unregistered = poll_until(Duration::from_secs(60), Duration::from_millis(250), async || {
            let listed = events.list(&of_early).await.map_err(|e| e.to_string())?.items;
            let messages: Vec<String> = listed.iter().filter_map(|e| e.message.clone()).collect();
            let found = messages.iter().any(|m| m.contains("not found in the list of registered CSI drivers"));
            if found { Ok(()) } else { Err(format!("{messages:?}")) }
        })
        .await;
        assert!(unregistered.is_ok(), "the kubelet did not report the unregistered driver: {unregistered:?}");

        let apply = ["apply", "--server-side", "-k", concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes")];
        assert_success("kubectl apply -k deploy/kubernetes", &deploy::run_tool("kubectl", Some(&node.plane), &apply));
        let driver = node.ready_pod(DRIVER_NAMESPACE, DRIVER_PODS, Duration::from_secs(180)).await;
        let early = node.finished_pod(&namespace, "early", Duration::from_secs(180)).await;
        assert_eq!(
            exit_code(&early),
            Some(0),
            "{}\ndriver:\n{}",
            termination_message(&early),
            node.container_log(&driver, "trustmount")
        );

        // The driver killed with SIGKILL: its sockets stay behind; the container restarted in
        // the same pod replaces them, registers again, and serves a new pod.
        let killed = driver_processes(&node);
        assert_eq!(killed.len(), 1, "one driver process: {killed:?}");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(killed[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
        let socket = std::path::Path::new(KUBELET_DIR).join("plugins_registry/csi.trustmount.io-reg.sock");
        assert!(socket.exists(), "a killed driver leaves its registration socket");
        let restarted = poll_until(Duration::from_secs(120), Duration::from_millis(250), async || {
            let pod = Api::<Pod>::namespaced(admin.clone(), DRIVER_NAMESPACE)
                .get(driver.metadata.name.as_deref().unwrap())
                .await
                .map_err(|e| e.to_string())?;
            let status =
                pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).and_then(|c| c.first().cloned());
            let running_again = status.as_ref().is_some_and(|s| s.restart_count >= 1 && s.ready);
            if running_again { Ok(pod) } else { Err(format!("{status:?}")) }
        })
        .await;
        let driver = restarted.unwrap_or_else(|status| {
            panic!("the driver's container did not come back: {status}\nkubelet:\n{}", node.log("kubelet"))
        });
        pods.create(&PostParams::default(), &pod_with_volume("after-kill", has_bundle, serde_json::json!({})))
            .await
            .unwrap();
        let after_kill = node.finished_pod(&namespace, "after-kill", Duration::from_secs(120)).await;
        assert_eq!(
            exit_code(&after_kill),
            Some(0),
            "{}\ndriver:\n{}",
            termination_message(&after_kill),
            node.container_log(&driver, "trustmount")
        );

        // The kubelet restarted while publishes are in flight: every pod gets its volume.
        let names: Vec<String> = (0..4).map(|n| format!("in-flight-{n}")).collect();
        for name in &names {
            pods.create(&PostParams::default(), &pod_with_volume(name, has_bundle, serde_json::json!({})))
                .await
                .unwrap();
        }
        // At the first answer to one of them (the others are being published), the restart.
        let first_answered = poll_until(Duration::from_secs(60), Duration::from_millis(20), async || {
            let log = node.container_output(&driver, "trustmount");
            if log.lines().any(|line| line.contains("in-flight-") && line.contains("answered")) {
                Ok(())
            } else {
                Err(())
            }
        })
        .await;
        assert!(first_answered.is_ok(), "no publish for the new pods:\n{}", node.container_log(&driver, "trustmount"));
        node.restart_kubelet();
        for name in &names {
            let done = node.finished_pod(&namespace, name, Duration::from_secs(180)).await;
            assert_eq!(
                exit_code(&done),
                Some(0),
                "{name}: {}\ndriver:\n{}",
                termination_message(&done),
                node.container_log(&driver, "trustmount")
            );
        }

        // Every pod deleted: nothing of theirs stays mounted or recorded.
        let mut uids = Vec::new();
        for name in names.iter().map(String::as_str).chain(["early", "after-kill"]) {
            uids.push(pods.get(name).await.unwrap().metadata.uid.unwrap());
            pods.delete(name, &Default::default()).await.unwrap();
        }
        let cleaned = poll_until(Duration::from_secs(120), Duration::from_millis(250), async || {
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            let mounted: Vec<&String> = uids.iter().filter(|uid| mounts.contains(uid.as_str())).collect();
            let records = records_on_node();
            if mounted.is_empty() && records.is_empty() {
                Ok(())
            } else {
                Err(format!("mounted: {mounted:?}, records: {records:?}"))
            }
        })
        .await;
        assert!(cleaned.is_ok(), "left after the pods were deleted: {cleaned:?}\nkubelet:\n{}", node.log("kubelet"));
    });
}

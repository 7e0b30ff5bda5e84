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
use crate::support::node::{KUBELET_DIR, NODE_IP, NODE_NAME, Node};
use crate::support::output::assert_success;
use crate::support::tls::TlsServer;
use crate::support::{block_on, deploy, poll_until};

/// The chart's release and namespace in these tests.
const RELEASE: &str = "trustmount";
const DRIVER_NAMESPACE: &str = "trustmount";
const DRIVER_PODS: &str = "app.kubernetes.io/name=trustmount";

fn pod(name: &str, command: &str) -> Pod {
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
fn pod_with_volume(name: &str, command: &str, attributes: serde_json::Value) -> Pod {
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

fn termination_message(pod: &Pod) -> String {
    let statuses = pod.status.as_ref().and_then(|status| status.container_statuses.clone()).unwrap_or_default();
    statuses.first().and_then(|status| status.state.as_ref()?.terminated.as_ref()?.message.clone()).unwrap_or_default()
}

fn exit_code(pod: &Pod) -> Option<i32> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    Some(statuses.first()?.state.as_ref()?.terminated.as_ref()?.exit_code)
}

#[test]
fn the_node_runs_a_pod_of_the_test_image() {
    // Built (or found) before the node's network namespace, where no mirror is reachable.
    images::debian_test();
    if !in_node_namespaces!() {
        return;
    }
    let node = Node::start(&[images::debian_test()]);
    block_on(async {
        let namespace = node.namespace("node").await;
        let pods: Api<Pod> = Api::namespaced(node.plane.admin_client().await, &namespace);
        pods.create(&PostParams::default(), &pod("hello", "openssl version && ls -A /etc/ssl/certs | wc -l"))
            .await
            .unwrap();
        let done = node.finished_pod(&namespace, "hello", Duration::from_secs(120)).await;
        assert_eq!(exit_code(&done), Some(0), "{:?}", done.status);
    });
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
        let without = node.finished_pod(&namespace, "without-volume", Duration::from_secs(120)).await;
        // The image trusts nothing: curl's 77 (no CA file to read) or 60 (not verified).
        assert!(
            matches!(exit_code(&without), Some(77 | 60)),
            "{:?}: {}",
            exit_code(&without),
            termination_message(&without)
        );
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

/// A CA, and a TLS server on the node whose certificate it issued.
struct Served {
    ca: TestCa,
    server: TlsServer,
}

impl Served {
    fn new(dir: &std::path::Path, name: &str) -> Self {
        let ca = TestCa::new(dir, &format!("{name} CA"));
        let leaf = ca.issue_server_for(dir, &format!("{name}-server"), &[&NODE_IP.to_string()]);
        let server = TlsServer::start_on(&NODE_IP.to_string(), &leaf.cert_path, &leaf.key_path);
        Served { ca, server }
    }

    fn url(&self) -> String {
        format!("https://{NODE_IP}:{}/", self.server.port)
    }
}

fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).unwrap()
}

/// `helm install` of the shipped chart into [`DRIVER_NAMESPACE`] (made first, with the org CA's
/// ConfigMap `org-ca` the chart's `extraPem` names), then the driver's DaemonSet pod Ready.
async fn install_chart(node: &Node, org_ca: &TestCa, values: &[&str]) -> Pod {
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
    // Built (or found) before the node's network namespace, where no mirror is reachable.
    images::debian_test();
    images::driver();
    if !in_node_namespaces!() {
        return;
    }
    let node = Node::start(&[images::debian_test(), images::driver()]);
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
        let without = node.finished_pod(&namespace, "without-volume", Duration::from_secs(120)).await;
        assert!(
            matches!(exit_code(&without), Some(77 | 60)),
            "{:?}: {}",
            exit_code(&without),
            termination_message(&without)
        );

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

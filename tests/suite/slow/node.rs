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
use crate::support::node::{KUBELET_DIR, NODE_IP, Node};
use crate::support::tls::TlsServer;
use crate::support::{block_on, deploy, poll_until};

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

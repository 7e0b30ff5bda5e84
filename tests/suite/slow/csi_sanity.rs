//! csi-sanity, the CSI conformance suite (kubernetes-csi/csi-test, built by tests/k8s/build),
//! against the real `trustmount serve` (standalone): every Identity and Node test that a node-only
//! driver can run must pass.

use std::process::Command;

use crate::in_private_mount_namespace;
use crate::support;
use crate::support::control_plane::component;
use crate::support::daemon::{Daemon, DaemonOptions};

/// Tests csi-sanity cannot run against a node-only driver, each with the reason.
const SKIPPED: &[&str] = &[
    // Every `[Controller Server]` group calls the Controller service, which a node-only driver
    // does not offer (the plugin does not advertise CONTROLLER_SERVICE).
    r"\[Controller Server\]",
    // Likewise the GroupController service.
    r"\[GroupController",
    // These node tests first provision a volume with CreateVolume (a Controller RPC). What they
    // check (target path removed by unpublish; NOT_FOUND for a published volume at another path)
    // is covered by tests/suite/fast/csi_node.rs with inline volumes, the way the kubelet publishes
    // them.
    "should remove target path",
    "should fail when volume does not exist on the specified path",
];

#[test]
fn csi_sanity_passes_every_identity_and_node_test_a_node_only_driver_can_run() {
    let sanity = component("csi-sanity");
    if !in_private_mount_namespace!() {
        return;
    }
    support::block_on(async {
        let daemon = Daemon::start(DaemonOptions::default()).await;
        // csi-sanity creates `mountdir` itself (not its parents) and publishes at
        // `<mountdir>/target`: put it where the kubelet would, below the pods directory.
        let volume_dir = daemon.kubelet_dir.join("pods/sanity-pod/volumes/kubernetes.io~csi");
        std::fs::create_dir_all(&volume_dir).unwrap();
        let report = daemon.root.join("sanity-report.json");
        let output = Command::new(&sanity)
            .arg(format!("--csi.endpoint=unix://{}", daemon.socket.display()))
            .arg(format!("--csi.mountdir={}", volume_dir.join("sanity").display()))
            .arg(format!("--csi.stagingdir={}", daemon.root.join("sanity-staging").display()))
            .arg(format!("--ginkgo.skip={}", SKIPPED.join("|")))
            .arg(format!("--ginkgo.json-report={}", report.display()))
            .arg("--ginkgo.no-color")
            .output()
            .expect("run csi-sanity");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "csi-sanity failed ({})\n{stdout}\n{stderr}\n{}",
            output.status,
            daemon.stderr()
        );

        // Read what ran from the suite's own report, so a skip pattern that swallowed too much,
        // or a run of nothing, fails here.
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let specs = report[0]["SpecReports"].as_array().expect("spec reports");
        let ran: Vec<String> = specs
            .iter()
            .filter(|spec| spec["LeafNodeType"] == "It" && spec["State"] == "passed")
            .map(|spec| {
                let hierarchy: Vec<&str> =
                    spec["ContainerHierarchyTexts"].as_array().unwrap().iter().filter_map(|t| t.as_str()).collect();
                format!("{} {}", hierarchy.join(" "), spec["LeafNodeText"].as_str().unwrap_or_default())
            })
            .collect();
        // "pending" marks specs csi-sanity itself disables (a `PIt` in its Controller suite).
        let failed: Vec<&serde_json::Value> = specs
            .iter()
            .filter(|spec| !matches!(spec["State"].as_str(), Some("passed" | "skipped" | "pending")))
            .collect();
        assert!(failed.is_empty(), "csi-sanity specs did not pass: {failed:#?}");
        for expected in [
            "Identity Service GetPluginCapabilities should return appropriate capabilities",
            "Identity Service Probe should return appropriate information",
            "Identity Service GetPluginInfo should return appropriate information",
            "Node Service NodeGetCapabilities should return appropriate capabilities",
            "Node Service NodeGetInfo should return appropriate values",
            "Node Service NodePublishVolume should fail when no volume capability is provided",
            "Node Service NodeUnpublishVolume should fail when no target path is provided",
            "Node Service NodeGetVolumeStats should fail when volume is not found",
        ] {
            assert!(
                ran.iter().any(|name| name.ends_with(expected)),
                "csi-sanity did not pass {expected:?}; passed: {ran:#?}"
            );
        }
        eprintln!("csi-sanity passed {} specs", ran.len());
    });
}

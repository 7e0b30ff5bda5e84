//! Cluster sources against the real API server: ConfigMaps and ClusterTrustBundles reach the
//! volume over the CSI socket; names from another namespace, missing pod info and a pod UID
//! the target contradicts are refused; missing sources fail unless optional; private keys never
//! reach a volume; a change reaches only the volumes that use it; a warm publish sends the API
//! server nothing (counted in its audit log); a standalone driver refuses cluster sources.
//!
//! The driver runs with an identity of its own (a ServiceAccount token bound to a ClusterRole
//! that may get/list/watch ConfigMaps and ClusterTrustBundles), so the audit log tells its
//! requests from the test's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::certificates::v1::ClusterTrustBundle;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::storage::v1::{CSIDriver, CSIDriverSpec};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tonic::Code;

use crate::in_private_mount_namespace;
use crate::support;
use crate::support::block_on;
use crate::support::certs::{TestCa, bundle_ders, ders, pem_certificates};
use crate::support::client::{code_of, message_of, publish_request, unpublish_request};
use crate::support::control_plane::{ControlPlane, RuntimeConfig};
use crate::support::daemon::{Daemon, DaemonOptions};
use crate::support::deploy;
use crate::support::world::{PROPAGATION_LIMIT, SHIPPED_DRIVER, Setup, World};

/// A TCP port on 127.0.0.1 that nothing listens on (yet): connections to it are refused.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Forwards every connection to `port` on to `upstream` (TLS passes through untouched), from
/// now until dropped: the API server becoming reachable.
struct Forwarder(tokio::task::JoinHandle<()>);

impl Forwarder {
    async fn start(port: u16, upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("the reserved port is free");
        Forwarder(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }))
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn private_key_pem(ca: &TestCa) -> String {
    ca.key.serialize_pem()
}

#[test]
fn a_config_map_by_bare_name_gives_every_certificate_key_and_by_name_and_key_one() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let world = World::start("cm-keys").await;
        let pem_ca = TestCa::new(world.dir.path(), "pem");
        let der_ca = TestCa::new(world.dir.path(), "der");
        world
            .put_config_map(
                "corp-ca",
                &[("ca.crt", &pem_ca.pem), ("README", "not a certificate")],
                &[("root.der", &der_ca.der)],
            )
            .await;

        let (bare, result) = world.publish("pod-bare", &[("configMaps", "corp-ca")]).await;
        result.unwrap();
        assert_eq!(bundle_ders(&bare), ders(&[&pem_ca, &der_ca]), "PEM data and DER binaryData; README ignored");
        let text = std::fs::read_to_string(bare.join("ca-certificates.crt")).unwrap();
        assert!(text.contains(&pem_ca.pem.lines().nth(1).unwrap().to_string()), "the CA's PEM is in the bundle");

        let (one, result) = world.publish("pod-key", &[("configMaps", "corp-ca:root.der")]).await;
        result.unwrap();
        assert_eq!(bundle_ders(&one), ders(&[&der_ca]));

        // A named key that holds no certificate is the source's failure, naming object and key.
        let (_, result) = world.publish("pod-readme", &[("configMaps", "corp-ca:README")]).await;
        assert_eq!(code_of(&result), Code::FailedPrecondition, "{result:?}");
        let message = message_of(&result);
        assert!(message.contains(&format!("{}/corp-ca", world.namespace)) && message.contains("README"), "{message}");

        // kube-root-ca.crt is how a pod gets the cluster's own CA (the root-ca-publisher is not
        // running here, so the test publishes it itself).
        let cluster_ca = std::fs::read_to_string(&world.plane.ca_cert).unwrap();
        world.put_config_map("kube-root-ca.crt", &[("ca.crt", &cluster_ca)], &[]).await;
        let (root, result) = world.publish("pod-root", &[("configMaps", "kube-root-ca.crt:ca.crt")]).await;
        result.unwrap();
        assert_eq!(bundle_ders(&root), pem_certificates(cluster_ca.as_bytes()).into_iter().collect());
    });
}

fn trust_bundle(name: &str, signer: Option<&str>, labels: &[(&str, &str)], pem: &str) -> ClusterTrustBundle {
    let mut bundle = ClusterTrustBundle::default();
    bundle.metadata.name = Some(name.to_string());
    bundle.metadata.labels =
        Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>());
    bundle.spec.signer_name = signer.map(str::to_string);
    bundle.spec.trust_bundle = pem.to_string();
    bundle
}

#[test]
fn cluster_trust_bundles_by_name_and_by_signer_and_label_selector() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let world = World::start("ctb").await;
        let id = std::process::id();
        let signer = format!("example.com/corp-{id}");
        let prefix = format!("example.com:corp-{id}:");
        let plain = TestCa::new(world.dir.path(), "plain");
        let prod = TestCa::new(world.dir.path(), "prod");
        let dev = TestCa::new(world.dir.path(), "dev");
        let api: Api<ClusterTrustBundle> = Api::all(world.admin.clone());
        let post = PostParams::default();
        let plain_name = format!("plain-{id}");
        api.create(&post, &trust_bundle(&plain_name, None, &[], &plain.pem)).await.unwrap();
        let prod_name = format!("{prefix}prod");
        api.create(&post, &trust_bundle(&prod_name, Some(&signer), &[("env", "prod")], &prod.pem)).await.unwrap();
        // Both CAs in one bundle, the prod one again: duplicates are removed.
        let dev_pem = format!("{}{}", dev.pem, prod.pem);
        api.create(&post, &trust_bundle(&format!("{prefix}dev"), Some(&signer), &[("env", "dev")], &dev_pem))
            .await
            .unwrap();

        let (target, result) = world.publish("by-name", &[("clusterTrustBundles", &plain_name)]).await;
        result.unwrap();
        assert_eq!(bundle_ders(&target), ders(&[&plain]));

        let (all, result) = world.publish("signer", &[("signerName", &signer)]).await;
        result.unwrap();
        assert_eq!(bundle_ders(&all), ders(&[&prod, &dev]), "no selector: every bundle of the signer");

        for (pod, selector, expected) in [
            ("env-prod", "env=prod", ders(&[&prod])),
            ("env-in", "env in (prod, staging)", ders(&[&prod])),
            ("env-notin", "env notin (prod)", ders(&[&prod, &dev])),
            ("env-exists", "env", ders(&[&prod, &dev])),
        ] {
            let (target, result) = world.publish(pod, &[("signerName", &signer), ("labelSelector", selector)]).await;
            result.unwrap_or_else(|status| panic!("{selector}: {status:?}"));
            assert_eq!(bundle_ders(&target), expected, "{selector}");
        }

        // Nothing matches: refused unless optional.
        let (_, result) = world.publish("none", &[("signerName", &signer), ("labelSelector", "!env")]).await;
        assert_eq!(code_of(&result), Code::FailedPrecondition, "{result:?}");
        assert!(message_of(&result).contains(&signer), "{}", message_of(&result));

        // Deterministic: the same certificates reached two ways give byte-identical files.
        let names = format!("{prefix}dev,{prefix}prod");
        let (listed, result) = world.publish("listed", &[("clusterTrustBundles", &names)]).await;
        result.unwrap();
        assert_eq!(
            std::fs::read(listed.join("ca-certificates.crt")).unwrap(),
            std::fs::read(all.join("ca-certificates.crt")).unwrap()
        );
        assert!(world.daemon.stderr().contains("certificates.k8s.io/v1"), "the discovered version is logged");
    });
}

/// Another namespace of the shared API server with a ConfigMap `victim-ca` holding a CA.
async fn plane_namespace_with_ca(world: &World<'_>, name: &str) -> String {
    let namespace = ControlPlane::shared().namespace(name).await;
    let ca = TestCa::new(world.dir.path(), name);
    let mut map = ConfigMap::default();
    map.metadata.name = Some("victim-ca".into());
    map.data = Some(BTreeMap::from([("ca.crt".to_string(), ca.pem.clone())]));
    Api::<ConfigMap>::namespaced(world.admin.clone(), &namespace).create(&PostParams::default(), &map).await.unwrap();
    namespace
}

#[test]
fn another_namespace_missing_pod_info_and_a_contradicting_pod_uid_are_refused() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let world = World::start("refusals").await;
        let (_, result) = world.publish("cross", &[("configMaps", "team-b/ca")]).await;
        assert_eq!(code_of(&result), Code::InvalidArgument, "{result:?}");
        assert!(message_of(&result).contains("team-b"), "{}", message_of(&result));

        let target = world.daemon.target("no-info", "trust");
        let mut request = publish_request("no-info", &target, &[("configMaps", "corp-ca")]);
        request.volume_context.remove("csi.storage.k8s.io/pod.namespace");
        let result = world.daemon.node().node_publish_volume(request).await;
        assert_eq!(code_of(&result), Code::FailedPrecondition, "{result:?}");
        assert!(message_of(&result).contains("podInfoOnMount"), "{}", message_of(&result));

        // The attack with podInfoOnMount off: the pod author writes another namespace into
        // volumeAttributes and the kubelet adds no UID. Refused before any read.
        let victim = plane_namespace_with_ca(&world, "victim").await;
        let target = world.daemon.target("forged-namespace", "trust");
        let mut request = publish_request("forged-namespace", &target, &[("configMaps", "victim-ca")]);
        request.volume_context.insert("csi.storage.k8s.io/pod.namespace".into(), victim.clone());
        request.volume_context.remove("csi.storage.k8s.io/pod.uid");
        let result = world.daemon.node().node_publish_volume(request).await;
        assert_eq!(code_of(&result), Code::FailedPrecondition, "{result:?}");
        assert!(message_of(&result).contains("csi.storage.k8s.io/pod.uid"), "{}", message_of(&result));
        assert!(!message_of(&result).contains("BEGIN CERTIFICATE") && !target.exists());
        // A namespace that would reach the request URL with a query string of its own.
        let mut request = publish_request("injected", &target, &[("configMaps", "victim-ca")]);
        let injected = format!("{victim}/configmaps?fieldSelector=");
        request.volume_context.insert("csi.storage.k8s.io/pod.namespace".into(), injected);
        let result = world.daemon.node().node_publish_volume(request).await;
        assert_eq!(code_of(&result), Code::InvalidArgument, "{result:?}");
        assert!(message_of(&result).contains("a namespace name"), "{}", message_of(&result));

        let target = world.daemon.target("real-pod", "trust");
        let mut request = publish_request("forged", &target, &[("configMaps", "corp-ca")]);
        request.volume_context.insert("csi.storage.k8s.io/pod.namespace".into(), world.namespace.clone());
        request.volume_context.insert("csi.storage.k8s.io/pod.uid".into(), "another-pod".into());
        let result = world.daemon.node().node_publish_volume(request).await;
        assert_eq!(code_of(&result), Code::InvalidArgument, "{result:?}");
        assert!(!target.exists());
    });
}

#[test]
fn a_missing_source_fails_naming_it_unless_optional() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let world = World::start("missing").await;
        let present = TestCa::new(world.dir.path(), "present");
        world.put_config_map("present", &[("ca.crt", &present.pem)], &[]).await;

        let (target, result) = world.publish("missing", &[("configMaps", "present, absent")]).await;
        assert_eq!(code_of(&result), Code::FailedPrecondition, "{result:?}");
        let message = message_of(&result);
        assert!(message.contains("ConfigMap") && message.contains(&format!("{}/absent", world.namespace)), "{message}");
        assert!(!target.exists(), "a failed publish leaves nothing behind");

        let (_, result) = world.publish("missing-ctb", &[("clusterTrustBundles", "no-such-bundle")]).await;
        assert_eq!(code_of(&result), Code::FailedPrecondition, "{result:?}");
        assert!(message_of(&result).contains("ClusterTrustBundle no-such-bundle"), "{}", message_of(&result));

        let optional = [("configMaps", "present, absent, present:nokey"), ("optional", "true")];
        let (target, result) = world.publish("optional", &optional).await;
        result.unwrap();
        assert_eq!(bundle_ders(&target), ders(&[&present]));
    });
}

#[test]
fn a_private_key_in_a_config_map_is_refused_and_never_copied() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let world = World::start("key").await;
        let ca = TestCa::new(world.dir.path(), "keyed");
        let key = private_key_pem(&ca);
        world.put_config_map("leaky", &[("tls.crt", &ca.pem), ("tls.key", &key)], &[]).await;
        for attribute in ["leaky", "leaky:tls.key"] {
            let (target, result) =
                world.publish(&format!("pod-{}", attribute.len()), &[("configMaps", attribute)]).await;
            assert_eq!(code_of(&result), Code::FailedPrecondition, "{attribute}: {result:?}");
            let message = message_of(&result);
            assert!(
                message.contains("leaky") && message.contains("tls.key") && message.contains("private key"),
                "{message}"
            );
            assert!(!target.exists());
        }
        // The certificate key alone is fine; the key next to it is still never read.
        let (target, result) = world.publish("pod-cert-only", &[("configMaps", "leaky:tls.crt")]).await;
        result.expect("the certificate key alone publishes");
        assert!(std::fs::read_to_string(target.join("ca-certificates.crt")).unwrap().contains(ca.pem.trim()));
        // The whole state dir: spec dirs, content blobs (a blob outlives a failed write until it is
        // collected) and records. `walk` gives paths relative to its root.
        let state = &world.daemon.state_dir;
        let files: Vec<PathBuf> = support::fsutil::walk(state)
            .into_iter()
            .map(|path| state.join(path))
            .filter(|path| path.is_file())
            .collect();
        assert!(!files.is_empty(), "nothing to look at in {}", state.display());
        let leaked: Vec<&PathBuf> = files
            .iter()
            .filter(|path| {
                std::fs::read(path).is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"))
            })
            .collect();
        assert!(leaked.is_empty(), "a private key reached the driver's files: {leaked:?}");
    });
}

/// The `..data` link of a volume: its target changes exactly when the volume gets a generation.
fn generation(target: &Path) -> PathBuf {
    std::fs::read_link(target.join("..data")).unwrap()
}

#[test]
fn a_config_map_change_reaches_only_the_volumes_that_use_it_and_a_bad_one_keeps_the_last_good() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let world = World::start("change").await;
        let first = TestCa::new(world.dir.path(), "first");
        let other = TestCa::new(world.dir.path(), "other");
        world.put_config_map("changing", &[("ca.crt", &first.pem)], &[]).await;
        world.put_config_map("steady", &[("ca.crt", &other.pem)], &[]).await;
        let (changing, result) = world.publish("pod-changing", &[("configMaps", "changing")]).await;
        result.unwrap();
        let (steady, result) = world.publish("pod-steady", &[("configMaps", "steady")]).await;
        result.unwrap();
        let steady_generation = generation(&steady);

        let second = TestCa::new(world.dir.path(), "second");
        world.put_config_map("changing", &[("ca.crt", &second.pem)], &[]).await;
        support::eventually("the changed ConfigMap reaches its volume", PROPAGATION_LIMIT, async || {
            bundle_ders(&changing) == ders(&[&second])
        })
        .await;
        assert_eq!(generation(&steady), steady_generation, "a volume of another ConfigMap is not rewritten");
        assert_eq!(bundle_ders(&steady), ders(&[&other]));

        // A bad update: the volume keeps the last good bundle and says why; the other is fine.
        let good_generation = generation(&changing);
        world
            .put_config_map("changing", &[("ca.crt", &format!("{}{}", second.pem, private_key_pem(&second)))], &[])
            .await;
        support::eventually("the volume reports the bad update", PROPAGATION_LIMIT, async || {
            world.condition("pod-changing", &changing).await.0
        })
        .await;
        let (_, message) = world.condition("pod-changing", &changing).await;
        assert!(message.contains("private key") && message.contains("changing"), "{message}");
        assert_eq!(generation(&changing), good_generation);
        assert_eq!(bundle_ders(&changing), ders(&[&second]));
        assert!(!world.condition("pod-steady", &steady).await.0, "only the volumes of that source are abnormal");

        // Fixed: refreshed, and healthy again.
        let third = TestCa::new(world.dir.path(), "third");
        world.put_config_map("changing", &[("ca.crt", &third.pem)], &[]).await;
        support::eventually("the fixed ConfigMap reaches its volume", PROPAGATION_LIMIT, async || {
            bundle_ders(&changing) == ders(&[&third])
        })
        .await;
        support::eventually("the volume is healthy again", PROPAGATION_LIMIT, async || {
            !world.condition("pod-changing", &changing).await.0
        })
        .await;
    });
}

/// Audit-log lines of `user` after byte `from`, up to the line of a sentinel request.
fn audit_lines_between(plane: &ControlPlane, user: &str, from: usize, sentinel: &str) -> Option<Vec<String>> {
    let audit = std::fs::read_to_string(&plane.audit_log).ok()?;
    let tail = audit.get(from..)?;
    let user = format!("\"username\":\"{user}\"");
    let mut lines = Vec::new();
    for line in tail.lines() {
        if line.contains(sentinel) {
            return Some(lines);
        }
        if line.contains(&user) {
            lines.push(line.to_string());
        }
    }
    None
}

#[test]
fn a_warm_publish_sends_the_api_server_nothing_and_the_last_unpublish_stops_the_watch() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let world = World::start("warm").await;
        let ca = TestCa::new(world.dir.path(), "warm");
        world.put_config_map("shared", &[("ca.crt", &ca.pem)], &[]).await;
        let attributes = [("configMaps", "shared")];
        let (cold, result) = world.publish("pod-cold", &attributes).await;
        result.unwrap();
        let cold_ders = bundle_ders(&cold);
        // The cold publish's watch (it starts right after the first list) and the driver's
        // start-up discovery are in the log before the count starts.
        support::eventually("the driver's discovery is done", PROPAGATION_LIMIT, async || {
            world.daemon.stderr().contains("ClusterTrustBundles served")
        })
        .await;
        let user = format!("\"username\":\"{}\"", world.user);
        support::eventually("the ConfigMap watch has started", PROPAGATION_LIMIT, async || {
            std::fs::read_to_string(&world.plane.audit_log).unwrap_or_default().lines().any(|line| {
                line.contains(&user)
                    && line.contains("\"verb\":\"watch\"")
                    && line.contains("\"resource\":\"configmaps\"")
                    && line.contains("\"stage\":\"ResponseStarted\"")
            })
        })
        .await;
        // Every request of the driver says which driver, on which node, sent it.
        let audit = std::fs::read_to_string(&world.plane.audit_log).unwrap_or_default();
        let agent = format!("\"userAgent\":\"trustmount/{} (", env!("CARGO_PKG_VERSION"));
        // (Lists and watches: the harness sends gets of its own with the driver's token.)
        let driver_lines: Vec<&str> = audit
            .lines()
            .filter(|line| {
                line.contains(&user) && (line.contains("\"verb\":\"watch\"") || line.contains("\"verb\":\"list\""))
            })
            .collect();
        assert!(driver_lines.iter().any(|line| line.contains("\"resource\":\"csidrivers\"")), "the CSIDriver watch");
        // (The harness's own clients send no User-Agent at all.)
        let without: Vec<&&str> =
            driver_lines.iter().filter(|line| line.contains("\"userAgent\"") && !line.contains(&agent)).collect();
        assert!(without.is_empty(), "requests without the driver's User-Agent: {without:?}");
        assert!(driver_lines.iter().filter(|line| line.contains(&agent)).count() >= 2, "{driver_lines:?}");

        let start = std::fs::metadata(&world.plane.audit_log).unwrap().len() as usize;
        let (warm, result) = world.publish("pod-warm", &attributes).await;
        result.unwrap();
        assert_eq!(bundle_ders(&warm), cold_ders);
        // A request of the driver's own identity marks the end: once it is in the log, anything
        // the warm publish sent is too.
        let sentinel = format!("warm-sentinel-{}", std::process::id());
        let _ = Api::<ConfigMap>::namespaced(world.plane.token_client(&world.token), &world.namespace)
            .get_opt(&sentinel)
            .await;
        let mut between = None;
        support::eventually("the sentinel request reaches the audit log", PROPAGATION_LIMIT, async || {
            between = audit_lines_between(world.plane, &world.user, start, &sentinel);
            between.is_some()
        })
        .await;
        let between = between.unwrap_or_default();
        assert!(between.is_empty(), "the warm publish sent {} requests:\n{}", between.len(), between.join("\n"));

        // The ConfigMap watch lives until its last volume goes.
        let watches_of = |text: &str| text.matches("watching ConfigMap").count();
        assert_eq!(watches_of(&world.daemon.stderr()), 1, "one watch shared by both volumes");
        world.daemon.node().node_unpublish_volume(unpublish_request("pod-cold", &cold)).await.unwrap();
        assert!(!world.daemon.stderr().contains("watch stopped"), "a volume still uses it");
        world.daemon.node().node_unpublish_volume(unpublish_request("pod-warm", &warm)).await.unwrap();
        assert!(world.daemon.stderr().contains("no volume uses this ConfigMap any more; watch stopped"));
    });
}

#[test]
fn a_standalone_driver_refuses_cluster_sources() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let daemon = Daemon::start(DaemonOptions::default().system_roots("none")).await;
        let target = daemon.target("pod", "trust");
        let request = publish_request("pod", &target, &[("configMaps", "corp-ca")]);
        let result = daemon.node().node_publish_volume(request).await;
        assert_eq!(code_of(&result), Code::FailedPrecondition, "{result:?}");
        assert!(message_of(&result).contains("standalone"), "{}", message_of(&result));
        assert!(daemon.stderr().contains("cluster sources off"), "the mode is logged");
    });
}

#[test]
fn after_a_restart_adopted_volumes_watch_their_config_maps_again() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let mut world = World::start("restart").await;
        let first = TestCa::new(world.dir.path(), "before");
        world.put_config_map("adopted", &[("ca.crt", &first.pem)], &[]).await;
        let (target, result) = world.publish("pod-adopted", &[("configMaps", "adopted")]).await;
        result.unwrap();
        world.daemon.stop();

        // Changed while the driver was down: the restart's first pass catches up.
        let second = TestCa::new(world.dir.path(), "while-down");
        world.put_config_map("adopted", &[("ca.crt", &second.pem)], &[]).await;
        let mut options = DaemonOptions::default().system_roots("none").restart_in(world.daemon.root.clone());
        options.extra_args =
            vec!["--kubeconfig".into(), world.dir.path().join("driver.kubeconfig").display().to_string()];
        let restarted = Daemon::start(options).await;
        assert_eq!(bundle_ders(&target), ders(&[&second]), "ready only once adopted volumes are current");
        assert!(restarted.stderr().contains("watching ConfigMap"), "the adopted volume's watch is back");

        // And the watch is live: a later change arrives without a publish.
        let third = TestCa::new(world.dir.path(), "after");
        world.put_config_map("adopted", &[("ca.crt", &third.pem)], &[]).await;
        support::eventually("a change after the restart reaches the adopted volume", PROPAGATION_LIMIT, async || {
            bundle_ders(&target) == ders(&[&third])
        })
        .await;
        restarted.node().node_unpublish_volume(unpublish_request("pod-adopted", &target)).await.unwrap();
    });
}

/// The start-up check refuses cluster sources (and only them) for a CSIDriver that is missing,
/// unreadable or without podInfoOnMount; the publish names the field to set.
/// `local` is the daemon's --extra-pem: what a local-only volume still gets.
async fn assert_cluster_sources_refused(world: &World<'_>, problem: &str, local_ca: &TestCa) {
    support::eventually("the refusal is logged", PROPAGATION_LIMIT, async || {
        world.daemon.stderr().contains("cluster sources refused")
    })
    .await;
    assert!(world.daemon.stderr().contains(problem), "{}", world.daemon.stderr());
    let (target, result) = world.publish("pod-cluster", &[("configMaps", "corp-ca")]).await;
    assert_eq!(code_of(&result), Code::FailedPrecondition, "{result:?}");
    assert!(message_of(&result).contains("podInfoOnMount: true"), "{}", message_of(&result));
    assert!(!target.exists());
    let local = world.daemon.target("pod-local", "trust");
    let request = publish_request("pod-local", &local, &[("systemRoots", "false")]);
    world.daemon.node().node_publish_volume(request).await.expect("local-only volumes keep working");
    assert_eq!(bundle_ders(&local), ders(&[local_ca]));
}

#[test]
fn a_csidriver_without_pod_info_on_mount_refuses_cluster_sources() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        // CSIDriver is cluster-scoped: an API server of its own, so the shared one keeps the
        // shipped object.
        let plane = ControlPlane::dedicated(RuntimeConfig::default());
        let admin = plane.admin_client().await;
        let mut driver = CSIDriver::default();
        driver.metadata.name = Some(SHIPPED_DRIVER.into());
        driver.spec = CSIDriverSpec { pod_info_on_mount: Some(false), ..Default::default() };
        Api::<CSIDriver>::all(admin).create(&PostParams::default(), &driver).await.unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let local_ca = TestCa::new(scratch.path(), "local");
        let extra = local_ca.cert_path.display().to_string();
        let world = World::start_on(&plane, "no-pod-info", &["--extra-pem", &extra]).await;
        assert_cluster_sources_refused(&world, "sets podInfoOnMount: false", &local_ca).await;

        // The driver watches the object: switched on, the kubelet's next retry is served...
        let ca = TestCa::new(world.dir.path(), "watched");
        world.put_config_map("corp-ca", &[("ca.crt", &ca.pem)], &[]).await;
        let csidrivers = Api::<CSIDriver>::all(world.admin.clone());
        let switch = async |on: bool| {
            let patch = serde_json::json!({"spec": {"podInfoOnMount": on}});
            csidrivers.patch(SHIPPED_DRIVER, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        };
        switch(true).await;
        let mut served = None;
        support::eventually("cluster sources are served once podInfoOnMount is on", PROPAGATION_LIMIT, async || {
            let (target, result) = world.publish("pod-on", &[("configMaps", "corp-ca")]).await;
            served = Some(target);
            result.is_ok()
        })
        .await;
        assert_eq!(bundle_ders(&served.unwrap()), ders(&[&ca, &local_ca]));

        // ...and switched off again (what a tenant with a forged pod.namespace waits for), the
        // very next publishes are refused, with no restart and no publish needed to notice.
        let logged_before = world.daemon.stderr().matches("sets podInfoOnMount: false").count();
        switch(false).await;
        support::eventually("the switch is logged", PROPAGATION_LIMIT, async || {
            world.daemon.stderr().matches("sets podInfoOnMount: false").count() > logged_before
        })
        .await;
        let (target, result) = world.publish("pod-off", &[("configMaps", "corp-ca")]).await;
        assert_eq!(code_of(&result), Code::FailedPrecondition, "{result:?}");
        assert!(message_of(&result).contains("podInfoOnMount: true"), "{}", message_of(&result));
        assert!(!target.exists());
    });
}

#[test]
fn a_csidriver_the_driver_may_not_read_refuses_cluster_sources() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        // The ClusterRole grants get on csi.trustmount.io only: another name is a 403.
        let other = format!("other-{}.trustmount.io", std::process::id());
        let admin = ControlPlane::shared().admin_client().await;
        let mut driver = CSIDriver::default();
        driver.metadata.name = Some(other.clone());
        driver.spec = CSIDriverSpec { pod_info_on_mount: Some(true), ..Default::default() };
        Api::<CSIDriver>::all(admin.clone()).create(&PostParams::default(), &driver).await.unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let local_ca = TestCa::new(scratch.path(), "local");
        let extra = local_ca.cert_path.display().to_string();
        let args = ["--driver-name", &other, "--extra-pem", &extra];
        let world = World::start_on(ControlPlane::shared(), "unreadable", &args).await;
        assert_cluster_sources_refused(&world, "cannot be read", &local_ca).await;
        Api::<CSIDriver>::all(admin).delete(&other, &Default::default()).await.unwrap();
    });
}

#[test]
fn on_a_v1beta1_only_cluster_the_driver_finds_v1beta1_and_serves_its_bundles() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        use k8s_openapi::api::certificates::v1beta1;
        let plane = ControlPlane::dedicated(RuntimeConfig::cluster_trust_bundles_v1beta1_only());
        let world = World::start_on(&plane, "v1beta1", &[]).await;
        let ca = TestCa::new(world.dir.path(), "beta");
        let mut bundle = v1beta1::ClusterTrustBundle::default();
        bundle.metadata.name = Some("beta-corp".into());
        bundle.spec.trust_bundle = ca.pem.clone();
        Api::<v1beta1::ClusterTrustBundle>::all(world.admin.clone())
            .create(&PostParams::default(), &bundle)
            .await
            .unwrap();
        let (target, result) = world.publish("pod-beta", &[("clusterTrustBundles", "beta-corp")]).await;
        result.unwrap();
        assert_eq!(bundle_ders(&target), ders(&[&ca]));
        assert!(world.daemon.stderr().contains("certificates.k8s.io/v1beta1"), "the discovered version is logged");
    });
}

#[test]
fn a_cluster_trust_bundle_change_reaches_the_volumes_that_use_it_by_name_and_by_signer() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let world = World::start("ctb-change").await;
        let id = std::process::id();
        let signer = format!("example.com/rotating-{id}");
        let name = format!("example.com:rotating-{id}:a");
        let steady_name = format!("steady-{id}");
        let first = TestCa::new(world.dir.path(), "first");
        let other = TestCa::new(world.dir.path(), "other");
        let api: Api<ClusterTrustBundle> = Api::all(world.admin.clone());
        let post = PostParams::default();
        api.create(&post, &trust_bundle(&name, Some(&signer), &[], &first.pem)).await.unwrap();
        api.create(&post, &trust_bundle(&steady_name, None, &[], &other.pem)).await.unwrap();
        let (by_name, result) = world.publish("by-name", &[("clusterTrustBundles", &name)]).await;
        result.unwrap();
        let (by_signer, result) = world.publish("by-signer", &[("signerName", &signer)]).await;
        result.unwrap();
        let (steady, result) = world.publish("steady", &[("clusterTrustBundles", &steady_name)]).await;
        result.unwrap();
        let steady_generation = generation(&steady);

        let second = TestCa::new(world.dir.path(), "second");
        let mut changed = api.get(&name).await.unwrap();
        changed.spec.trust_bundle = second.pem.clone();
        api.replace(&name, &post, &changed).await.unwrap();
        support::eventually("the change reaches the volume naming the bundle", PROPAGATION_LIMIT, async || {
            bundle_ders(&by_name) == ders(&[&second])
        })
        .await;
        support::eventually("the change reaches the volume selecting its signer", PROPAGATION_LIMIT, async || {
            bundle_ders(&by_signer) == ders(&[&second])
        })
        .await;
        assert_eq!(generation(&steady), steady_generation, "a volume of another bundle is not rewritten");
        assert_eq!(bundle_ders(&steady), ders(&[&other]));
    });
}

#[test]
fn default_config_maps_reach_every_volume_unless_it_opts_out_and_change_live() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        // The driver's own namespace holds the default; pods live in another.
        let plane = ControlPlane::shared();
        let admin = plane.admin_client().await;
        let driver_namespace = plane.namespace("driver-ns").await;
        let scratch = tempfile::tempdir().unwrap();
        let first = TestCa::new(scratch.path(), "default-first");
        let mut map = ConfigMap::default();
        map.metadata.name = Some("org-ca".into());
        map.data = Some(BTreeMap::from([("ca.crt".to_string(), first.pem.clone())]));
        let defaults_api = Api::<ConfigMap>::namespaced(admin.clone(), &driver_namespace);
        defaults_api.create(&PostParams::default(), &map).await.unwrap();
        let world = World::start_on(
            plane,
            "defaults",
            &["--namespace", &driver_namespace, "--default-config-map", "org-ca:ca.crt"],
        )
        .await;
        let own = TestCa::new(world.dir.path(), "own");
        world.put_config_map("team-ca", &[("ca.crt", &own.pem)], &[]).await;

        let (plain, result) = world.publish("pod-plain", &[]).await;
        result.unwrap();
        assert_eq!(bundle_ders(&plain), ders(&[&first]), "a volume without cluster attributes gets the default");
        let (mixed, result) = world.publish("pod-mixed", &[("configMaps", "team-ca")]).await;
        result.unwrap();
        assert_eq!(bundle_ders(&mixed), ders(&[&first, &own]));
        let (out, result) = world.publish("pod-out", &[("configMaps", "team-ca"), ("defaults", "false")]).await;
        result.unwrap();
        assert_eq!(bundle_ders(&out), ders(&[&own]), "defaults: false leaves the default out");
        let out_generation = generation(&out);

        let second = TestCa::new(world.dir.path(), "default-second");
        let mut changed = defaults_api.get("org-ca").await.unwrap();
        changed.data = Some(BTreeMap::from([("ca.crt".to_string(), second.pem.clone())]));
        defaults_api.replace("org-ca", &PostParams::default(), &changed).await.unwrap();
        support::eventually("the changed default reaches a plain volume", PROPAGATION_LIMIT, async || {
            bundle_ders(&plain) == ders(&[&second])
        })
        .await;
        support::eventually("and one with sources of its own", PROPAGATION_LIMIT, async || {
            bundle_ders(&mixed) == ders(&[&second, &own])
        })
        .await;
        assert_eq!(generation(&out), out_generation, "the opted-out volume is not rewritten");
    });
}

#[test]
fn a_first_list_the_api_server_forbids_times_out_with_its_403() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let setup = Setup { csidriver_only: true, ..Setup::default() };
        let world = World::start_with(ControlPlane::shared(), "forbidden", &[], setup).await;
        let ca = TestCa::new(world.dir.path(), "forbidden");
        world.put_config_map("corp-ca", &[("ca.crt", &ca.pem)], &[]).await;
        // The watch's first list gets 403 and retries with backoff; the publish gives up after its
        // bounded wait and says why, so `kubectl describe pod` shows what to grant.
        let (target, result) = world.publish("pod-forbidden", &[("configMaps", "corp-ca")]).await;
        assert_eq!(code_of(&result), Code::Unavailable, "{result:?}");
        let message = message_of(&result);
        assert!(message.contains(&format!("ConfigMap {}/corp-ca not read", world.namespace)), "{message}");
        assert!(message.contains("last error: the API server answered 403 Forbidden"), "{message}");
        assert!(message.contains(&world.user) && message.contains("cannot list resource \"configmaps\""), "{message}");
        assert!(!target.exists());

        // The watch that gave up stays for the kubelet's retry: once the driver may list, the
        // same watch lists (its backoff retries) and a retry publishes without a second one.
        let stderr = world.daemon.stderr();
        assert!(!stderr.contains("watch stopped"), "the unsynced watch lingers");
        grant_config_maps(&world).await;
        let mut last = None;
        support::eventually("a retry publishes once the grant works", PROPAGATION_LIMIT * 4, async || {
            let (_, result) = world.publish("pod-forbidden", &[("configMaps", "corp-ca")]).await;
            let published = result.is_ok();
            last = Some(result);
            published
        })
        .await;
        assert!(matches!(last, Some(Ok(()))), "{last:?}");
        assert!(bundle_ders(&target).is_superset(&ders(&[&ca])), "the CA through the lingering watch");
        assert_eq!(world.daemon.stderr().matches("watching ConfigMap").count(), 1, "one watch, kept across the retry");
    });
}

/// A Role in the world's namespace letting the driver list and watch its ConfigMaps.
async fn grant_config_maps(world: &World<'_>) {
    use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
    let post = PostParams::default();
    let mut role = Role::default();
    role.metadata.name = Some("driver-config-maps".into());
    role.rules = Some(vec![PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        verbs: vec!["get".into(), "list".into(), "watch".into()],
        ..Default::default()
    }]);
    Api::<Role>::namespaced(world.admin.clone(), &world.namespace).create(&post, &role).await.unwrap();
    let mut binding = RoleBinding::default();
    binding.metadata.name = Some("driver-config-maps".into());
    binding.role_ref = RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "Role".into(),
        name: "driver-config-maps".into(),
    };
    binding.subjects = Some(vec![Subject { kind: "User".into(), name: world.user.clone(), ..Default::default() }]);
    Api::<RoleBinding>::namespaced(world.admin.clone(), &world.namespace).create(&post, &binding).await.unwrap();
}

#[test]
fn cluster_sources_work_once_the_api_server_is_reachable_and_the_csidriver_exists_without_a_restart() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        // The CSIDriver is cluster-scoped: an API server of this test's own, without one. The
        // driver reaches it through a port that refuses connections until the forwarder starts.
        let plane = ControlPlane::dedicated(RuntimeConfig::default());
        let port = closed_port();
        let setup = Setup { no_csidriver: true, server: Some(format!("https://127.0.0.1:{port}")), ..Setup::default() };
        let scratch = tempfile::tempdir().unwrap();
        let local_ca = TestCa::new(scratch.path(), "local");
        let extra = local_ca.cert_path.display().to_string();
        // A default source too: volumes rendered without it meanwhile get it once allowed.
        let admin = plane.admin_client().await;
        let driver_namespace = plane.namespace("late-driver").await;
        let default_ca = TestCa::new(scratch.path(), "default");
        let mut map = ConfigMap::default();
        map.metadata.name = Some("org-ca".into());
        map.data = Some(BTreeMap::from([("ca.crt".to_string(), default_ca.pem.clone())]));
        Api::<ConfigMap>::namespaced(admin, &driver_namespace).create(&PostParams::default(), &map).await.unwrap();
        let args = ["--extra-pem", &extra, "--namespace", &driver_namespace, "--default-config-map", "org-ca"];
        let world = World::start_with(&plane, "late", &args, setup).await;
        let ca = TestCa::new(world.dir.path(), "late");
        world.put_config_map("corp-ca", &[("ca.crt", &ca.pem)], &[]).await;
        let attributes = [("configMaps", "corp-ca")];

        // Unreachable: not refused for good, but not served either; the message says why.
        let (target, result) = world.publish("pod-late", &attributes).await;
        assert_eq!(code_of(&result), Code::Unavailable, "{result:?}");
        let message = message_of(&result);
        assert!(message.contains("could not read its CSIDriver csi.trustmount.io yet"), "{message}");
        assert!(message.to_lowercase().contains("connection refused"), "{message}");
        assert!(!target.exists());
        let local = world.daemon.target("pod-local", "trust");
        let request = publish_request("pod-local", &local, &[("systemRoots", "false")]);
        world.daemon.node().node_publish_volume(request).await.expect("local-only volumes publish meanwhile");
        assert_eq!(bundle_ders(&local), ders(&[&local_ca]), "without the default while not allowed");

        // Reachable, but no CSIDriver yet: a definite answer, refused, naming the object.
        let upstream = plane.server.trim_start_matches("https://").to_string();
        let _forwarder = Forwarder::start(port, upstream).await;
        let mut last = String::new();
        support::eventually("the driver reads that the CSIDriver does not exist", PROPAGATION_LIMIT, async || {
            let (_, result) = world.publish("pod-late", &attributes).await;
            last = message_of(&result);
            code_of(&result) == Code::FailedPrecondition
        })
        .await;
        assert!(last.contains("CSIDriver csi.trustmount.io does not exist"), "{last}");
        assert!(last.contains("podInfoOnMount: true"), "{last}");

        // Created as shipped: the kubelet's next retry works, with no restart.
        deploy::apply(&world.admin, &deploy::manifest("csidriver.yaml")).await;
        let mut published = false;
        support::eventually(
            "a cluster-source publish works once the CSIDriver exists",
            PROPAGATION_LIMIT,
            async || {
                let (_, result) = world.publish("pod-late", &attributes).await;
                published = result.is_ok();
                published
            },
        )
        .await;
        assert_eq!(bundle_ders(&target), ders(&[&ca, &local_ca, &default_ca]));
        support::eventually(
            "the volume published meanwhile gets the default, with no republish",
            PROPAGATION_LIMIT,
            async || bundle_ders(&local) == ders(&[&local_ca, &default_ca]),
        )
        .await;
        let log = world.daemon.stderr();
        assert!(log.contains("the CSIDriver watch failed"), "the unreachable API server is logged");
        assert!(log.contains("CSIDriver csi.trustmount.io does not exist"), "the refusal is logged");
        assert!(log.contains("podInfoOnMount: true; cluster sources on"), "and the change of mind");
    });
}

#[test]
fn inspect_counts_the_keys_a_bare_name_config_map_ignored() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let world = World::start("ignored").await;
        let ca = TestCa::new(world.dir.path(), "ignored");
        let data = [("ca.crt", ca.pem.as_str()), ("README", "not a certificate"), ("jwks.json", "{}")];
        world.put_config_map("corp-ca", &data, &[]).await;
        let (target, result) = world.publish("pod-bare", &[("configMaps", "corp-ca")]).await;
        result.unwrap();
        let (_, result) = world.publish("pod-again", &[("configMaps", "corp-ca")]).await;
        result.unwrap();

        let inspect = |json: bool| {
            let mut command = std::process::Command::new(support::daemon::BIN);
            command.arg("inspect").arg(&target);
            if json {
                command.arg("--json");
            }
            let output = command.output().expect("run trustmount inspect");
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout).unwrap()
        };
        let text = inspect(false);
        // Spelled as the certificates' `# source:`, without the pod's namespace: two namespaces
        // with equal ConfigMaps render equal files.
        let line = "configmap:corp-ca: 2 keys ignored (README, jwks.json)";
        assert!(text.lines().any(|l| l == line), "{text}");
        let json: serde_json::Value = serde_json::from_str(&inspect(true)).unwrap();
        assert_eq!(json["ignored"][0]["count"], 2, "{json}");
        assert_eq!(json["ignored"][0]["keys"], serde_json::json!(["README", "jwks.json"]));
        assert_eq!(json["certificates"].as_array().map(Vec::len), Some(1));

        // A key taken by name ignores nothing.
        let (one, result) = world.publish("pod-key", &[("configMaps", "corp-ca:ca.crt")]).await;
        result.unwrap();
        let output = std::process::Command::new(support::daemon::BIN).arg("inspect").arg(&one).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(!text.contains("keys ignored") && !text.contains("key ignored"), "{text}");

        // Logged at info once per version of the object, however many volumes read it.
        let logged = |log: &str| {
            log.lines().filter(|l| l.contains("INFO") && l.contains("ConfigMap keys without certificates")).count()
        };
        assert_eq!(logged(&world.daemon.stderr()), 1, "{}", world.daemon.stderr());
        let more = [("ca.crt", ca.pem.as_str()), ("README", "a new text"), ("jwks.json", "{}")];
        world.put_config_map("corp-ca", &more, &[]).await;
        support::eventually("the new version is logged", PROPAGATION_LIMIT, async || {
            logged(&world.daemon.stderr()) == 2
        })
        .await;
    });
}

#[test]
fn a_cluster_ca_expiring_within_seven_days_marks_only_its_volumes_naming_the_object() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let world = World::start("expiry").await;
        let soon = TestCa::expiring_in_days(world.dir.path(), "soon", 3);
        let later = TestCa::new(world.dir.path(), "later");
        let bundle_ca = TestCa::expiring_in_days(world.dir.path(), "bundle-soon", 5);
        world.put_config_map("soon-ca", &[("ca.crt", &soon.pem)], &[]).await;
        world.put_config_map("later-ca", &[("ca.crt", &later.pem)], &[]).await;
        let bundle_name = format!("expiring-{}", std::process::id());
        Api::<ClusterTrustBundle>::all(world.admin.clone())
            .create(&PostParams::default(), &trust_bundle(&bundle_name, None, &[], &bundle_ca.pem))
            .await
            .unwrap();

        let (soon_target, result) = world.publish("pod-soon", &[("configMaps", "soon-ca")]).await;
        result.unwrap();
        let (later_target, result) = world.publish("pod-later", &[("configMaps", "later-ca")]).await;
        result.unwrap();
        let both = [("configMaps", "soon-ca"), ("clusterTrustBundles", bundle_name.as_str())];
        let (both_target, result) = world.publish("pod-both", &both).await;
        result.unwrap();

        let (abnormal, message) = world.condition("pod-soon", &soon_target).await;
        assert!(abnormal, "{message}");
        let named = format!("of ConfigMap {}/soon-ca key ca.crt expires at", world.namespace);
        assert!(message.contains(&soon.common_name) && message.contains(&named), "{message}");
        // Created a moment ago for 3 days: within the same second, exactly 3 days are left.
        assert!(message.contains("(in 2 days)") || message.contains("(in 3 days)"), "{message}");
        let (abnormal, message) = world.condition("pod-later", &later_target).await;
        assert!(!abnormal, "a CA valid for a year is fine: {message}");
        // Each expiring source is named, soonest first.
        let (abnormal, message) = world.condition("pod-both", &both_target).await;
        assert!(abnormal, "{message}");
        let bundle_named = format!("of ClusterTrustBundle {bundle_name} expires at");
        let (at_config_map, at_bundle) = (message.find(&named), message.find(&bundle_named));
        assert!(at_config_map.is_some() && at_bundle.is_some() && at_config_map < at_bundle, "{message}");
    });
}

#[test]
fn sources_over_the_drivers_limits_are_refused_naming_the_flag_and_a_rotation_over_them_keeps_the_last_good() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let args = [
            "--max-source-certificates",
            "2",
            "--max-volume-certificates",
            "3",
            "--max-volume-sources",
            "2",
            "--max-namespace-watches",
            "2",
        ];
        let world = World::start_on(ControlPlane::shared(), "limits", &args).await;
        let cas: Vec<TestCa> = (0..4).map(|i| TestCa::new(world.dir.path(), &format!("limit-{i}"))).collect();
        let pems = |range: std::ops::Range<usize>| cas[range].iter().map(|ca| ca.pem.as_str()).collect::<String>();
        world.put_config_map("two", &[("ca.crt", &pems(0..2))], &[]).await;
        world.put_config_map("three", &[("ca.crt", &pems(0..3))], &[]).await;
        world.put_config_map("other", &[("ca.crt", &pems(2..4))], &[]).await;

        // One object over --max-source-certificates: RESOURCE_EXHAUSTED, naming the flag.
        let (target, result) = world.publish("pod-three", &[("configMaps", "three")]).await;
        assert_eq!(code_of(&result), Code::ResourceExhausted, "{result:?}");
        assert!(message_of(&result).contains("--max-source-certificates"), "{}", message_of(&result));
        assert!(!target.exists());
        // Two objects within it, but four certificates together: over --max-volume-certificates.
        let (target, result) = world.publish("pod-four", &[("configMaps", "two, other")]).await;
        assert_eq!(code_of(&result), Code::ResourceExhausted, "{result:?}");
        assert!(message_of(&result).contains("--max-volume-certificates"), "{}", message_of(&result));
        assert!(!target.exists());
        // Three sources: INVALID_ARGUMENT, before anything is read.
        let (_, result) = world.publish("pod-many", &[("configMaps", "two, other, three")]).await;
        assert_eq!(code_of(&result), Code::InvalidArgument, "{result:?}");
        assert!(message_of(&result).contains("--max-volume-sources"), "{}", message_of(&result));

        // Within every limit: published. Then the object grows over one: the last good stays.
        let (target, result) = world.publish("pod-two", &[("configMaps", "two")]).await;
        result.unwrap();
        assert_eq!(bundle_ders(&target), ders(&[&cas[0], &cas[1]]));
        world.put_config_map("two", &[("ca.crt", &pems(0..3))], &[]).await;
        support::eventually("the volume reports the limit", PROPAGATION_LIMIT, async || {
            let (abnormal, message) = world.condition("pod-two", &target).await;
            abnormal && message.contains("--max-source-certificates")
        })
        .await;
        assert_eq!(bundle_ders(&target), ders(&[&cas[0], &cas[1]]), "the last good bundle is kept");

        // Two ConfigMaps more while pod-two holds one: three watches for the namespace, over
        // --max-namespace-watches; refused before anything is read.
        let (more, result) = world.publish("pod-more", &[("configMaps", "other, three")]).await;
        assert_eq!(code_of(&result), Code::ResourceExhausted, "{result:?}");
        let message = message_of(&result);
        assert!(
            message.contains(&format!("namespace {} would hold 3 ConfigMap watches", world.namespace)),
            "{message}"
        );
        assert!(message.contains("--max-namespace-watches"), "{message}");
        assert!(!more.exists());
    });
}

#[test]
fn watches_ride_shared_http2_connections_ninety_to_a_connection() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let world = World::start("h2").await;
        let port: u16 = world.plane.server.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).expect("port");
        let pid = world.daemon.pid();
        let ca = TestCa::new(world.dir.path(), "h2");
        world.put_config_map("present", &[("ca.crt", &ca.pem)], &[]).await;
        // 200 ConfigMaps, missing but optional besides one present, 50 to a volume: each its own
        // single-object watch.
        let per_volume = 50;
        for volume in 0..4 {
            let absent = (1..per_volume).map(|i| format!("absent-{volume}-{i}"));
            let names: Vec<String> = std::iter::once("present".to_owned()).chain(absent).collect();
            let attributes = [("configMaps", names.join(",")), ("optional", "true".to_owned())];
            let attributes: Vec<(&str, &str)> = attributes.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (_, result) = world.publish(&format!("pod-{volume}"), &attributes).await;
            result.unwrap_or_else(|status| panic!("volume {volume}: {}", status.message()));
        }
        // 4 × 49 absent, one present shared.
        assert_eq!(world.daemon.stderr().matches("watching ConfigMap").count(), 197, "one watch per ConfigMap");
        // Over HTTP/1.1 each watch held a connection (197); over HTTP/2 they share, 90 to one.
        let expected = 197usize.div_ceil(trustmount::sources::cluster::WATCHES_PER_CONNECTION);
        let mut connections = 0;
        support::eventually("the watches' connections settle", PROPAGATION_LIMIT, async || {
            connections = support::measure::tcp_connections_to(pid, port);
            connections == expected
        })
        .await;
        assert_eq!(connections, expected, "connections of the driver to the API server");
    });
}

//! Cluster sources against the real API server: ConfigMaps and ClusterTrustBundles reach the
//! volume over the CSI socket; names from another namespace, missing pod info and a pod UID
//! the target contradicts are refused; missing sources fail unless optional; private keys never
//! reach a volume; a change reaches only the volumes that use it; a warm publish sends the API
//! server nothing (counted in its audit log); a standalone driver refuses cluster sources.
//!
//! The driver runs with an identity of its own (a ServiceAccount token bound to a ClusterRole
//! that may get/list/watch ConfigMaps and ClusterTrustBundles), so the audit log tells its
//! requests from the test's.
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::certificates::v1::ClusterTrustBundle;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{Api, ListParams, PostParams};
use support::block_on;
use support::certs::{TestCa, pem_certificates};
use support::client::{publish_request, stats_request, unpublish_request};
use support::control_plane::ControlPlane;
use support::daemon::{Daemon, DaemonOptions};
use support::deploy;
use tonic::Code;

/// Bounds every wait for a change to arrive (watch + settle + render); never a timed assertion.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(30);
/// The driver's ClusterRole, as deploy/rbac.yaml names it.
const DRIVER_ROLE: &str = "trustmount";

fn code_of<T>(result: &Result<T, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

fn message_of<T: std::fmt::Debug>(result: &Result<T, tonic::Status>) -> String {
    match result {
        Ok(value) => format!("OK {value:?}"),
        Err(status) => status.message().to_string(),
    }
}

fn bundle_ders(target: &Path) -> BTreeSet<Vec<u8>> {
    pem_certificates(&std::fs::read(target.join("ca-certificates.crt")).unwrap_or_default()).into_iter().collect()
}

fn ders(cas: &[&TestCa]) -> BTreeSet<Vec<u8>> {
    cas.iter().map(|ca| ca.der.clone()).collect()
}

/// One test's world: a namespace, the driver's own identity, and a daemon using it.
struct World {
    plane: &'static ControlPlane,
    admin: kube::Client,
    namespace: String,
    /// The driver's user name in the audit log.
    user: String,
    token: String,
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl World {
    async fn start(prefix: &str) -> Self {
        let plane = ControlPlane::shared();
        let admin = plane.admin_client().await;
        let namespace = plane.namespace(prefix).await;
        let dir = tempfile::tempdir().unwrap();
        let (kubeconfig, user, token) = driver_identity(plane, &admin, &namespace, dir.path()).await;
        let options = DaemonOptions {
            extra_args: vec!["--kubeconfig".into(), kubeconfig.display().to_string()],
            ..DaemonOptions::default()
        }
        .system_roots("none");
        let daemon = Daemon::start(options).await;
        Self { plane, admin, namespace, user, token, daemon, dir }
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    async fn put_config_map(&self, name: &str, data: &[(&str, &str)], binary: &[(&str, &[u8])]) {
        let mut map = ConfigMap::default();
        map.metadata.name = Some(name.to_string());
        map.data = Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        map.binary_data = Some(binary.iter().map(|(k, v)| (k.to_string(), ByteString(v.to_vec()))).collect());
        let api = self.config_maps();
        if let Some(existing) = api.get_opt(name).await.unwrap() {
            map.metadata.resource_version = existing.metadata.resource_version;
            api.replace(name, &PostParams::default(), &map).await.unwrap();
        } else {
            api.create(&PostParams::default(), &map).await.unwrap();
        }
    }

    /// Publishes for a pod in this world's namespace; `extra` are the volume attributes.
    async fn publish(&self, pod: &str, extra: &[(&str, &str)]) -> (PathBuf, Result<(), tonic::Status>) {
        let target = self.daemon.target(pod, "trust");
        let mut attributes =
            vec![("csi.storage.k8s.io/pod.namespace", self.namespace.as_str()), ("systemRoots", "false")];
        attributes.extend_from_slice(extra);
        let result = self.daemon.node().node_publish_volume(publish_request(pod, &target, &attributes)).await;
        (target, result.map(|_| ()))
    }

    async fn condition(&self, pod: &str, target: &Path) -> (bool, String) {
        let stats = self.daemon.node().node_get_volume_stats(stats_request(pod, target)).await.unwrap();
        let condition = stats.into_inner().volume_condition.expect("VOLUME_CONDITION is advertised");
        (condition.abnormal, condition.message)
    }
}

/// A ServiceAccount bound to the driver's ClusterRole, and a kubeconfig with its token.
async fn driver_identity(
    plane: &ControlPlane,
    admin: &kube::Client,
    namespace: &str,
    dir: &Path,
) -> (PathBuf, String, String) {
    let post = PostParams::default();
    // The ClusterRole exactly as deploy/rbac.yaml ships it (tests/rbac.rs proves it grants no more);
    // each test binds its own ServiceAccount to it, so the audit log tells the drivers apart.
    deploy::apply(admin, &deploy::manifest("rbac.yaml")).await;
    let mut account = ServiceAccount::default();
    account.metadata.name = Some("trustmount-driver".into());
    Api::<ServiceAccount>::namespaced(admin.clone(), namespace).create(&post, &account).await.unwrap();
    let mut binding = ClusterRoleBinding::default();
    binding.metadata.name = Some(format!("trustmount-driver-{namespace}"));
    binding.role_ref = RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "ClusterRole".into(),
        name: DRIVER_ROLE.into(),
    };
    binding.subjects = Some(vec![Subject {
        kind: "ServiceAccount".into(),
        name: "trustmount-driver".into(),
        namespace: Some(namespace.into()),
        ..Default::default()
    }]);
    Api::<ClusterRoleBinding>::all(admin.clone()).create(&post, &binding).await.unwrap();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request("trustmount-driver", &post, &request)
        .await
        .unwrap()
        .status
        .and_then(|status| status.token)
        .expect("a token");
    // The RBAC authorizer learns bindings from an informer: wait until the grant works.
    let as_driver = Api::<ConfigMap>::namespaced(plane.token_client(&token), namespace);
    let deadline = Instant::now() + PROPAGATION_LIMIT;
    while as_driver.list(&ListParams::default()).await.is_err() {
        assert!(Instant::now() < deadline, "the driver's ClusterRoleBinding never took effect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kubeconfig = dir.join("driver.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster: {{ server: '{server}', certificate-authority: '{ca}' }}
users:
  - name: driver
    user: {{ token: '{token}' }}
contexts:
  - name: test
    context: {{ cluster: test, user: driver }}
current-context: test
",
            server = plane.server,
            ca = plane.ca_cert.display(),
        ),
    )
    .unwrap();
    (kubeconfig, format!("system:serviceaccount:{namespace}:trustmount-driver"), token)
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PROPAGATION_LIMIT;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {PROPAGATION_LIMIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
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
        eventually("the changed ConfigMap reaches its volume", async || bundle_ders(&changing) == ders(&[&second]))
            .await;
        assert_eq!(generation(&steady), steady_generation, "a volume of another ConfigMap is not rewritten");
        assert_eq!(bundle_ders(&steady), ders(&[&other]));

        // A bad update: the volume keeps the last good bundle and says why; the other is fine.
        let good_generation = generation(&changing);
        world
            .put_config_map("changing", &[("ca.crt", &format!("{}{}", second.pem, private_key_pem(&second)))], &[])
            .await;
        eventually("the volume reports the bad update", async || world.condition("pod-changing", &changing).await.0)
            .await;
        let (_, message) = world.condition("pod-changing", &changing).await;
        assert!(message.contains("private key") && message.contains("changing"), "{message}");
        assert_eq!(generation(&changing), good_generation);
        assert_eq!(bundle_ders(&changing), ders(&[&second]));
        assert!(!world.condition("pod-steady", &steady).await.0, "only the volumes of that source are abnormal");

        // Fixed: refreshed, and healthy again.
        let third = TestCa::new(world.dir.path(), "third");
        world.put_config_map("changing", &[("ca.crt", &third.pem)], &[]).await;
        eventually("the fixed ConfigMap reaches its volume", async || bundle_ders(&changing) == ders(&[&third])).await;
        eventually("the volume is healthy again", async || !world.condition("pod-changing", &changing).await.0).await;
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
        eventually("the driver's discovery is done", async || {
            world.daemon.stderr().contains("ClusterTrustBundles served")
        })
        .await;
        let user = format!("\"username\":\"{}\"", world.user);
        eventually("the ConfigMap watch has started", async || {
            std::fs::read_to_string(&world.plane.audit_log).unwrap_or_default().lines().any(|line| {
                line.contains(&user)
                    && line.contains("\"verb\":\"watch\"")
                    && line.contains("\"resource\":\"configmaps\"")
                    && line.contains("\"stage\":\"ResponseStarted\"")
            })
        })
        .await;

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
        eventually("the sentinel request reaches the audit log", async || {
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
        eventually("a change after the restart reaches the adopted volume", async || {
            bundle_ders(&target) == ders(&[&third])
        })
        .await;
        restarted.node().node_unpublish_volume(unpublish_request("pod-adopted", &target)).await.unwrap();
    });
}

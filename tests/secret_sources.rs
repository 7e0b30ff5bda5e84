//! Secret sources against the real API server, read with the pod's own ServiceAccount token and
//! never with the driver's identity: the daemon gets the token as the kubelet hands it over (a
//! TokenRequest for the pod's ServiceAccount, in the request's `secrets` under
//! `csi.storage.k8s.io/serviceAccount.tokens`, or in the volume context), and the API server's
//! audit log says who read what.
//!
//! The driver runs with an identity of its own bound to the ClusterRole deploy/kubernetes/rbac.yaml ships
//! (nothing on Secrets), so a Secret read as the driver would fail, and shows in the log.
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, PostParams};
use support::block_on;
use support::certs::{TestCa, bundle_ders, ders};
use support::client::{code_of, message_of, publish_request, stats_request, unpublish_request};
use support::control_plane::ControlPlane;
use support::daemon::{Daemon, DaemonOptions};
use support::deploy;
use tonic::Code;

/// Bounds every wait for RBAC to take effect or a log line to appear; never a timed assertion.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(30);
const TOKENS_KEY: &str = "csi.storage.k8s.io/serviceAccount.tokens";

/// The `..data` link of a volume: its target changes exactly when the volume gets a generation.
fn generation(target: &Path) -> PathBuf {
    std::fs::read_link(target.join("..data")).unwrap()
}

/// Where the kubelet puts the token JSON.
#[derive(Clone, Copy)]
enum TokenIn {
    /// The request's `secrets` (`serviceAccountTokenInSecrets: true`, Kubernetes >= 1.35).
    Secrets,
    /// `volume_context` (older kubelets).
    VolumeContext,
    None,
}

/// One test's world: a namespace, the driver's own identity, and a daemon using it.
struct World {
    plane: &'static ControlPlane,
    admin: kube::Client,
    namespace: String,
    /// The driver's user name in the audit log.
    driver_user: String,
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl World {
    async fn start(prefix: &str) -> Self {
        let plane = ControlPlane::shared();
        let admin = plane.admin_client().await;
        // The CSIDriver as shipped: the driver's start-up check reads it (idempotent apply).
        deploy::apply(&admin, &deploy::manifest("csidriver.yaml")).await;
        let namespace = plane.namespace(prefix).await;
        let dir = tempfile::tempdir().unwrap();
        let deploy::DriverIdentity { kubeconfig, user: driver_user, .. } =
            deploy::driver_identity(plane, &admin, &namespace, dir.path()).await;
        let options = DaemonOptions {
            extra_args: vec!["--kubeconfig".into(), kubeconfig.display().to_string()],
            ..DaemonOptions::default()
        }
        .system_roots("none");
        let daemon = Daemon::start(options).await;
        Self { plane, admin, namespace, driver_user, daemon, dir }
    }

    fn user_of(&self, account: &str) -> String {
        format!("system:serviceaccount:{}:{account}", self.namespace)
    }

    async fn put_secret(&self, name: &str, data: &[(&str, &str)]) {
        let mut secret = Secret::default();
        secret.metadata.name = Some(name.to_string());
        secret.data = Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect());
        let api: Api<Secret> = Api::namespaced(self.admin.clone(), &self.namespace);
        if let Some(existing) = api.get_opt(name).await.unwrap() {
            secret.metadata.resource_version = existing.metadata.resource_version;
            api.replace(name, &PostParams::default(), &secret).await.unwrap();
        } else {
            api.create(&PostParams::default(), &secret).await.unwrap();
        }
    }

    /// A ServiceAccount, and its token as the kubelet would request it (`audience: ""`).
    async fn account(&self, name: &str) -> String {
        let api: Api<ServiceAccount> = Api::namespaced(self.admin.clone(), &self.namespace);
        if api.get_opt(name).await.unwrap().is_none() {
            let mut account = ServiceAccount::default();
            account.metadata.name = Some(name.into());
            api.create(&PostParams::default(), &account).await.unwrap();
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }),
            ..Default::default()
        };
        api.create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap()
            .status
            .and_then(|status| status.token)
            .expect("a token")
    }

    /// A Role allowing `get` on exactly `secrets`, bound to `account`; returns once it works.
    async fn grant(&self, account: &str, token: &str, secrets: &[&str]) {
        let post = PostParams::default();
        let name = format!("read-{account}");
        let mut role = Role::default();
        role.metadata.name = Some(name.clone());
        role.rules = Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            resource_names: Some(secrets.iter().map(|s| s.to_string()).collect()),
            verbs: vec!["get".into()],
            ..Default::default()
        }]);
        Api::<Role>::namespaced(self.admin.clone(), &self.namespace).create(&post, &role).await.unwrap();
        let mut binding = RoleBinding::default();
        binding.metadata.name = Some(name.clone());
        binding.role_ref = RoleRef { api_group: Some("rbac.authorization.k8s.io".into()), kind: "Role".into(), name };
        binding.subjects = Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: account.into(),
            namespace: Some(self.namespace.clone()),
            ..Default::default()
        }]);
        Api::<RoleBinding>::namespaced(self.admin.clone(), &self.namespace).create(&post, &binding).await.unwrap();
        // The RBAC authorizer learns bindings from an informer: wait until the grant works.
        let as_account = Api::<Secret>::namespaced(self.plane.token_client(token), &self.namespace);
        support::eventually(&format!("the RoleBinding of {account} takes effect"), PROPAGATION_LIMIT, async || {
            as_account.get_opt(secrets[0]).await.is_ok()
        })
        .await;
    }

    /// Takes a grant back; returns once the account is refused.
    async fn revoke(&self, account: &str, token: &str, secret: &str) {
        let name = format!("read-{account}");
        Api::<RoleBinding>::namespaced(self.admin.clone(), &self.namespace)
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();
        let as_account = Api::<Secret>::namespaced(self.plane.token_client(token), &self.namespace);
        support::eventually(&format!("the RoleBinding of {account} is revoked"), PROPAGATION_LIMIT, async || {
            as_account.get_opt(secret).await.is_err()
        })
        .await;
    }

    /// Publishes for pod `pod` of ServiceAccount `account`, the token where `token_in` says.
    async fn publish(
        &self,
        pod: &str,
        account: &str,
        token: &str,
        token_in: TokenIn,
        extra: &[(&str, &str)],
    ) -> (PathBuf, Result<(), tonic::Status>) {
        let target = self.daemon.target(pod, "trust");
        let mut attributes = vec![
            ("csi.storage.k8s.io/pod.namespace", self.namespace.as_str()),
            ("csi.storage.k8s.io/serviceAccount.name", account),
            ("systemRoots", "false"),
        ];
        attributes.extend_from_slice(extra);
        let mut request = publish_request(pod, &target, &attributes);
        // As the kubelet marshals a map of audience → TokenRequestStatus.
        let json = format!(r#"{{"":{{"token":"{token}","expirationTimestamp":"2026-12-01T12:00:00Z"}}}}"#);
        match token_in {
            TokenIn::Secrets => {
                request.secrets.insert(TOKENS_KEY.into(), json);
            }
            TokenIn::VolumeContext => {
                request.volume_context.insert(TOKENS_KEY.into(), json);
            }
            TokenIn::None => {}
        }
        let result = self.daemon.node().node_publish_volume(request).await;
        (target, result.map(|_| ()))
    }

    /// Where the audit log ends now: requests after it are the test's, not its set-up's.
    fn audit_mark(&self) -> usize {
        std::fs::metadata(&self.plane.audit_log).map_or(0, |m| m.len() as usize)
    }

    /// Who sent requests on Secrets in this namespace after `from` (an [`World::audit_mark`]),
    /// per the audit log: one user name per request.
    fn secret_readers(&self, from: usize) -> Vec<String> {
        let audit = std::fs::read_to_string(&self.plane.audit_log).unwrap_or_default();
        let namespace = format!("\"namespace\":\"{}\"", self.namespace);
        audit
            .get(from..)
            .unwrap_or_default()
            .lines()
            .filter(|line| {
                line.contains("\"resource\":\"secrets\"")
                    && line.contains(&namespace)
                    && line.contains("\"stage\":\"ResponseComplete\"")
            })
            .filter_map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).ok()?;
                Some(event["user"]["username"].as_str()?.to_string())
            })
            .collect()
    }

    fn store_holds(&self, needle: &str) -> bool {
        support::fsutil::walk(&self.daemon.store_dir())
            .into_iter()
            .filter(|path| path.is_file())
            .any(|path| std::fs::read_to_string(&path).is_ok_and(|text| text.contains(needle)))
    }
}

/// What cert-manager writes for a certificate: the issuing CA, the leaf and its key.
async fn cert_manager_secret(world: &World, name: &str, ca: &TestCa) -> String {
    let leaf = ca.issue_server(world.dir.path(), &format!("{name}-leaf"));
    let key = std::fs::read_to_string(&leaf.key_path).unwrap();
    world.put_secret(name, &[("ca.crt", &ca.pem), ("tls.crt", &leaf.pem), ("tls.key", &key)]).await;
    leaf.pem
}

#[test]
fn a_granted_service_account_reads_its_secret_with_its_own_token_and_never_as_the_driver() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let world = World::start("secret-granted").await;
        let ca = TestCa::new(world.dir.path(), "corp");
        let leaf_pem = cert_manager_secret(&world, "corp-ca-secret", &ca).await;
        let token = world.account("granted").await;
        world.grant("granted", &token, &["corp-ca-secret"]).await;

        let attributes = [("secrets", "corp-ca-secret")];
        let mark = world.audit_mark();
        let (in_secrets, result) = world.publish("pod-a", "granted", &token, TokenIn::Secrets, &attributes).await;
        result.unwrap();
        assert_eq!(bundle_ders(&in_secrets), ders(&[&ca]), "only ca.crt: not tls.crt, not tls.key");
        // The warm publish of a second pod (the token in the volume context, as older kubelets
        // pass it) reads the Secret again: that read is its access check.
        let (in_context, result) = world.publish("pod-b", "granted", &token, TokenIn::VolumeContext, &attributes).await;
        result.unwrap();
        assert_eq!(bundle_ders(&in_context), ders(&[&ca]));

        let granted = world.user_of("granted");
        let mut readers = Vec::new();
        support::eventually("both reads reach the audit log", PROPAGATION_LIMIT, async || {
            readers = world.secret_readers(mark);
            readers.len() >= 2
        })
        .await;
        assert!(readers.iter().all(|user| *user == granted), "{readers:?}");
        assert!(!readers.contains(&world.driver_user), "the driver read a Secret as itself: {readers:?}");
        assert_eq!(readers.len(), 2, "one GET per publish: {readers:?}");

        assert!(!world.store_holds("PRIVATE KEY"), "tls.key reached the store");
        let leaf_body = leaf_pem.lines().nth(1).unwrap();
        assert!(!world.store_holds(leaf_body), "tls.crt reached the store");
        assert!(!world.daemon.stderr().contains(&token), "the token was logged");
        for (pod, target) in [("pod-a", &in_secrets), ("pod-b", &in_context)] {
            world.daemon.node().node_unpublish_volume(unpublish_request(pod, target)).await.unwrap();
        }
    });
}

#[test]
fn a_service_account_not_granted_cannot_get_the_secrets_ca_even_after_a_granted_pod_published_it() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let world = World::start("secret-denied").await;
        let ca = TestCa::new(world.dir.path(), "corp");
        cert_manager_secret(&world, "corp-ca-secret", &ca).await;
        let granted = world.account("granted").await;
        world.grant("granted", &granted, &["corp-ca-secret"]).await;
        let other = world.account("other").await;

        let attributes = [("secrets", "corp-ca-secret")];
        let mark = world.audit_mark();
        let (published, result) =
            world.publish("pod-granted", "granted", &granted, TokenIn::Secrets, &attributes).await;
        result.unwrap();
        assert_eq!(bundle_ders(&published), ders(&[&ca]));

        // Same attributes, same namespace, another ServiceAccount: refused, nothing mounted.
        let (target, result) = world.publish("pod-other", "other", &other, TokenIn::Secrets, &attributes).await;
        assert_eq!(code_of(&result), Code::PermissionDenied, "{result:?}");
        let message = message_of(&result);
        for needed in [
            format!("ServiceAccount {}/other", world.namespace),
            format!("Secret {}/corp-ca-secret", world.namespace),
            "apiGroups: [\"\"], resources: [secrets], resourceNames: [corp-ca-secret], verbs: [get]".to_string(),
        ] {
            assert!(message.contains(&needed), "{needed:?} not in {message}");
        }
        assert!(!target.exists(), "a refused publish leaves nothing behind");

        // A pod claiming the granted ServiceAccount's name with another's token is refused too:
        // the API server judges the token, not the attribute.
        let (target, result) = world.publish("pod-claims", "granted", &other, TokenIn::Secrets, &attributes).await;
        assert_eq!(code_of(&result), Code::PermissionDenied, "{result:?}");
        assert!(!target.exists());

        // And once the grant is gone, a warm publish of the very spec the granted pod uses is
        // refused: every publish reads the Secret as its pod, none reuses the directory blindly.
        world.revoke("granted", &granted, "corp-ca-secret").await;
        let (target, result) = world.publish("pod-late", "granted", &granted, TokenIn::Secrets, &attributes).await;
        assert_eq!(code_of(&result), Code::PermissionDenied, "{result:?}");
        assert!(!target.exists());

        let readers = world.secret_readers(mark);
        assert!(!readers.contains(&world.driver_user), "the driver read a Secret as itself: {readers:?}");
    });
}

#[test]
fn without_a_token_the_volume_asks_for_token_requests_and_a_bad_token_is_unauthenticated() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let world = World::start("secret-token").await;
        let attributes = [("secrets", "corp-ca-secret")];
        let mark = world.audit_mark();
        let (target, result) = world.publish("pod-none", "default", "", TokenIn::None, &attributes).await;
        assert_eq!(code_of(&result), Code::FailedPrecondition, "{result:?}");
        assert!(message_of(&result).contains("tokenRequests"), "{}", message_of(&result));
        assert!(!target.exists());

        let (target, result) = world.publish("pod-bad", "default", "not-a-token", TokenIn::Secrets, &attributes).await;
        assert_eq!(code_of(&result), Code::Unauthenticated, "{result:?}");
        let message = message_of(&result);
        assert!(message.contains("tokenRequests") && message.contains("401"), "{message}");
        assert!(!target.exists());
        let readers = world.secret_readers(mark);
        assert!(readers.iter().all(|user| !user.contains("trustmount-driver")), "{readers:?}");
    });
}

#[test]
fn a_private_key_in_the_chosen_key_or_a_missing_secret_fails_the_source_unless_optional() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let world = World::start("secret-refusals").await;
        let ca = TestCa::new(world.dir.path(), "corp");
        cert_manager_secret(&world, "corp-ca-secret", &ca).await;
        let key = ca.key.serialize_pem();
        world.put_secret("leaky", &[("ca.crt", &format!("{}{key}", ca.pem))]).await;
        world.put_secret("readme", &[("ca.crt", "not a certificate")]).await;
        let token = world.account("reader").await;
        world.grant("reader", &token, &["corp-ca-secret", "leaky", "readme", "absent"]).await;

        for (pod, secret, key) in [
            ("pod-tls-key", "corp-ca-secret:tls.key", "tls.key"),
            ("pod-leaky", "leaky", "ca.crt"),
            ("pod-readme", "readme", "ca.crt"),
        ] {
            let (target, result) = world.publish(pod, "reader", &token, TokenIn::Secrets, &[("secrets", secret)]).await;
            assert_eq!(code_of(&result), Code::FailedPrecondition, "{secret}: {result:?}");
            let message = message_of(&result);
            let object = format!("Secret {}/{}", world.namespace, secret.split(':').next().unwrap());
            assert!(message.contains(&object) && message.contains(key), "{secret}: {message}");
            assert!(!target.exists());
        }
        assert!(!world.store_holds("PRIVATE KEY"), "a private key reached the store");

        let (_, result) =
            world.publish("pod-absent", "reader", &token, TokenIn::Secrets, &[("secrets", "absent")]).await;
        assert_eq!(code_of(&result), Code::FailedPrecondition, "{result:?}");
        assert!(message_of(&result).contains(&format!("Secret {}/absent", world.namespace)), "{}", message_of(&result));
        let (_, result) = world
            .publish("pod-no-key", "reader", &token, TokenIn::Secrets, &[("secrets", "corp-ca-secret:ca.pem")])
            .await;
        assert_eq!(code_of(&result), Code::FailedPrecondition, "{result:?}");
        assert!(message_of(&result).contains("ca.pem"), "{}", message_of(&result));

        let optional = [("secrets", "corp-ca-secret, absent, corp-ca-secret:ca.pem"), ("optional", "true")];
        let (target, result) = world.publish("pod-optional", "reader", &token, TokenIn::Secrets, &optional).await;
        result.unwrap();
        assert_eq!(bundle_ders(&target), ders(&[&ca]));
    });
}

#[test]
fn a_republish_after_the_secret_changed_refreshes_the_volume_and_an_unchanged_one_rewrites_nothing() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let world = World::start("secret-republish").await;
        let first = TestCa::new(world.dir.path(), "first");
        world.put_secret("rotating", &[("ca.crt", &first.pem)]).await;
        let token = world.account("app").await;
        world.grant("app", &token, &["rotating"]).await;
        let attributes = [("secrets", "rotating")];

        let (target, result) = world.publish("pod-app", "app", &token, TokenIn::Secrets, &attributes).await;
        result.unwrap();
        assert_eq!(bundle_ders(&target), ders(&[&first]));
        let before = generation(&target);
        // The kubelet's periodic republish (requiresRepublish), nothing changed: no new generation.
        let (_, result) = world.publish("pod-app", "app", &token, TokenIn::Secrets, &attributes).await;
        result.unwrap();
        assert_eq!(generation(&target), before);

        let second = TestCa::new(world.dir.path(), "second");
        world.put_secret("rotating", &[("ca.crt", &second.pem)]).await;
        let (_, result) = world.publish("pod-app", "app", &token, TokenIn::Secrets, &attributes).await;
        result.unwrap();
        assert_eq!(bundle_ders(&target), ders(&[&second]), "the republish brought the new CA");
        assert_ne!(generation(&target), before);
    });
}

#[test]
fn a_secrets_ca_expiring_within_seven_days_marks_its_volume_abnormal_naming_the_secret() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let world = World::start("secret-expiry").await;
        let soon = TestCa::expiring_in_days(world.dir.path(), "soon", 3);
        world.put_secret("soon-ca", &[("ca.crt", &soon.pem)]).await;
        let token = world.account("reader").await;
        world.grant("reader", &token, &["soon-ca"]).await;
        let attributes = [("secrets", "soon-ca")];
        let (target, result) = world.publish("pod-soon", "reader", &token, TokenIn::Secrets, &attributes).await;
        result.unwrap();
        let stats = world.daemon.node().node_get_volume_stats(stats_request("pod-soon", &target)).await.unwrap();
        let condition = stats.into_inner().volume_condition.expect("VOLUME_CONDITION is advertised");
        assert!(condition.abnormal, "{}", condition.message);
        let named = format!("of Secret {}/soon-ca key ca.crt expires at", world.namespace);
        assert!(
            condition.message.contains(&soon.common_name) && condition.message.contains(&named),
            "{}",
            condition.message
        );
        world.daemon.node().node_unpublish_volume(unpublish_request("pod-soon", &target)).await.unwrap();
    });
}

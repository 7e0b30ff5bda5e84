//! Secret sources against the real API server, read with the pod's own ServiceAccount token and
//! never with the driver's identity: the daemon gets the token as the kubelet hands it over (a
//! TokenRequest for the pod's ServiceAccount, in the request's `secrets` under
//! `csi.storage.k8s.io/serviceAccount.tokens`, or in the volume context), and the API server's
//! audit log says who read what.
//!
//! The driver runs with an identity of its own bound to the ClusterRole deploy/kubernetes/rbac.yaml ships
//! (nothing on Secrets), so a Secret read as the driver would fail, and shows in the log.

use std::path::{Path, PathBuf};

use tonic::Code;

use crate::in_private_mount_namespace;
use crate::support;
use crate::support::block_on;
use crate::support::certs::{TestCa, bundle_ders, ders};
use crate::support::client::{code_of, message_of, stats_request, unpublish_request};
use crate::support::control_plane::ControlPlane;
use crate::support::world::{PROPAGATION_LIMIT, TokenIn, World};

/// The `..data` link of a volume: its target changes exactly when the volume gets a generation.
fn generation(target: &Path) -> PathBuf {
    std::fs::read_link(target.join("..data")).unwrap()
}

/// What cert-manager writes for a certificate: the issuing CA, the leaf and its key.
async fn cert_manager_secret(world: &World<'_>, name: &str, ca: &TestCa) -> String {
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
        let (in_secrets, result) =
            world.publish_with_token("pod-a", "granted", &token, TokenIn::Secrets, &attributes).await;
        result.unwrap();
        assert_eq!(bundle_ders(&in_secrets), ders(&[&ca]), "only ca.crt: not tls.crt, not tls.key");
        // A token in the volume context (what a pod author can paste into volumeAttributes) is
        // never used, not even a valid one: refused before anything is read.
        let (in_context, result) =
            world.publish_with_token("pod-pasted", "granted", &token, TokenIn::VolumeContext, &attributes).await;
        assert_eq!(code_of(&result), Code::FailedPrecondition, "{result:?}");
        assert!(message_of(&result).contains("serviceAccountTokenInSecrets: true"), "{}", message_of(&result));
        assert!(!in_context.exists());
        // The warm publish of a second pod reads the Secret again: that read is its access check.
        let (second, result) =
            world.publish_with_token("pod-b", "granted", &token, TokenIn::Secrets, &attributes).await;
        result.unwrap();
        assert_eq!(bundle_ders(&second), ders(&[&ca]));

        let granted = world.user_of("granted");
        let mut readers = Vec::new();
        support::eventually("both reads reach the audit log", PROPAGATION_LIMIT, async || {
            readers = world.secret_readers(mark);
            readers.len() >= 2
        })
        .await;
        assert!(readers.iter().all(|user| *user == granted), "{readers:?}");
        assert!(!readers.contains(&world.user), "the driver read a Secret as itself: {readers:?}");
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
            world.publish_with_token("pod-granted", "granted", &granted, TokenIn::Secrets, &attributes).await;
        result.unwrap();
        assert_eq!(bundle_ders(&published), ders(&[&ca]));

        // Same attributes, same namespace, another ServiceAccount: refused, nothing mounted.
        let (target, result) =
            world.publish_with_token("pod-other", "other", &other, TokenIn::Secrets, &attributes).await;
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
        let (target, result) =
            world.publish_with_token("pod-claims", "granted", &other, TokenIn::Secrets, &attributes).await;
        assert_eq!(code_of(&result), Code::PermissionDenied, "{result:?}");
        assert!(!target.exists());

        // And once the grant is gone, a warm publish of the very spec the granted pod uses is
        // refused: every publish reads the Secret as its pod, none reuses the directory blindly.
        world.revoke("granted", &granted, "corp-ca-secret").await;
        let (target, result) =
            world.publish_with_token("pod-late", "granted", &granted, TokenIn::Secrets, &attributes).await;
        assert_eq!(code_of(&result), Code::PermissionDenied, "{result:?}");
        assert!(!target.exists());

        let readers = world.secret_readers(mark);
        assert!(!readers.contains(&world.user), "the driver read a Secret as itself: {readers:?}");
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
        let (target, result) = world.publish_with_token("pod-none", "default", "", TokenIn::None, &attributes).await;
        assert_eq!(code_of(&result), Code::FailedPrecondition, "{result:?}");
        assert!(message_of(&result).contains("tokenRequests"), "{}", message_of(&result));
        assert!(!target.exists());

        let (target, result) =
            world.publish_with_token("pod-bad", "default", "not-a-token", TokenIn::Secrets, &attributes).await;
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
            let (target, result) =
                world.publish_with_token(pod, "reader", &token, TokenIn::Secrets, &[("secrets", secret)]).await;
            assert_eq!(code_of(&result), Code::FailedPrecondition, "{secret}: {result:?}");
            let message = message_of(&result);
            let object = format!("Secret {}/{}", world.namespace, secret.split(':').next().unwrap());
            assert!(message.contains(&object) && message.contains(key), "{secret}: {message}");
            assert!(!target.exists());
        }
        assert!(!world.store_holds("PRIVATE KEY"), "a private key reached the store");

        let (_, result) =
            world.publish_with_token("pod-absent", "reader", &token, TokenIn::Secrets, &[("secrets", "absent")]).await;
        assert_eq!(code_of(&result), Code::FailedPrecondition, "{result:?}");
        assert!(message_of(&result).contains(&format!("Secret {}/absent", world.namespace)), "{}", message_of(&result));
        let (_, result) = world
            .publish_with_token(
                "pod-no-key",
                "reader",
                &token,
                TokenIn::Secrets,
                &[("secrets", "corp-ca-secret:ca.pem")],
            )
            .await;
        assert_eq!(code_of(&result), Code::FailedPrecondition, "{result:?}");
        assert!(message_of(&result).contains("ca.pem"), "{}", message_of(&result));

        let optional = [("secrets", "corp-ca-secret, absent, corp-ca-secret:ca.pem"), ("optional", "true")];
        let (target, result) =
            world.publish_with_token("pod-optional", "reader", &token, TokenIn::Secrets, &optional).await;
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

        let (target, result) = world.publish_with_token("pod-app", "app", &token, TokenIn::Secrets, &attributes).await;
        result.unwrap();
        assert_eq!(bundle_ders(&target), ders(&[&first]));
        let before = generation(&target);
        // The kubelet's periodic republish (requiresRepublish), nothing changed: no new generation.
        let (_, result) = world.publish_with_token("pod-app", "app", &token, TokenIn::Secrets, &attributes).await;
        result.unwrap();
        assert_eq!(generation(&target), before);

        let second = TestCa::new(world.dir.path(), "second");
        world.put_secret("rotating", &[("ca.crt", &second.pem)]).await;
        let (_, result) = world.publish_with_token("pod-app", "app", &token, TokenIn::Secrets, &attributes).await;
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
        let (target, result) =
            world.publish_with_token("pod-soon", "reader", &token, TokenIn::Secrets, &attributes).await;
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

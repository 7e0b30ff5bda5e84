//! The driver's RBAC in `deploy/kubernetes/` is least privilege, proven against the real API server with a
//! real token of the driver's ServiceAccount: it may read exactly what the driver reads as itself
//! (ConfigMaps, ClusterTrustBundles, its own CSIDriver) and nothing else, Secrets above all.

use std::collections::BTreeSet;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec, SelfSubjectRulesReview,
    SelfSubjectRulesReviewSpec,
};
use k8s_openapi::api::certificates::v1::ClusterTrustBundle;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::api::{Api, ListParams, PostParams};

use crate::support::control_plane::ControlPlane;
use crate::support::deploy;

/// The driver's ServiceAccount, as `deploy/kubernetes/serviceaccount.yaml` names it.
const DRIVER_NAMESPACE: &str = "trustmount";
const DRIVER_ACCOUNT: &str = "trustmount";

/// Applies the shipped manifests (every file of the kustomization) and returns a client holding
/// a token of the driver's ServiceAccount (what the DaemonSet's pods get).
async fn driver_client(plane: &ControlPlane) -> kube::Client {
    let admin = plane.admin_client().await;
    for manifest in deploy::kustomization() {
        deploy::apply(&admin, &manifest).await;
    }
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(600), ..Default::default() }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin, DRIVER_NAMESPACE)
        .create_token_request(DRIVER_ACCOUNT, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .and_then(|status| status.token)
        .expect("a token in the TokenRequest's status");
    plane.token_client(&token)
}

/// Asks the API server whether the caller may `verb` the resource (its authorizer's answer).
async fn may(client: &kube::Client, verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: (!namespace.is_empty()).then(|| namespace.into()),
                name: (!name.is_empty()).then(|| name.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone()).create(&PostParams::default(), &review).await;
    answer.unwrap().status.expect("review status").allowed
}

#[tokio::test]
async fn the_driver_may_read_trust_material_its_own_csidriver_and_record_pod_events_and_nothing_else() {
    let plane = ControlPlane::shared();
    let driver = driver_client(plane).await;
    let namespace = plane.namespace("driver-rbac").await;

    for (verb, group, resource, name) in [
        ("get", "", "configmaps", "corp-ca"),
        ("list", "", "configmaps", ""),
        ("watch", "", "configmaps", ""),
        ("get", "certificates.k8s.io", "clustertrustbundles", ""),
        ("list", "certificates.k8s.io", "clustertrustbundles", ""),
        ("watch", "certificates.k8s.io", "clustertrustbundles", ""),
        ("list", "storage.k8s.io", "csidrivers", "csi.trustmount.io"),
        ("watch", "storage.k8s.io", "csidrivers", "csi.trustmount.io"),
        ("create", "events.k8s.io", "events", ""),
        ("patch", "events.k8s.io", "events", "web-0.17f3"),
    ] {
        let scope = if matches!(resource, "configmaps" | "events") { namespace.as_str() } else { "" };
        assert!(may(&driver, verb, group, resource, scope, name).await, "the driver may not {verb} {resource}");
    }
    for (verb, group, resource, name) in [
        ("get", "", "secrets", "corp-ca-secret"),
        ("list", "", "secrets", ""),
        ("watch", "", "secrets", ""),
        ("create", "", "configmaps", ""),
        ("update", "", "configmaps", "corp-ca"),
        ("delete", "", "configmaps", "corp-ca"),
        ("create", "certificates.k8s.io", "clustertrustbundles", ""),
        ("list", "storage.k8s.io", "csidrivers", "another.driver.io"),
        ("list", "storage.k8s.io", "csidrivers", ""),
        ("watch", "storage.k8s.io", "csidrivers", ""),
        ("get", "storage.k8s.io", "csidrivers", "csi.trustmount.io"),
        ("list", "", "pods", ""),
        ("create", "", "serviceaccounts/token", "default"),
        ("delete", "events.k8s.io", "events", "web-0.17f3"),
        ("list", "events.k8s.io", "events", ""),
        ("create", "", "events", ""),
    ] {
        let scope = if matches!(resource, "secrets" | "configmaps" | "pods" | "serviceaccounts/token" | "events") {
            namespace.as_str()
        } else {
            ""
        };
        assert!(!may(&driver, verb, group, resource, scope, name).await, "the driver may {verb} {resource} {name}");
    }

    // The same, as real requests.
    let admin = plane.admin_client().await;
    let mut secret = Secret::default();
    secret.metadata.name = Some("corp-ca-secret".into());
    Api::<Secret>::namespaced(admin.clone(), &namespace).create(&PostParams::default(), &secret).await.unwrap();
    let mut config_map = ConfigMap::default();
    config_map.metadata.name = Some("corp-ca".into());
    Api::<ConfigMap>::namespaced(admin, &namespace).create(&PostParams::default(), &config_map).await.unwrap();

    Api::<ConfigMap>::namespaced(driver.clone(), &namespace).get("corp-ca").await.expect("get a ConfigMap");
    let one = ListParams::default().fields("metadata.name=corp-ca");
    assert_eq!(Api::<ConfigMap>::namespaced(driver.clone(), &namespace).list(&one).await.unwrap().items.len(), 1);
    Api::<ClusterTrustBundle>::all(driver.clone()).list(&ListParams::default()).await.expect("list bundles");
    let by_name = ListParams::default().fields("metadata.name=csi.trustmount.io");
    let own = Api::<CSIDriver>::all(driver.clone()).list(&by_name).await.expect("list its CSIDriver by name");
    assert_eq!(own.items.len(), 1);
    assert_eq!(own.items[0].spec.pod_info_on_mount, Some(true));
    let all = Api::<CSIDriver>::all(driver.clone()).list(&ListParams::default()).await;
    assert!(matches!(&all, Err(kube::Error::Api(status)) if status.code == 403), "only its own: {all:?}");
    let refused = Api::<Secret>::namespaced(driver, &namespace).get("corp-ca-secret").await;
    assert!(matches!(&refused, Err(kube::Error::Api(status)) if status.code == 403), "{refused:?}");
}

#[tokio::test]
async fn the_driver_role_grants_exactly_the_rules_the_driver_needs() {
    let plane = ControlPlane::shared();
    let driver = driver_client(plane).await;
    let namespace = plane.namespace("driver-rules").await;
    let review = SelfSubjectRulesReview {
        spec: SelfSubjectRulesReviewSpec { namespace: Some(namespace) },
        ..Default::default()
    };
    let status = Api::<SelfSubjectRulesReview>::all(driver)
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .expect("rules review status");

    // Every authenticated identity may ask who it is and what it may do; the rest is ours.
    let self_review_groups = ["authorization.k8s.io", "authentication.k8s.io"];
    let mut granted = BTreeSet::new();
    for rule in status.resource_rules {
        let groups = rule.api_groups.unwrap_or_default();
        if groups.iter().all(|group| self_review_groups.contains(&group.as_str())) {
            continue;
        }
        for group in &groups {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    let names = rule.resource_names.clone().unwrap_or_default().join(",");
                    granted.insert(format!("{group}/{resource} {verb} [{names}]"));
                }
            }
        }
    }
    let expected: BTreeSet<String> = [
        "/configmaps get []",
        "/configmaps list []",
        "/configmaps watch []",
        "certificates.k8s.io/clustertrustbundles get []",
        "certificates.k8s.io/clustertrustbundles list []",
        "certificates.k8s.io/clustertrustbundles watch []",
        "storage.k8s.io/csidrivers list [csi.trustmount.io]",
        "storage.k8s.io/csidrivers watch [csi.trustmount.io]",
        "events.k8s.io/events create []",
        "events.k8s.io/events patch []",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(granted, expected);
}

#[tokio::test]
async fn the_charts_narrower_rbac_lets_the_driver_read_only_the_named_config_maps() {
    let plane = ControlPlane::shared();
    let admin = plane.admin_client().await;
    let namespace = plane.namespace("narrow-rbac").await;
    let output = deploy::run_tool(
        "helm",
        None,
        &["template", "narrow", deploy::chart().to_str().unwrap(), "--set", "rbac.configMapNames={corp-ca}"],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let documents = deploy::documents(&String::from_utf8_lossy(&output.stdout));
    let mut role = documents.into_iter().find(|document| document["kind"] == "ClusterRole").expect("a ClusterRole");
    let role_name = format!("trustmount-narrow-{namespace}");
    role["metadata"]["name"] = role_name.clone().into();
    let role: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(role).unwrap();
    Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let identity = deploy::bound_identity(plane, &admin, &namespace, "narrow-driver", &role_name, dir.path()).await;
    let driver = plane.token_client(&identity.token);
    for name in ["corp-ca", "other-ca"] {
        let mut config_map = ConfigMap::default();
        config_map.metadata.name = Some(name.into());
        Api::<ConfigMap>::namespaced(admin.clone(), &namespace)
            .create(&PostParams::default(), &config_map)
            .await
            .unwrap();
    }
    let as_driver = Api::<ConfigMap>::namespaced(driver.clone(), &namespace);
    // What the driver's watch of one ConfigMap sends: a list (then a watch) by field selector.
    let by_name = |name: &str| ListParams::default().fields(&format!("metadata.name={name}"));
    let mut listed = None;
    crate::support::eventually("the binding takes effect", crate::support::world::PROPAGATION_LIMIT, async || {
        listed = as_driver.list(&by_name("corp-ca")).await.ok();
        listed.is_some()
    })
    .await;
    assert_eq!(listed.unwrap().items.len(), 1, "the named ConfigMap is read");
    assert!(may(&driver, "watch", "", "configmaps", &namespace, "corp-ca").await);
    for refused in [as_driver.list(&by_name("other-ca")).await, as_driver.list(&ListParams::default()).await] {
        assert!(matches!(&refused, Err(kube::Error::Api(status)) if status.code == 403), "{refused:?}");
    }
    assert!(!may(&driver, "watch", "", "configmaps", &namespace, "other-ca").await);
    // Everything else is as the default role has it.
    assert!(may(&driver, "watch", "certificates.k8s.io", "clustertrustbundles", "", "").await);
    assert!(!may(&driver, "get", "", "secrets", &namespace, "corp-ca").await);
}

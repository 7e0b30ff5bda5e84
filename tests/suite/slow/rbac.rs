//! The driver's RBAC in `deploy/kubernetes/` is least privilege, proven against the real API server with a
//! real token of the driver's ServiceAccount: it may read exactly what the driver reads as itself
//! (ConfigMaps, ClusterTrustBundles, its own CSIDriver) and nothing else, Secrets above all.
//! And the shipped API Priority and Fairness objects (`deploy/kubernetes/flowcontrol.yaml`) put
//! that identity's requests, and no other's, in the driver's own priority level.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec, SelfSubjectRulesReview,
    SelfSubjectRulesReviewSpec,
};
use k8s_openapi::api::certificates::v1::ClusterTrustBundle;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration};
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::api::{Api, ListParams, PostParams};
use kube::client::Body;

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

/// The response headers API Priority and Fairness sets on every request it classifies: the
/// uids of the FlowSchema that matched it and of the priority level it was queued in.
const FLOW_SCHEMA_UID: &str = "X-Kubernetes-PF-FlowSchema-UID";
const PRIORITY_LEVEL_UID: &str = "X-Kubernetes-PF-PriorityLevel-UID";

/// How the API server answered one request: its status, and the FlowSchema and priority level
/// uids it was classified by.
#[derive(Debug, PartialEq)]
struct Classified {
    status: http::StatusCode,
    flow_schema: Option<String>,
    priority_level: Option<String>,
}

/// Sends what a ConfigMap watch of the driver's lists first (one ConfigMap, by name) as
/// `client`, raw, to read the response headers.
async fn classified(client: &kube::Client, namespace: &str) -> Classified {
    let uri = format!("/api/v1/namespaces/{namespace}/configmaps?fieldSelector=metadata.name%3Dcorp-ca");
    let response = client.send(http::Request::get(uri).body(Body::empty()).unwrap()).await.expect("a response");
    let header = |name: &str| response.headers().get(name).map(|value| value.to_str().unwrap().to_owned());
    Classified {
        status: response.status(),
        flow_schema: header(FLOW_SCHEMA_UID),
        priority_level: header(PRIORITY_LEVEL_UID),
    }
}

#[tokio::test]
async fn the_drivers_requests_and_no_one_elses_are_queued_in_the_shipped_priority_level() {
    let plane = ControlPlane::shared();
    let driver = driver_client(plane).await;
    let admin = plane.admin_client().await;
    let namespace = plane.namespace("driver-apf").await;

    // The objects as deploy/kubernetes/flowcontrol.yaml names them, as the API server has them.
    let shipped = deploy::objects(&deploy::manifest("flowcontrol.yaml"));
    let name_of = |kind: &str| {
        let object = shipped.iter().find(|object| object.types.as_ref().is_some_and(|types| types.kind == kind));
        object.and_then(|object| object.metadata.name.clone()).unwrap_or_else(|| panic!("no {kind} shipped"))
    };
    let schemas = Api::<FlowSchema>::all(admin.clone());
    let schema = schemas.get(&name_of("FlowSchema")).await.unwrap();
    let levels = Api::<PriorityLevelConfiguration>::all(admin.clone());
    let level = levels.get(&name_of("PriorityLevelConfiguration")).await.unwrap();
    assert_eq!(Some(schema.spec.priority_level_configuration.name), level.metadata.name);
    let ours = Classified {
        status: http::StatusCode::OK,
        flow_schema: Some(schema.metadata.uid.expect("a uid")),
        priority_level: Some(level.metadata.uid.expect("a uid")),
    };

    // The binding and the API server's flow-control configuration take effect a moment later.
    let driver_seen = crate::support::poll_until(Duration::from_secs(30), Duration::from_millis(200), async || {
        let seen = classified(&driver, &namespace).await;
        if seen == ours { Ok(()) } else { Err(seen) }
    })
    .await;
    if let Err(seen) = driver_seen {
        panic!("the driver's request is not queued in its priority level {ours:?}: {seen:?}");
    }
    let conditions = schemas.get(&name_of("FlowSchema")).await.unwrap().status.and_then(|s| s.conditions);
    let dangling = conditions.unwrap_or_default().into_iter().find(|c| c.type_ == "Dangling");
    assert_eq!(dangling.and_then(|c| c.status).as_deref(), Some("False"), "the FlowSchema's level exists");

    // The lane is bounded: the seats the API server gives the level (its metrics) are its
    // nominal share, less what it lends, plus at most what it may borrow.
    let limited = level.spec.limited.expect("a Limited level");
    let metrics = admin.request_text(http::Request::get("/metrics").body(vec![]).unwrap()).await.unwrap();
    let level_name = name_of("PriorityLevelConfiguration");
    let seats = |bound: &str| -> f64 {
        let series = format!("apiserver_flowcontrol_{bound}_limit_seats{{priority_level=\"{level_name}\"}} ");
        let line = metrics.lines().find_map(|line| line.strip_prefix(&series));
        line.unwrap_or_else(|| panic!("no {series}in the API server's metrics")).parse().unwrap()
    };
    let (nominal, lower, upper) = (seats("nominal"), seats("lower"), seats("upper"));
    let percent = |value: Option<i32>| f64::from(value.expect("set: unset borrowing is unbounded")) / 100.0;
    let (lendable, borrowing) = (percent(limited.lendable_percent), percent(limited.borrowing_limit_percent));
    assert!(nominal >= 1.0, "{nominal} seats");
    assert!((lower - nominal * (1.0 - lendable)).abs() <= 1.0, "lower limit {lower} of {nominal} seats");
    assert!((upper - nominal * (1.0 + borrowing)).abs() <= 1.0, "upper limit {upper} of {nominal} seats");

    // Other ServiceAccounts allowed the very same request: one named like the driver's in
    // another namespace, one of another name in the driver's namespace. Each is classified by
    // the built-in `service-accounts` schema, not queued with the driver.
    let role = deploy::objects(&deploy::manifest("rbac.yaml"))
        .into_iter()
        .find(|object| object.types.as_ref().is_some_and(|types| types.kind == "ClusterRole"))
        .and_then(|role| role.metadata.name)
        .expect("deploy/kubernetes/rbac.yaml has a ClusterRole");
    let built_in = schemas.get("service-accounts").await.unwrap().metadata.uid;
    assert!(built_in.is_some() && built_in != ours.flow_schema);
    let dir = tempfile::tempdir().unwrap();
    let other_name = format!("not-the-driver-{}", std::process::id());
    for (account_namespace, account) in [(namespace.as_str(), DRIVER_ACCOUNT), (DRIVER_NAMESPACE, other_name.as_str())]
    {
        let identity = deploy::bound_identity(plane, &admin, account_namespace, account, &role, dir.path()).await;
        let other = plane.token_client(&identity.token);
        let other_seen = crate::support::poll_until(Duration::from_secs(30), Duration::from_millis(200), async || {
            let seen = classified(&other, &namespace).await;
            if seen.status == http::StatusCode::OK { Ok(seen) } else { Err(seen) }
        })
        .await;
        let seen = other_seen.unwrap_or_else(|seen| panic!("{}: the binding takes no effect: {seen:?}", identity.user));
        assert_ne!(seen.flow_schema, ours.flow_schema, "{} is matched by the driver's FlowSchema", identity.user);
        assert_ne!(seen.priority_level, ours.priority_level, "{} is queued in the driver's level", identity.user);
        assert_eq!(seen.flow_schema, built_in, "{}: not the built-in service-accounts schema", identity.user);
        assert!(seen.priority_level.is_some(), "{}: no priority level header: {seen:?}", identity.user);
    }
}

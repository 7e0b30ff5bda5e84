//! The test control plane is the real thing: the API server validates ClusterTrustBundles,
//! TokenRequest mints tokens that authenticate, and RBAC forbids what was not granted. Later
//! tests rely on each of these, so each is proven here first.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::certificates::{v1, v1beta1};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use crate::support;
use crate::support::certs::TestCa;
use crate::support::control_plane::{ControlPlane, RuntimeConfig};

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn bundle(name: &str, trust_bundle: String) -> v1::ClusterTrustBundle {
    let mut bundle = v1::ClusterTrustBundle::default();
    bundle.metadata.name = Some(name.to_string());
    bundle.spec.trust_bundle = trust_bundle;
    bundle
}

#[tokio::test]
async fn api_server_rejects_a_cluster_trust_bundle_that_holds_a_private_key() {
    let plane = ControlPlane::shared();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "with-key");
    let bundles: Api<v1::ClusterTrustBundle> = Api::all(plane.admin_client().await);

    let with_key = format!("{}{}", ca.pem, ca.key.serialize_pem());
    let status = api_error(bundles.create(&PostParams::default(), &bundle("with-private-key", with_key)).await);
    assert_eq!(status.code, 422, "{status:?}");
    assert!(status.message.contains("trustBundle"), "{status:?}");
    assert!(bundles.get_opt("with-private-key").await.unwrap().is_none());

    // The same CA alone is accepted, so the rejection above was for the key.
    bundles.create(&PostParams::default(), &bundle("ca-alone", ca.pem.clone())).await.expect("a CA alone is valid");
    bundles.delete("ca-alone", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn api_server_rejects_a_cluster_trust_bundle_with_a_certificate_that_is_not_a_ca() {
    let plane = ControlPlane::shared();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "issuer");
    let leaf = ca.issue_server(dir.path(), "leaf");
    let bundles: Api<v1::ClusterTrustBundle> = Api::all(plane.admin_client().await);

    let status = api_error(bundles.create(&PostParams::default(), &bundle("leaf", leaf.pem.clone())).await);
    assert_eq!(status.code, 422, "{status:?}");
    assert!(status.message.contains("trustBundle"), "{status:?}");
    assert!(bundles.get_opt("leaf").await.unwrap().is_none());
}

#[tokio::test]
async fn cluster_trust_bundles_are_served_as_v1_and_as_v1beta1() {
    let plane = ControlPlane::shared();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "both-versions");
    let client = plane.admin_client().await;
    let name = format!("both-versions-{}", std::process::id());
    let created = Api::<v1::ClusterTrustBundle>::all(client.clone())
        .create(&PostParams::default(), &bundle(&name, ca.pem.clone()))
        .await
        .unwrap();

    let through_beta =
        Api::<v1beta1::ClusterTrustBundle>::all(client.clone()).get(&name).await.expect("v1beta1 served");
    assert_eq!(through_beta.spec.trust_bundle, created.spec.trust_bundle);
    Api::<v1::ClusterTrustBundle>::all(client).delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_dedicated_control_plane_can_serve_cluster_trust_bundles_only_as_v1beta1() {
    let plane = ControlPlane::dedicated(RuntimeConfig::cluster_trust_bundles_v1beta1_only());
    assert_ne!(plane.dir, ControlPlane::shared().dir, "a control plane of its own");
    let client = plane.admin_client().await;
    let served = |version: &'static str| {
        let client = client.clone();
        async move {
            let request = http::Request::get(format!("/apis/certificates.k8s.io/{version}")).body(vec![]).unwrap();
            let resources: serde_json::Value = client.request(request).await.unwrap_or_default();
            resources["resources"]
                .as_array()
                .is_some_and(|list| list.iter().any(|resource| resource["name"] == "clustertrustbundles"))
        }
    };
    assert!(!served("v1").await, "v1 ClusterTrustBundles are turned off");
    assert!(served("v1beta1").await);

    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "beta-only");
    let mut bundle = v1beta1::ClusterTrustBundle::default();
    bundle.metadata.name = Some("beta-only".into());
    bundle.spec.trust_bundle = ca.pem.clone();
    Api::<v1beta1::ClusterTrustBundle>::all(client.clone()).create(&PostParams::default(), &bundle).await.unwrap();
    let through_v1 = Api::<v1::ClusterTrustBundle>::all(client).get("beta-only").await;
    assert!(matches!(&through_v1, Err(kube::Error::Api(status)) if status.code == 404), "{through_v1:?}");

    // Dropping it stops it and removes its files.
    let dir = plane.dir.clone();
    drop(plane);
    support::eventually(&format!("{} is removed after the drop", dir.display()), Duration::from_secs(30), async || {
        !dir.exists()
    })
    .await;
}

#[tokio::test]
async fn a_requested_service_account_token_authenticates_and_rbac_forbids_what_it_was_not_granted() {
    let plane = ControlPlane::shared();
    let admin = plane.admin_client().await;
    let namespace = plane.namespace("rbac").await;
    let post = PostParams::default();

    let mut account = ServiceAccount::default();
    account.metadata.name = Some("app".into());
    Api::<ServiceAccount>::namespaced(admin.clone(), &namespace).create(&post, &account).await.unwrap();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(600), ..Default::default() }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), &namespace)
        .create_token_request("app", &post, &request)
        .await
        .unwrap()
        .status
        .and_then(|status| status.token)
        .expect("a token in the TokenRequest's status");

    // Who the API server says the token is.
    let as_app = plane.token_client(&token);
    let review = Api::<SelfSubjectReview>::all(as_app.clone()).create(&post, &SelfSubjectReview::default()).await;
    let username = review.unwrap().status.and_then(|status| status.user_info).and_then(|user| user.username);
    assert_eq!(username.as_deref(), Some(format!("system:serviceaccount:{namespace}:app").as_str()));

    // A garbled token does not authenticate.
    let garbled = plane.token_client(&format!("{token}x"));
    let status = api_error(Api::<ConfigMap>::namespaced(garbled, &namespace).list(&ListParams::default()).await);
    assert_eq!(status.code, 401, "{status:?}");

    let configmaps = Api::<ConfigMap>::namespaced(as_app.clone(), &namespace);
    let status = api_error(configmaps.list(&ListParams::default()).await);
    assert_eq!(status.code, 403, "nothing granted yet: {status:?}");

    grant(&admin, &namespace, "read-configmaps", "configmaps", "app").await;
    // The RBAC authorizer reads roles from an informer: wait until it has seen the grant.
    support::eventually("the role granting configmaps takes effect", Duration::from_secs(30), async || {
        configmaps.list(&ListParams::default()).await.is_ok()
    })
    .await;

    // What was granted works; what was not stays forbidden.
    let status = api_error(Api::<Secret>::namespaced(as_app.clone(), &namespace).list(&ListParams::default()).await);
    assert_eq!(status.code, 403, "{status:?}");
    assert!(status.message.contains("secrets"), "{status:?}");
    let other_namespace = plane.namespace("rbac-other").await;
    let status = api_error(Api::<ConfigMap>::namespaced(as_app, &other_namespace).list(&ListParams::default()).await);
    assert_eq!(status.code, 403, "a Role grants nothing in another namespace: {status:?}");

    // The server itself recorded the refusal (its audit log), not only our client.
    let user = format!("\"username\":\"system:serviceaccount:{namespace}:app\"");
    let audit = std::fs::read_to_string(&plane.audit_log).unwrap();
    let refused_secret_list = audit.lines().any(|line| {
        line.contains(&user)
            && line.contains("\"resource\":\"secrets\"")
            && line.contains("\"code\":403")
            && line.contains("\"stage\":\"ResponseComplete\"")
    });
    assert!(refused_secret_list, "the audit log has no refused secrets list by {user}");
}

async fn grant(admin: &kube::Client, namespace: &str, name: &str, resource: &str, account: &str) {
    let post = PostParams::default();
    let mut role = Role::default();
    role.metadata.name = Some(name.into());
    role.rules = Some(vec![PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec![resource.into()]),
        verbs: vec!["get".into(), "list".into()],
        ..Default::default()
    }]);
    Api::<Role>::namespaced(admin.clone(), namespace).create(&post, &role).await.unwrap();
    let mut binding = RoleBinding::default();
    binding.metadata.name = Some(name.into());
    binding.role_ref =
        RoleRef { api_group: Some("rbac.authorization.k8s.io".into()), kind: "Role".into(), name: name.into() };
    binding.subjects = Some(vec![Subject {
        kind: "ServiceAccount".into(),
        name: account.into(),
        namespace: Some(namespace.into()),
        ..Default::default()
    }]);
    Api::<RoleBinding>::namespaced(admin.clone(), namespace).create(&post, &binding).await.unwrap();
}

/// Run only by the test below, in a process of its own: starts a control plane, says where, and
/// fails.
#[test]
#[ignore = "a helper that fails on purpose; run by a_test_binary_that_fails_leaves_no_control_plane_behind"]
fn helper_starts_a_control_plane_and_fails() {
    let plane = ControlPlane::shared();
    println!("control plane dir: {}", plane.dir.display());
    panic!("failing on purpose with the control plane running");
}

#[test]
fn a_test_binary_that_fails_leaves_no_control_plane_behind() {
    // Its name as libtest knows it: the module path without the crate name.
    let (_crate, module) = module_path!().split_once("::").expect("a test module is below the crate");
    let helper = format!("{module}::helper_starts_a_control_plane_and_fails");
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([helper.as_str(), "--exact", "--ignored", "--nocapture"])
        // Its own control plane, not this process's.
        .env_remove(support::control_plane::ATTACH_ENV)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "the helper was meant to fail\n{stdout}");
    let dir = stdout
        .lines()
        .find_map(|line| line.strip_prefix("control plane dir: "))
        .unwrap_or_else(|| panic!("the helper did not start a control plane\n{stdout}"));

    // Its processes are known by the data dir on their command lines.
    let processes_using_dir = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
            .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
            .filter(|cmdline| cmdline.contains(dir) && !cmdline.contains("sh -c"))
            .collect()
    };
    let gone = support::poll_until_blocking(Duration::from_secs(30), Duration::from_millis(100), || {
        let (exists, processes) = (std::path::Path::new(dir).exists(), processes_using_dir());
        if !exists && processes.is_empty() { Ok(()) } else { Err((exists, processes)) }
    });
    if let Err((exists, processes)) = gone {
        panic!("30 s after the helper failed, {dir} exists: {exists} and processes use it: {processes:?}");
    }
}

//! The plain manifests in `deploy/kubernetes/`, applied as they are to the test control plane:
//! tests prove what ships, never a copy of it.

use std::path::{Path, PathBuf};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};

/// `deploy/kubernetes/<name>` in this repository.
pub fn manifest(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes").join(name)
}

/// Every file `deploy/kubernetes/kustomization.yaml` lists, in its order: what
/// `kubectl apply -k deploy/kubernetes` installs.
pub fn kustomization() -> Vec<PathBuf> {
    #[derive(serde::Deserialize)]
    struct Kustomization {
        resources: Vec<String>,
    }
    let path = manifest("kustomization.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let kustomization: Kustomization = serde_yaml::from_str(&text).expect("kustomization.yaml");
    kustomization.resources.iter().map(|name| manifest(name)).collect()
}

/// Every object in a YAML file of one or more documents.
pub fn objects(path: &Path) -> Vec<DynamicObject> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            let value = serde_json::to_value(serde_yaml::Value::deserialize(document).expect("YAML document"))
                .expect("YAML as JSON");
            serde_json::from_value(value).unwrap_or_else(|e| panic!("{}: not a Kubernetes object: {e}", path.display()))
        })
        .filter(|object: &DynamicObject| object.types.is_some())
        .collect()
}

/// Server-side applies every object of `path` (idempotent, so tests sharing a control plane can
/// each apply), with the API server's strict field validation: a typo in a manifest fails here.
pub async fn apply(client: &kube::Client, path: &Path) -> Vec<DynamicObject> {
    let mut applied = Vec::new();
    for object in objects(path) {
        let types = object.types.clone().expect("apiVersion and kind");
        let gvk = GroupVersionKind::try_from(&types).expect("apiVersion and kind");
        let (resource, capabilities) =
            pinned_kind(client, &gvk).await.unwrap_or_else(|e| panic!("discover {gvk:?}: {e}"));
        let name = object.metadata.name.clone().expect("metadata.name");
        let api: Api<DynamicObject> = match (&capabilities.scope, object.metadata.namespace.as_deref()) {
            (Scope::Namespaced, Some(namespace)) => Api::namespaced_with(client.clone(), namespace, &resource),
            (Scope::Namespaced, None) => panic!("{} {name} in {} has no namespace", types.kind, path.display()),
            (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        };
        let params = PatchParams::apply("trustmount-tests").force().validation_strict();
        let result = api.patch(&name, &params, &Patch::Apply(&object)).await;
        applied.push(result.unwrap_or_else(|e| panic!("apply {} {name} from {}: {e}", types.kind, path.display())));
    }
    applied
}

use serde::Deserialize as _;

/// A driver identity for one test: a ServiceAccount of its own, bound to the ClusterRole exactly
/// as `deploy/kubernetes/rbac.yaml` ships it (tests/suite/slow/rbac.rs proves it grants no more),
/// and a kubeconfig holding its token. One per test, so the audit log tells the tests' drivers
/// apart.
pub struct DriverIdentity {
    pub kubeconfig: PathBuf,
    /// The user name the API server (and its audit log) knows it by.
    pub user: String,
    pub token: String,
}

/// Creates a [`DriverIdentity`] in `namespace`, its kubeconfig in `dir`, and waits until the
/// RBAC authorizer (which learns bindings from an informer) lets it read.
pub async fn driver_identity(
    plane: &super::control_plane::ControlPlane,
    admin: &kube::Client,
    namespace: &str,
    dir: &Path,
) -> DriverIdentity {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ListParams;

    let role = objects(&manifest("rbac.yaml"))
        .into_iter()
        .find(|object| object.types.as_ref().is_some_and(|types| types.kind == "ClusterRole"))
        .and_then(|role| role.metadata.name)
        .expect("deploy/kubernetes/rbac.yaml has a ClusterRole");
    apply(admin, &manifest("rbac.yaml")).await;
    let identity = bound_identity(plane, admin, namespace, "trustmount-driver", &role, dir).await;
    let as_driver = Api::<ConfigMap>::namespaced(plane.token_client(&identity.token), namespace);
    super::eventually("the driver's ClusterRoleBinding takes effect", std::time::Duration::from_secs(30), async || {
        as_driver.list(&ListParams::default()).await.is_ok()
    })
    .await;
    identity
}

/// ServiceAccount `account` in `namespace`, bound to ClusterRole `role`, with a token and a
/// kubeconfig (in `dir`) holding it. The binding takes effect a moment later: the caller waits
/// for a request it allows.
pub async fn bound_identity(
    plane: &super::control_plane::ControlPlane,
    admin: &kube::Client,
    namespace: &str,
    account: &str,
    role: &str,
    dir: &Path,
) -> DriverIdentity {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
    use kube::api::PostParams;

    let post = PostParams::default();
    let mut service_account = ServiceAccount::default();
    service_account.metadata.name = Some(account.into());
    Api::<ServiceAccount>::namespaced(admin.clone(), namespace).create(&post, &service_account).await.unwrap();
    let mut binding = ClusterRoleBinding::default();
    binding.metadata.name = Some(format!("{account}-{namespace}"));
    binding.role_ref =
        RoleRef { api_group: Some("rbac.authorization.k8s.io".into()), kind: "ClusterRole".into(), name: role.into() };
    binding.subjects = Some(vec![Subject {
        kind: "ServiceAccount".into(),
        name: account.into(),
        namespace: Some(namespace.into()),
        ..Default::default()
    }]);
    Api::<ClusterRoleBinding>::all(admin.clone()).create(&post, &binding).await.unwrap();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(account, &post, &request)
        .await
        .unwrap()
        .status
        .and_then(|status| status.token)
        .expect("a token");
    let kubeconfig = dir.join("driver.kubeconfig");
    std::fs::write(&kubeconfig, plane.token_kubeconfig(&token)).unwrap();
    DriverIdentity { kubeconfig, user: format!("system:serviceaccount:{namespace}:{account}"), token }
}

/// `deploy/helm/trustmount` in this repository.
pub fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/trustmount")
}

/// Runs a pinned component that tests/k8s/build built (`helm`, `kubectl`) with `args`, against
/// `plane` (its admin kubeconfig) when given. HOME and helm's directories point at a temp
/// directory, so the tools' caches and config never touch the user's own.
pub fn run_tool(
    program: &str,
    plane: Option<&super::control_plane::ControlPlane>,
    args: &[&str],
) -> std::process::Output {
    let home = tempfile::tempdir().expect("tool home");
    let mut command = std::process::Command::new(super::control_plane::component(program));
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .env("HOME", home.path())
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .env_remove("KUBECONFIG");
    if let Some(plane) = plane {
        command.env("KUBECONFIG", &plane.kubeconfig);
    }
    command.output().unwrap_or_else(|e| super::tools::spawn_failed(program.as_ref(), e))
}

/// Parses a stream of YAML documents (a file, or what `helm template` or `kubectl kustomize`
/// print) into JSON values, skipping empty documents.
pub fn documents(text: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|document| {
            serde_json::to_value(serde_yaml::Value::deserialize(document).expect("YAML document"))
                .expect("YAML as JSON")
        })
        .filter(|value| !value.is_null())
        .collect()
}

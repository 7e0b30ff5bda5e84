//! The manifests in `deploy/`, applied as they are to the test control plane: tests prove what
//! ships, never a copy of it.

use std::path::{Path, PathBuf};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};

/// `deploy/<name>` in this repository.
pub fn manifest(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(name)
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

//! Writing the API objects the cluster-source tests and benches change: create or replace, so a
//! test reads as "the ConfigMap now holds this".

use k8s_openapi::api::certificates::v1::ClusterTrustBundle;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::api::{Api, PostParams};

use super::deploy;

/// Creates `object` under `name`, or replaces what is there (carrying its resourceVersion).
pub async fn put<K>(api: &Api<K>, name: &str, mut object: K)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    object.meta_mut().name = Some(name.to_string());
    match api.get_opt(name).await.unwrap() {
        Some(existing) => {
            object.meta_mut().resource_version = existing.meta().resource_version.clone();
            api.replace(name, &PostParams::default(), &object).await.unwrap();
        }
        None => {
            api.create(&PostParams::default(), &object).await.unwrap();
        }
    }
}

/// ConfigMap `name` with the one key `ca.crt` holding `pem`.
pub async fn put_config_map(api: &Api<ConfigMap>, name: &str, pem: &str) {
    let map = ConfigMap { data: Some([("ca.crt".to_string(), pem.to_string())].into()), ..ConfigMap::default() };
    put(api, name, map).await;
}

/// ClusterTrustBundle `name`, without a signer, holding `pem`. Only benches/rotation.rs puts
/// ClusterTrustBundles this way (the tests make theirs with their own contents).
#[allow(dead_code)]
pub async fn put_trust_bundle(api: &Api<ClusterTrustBundle>, name: &str, pem: &str) {
    let mut bundle = ClusterTrustBundle::default();
    bundle.spec.trust_bundle = pem.to_string();
    put(api, name, bundle).await;
}

/// The CSIDriver deploy/kubernetes/csidriver.yaml ships (the driver's start-up check reads it), applied
/// unless the control plane already has one of its name.
pub async fn ensure_shipped_csidriver(admin: &kube::Client) {
    let shipped = deploy::manifest("csidriver.yaml");
    let name = deploy::objects(&shipped)
        .into_iter()
        .find_map(|object| object.metadata.name)
        .expect("deploy/kubernetes/csidriver.yaml names its CSIDriver");
    if Api::<CSIDriver>::all(admin.clone()).get_opt(&name).await.unwrap().is_none() {
        deploy::apply(admin, &shipped).await;
    }
}

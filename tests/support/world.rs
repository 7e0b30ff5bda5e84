//! One test's world. [`World`], on a real control plane: a namespace of its own, the driver's
//! identity in it (bound to the shipped ClusterRole unless [`Setup`] says otherwise), and a
//! daemon using that identity; typed `put_*` for every source kind, publishes as the kubelet
//! sends them, and the audit log read per user. [`LocalWorld`], without a cluster: a directory,
//! a test CA and a daemon trusting it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::api::{Api, DeleteParams, PostParams};

use super::certs::TestCa;
use super::client::{publish_request, stats_request};
use super::control_plane::ControlPlane;
use super::daemon::{Daemon, DaemonOptions};
use super::{deploy, objects};

/// The CSIDriver deploy/kubernetes/csidriver.yaml ships, and the driver's default --driver-name.
pub const SHIPPED_DRIVER: &str = "csi.trustmount.io";
/// How long a change may take to reach the driver (informers, watches); bounds a hang.
pub const PROPAGATION_LIMIT: Duration = Duration::from_secs(30);
/// Where the kubelet puts the pod's ServiceAccount tokens.
const TOKENS_KEY: &str = "csi.storage.k8s.io/serviceAccount.tokens";

pub struct World<'p> {
    pub plane: &'p ControlPlane,
    pub admin: kube::Client,
    pub namespace: String,
    /// The driver's user name in the audit log.
    pub user: String,
    pub token: String,
    pub daemon: Daemon,
    pub dir: tempfile::TempDir,
}

/// A local world: the daemon trusts one freshly made test CA (plus the embedded system roots).
/// Fields drop in reverse order: the daemon stops before its directory goes.
pub struct LocalWorld {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub daemon: Daemon,
}

impl LocalWorld {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path(), "ca");
        let daemon = Daemon::start(DaemonOptions::default().extra_pem(&ca.cert_path)).await;
        LocalWorld { dir, ca, daemon }
    }
}

/// How a [`World`] differs from the shipped set-up.
#[derive(Default)]
pub struct Setup {
    /// Leave the CSIDriver to the test: the driver starts without one.
    pub no_csidriver: bool,
    /// The driver's identity may get its CSIDriver and nothing else (no ConfigMaps).
    pub csidriver_only: bool,
    /// The API server URL the driver's kubeconfig names instead of the plane's.
    pub server: Option<String>,
    /// The daemon's --node-id instead of the default.
    pub node_id: Option<String>,
}

/// Where the kubelet puts the token JSON.
#[derive(Clone, Copy)]
pub enum TokenIn {
    /// The request's `secrets` (`serviceAccountTokenInSecrets: true`, Kubernetes >= 1.35).
    Secrets,
    /// `volume_context` (older kubelets).
    VolumeContext,
    None,
}

impl World<'static> {
    /// On the shared control plane, with the CSIDriver deploy/kubernetes/csidriver.yaml ships.
    pub async fn start(prefix: &str) -> Self {
        World::start_on(ControlPlane::shared(), prefix, &[]).await
    }
}

impl<'p> World<'p> {
    /// Applies deploy/kubernetes/csidriver.yaml as shipped (the driver's start-up check reads
    /// it), unless the plane already has a CSIDriver of that name; `extra_args` go to the daemon.
    pub async fn start_on(plane: &'p ControlPlane, prefix: &str, extra_args: &[&str]) -> World<'p> {
        World::start_with(plane, prefix, extra_args, Setup::default()).await
    }

    pub async fn start_with(plane: &'p ControlPlane, prefix: &str, extra_args: &[&str], setup: Setup) -> World<'p> {
        let admin = plane.admin_client().await;
        if !setup.no_csidriver {
            objects::ensure_shipped_csidriver(&admin).await;
        }
        let namespace = plane.namespace(prefix).await;
        let dir = tempfile::tempdir().unwrap();
        let deploy::DriverIdentity { kubeconfig, user, token } = if setup.csidriver_only {
            csidriver_only_identity(plane, &admin, &namespace, dir.path()).await
        } else {
            deploy::driver_identity(plane, &admin, &namespace, dir.path()).await
        };
        if let Some(server) = &setup.server {
            let text = std::fs::read_to_string(&kubeconfig).unwrap();
            assert!(text.contains(&plane.server), "the kubeconfig names the plane's server");
            std::fs::write(&kubeconfig, text.replace(&plane.server, server)).unwrap();
        }
        let mut args = vec!["--kubeconfig".to_string(), kubeconfig.display().to_string()];
        args.extend(extra_args.iter().map(|arg| arg.to_string()));
        let mut options = DaemonOptions { extra_args: args, ..DaemonOptions::default() }.system_roots("none");
        if let Some(node_id) = setup.node_id {
            options.node_id = node_id;
        }
        let daemon = Daemon::start(options).await;
        World { plane, admin, namespace, user, token, daemon, dir }
    }

    pub fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    /// ConfigMap `name` in this namespace holding exactly `data` and `binary`.
    pub async fn put_config_map(&self, name: &str, data: &[(&str, &str)], binary: &[(&str, &[u8])]) {
        let map = ConfigMap {
            data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            binary_data: Some(binary.iter().map(|(k, v)| (k.to_string(), ByteString(v.to_vec()))).collect()),
            ..ConfigMap::default()
        };
        objects::put(&self.config_maps(), name, map).await;
    }

    /// Secret `name` in this namespace holding exactly `data`.
    pub async fn put_secret(&self, name: &str, data: &[(&str, &str)]) {
        let secret = Secret {
            data: Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()),
            ..Secret::default()
        };
        objects::put(&Api::<Secret>::namespaced(self.admin.clone(), &self.namespace), name, secret).await;
    }

    /// Publishes for a pod in this world's namespace; `extra` are the volume attributes.
    pub async fn publish(&self, pod: &str, extra: &[(&str, &str)]) -> (PathBuf, Result<(), tonic::Status>) {
        self.publish_as(pod, None, extra).await
    }

    /// Publishes for pod `pod` of ServiceAccount `account` with its `token` where the kubelet
    /// puts it (`token_in`); `extra` are the volume attributes.
    pub async fn publish_with_token(
        &self,
        pod: &str,
        account: &str,
        token: &str,
        token_in: TokenIn,
        extra: &[(&str, &str)],
    ) -> (PathBuf, Result<(), tonic::Status>) {
        self.publish_as(pod, Some((account, token, token_in)), extra).await
    }

    async fn publish_as(
        &self,
        pod: &str,
        account: Option<(&str, &str, TokenIn)>,
        extra: &[(&str, &str)],
    ) -> (PathBuf, Result<(), tonic::Status>) {
        let target = self.daemon.target(pod, "trust");
        let mut attributes = vec![("csi.storage.k8s.io/pod.namespace", self.namespace.as_str())];
        if let Some((name, _, _)) = account {
            attributes.push(("csi.storage.k8s.io/serviceAccount.name", name));
        }
        attributes.push(("systemRoots", "false"));
        attributes.extend_from_slice(extra);
        let mut request = publish_request(pod, &target, &attributes);
        if let Some((_, token, token_in)) = account {
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
        }
        let result = self.daemon.node().node_publish_volume(request).await;
        (target, result.map(|_| ()))
    }

    /// The volume's condition as NodeGetVolumeStats reports it: (abnormal, message).
    pub async fn condition(&self, pod: &str, target: &Path) -> (bool, String) {
        let stats = self.daemon.node().node_get_volume_stats(stats_request(pod, target)).await.unwrap();
        let condition = stats.into_inner().volume_condition.expect("VOLUME_CONDITION is advertised");
        (condition.abnormal, condition.message)
    }

    /// The audit log's user name of ServiceAccount `account` of this namespace.
    pub fn user_of(&self, account: &str) -> String {
        format!("system:serviceaccount:{}:{account}", self.namespace)
    }

    /// A ServiceAccount, and its token as the kubelet would request it (`audience: ""`).
    pub async fn account(&self, name: &str) -> String {
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
    pub async fn grant(&self, account: &str, token: &str, secrets: &[&str]) {
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
        super::eventually(&format!("the RoleBinding of {account} takes effect"), PROPAGATION_LIMIT, async || {
            as_account.get_opt(secrets[0]).await.is_ok()
        })
        .await;
    }

    /// Takes a grant back; returns once the account is refused.
    pub async fn revoke(&self, account: &str, token: &str, secret: &str) {
        let name = format!("read-{account}");
        Api::<RoleBinding>::namespaced(self.admin.clone(), &self.namespace)
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();
        let as_account = Api::<Secret>::namespaced(self.plane.token_client(token), &self.namespace);
        super::eventually(&format!("the RoleBinding of {account} is revoked"), PROPAGATION_LIMIT, async || {
            as_account.get_opt(secret).await.is_err()
        })
        .await;
    }

    /// Where the audit log ends now: requests after it are the test's, not its set-up's.
    pub fn audit_mark(&self) -> usize {
        std::fs::metadata(&self.plane.audit_log).map_or(0, |m| m.len() as usize)
    }

    /// Who sent requests on Secrets in this namespace after `from` (an [`World::audit_mark`]),
    /// per the audit log: one user name per request.
    pub fn secret_readers(&self, from: usize) -> Vec<String> {
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

    /// Whether any file in the driver's store contains `needle`.
    pub fn store_holds(&self, needle: &str) -> bool {
        super::fsutil::walk(&self.daemon.store_dir())
            .into_iter()
            .filter(|path| path.is_file())
            .any(|path| std::fs::read_to_string(&path).is_ok_and(|text| text.contains(needle)))
    }
}

/// A driver identity that may get the shipped CSIDriver (so the start-up check passes) and
/// nothing else: its ConfigMap and ClusterTrustBundle watches get the API server's 403.
async fn csidriver_only_identity(
    plane: &ControlPlane,
    admin: &kube::Client,
    namespace: &str,
    dir: &Path,
) -> deploy::DriverIdentity {
    const ACCOUNT: &str = "trustmount-csidriver-only";
    let role_name = format!("{ACCOUNT}-{namespace}");
    let mut role = ClusterRole::default();
    role.metadata.name = Some(role_name.clone());
    role.rules = Some(vec![PolicyRule {
        api_groups: Some(vec!["storage.k8s.io".into()]),
        resources: Some(vec!["csidrivers".into()]),
        resource_names: Some(vec![SHIPPED_DRIVER.into()]),
        verbs: vec!["list".into(), "watch".into()],
        ..Default::default()
    }]);
    Api::<ClusterRole>::all(admin.clone()).create(&PostParams::default(), &role).await.unwrap();
    let identity = deploy::bound_identity(plane, admin, namespace, ACCOUNT, &role_name, dir).await;
    let as_driver = Api::<CSIDriver>::all(plane.token_client(&identity.token));
    super::eventually("the CSIDriver-only binding takes effect", PROPAGATION_LIMIT, async || {
        let by_name = kube::api::ListParams::default().fields(&format!("metadata.name={SHIPPED_DRIVER}"));
        as_driver.list(&by_name).await.is_ok()
    })
    .await;
    identity
}

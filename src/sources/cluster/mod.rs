//! Cluster sources: ClusterTrustBundles and ConfigMaps read through the Kubernetes API as the
//! driver, cached by watches (never polled), so a publish reads memory and a warm publish sends
//! no request; Secrets read as the pod, with its own token, on every publish that names them.
//!
//! - [`client`]: the mode (kubeconfig, in-cluster, standalone) and its clients.
//! - [`csi_driver`]: the check that the CSIDriver sets `podInfoOnMount: true`, retried until
//!   the API server answers.
//! - [`api_error`]: API errors as a person reads them.
//! - [`defaults`]: the driver-wide default sources every volume gets unless it opts out.
//! - [`watch_loop`]: the one watch-and-cache loop every watched kind runs (watch → parse →
//!   store → diff → typed change); a kind implements [`watch_loop::Watched`].
//! - [`trust_bundles`]: one shared watch of all ClusterTrustBundles, started on first use.
//! - [`config_maps`]: one single-object watch per referenced ConfigMap, shared and dropped with
//!   the last volume that names it.
//!
//!   Each kind's file holds all of it: its name ([`KindName`](crate::bundle::KindName), which
//!   its certificates' typed provenance carries), its watch, its selection of certificates for a
//!   spec, and which changes touch a spec.
//! - [`content`]: what a ConfigMap key or bundle holds, parsed once per change.
//! - [`wanted`]: what a spec reads from the cluster (its sources plus the defaults), and what it
//!   gets from the caches.
//! - [`select`]: a spec's certificates and which changes touch it, dispatched to the kinds.
//! - [`secrets`]: Secrets read with the pod's token, one key each, never watched.
//! - [`token`]: the pod's token from the kubelet's JSON, never printed.

mod api_error;
mod client;
mod config_maps;
mod content;
mod csi_driver;
mod defaults;
mod secrets;
mod select;
mod token;
mod trust_bundles;
mod wanted;
mod watch_loop;

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::bundle;
use crate::domain::{SourceKind, VolumeSpec};

pub use client::{Clients, Mode};
pub use csi_driver::{PodInfoMode, PodInfoProblem};
pub use defaults::{Defaults, Error as DefaultsError, Flags as DefaultsFlags};
pub use secrets::{Read as SecretsRead, Slot as SecretSlot};
pub use token::{PodToken, TokenError};
pub use trust_bundles::{BundleMeta, Version};
pub use wanted::Selected;
use wanted::Wanted;

/// How long the first publish naming a new object waits for its first list (the kubelet's own
/// ClusterTrustBundle and ConfigMap waits are of this order); then UNAVAILABLE, and the kubelet
/// retries.
pub const FIRST_SYNC_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the volume names {what}, but this driver runs standalone ({reason}); give the driver cluster access (--kubeconfig, or run it in a pod) to use cluster sources"
    )]
    Standalone { what: String, reason: &'static str },
    #[error("{kind} {object} does not exist; create it, or set the volume attribute optional: \"true\" to skip it")]
    Missing { kind: &'static str, object: String },
    #[error(
        "ConfigMap {object} has no key {key:?} in data or binaryData; name an existing key, or set the volume attribute optional: \"true\" to skip it"
    )]
    MissingKey { object: String, key: String },
    #[error(
        "no ClusterTrustBundle of signer {signer:?} matches label selector {selector:?}; create one, or set the volume attribute optional: \"true\""
    )]
    NoMatch { signer: String, selector: String },
    #[error("{kind} {object} holds no certificates in any key of data or binaryData; add a CA certificate to it")]
    NoCertificates { kind: &'static str, object: String },
    #[error("{kind} {object} key {key:?} cannot be used: {source}")]
    Content {
        kind: &'static str,
        object: String,
        key: String,
        #[source]
        source: Box<bundle::Error>,
    },
    #[error(
        "{what} not read from the API server within {waited:?}{}; the kubelet will retry (check the driver's connection to the API server, and that its ClusterRole may list and watch them)",
        .last_error.as_deref().map(|error| format!(" (last error: {error})")).unwrap_or_default()
    )]
    NotSynced { what: String, waited: Duration, last_error: Option<String> },
    #[error(
        "the volume names ClusterTrustBundles, but this cluster serves none (neither certificates.k8s.io/v1 nor v1beta1)"
    )]
    TrustBundlesNotServed,
    #[error(
        "the volume names {what}, but this driver refuses cluster sources: {problem}. The CSIDriver must set podInfoOnMount: true (as deploy/kubernetes/csidriver.yaml does), so the kubelet tells the driver the pod's namespace; fix it, and the driver reads it again at the kubelet's next retry"
    )]
    PodInfoOff { what: String, problem: PodInfoProblem },
    #[error(
        "the volume names {what}, but the driver could not read its CSIDriver {driver} yet (it must set podInfoOnMount: true){}; the driver keeps trying and the kubelet will retry (check the driver's connection to the API server)",
        .last_error.as_deref().map(|error| format!(" (last error: {error})")).unwrap_or_default()
    )]
    PodInfoNotChecked { what: String, driver: String, last_error: Option<String> },
    #[error("cannot configure the Kubernetes client from {origin}: {reason}")]
    Config { origin: String, reason: String },
    #[error(
        "Secret {object} has no key {key:?} in data; name an existing key (a bare name means key \"ca.crt\"), or set the volume attribute optional: \"true\" to skip it"
    )]
    MissingSecretKey { object: String, key: String },
    #[error(
        "ServiceAccount {namespace}/{service_account} may not get Secret {namespace}/{secret} (the API server answered 403 to the pod's own token; trustmount reads Secrets only as the pod, never as itself). Allow it with a Role in namespace {namespace} with the rule {{apiGroups: [\"\"], resources: [secrets], resourceNames: [{secret}], verbs: [get]}} and a RoleBinding to ServiceAccount {service_account}"
    )]
    Forbidden { namespace: String, service_account: String, secret: String },
    #[error(
        "the API server rejected the token of ServiceAccount {namespace}/{service_account} (401) when reading Secret {namespace}/{secret}: the CSIDriver's tokenRequests must ask for a token the API server accepts (audience \"\", its own); an expired token is replaced at the kubelet's next republish"
    )]
    Unauthenticated { namespace: String, service_account: String, secret: String },
    #[error("cannot read Secret {object} from the API server; the kubelet will retry: {source}")]
    SecretRequest {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot read Secret {object}: {reason}")]
    SecretUnreadable { object: String, reason: String },
    #[error(
        "the volume names Secrets but its publish carries no token of the pod's ServiceAccount to read them with; the driver's CSIDriver object must set tokenRequests (audience \"\")"
    )]
    NoToken,
    #[error(
        "Secret {object} has not been read as ServiceAccount {service_account} since the driver started; the kubelet's next republish reads it"
    )]
    SecretsNotRead { object: String, service_account: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A watch's last error, shared by its writer task and the publishes waiting on it.
#[derive(Clone, Debug, Default)]
pub(crate) struct LastError(Arc<Mutex<Option<String>>>);

impl LastError {
    fn set(&self, error: String) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// A namespaced object: `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A watched object changed in a way that can change bundles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// `data_keys`: the keys whose content changed; `None` when the object appeared or vanished.
    ConfigMap { object: ObjectKey, data_keys: Option<BTreeSet<String>> },
    /// A bundle appeared, vanished, or changed its content, signer or labels.
    TrustBundle { name: String, before: Option<BundleMeta>, after: Option<BundleMeta> },
    /// The CSIDriver check passed after a refusal or no answer: every spec that reads from the
    /// cluster may have been rendered or refreshed without it.
    ClusterSourcesAllowed,
}

impl Change {
    /// The kind and object that changed, for people (`ConfigMap shop/corp-ca`); `None` for
    /// [`Change::ClusterSourcesAllowed`], which names no object.
    pub fn object(&self) -> Option<(SourceKind, String)> {
        match self {
            Self::ConfigMap { object, .. } => {
                Some((SourceKind::ConfigMap, format!("{} {object}", config_maps::KIND.title)))
            }
            Self::TrustBundle { name, .. } => {
                Some((SourceKind::ClusterTrustBundle, format!("{} {name}", trust_bundles::KIND.title)))
            }
            Self::ClusterSourcesAllowed => None,
        }
    }
}

/// The caches, shared by publish (readers and holders) and rotation (changes).
#[derive(Debug)]
pub struct Cluster {
    trust_bundles: trust_bundles::TrustBundles,
    config_maps: config_maps::ConfigMaps,
    defaults: Defaults,
    secrets: secrets::Secrets,
    pod_info: Arc<csi_driver::PodInfoCheck>,
}

/// A publish's hold on the watches its spec needs; given back on drop.
#[derive(Debug)]
pub struct Hold {
    cluster: Arc<Cluster>,
    config_maps: Vec<ObjectKey>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.cluster.config_maps.release(&self.config_maps);
    }
}

impl Cluster {
    /// Starts API discovery and the CSIDriver check of `driver_name` in the background;
    /// watches start on first use. Must run inside the tokio runtime. The receiver gets every
    /// [`Change`]. `defaults` join every spec that does not opt out.
    pub fn new(
        clients: Clients,
        defaults: Defaults,
        driver_name: &str,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Change>) {
        let (changes, receiver) = mpsc::unbounded_channel();
        let Clients { driver, as_pod } = clients;
        let cluster = Self {
            trust_bundles: trust_bundles::TrustBundles::new(driver.clone(), changes.clone()),
            pod_info: csi_driver::PodInfoCheck::start(driver.clone(), driver_name, changes.clone()),
            config_maps: config_maps::ConfigMaps::new(driver, changes, defaults.namespace.clone()),
            defaults,
            secrets: secrets::Secrets::new(as_pod),
        };
        (Arc::new(cluster), receiver)
    }

    /// Whether cluster sources may be served now (from memory, no request).
    pub fn pod_info(&self) -> PodInfoMode {
        self.pod_info.state()
    }

    /// A publish or refresh went without cluster sources ([`Cluster::pod_info`] was not on):
    /// once they are allowed, the specs that read from the cluster are refreshed.
    pub fn went_without(&self) {
        self.pod_info.missed();
    }

    /// For a publish naming cluster sources while they are not allowed: reads the CSIDriver
    /// again (bounded, rate-limited), so a fixed object takes effect without a restart.
    pub async fn recheck_pod_info(&self) {
        self.pod_info.recheck_unless_on().await;
    }

    /// Holds the watches `spec` needs (starting new ones) and waits, at most
    /// [`FIRST_SYNC_TIMEOUT`], until each has its first list. A warm spec's watches are running
    /// and synced: no request, no wait.
    ///
    /// # Errors
    /// [`Error::NotSynced`] when a first list does not complete in time.
    pub async fn hold(self: &Arc<Self>, spec: &VolumeSpec) -> Result<Hold> {
        let wanted = self.wanted(spec);
        let keys = wanted.config_map_keys();
        let states = self.config_maps.hold(&keys);
        let hold = Hold { cluster: Arc::clone(self), config_maps: keys };
        let trust_bundles = wanted.uses_trust_bundles().then(|| self.trust_bundles.subscribe());
        let wait = async {
            for (_, mut state) in states.clone() {
                let _ = state.wait_for(Option::is_some).await;
            }
            if let Some(mut state) = trust_bundles.clone() {
                let _ = state.wait_for(Option::is_some).await;
            }
        };
        if tokio::time::timeout(FIRST_SYNC_TIMEOUT, wait).await.is_err() {
            // Each pending cache with its watch's last error, if it had one.
            let mut pending: Vec<(String, Option<String>)> = states
                .iter()
                .filter(|(_, state)| state.borrow().is_none())
                .map(|(key, _)| (format!("ConfigMap {key}"), self.config_maps.last_error(key)))
                .collect();
            if trust_bundles.is_some_and(|state| state.borrow().is_none()) {
                pending.push(("ClusterTrustBundles".to_owned(), self.trust_bundles.last_error()));
            }
            let what = pending.iter().map(|(what, _)| what.as_str()).collect::<Vec<_>>().join(", ");
            let errors: Vec<String> = match pending.as_slice() {
                [(_, error)] => error.iter().cloned().collect(),
                _ => pending.iter().filter_map(|(what, error)| Some(format!("{what}: {}", error.as_ref()?))).collect(),
            };
            let last_error = (!errors.is_empty()).then(|| errors.join("; "));
            return Err(Error::NotSynced { what, waited: FIRST_SYNC_TIMEOUT, last_error });
        }
        Ok(hold)
    }

    /// Keeps exactly the watches that live specs (computed under the lock) and holds need:
    /// after an unpublish, the last volume naming an object gives up its watch; after a
    /// restart, adopted specs get theirs.
    pub fn retain(&self, live_specs: impl FnOnce() -> Vec<VolumeSpec>) {
        let mut uses_trust_bundles = false;
        let mut live_specs_now = Vec::new();
        self.config_maps.retain(|| {
            live_specs_now = live_specs();
            let wanted: Vec<Wanted> = live_specs_now.iter().map(|spec| self.wanted(spec)).collect();
            uses_trust_bundles = wanted.iter().any(Wanted::uses_trust_bundles);
            wanted.iter().flat_map(Wanted::config_map_keys).collect::<HashSet<_>>()
        });
        if uses_trust_bundles {
            let _ = self.trust_bundles.subscribe();
        }
        self.secrets.retain(&live_specs_now);
    }

    /// Waits (unbounded: the watches retry with backoff) until every cache `specs` need has its
    /// first list. For readiness: adopted volumes need their caches before they can refresh.
    /// That includes the CSIDriver check's answer when any of them reads from the cluster.
    pub async fn synced(&self, specs: &[VolumeSpec]) {
        if specs.iter().any(|spec| self.reads_for(spec)) {
            self.pod_info.answered().await;
        }
        let wanted: Vec<Wanted> = specs.iter().map(|spec| self.wanted(spec)).collect();
        let keys: HashSet<ObjectKey> = wanted.iter().flat_map(Wanted::config_map_keys).collect();
        for (_, mut state) in self.config_maps.states(&keys) {
            let _ = state.wait_for(Option::is_some).await;
        }
        if wanted.iter().any(Wanted::uses_trust_bundles) {
            let _ = self.trust_bundles.subscribe().wait_for(Option::is_some).await;
        }
    }

    /// The certificates the cluster gives `spec`, from memory: its Secret sources as `secrets`
    /// read them this publish, or (`None`, a refresh) as they were last read.
    ///
    /// # Errors
    /// A missing source (unless `optional`), a source without certificates or with a private
    /// key, a cache not synced yet, or Secrets not read since the driver started.
    pub fn certificates(&self, spec: &VolumeSpec, secrets: Option<&SecretsRead>) -> Result<Selected> {
        let mut selected = select::certificates(&self.wanted(spec), &self.trust_bundles, &self.config_maps)?;
        match secrets {
            Some(read) => selected.certificates.extend(read.certificates.iter().cloned()),
            None if spec.has_secret_sources() => selected.certificates.extend(self.secrets.cached(spec)?),
            None => {}
        }
        Ok(selected)
    }

    /// What volume health looks at: the certificates `spec` gets from the cluster now, as far as
    /// the caches have them (a source that fails is the refresh's problem, reported first; Secrets
    /// not read since the driver started count once read).
    pub fn certificates_for_health(&self, spec: &VolumeSpec) -> Vec<bundle::Certificate> {
        let mut certificates = select::certificates(&self.wanted(spec), &self.trust_bundles, &self.config_maps)
            .map(|selected| selected.certificates)
            .unwrap_or_default();
        if spec.has_secret_sources() {
            certificates.extend(self.secrets.cached(spec).unwrap_or_default());
        }
        certificates
    }

    /// Reads the Secrets `spec` names with the pod's `token`: on every publish of such a spec,
    /// warm or not, since this read is the pod's access check (see [`secrets`]).
    ///
    /// # Errors
    /// As [`secrets::Secrets::read`].
    pub async fn read_secrets(&self, spec: &VolumeSpec, token: &PodToken) -> Result<SecretsRead> {
        self.secrets.read(spec, token).await
    }

    /// Whether a refresh (no token) can render `spec`: its Secrets, if any, were read since the
    /// driver started.
    pub fn refreshable(&self, spec: &VolumeSpec) -> bool {
        !spec.has_secret_sources() || self.secrets.all_read(spec)
    }

    /// Whether `spec` renders from one of the Secret `slots`.
    pub fn uses_secrets(spec: &VolumeSpec, slots: &[SecretSlot]) -> bool {
        secrets::Secrets::uses_any(spec, slots)
    }

    /// Whether `change` can change the bundle of `spec` (its own sources or the defaults).
    pub fn affects(&self, change: &Change, spec: &VolumeSpec) -> bool {
        select::affects(change, &self.wanted(spec))
    }

    /// Whether `spec` reads anything from the cluster: sources of its own, or the defaults.
    pub fn reads_for(&self, spec: &VolumeSpec) -> bool {
        spec.has_cluster_sources() || self.defaults.apply_to(spec)
    }

    fn wanted(&self, spec: &VolumeSpec) -> Wanted {
        Wanted::of(spec, &self.defaults)
    }

    /// Watches open per watched kind, by its tag; every kind listed, with 0 when `cluster` is
    /// `None` (standalone): ConfigMaps one per distinct object referenced, ClusterTrustBundles
    /// the one shared watch once started.
    pub fn open_watches(cluster: Option<&Self>) -> Vec<(&'static str, usize)> {
        vec![
            (config_maps::KIND.tag, cluster.map_or(0, |c| c.config_maps.watch_count())),
            (trust_bundles::KIND.tag, cluster.map_or(0, |c| usize::from(c.trust_bundles.is_watching()))),
        ]
    }
}

//! Cluster sources: ClusterTrustBundles and ConfigMaps read through the Kubernetes API as the
//! driver, cached by watches (never polled), so a publish reads memory and a warm publish sends
//! no request; Secrets read as the pod, with its own token, on every publish that names them.
//!
//! - [`kind`]: the socket a kind plugs into ([`kind::Kind`], over the spec's
//!   [`KindAttributes`](crate::domain::KindAttributes)); [`KINDS`], here, is the one list of
//!   kinds. Each kind's file holds all of it: its name (which its certificates' typed
//!   provenance carries), its attributes, its cache, its selection of certificates for a spec,
//!   and which changes touch a spec.
//! - [`trust_bundles`]: one shared watch of all ClusterTrustBundles, started on first use.
//! - [`config_maps`]: one single-object watch per referenced ConfigMap, shared and dropped with
//!   the last volume that names it.
//! - [`secrets`]: Secrets read with the pod's token, one key each, never watched.
//! - [`watch_loop`]: the one watch-and-cache loop every watched kind runs (watch → parse →
//!   store → diff → typed change); a kind implements [`watch_loop::Watched`].
//! - [`content`]: what a ConfigMap key or bundle holds, parsed once per change.
//! - [`client`]: the mode (kubeconfig, in-cluster, standalone) and its clients.
//! - [`csi_driver`]: the check that the CSIDriver sets `podInfoOnMount: true`, retried until
//!   the API server answers.
//! - [`api_error`]: API errors as a person reads them.
//! - [`defaults`]: the driver-wide default sources every volume gets unless it opts out.
//! - [`token`]: the pod's token from the kubelet's JSON, never printed.

mod api_error;
mod client;
mod config_maps;
mod connections;
mod content;
mod csi_driver;
mod defaults;
pub mod kind;
mod secrets;
mod token;
mod trust_bundles;
pub mod watch_loop;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::bundle::{self, KindName};
use crate::domain::{self, KindAttributes, Reference, SourceKind, VolumeSpec};

pub use client::{Clients, Mode};
pub use connections::{Connections, WATCHES_PER_CONNECTION};
pub use csi_driver::{PodInfoMode, PodInfoProblem};
pub use defaults::{Defaults, Error as DefaultsError, Flags as DefaultsFlags};
use kind::{Kind, Want, Wanted};
pub use kind::{ObjectChange, PodReads, Registration, Selectable, Selected, Slot};
pub use token::{PodToken, TokenError};
// For the fuzz targets: a Secret's JSON as the API server returns it, and a key's value.
#[doc(hidden)]
pub use content::{KeyContent, classify};
#[doc(hidden)]
pub use secrets::wanted_data;
pub use trust_bundles::Version;

/// Every kind the driver serves, in the order their certificates join a bundle. Adding a kind is
/// its file plus its line here.
pub const KINDS: &[Registration] = &[trust_bundles::REGISTRATION, config_maps::REGISTRATION, secrets::REGISTRATION];

/// Every registered kind's attributes, for the spec parser.
pub fn attributes() -> Vec<&'static dyn KindAttributes> {
    KINDS.iter().map(|registration| registration.attributes).collect()
}

/// Parses a volume's attributes with every registered kind.
///
/// # Errors
/// As [`VolumeSpec::from_attributes`].
pub fn parse_attributes(
    attributes: &std::collections::HashMap<String, String>,
) -> Result<(VolumeSpec, domain::PodInfo), domain::Error> {
    VolumeSpec::from_attributes(attributes, &self::attributes())
}

/// Whether `spec` names a kind read as the pod (so its publish needs the pod's token).
pub fn reads_as_pod(spec: &VolumeSpec) -> bool {
    KINDS.iter().any(|registration| {
        registration.attributes.reads_as_pod() && !spec.cluster.of(registration.attributes.name().tag).is_empty()
    })
}

/// "ClusterTrustBundles a, b and ConfigMaps x": what a spec asks of the cluster, for messages.
pub fn describe(spec: &VolumeSpec) -> String {
    let mut parts = Vec::new();
    for tag in spec.cluster.named.keys() {
        let title = name_of(tag).map_or(tag.as_str(), |name| name.title);
        let names: Vec<String> =
            spec.cluster.objects(tag).map(|(name, key)| Reference::object(name, key).to_string()).collect();
        if !names.is_empty() {
            parts.push(format!("{title}s {}", names.join(", ")));
        }
        for signer in spec.cluster.signers(tag) {
            parts.push(format!("the {title}s of signer {}", signer.signer_name));
        }
    }
    parts.join(" and ")
}

/// The kinds' names by tag, for turning a tag back into its [`KindName`].
pub fn name_of(tag: &str) -> Option<KindName> {
    KINDS.iter().map(|registration| registration.attributes.name()).find(|name| name.tag == tag)
}

/// Checks a registration list: distinct tags and attributes (a test runs it over [`KINDS`]).
#[cfg(test)]
fn check(kinds: &[&'static dyn KindAttributes]) -> std::result::Result<(), String> {
    use std::collections::BTreeMap;
    let mut tags = BTreeMap::new();
    let mut attributes = BTreeMap::new();
    for kind in kinds {
        if let Some(other) = tags.insert(kind.name().tag, kind.name().title) {
            return Err(format!("tag {:?} is both {other} and {}", kind.name().tag, kind.name().title));
        }
        for attribute in kind.attributes() {
            if let Some(other) = attributes.insert(*attribute, kind.name().title) {
                return Err(format!("attribute {attribute:?} is both {other}'s and {}'s", kind.name().title));
            }
        }
    }
    Ok(())
}

/// What `spec` wants of each of `kinds` (with `defaults` unless it opts out).
fn wanted_of<'k>(
    spec: &VolumeSpec,
    defaults: &Defaults,
    kinds: impl Iterator<Item = &'k dyn KindAttributes> + Clone,
) -> Wanted {
    let apply = defaults.apply_to(spec);
    let by_kind = kinds
        .clone()
        .map(|kind| {
            let own = apply.then(|| (defaults.of(kind.name().tag), defaults.namespace.as_str()));
            Want::of(kind, spec, own)
        })
        .collect();
    let unknown = spec
        .cluster
        .named
        .keys()
        .filter(|tag| !kinds.clone().any(|kind| kind.name().tag == tag.as_str()))
        .cloned()
        .collect();
    Wanted { by_kind, unknown }
}

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
    #[error(
        "namespace {namespace} would hold {wanted} {what} on this node, over its budget of {budget} ({flag}); other namespaces' volumes are unaffected. Name fewer objects across this namespace's volumes on this node, or have the cluster operator raise {flag}"
    )]
    OverNamespaceBudget { namespace: String, what: &'static str, wanted: usize, budget: usize, flag: &'static str },
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
        "the volume names sources of kind {tag:?}, which this driver does not serve (it was published by another version of trustmount); republish it, or run a driver that serves the kind"
    )]
    UnknownKind { tag: String },
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
pub struct LastError(Arc<Mutex<Option<String>>>);

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

/// What the kinds' caches tell rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// An object appeared, vanished, or changed in a way that can change bundles.
    Object(ObjectChange),
    /// The CSIDriver check passed after a refusal or no answer: every spec that reads from the
    /// cluster may have been rendered or refreshed without it.
    ClusterSourcesAllowed,
}

impl Change {
    /// The kind and object that changed, for people (`ConfigMap shop/corp-ca`); `None` for
    /// [`Change::ClusterSourcesAllowed`], which names no object.
    pub fn object(&self) -> Option<(SourceKind, String)> {
        match self {
            Self::Object(change) => {
                let object = if change.object.namespace.is_empty() {
                    change.object.name.clone()
                } else {
                    change.object.to_string()
                };
                Some((SourceKind::Cluster(change.kind.tag), format!("{} {object}", change.kind.title)))
            }
            Self::ClusterSourcesAllowed => None,
        }
    }
}

/// The caches, shared by publish (readers and holders) and rotation (changes).
#[derive(Debug)]
pub struct Cluster {
    /// Started from `registrations`, index for index.
    kinds: Vec<Box<dyn Kind>>,
    registrations: Vec<Registration>,
    defaults: Defaults,
    pod_info: Arc<csi_driver::PodInfoCheck>,
    /// Held while live specs are read and handed to the kinds, so two retains cannot apply
    /// stale views out of order; it keeps the version of the live set last retained.
    retaining: Mutex<Option<u64>>,
}

/// A publish's hold on what its spec needs; given back on drop.
#[derive(Debug)]
pub struct Hold {
    cluster: Arc<Cluster>,
    wanted: Wanted,
}

impl Drop for Hold {
    fn drop(&mut self) {
        for (kind, want) in self.cluster.kinds.iter().zip(&self.wanted.by_kind) {
            if !want.is_empty() {
                kind.release(want);
            }
        }
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Registration").field(&self.attributes.name().tag).finish()
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
        limits: domain::Limits,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Change>) {
        Self::with_kinds(clients, defaults, driver_name, limits, KINDS)
    }

    /// [`Cluster::new`] with `registrations` instead of [`KINDS`] (a test's own kind).
    pub fn with_kinds(
        clients: Clients,
        defaults: Defaults,
        driver_name: &str,
        limits: domain::Limits,
        registrations: &[Registration],
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Change>) {
        let (changes, receiver) = mpsc::unbounded_channel();
        let Clients { driver, as_pod, watches } = clients;
        let context = kind::Context {
            driver: driver.clone(),
            as_pod,
            watches,
            changes: changes.clone(),
            defaults_namespace: defaults.namespace.clone(),
            limits,
        };
        let cluster = Self {
            kinds: registrations.iter().map(|registration| (registration.start)(&context)).collect(),
            registrations: registrations.to_vec(),
            pod_info: csi_driver::PodInfoCheck::start(driver, driver_name, changes),
            defaults,
            retaining: Mutex::default(),
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

    fn wanted(&self, spec: &VolumeSpec) -> Wanted {
        wanted_of(spec, &self.defaults, self.registrations.iter().map(|registration| registration.attributes))
    }

    /// Each kind with what `wanted` wants of it, for the kinds it names.
    fn each<'a>(&'a self, wanted: &'a Wanted) -> impl Iterator<Item = (&'a dyn Kind, &'a kind::Want)> + 'a {
        self.kinds.iter().zip(&wanted.by_kind).filter(|(_, want)| !want.is_empty()).map(|(kind, want)| (&**kind, want))
    }

    /// Holds what `spec` needs (starting new watches) and waits, at most
    /// [`FIRST_SYNC_TIMEOUT`], until each has its first list. A warm spec's watches are running
    /// and synced: no request, no wait.
    ///
    /// # Errors
    /// [`Error::NotSynced`] when a first list does not complete in time.
    pub async fn hold(self: &Arc<Self>, spec: &VolumeSpec) -> Result<Hold> {
        let wanted = self.wanted(spec);
        if let Some(tag) = wanted.unknown.first() {
            return Err(Error::UnknownKind { tag: tag.clone() });
        }
        for (index, (kind, want)) in self.each(&wanted).enumerate() {
            if let Err(over) = kind.hold(want) {
                self.each(&wanted).take(index).for_each(|(kind, want)| kind.release(want));
                return Err(over);
            }
        }
        let hold = Hold { cluster: Arc::clone(self), wanted };
        let wait = futures::future::join_all(self.each(&hold.wanted).map(|(kind, want)| kind.synced(want)));
        if tokio::time::timeout(FIRST_SYNC_TIMEOUT, wait).await.is_err() {
            // Each pending cache with its watch's last error, if it had one.
            let pending: Vec<(String, Option<String>)> =
                self.each(&hold.wanted).flat_map(|(kind, want)| kind.pending(want)).collect();
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

    /// Keeps exactly what live specs (read under the lock) and holds need: after an unpublish,
    /// the last volume naming an object gives up its watch; after a restart, adopted specs get
    /// theirs. The same `live_changes` as last time is the same live set: the kinds already
    /// keep what it needs (holds give theirs back on their own), so nothing is read. Publishes
    /// and unpublishes of a spec that stays live, most of them, cost no work over every live
    /// spec then.
    pub fn retain(&self, live_changes: u64, live_specs: impl FnOnce() -> Vec<VolumeSpec>) {
        let mut retained = self.retaining.lock().unwrap_or_else(PoisonError::into_inner);
        if *retained == Some(live_changes) {
            return;
        }
        *retained = Some(live_changes);
        let wanted: Vec<Wanted> = live_specs().iter().map(|spec| self.wanted(spec)).collect();
        for (index, kind) in self.kinds.iter().enumerate() {
            let wants: Vec<&kind::Want> = wanted.iter().map(|wanted| &wanted.by_kind[index]).collect();
            kind.retain(&wants);
        }
    }

    /// Waits (unbounded: the watches retry with backoff) until every cache `specs` need has its
    /// first list. For readiness: adopted volumes need their caches before they can refresh.
    /// That includes the CSIDriver check's answer when any of them reads from the cluster.
    pub async fn synced(&self, specs: &[VolumeSpec]) {
        if specs.iter().any(|spec| self.reads_for(spec)) {
            self.pod_info.answered().await;
        }
        for spec in specs {
            let wanted = self.wanted(spec);
            for (kind, want) in self.each(&wanted) {
                kind.synced(want).await;
            }
        }
    }

    /// The certificates the cluster gives `spec`, from memory: what kinds read as the pod give
    /// it as `reads` read them this publish, or (`None`, a refresh) as they were last read.
    ///
    /// # Errors
    /// A missing source (unless `optional`), a source without certificates or with a private
    /// key, a cache not synced yet, what is read as the pod not read since the driver started,
    /// or a kind this driver does not serve.
    pub fn certificates(&self, spec: &VolumeSpec, reads: Option<&PodReads>) -> Result<Selected> {
        let wanted = self.wanted(spec);
        if let Some(tag) = wanted.unknown.first() {
            return Err(Error::UnknownKind { tag: tag.clone() });
        }
        let mut selected = Selected::default();
        for (kind, want) in self.each(&wanted) {
            match reads.and_then(|reads| reads.by_kind.get(kind.name().tag)) {
                Some(read) => selected.certificates.extend(read.iter().cloned()),
                None => kind.select(want, &mut selected)?,
            }
        }
        Ok(selected)
    }

    /// What volume health looks at: the certificates `spec` gets from the cluster now, as far as
    /// the caches have them (a kind that fails is the refresh's problem, reported first; what is
    /// read as the pod and not read since the driver started counts once read).
    pub fn certificates_for_health(&self, spec: &VolumeSpec) -> Vec<bundle::Certificate> {
        let wanted = self.wanted(spec);
        let mut certificates = Vec::new();
        for (kind, want) in self.each(&wanted) {
            let mut selected = Selected::default();
            if kind.select(want, &mut selected).is_ok() {
                certificates.extend(selected.certificates);
            }
        }
        certificates
    }

    /// Reads what `spec` names of kinds read as the pod, with the pod's `token`: on every
    /// publish of such a spec, warm or not, since this read is the pod's access check.
    ///
    /// # Errors
    /// As the kind's read (403, 401, missing, no certificates, a failed request).
    pub async fn read_as_pod(&self, spec: &VolumeSpec, token: &PodToken) -> Result<PodReads> {
        let wanted = self.wanted(spec);
        let mut reads = PodReads::default();
        for (kind, want) in self.each(&wanted) {
            if let Some(read) = kind.read_as_pod(want, token) {
                reads.add(kind.name().tag, read.await?);
            }
        }
        Ok(reads)
    }

    /// Whether a refresh (no token) can render `spec`: what it reads as the pod, if anything,
    /// was read since the driver started.
    pub fn refreshable(&self, spec: &VolumeSpec) -> bool {
        let wanted = self.wanted(spec);
        self.each(&wanted).all(|(kind, want)| kind.refreshable(want))
    }

    /// Whether `spec` renders from one of the `slots` a publish just read as the pod.
    pub fn uses_read(&self, spec: &VolumeSpec, slots: &[Slot]) -> bool {
        let wanted = self.wanted(spec);
        self.each(&wanted).any(|(kind, want)| kind::uses_slot(kind.name().tag, want, slots))
    }

    /// Whether `change` can change the bundle of `spec` (its own sources or the defaults).
    pub fn affects(&self, change: &Change, spec: &VolumeSpec) -> bool {
        let wanted = self.wanted(spec);
        match change {
            Change::Object(change) => {
                self.each(&wanted).any(|(kind, want)| kind.name().tag == change.kind.tag && kind.affects(change, want))
            }
            Change::ClusterSourcesAllowed => self.each(&wanted).next().is_some(),
        }
    }

    /// Whether `spec` reads anything from the cluster: sources of its own, or the defaults.
    pub fn reads_for(&self, spec: &VolumeSpec) -> bool {
        spec.has_cluster_sources() || self.defaults.apply_to(spec)
    }

    /// Watches open per watched kind, by its tag; every watched kind listed, with 0 when
    /// `cluster` is `None` (standalone).
    pub fn open_watches(cluster: Option<&Self>) -> Vec<(&'static str, usize)> {
        match cluster {
            Some(cluster) => cluster
                .registrations
                .iter()
                .zip(&cluster.kinds)
                .filter(|(registration, _)| registration.watched)
                .map(|(registration, kind)| (registration.attributes.name().tag, kind.open_watches()))
                .collect(),
            None => KINDS
                .iter()
                .filter(|registration| registration.watched)
                .map(|registration| (registration.attributes.name().tag, 0))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::domain::{Error, POD_NAMESPACE, SERVICE_ACCOUNT, SERVICE_ACCOUNT_TOKENS};
    use crate::sources::cluster::kind::Want;

    /// `a_spec_without_secrets_keeps_its_v2_digest`'s spec, digested by the code of 6fa5ddb
    /// (and by hand: SHA-256 of its canonical JSON, first 16 bytes).
    const V2_DIGEST: &str = "49bbde234262aab01b085861813a77fa";

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_registered_kinds_have_distinct_tags_and_attributes() {
        check(&attributes()).unwrap();
        let twice = [trust_bundles::REGISTRATION.attributes, trust_bundles::REGISTRATION.attributes];
        assert!(check(&twice).is_err());
    }

    #[test]
    fn cluster_attributes_are_parsed_sorted_and_deduplicated() {
        let (spec, _) = parse_attributes(&attrs(&[
            ("clusterTrustBundles", "b, a,b"),
            ("configMaps", "team-ca:ca.crt, corp-ca,corp-ca"),
            ("signerName", "example.com/corp"),
            ("labelSelector", "env in (prod), !legacy"),
            ("optional", "true"),
            ("defaults", "false"),
        ]))
        .unwrap();
        let cluster = &spec.cluster;
        assert_eq!(cluster.objects("clustertrustbundle").map(|(name, _)| name).collect::<Vec<_>>(), ["a", "b"]);
        let refs: Vec<String> = cluster.of("configmap").iter().map(ToString::to_string).collect();
        assert_eq!(refs, ["corp-ca", "team-ca:ca.crt"]);
        let signer = cluster.signers("clustertrustbundle").next().unwrap();
        assert_eq!(signer.signer_name, "example.com/corp");
        assert_eq!(signer.selector.to_string(), "env in (prod),!legacy");
        assert!(cluster.optional && !cluster.defaults);
        assert!(spec.has_cluster_sources());
    }

    #[test]
    fn another_namespace_is_refused_by_name() {
        for (key, value) in [("configMaps", "team-b/ca"), ("configMaps", "ok, team-b/ca:ca.crt")] {
            let error = parse_attributes(&attrs(&[(key, value)])).unwrap_err();
            assert!(matches!(&error, Error::OtherNamespace { namespace, .. } if namespace == "team-b"), "{error:?}");
            assert!(error.to_string().contains("own namespace"), "{error}");
        }
    }

    #[test]
    fn bad_cluster_values_are_refused() {
        for (key, value) in [
            ("configMaps", ""),
            ("configMaps", "a,,b"),
            ("configMaps", "Upper"),
            ("configMaps", "ca:"),
            ("configMaps", "ca:bad key"),
            ("clusterTrustBundles", "-x"),
            ("signerName", "no-slash"),
            ("labelSelector", "a in"),
            ("optional", "yes"),
        ] {
            let with_signer = [(key, value), ("signerName", "example.com/s")];
            let pairs: &[(&str, &str)] = if key == "labelSelector" { &with_signer } else { &with_signer[..1] };
            assert!(parse_attributes(&attrs(pairs)).is_err(), "{key}={value:?}");
        }
        let error = parse_attributes(&attrs(&[("labelSelector", "a=b")])).unwrap_err();
        assert_eq!(error, Error::SelectorWithoutSigner { selector: "labelSelector", signer: "signerName" });
    }

    #[test]
    fn cluster_sources_are_part_of_the_digest_and_equal_ones_share_it() {
        let digest = |pairs: &[(&str, &str)]| parse_attributes(&attrs(pairs)).unwrap().0.digest();
        let plain = digest(&[(POD_NAMESPACE, "a")]);
        let a = digest(&[(POD_NAMESPACE, "a"), ("configMaps", "corp-ca")]);
        let b = digest(&[(POD_NAMESPACE, "a"), ("configMaps", "team-ca")]);
        let key = digest(&[(POD_NAMESPACE, "a"), ("configMaps", "corp-ca:ca.crt")]);
        assert_ne!(plain, a);
        assert_ne!(a, b);
        assert_ne!(a, key);
        let selector = |s| digest(&[("signerName", "example.com/s"), ("labelSelector", s)]);
        assert_eq!(selector("a=1,b=2"), selector("b=2, a==1"));
        assert_ne!(selector("a=1"), selector("a=2"));
        assert_eq!(
            digest(&[("configMaps", "x, y")]),
            digest(&[("configMaps", "y,x")]),
            "the order of a list is not content"
        );
    }

    #[test]
    fn secrets_take_key_ca_crt_by_default_and_refuse_another_namespace() {
        let (spec, _) = parse_attributes(&attrs(&[
            (POD_NAMESPACE, "shop"),
            (SERVICE_ACCOUNT, "web"),
            ("secrets", "corp-ca-secret, other:ca.pem, corp-ca-secret:ca.crt"),
        ]))
        .unwrap();
        let refs: Vec<String> = spec.cluster.of("secret").iter().map(ToString::to_string).collect();
        assert_eq!(refs, ["corp-ca-secret:ca.crt", "other:ca.pem"], "a bare name is name:ca.crt");
        assert_eq!(spec.cluster.service_account, "web");
        assert!(reads_as_pod(&spec) && spec.has_cluster_sources());
        let error = parse_attributes(&attrs(&[("secrets", "team-b/ca")])).unwrap_err();
        assert!(matches!(&error, Error::OtherNamespace { namespace, .. } if namespace == "team-b"), "{error:?}");
        for bad in ["", "Upper", "ca:", "ca:bad key", "a,,b"] {
            let error = parse_attributes(&attrs(&[("secrets", bad)])).unwrap_err();
            assert!(matches!(error, Error::InvalidValue { .. }), "{bad:?}: {error:?}");
        }
    }

    /// Pods of two ServiceAccounts never share a directory rendered from a Secret; without
    /// Secrets the ServiceAccount is no content, as before.
    #[test]
    fn the_service_account_is_in_the_digest_only_of_specs_with_secrets() {
        let digest = |pairs: &[(&str, &str)]| parse_attributes(&attrs(pairs)).unwrap().0.digest();
        let with = |account: &str| digest(&[(POD_NAMESPACE, "a"), (SERVICE_ACCOUNT, account), ("secrets", "ca")]);
        assert_ne!(with("granted"), with("other"));
        assert_eq!(with("granted"), with("granted"));
        let without = |account: &str| digest(&[(POD_NAMESPACE, "a"), (SERVICE_ACCOUNT, account), ("configMaps", "ca")]);
        assert_eq!(without("granted"), without("other"));
        let (spec, _) = parse_attributes(&attrs(&[(SERVICE_ACCOUNT, "web"), ("configMaps", "ca")])).unwrap();
        assert!(spec.cluster.service_account.is_empty());
    }

    #[test]
    fn the_token_json_is_no_unknown_attribute_and_no_content() {
        let plain = [(POD_NAMESPACE, "a"), (SERVICE_ACCOUNT, "web"), ("secrets", "ca")];
        let (without, _) = parse_attributes(&attrs(&plain)).unwrap();
        let mut with_token = plain.to_vec();
        with_token.push((SERVICE_ACCOUNT_TOKENS, r#"{"":{"token":"abc","expirationTimestamp":"x"}}"#));
        let (with, _) = parse_attributes(&attrs(&with_token)).unwrap();
        assert_eq!(with, without);
        assert_eq!(with.digest(), without.digest());
    }

    /// A spec of ConfigMaps keeps the digest the code before Secret sources gave it (6fa5ddb):
    /// its directory is adopted across the upgrade.
    #[test]
    fn a_spec_without_secrets_keeps_its_v2_digest() {
        let (spec, _) = parse_attributes(&attrs(&[
            (POD_NAMESPACE, "shop"),
            (SERVICE_ACCOUNT, "web"),
            ("configMaps", "corp-ca, team-ca:ca.crt"),
            ("optional", "true"),
        ]))
        .unwrap();
        assert_eq!(spec.digest().as_str(), V2_DIGEST);
    }

    /// Every form a spec could take before source kinds became a trait, pinned to the digests
    /// the code of e9a8488 gave them: their directories are adopted across the upgrade.
    #[test]
    fn a_spec_of_each_kind_keeps_the_digest_it_had_before_the_trait() {
        let digest = |pairs: &[(&str, &str)]| parse_attributes(&attrs(pairs)).unwrap().0.digest();
        let shop = (POD_NAMESPACE, "shop");
        let pins = [
            (digest(&[shop, ("clusterTrustBundles", "corp, other")]), "f66294bf5e37bcf8aa82836a34a310bd"),
            (
                digest(&[shop, ("signerName", "example.com/corp"), ("labelSelector", "env=prod")]),
                "04b8b000f0f27b2b32bc63cff9254580",
            ),
            (
                digest(&[shop, ("configMaps", "corp-ca:ca.crt"), ("defaults", "false")]),
                "b82a192f251561f0b452105855869820",
            ),
            (
                digest(&[shop, (SERVICE_ACCOUNT, "web"), ("secrets", "corp-ca, other:ca.pem")]),
                "13d6d45963e374408a72b9c7b18f5cee",
            ),
            (
                digest(&[
                    shop,
                    (SERVICE_ACCOUNT, "web"),
                    ("secrets", "corp-ca"),
                    ("configMaps", "team-ca"),
                    ("clusterTrustBundles", "corp"),
                    ("optional", "true"),
                ]),
                "e3b469c6662203dc33af928469de6355",
            ),
        ];
        for (i, (digest, pinned)) in pins.iter().enumerate() {
            assert_eq!(digest.as_str(), *pinned, "spec {i}");
        }
    }

    fn change(namespace: &str, name: &str, keys: Option<&[&str]>) -> ObjectChange {
        ObjectChange {
            kind: config_maps::KIND,
            object: ObjectKey { namespace: namespace.to_owned(), name: name.to_owned() },
            keys: keys.map(|keys| keys.iter().map(|k| (*k).to_owned()).collect::<BTreeSet<_>>()),
            selectable: Vec::new(),
        }
    }

    /// What `spec` wants of the ConfigMaps kind, with `defaults`.
    fn config_maps_of(spec: &VolumeSpec, defaults: &Defaults) -> Want {
        let index = KINDS.iter().position(|r| r.attributes.name().tag == config_maps::KIND.tag).unwrap();
        wanted_of(spec, defaults, attributes().into_iter()).by_kind.swap_remove(index)
    }

    fn spec(namespace: &str, config_maps: &str) -> VolumeSpec {
        parse_attributes(&attrs(&[(POD_NAMESPACE, namespace), ("configMaps", config_maps)])).unwrap().0
    }

    #[test]
    fn a_change_touches_only_wants_naming_its_object_in_its_namespace_and_key() {
        let none = Defaults::default();
        let bare = config_maps_of(&spec("a", "corp-ca"), &none);
        let one_key = config_maps_of(&spec("a", "corp-ca:ca.crt"), &none);
        let other_namespace = config_maps_of(&spec("b", "corp-ca"), &none);
        let other_name = config_maps_of(&spec("a", "team-ca"), &none);
        let readme = change("a", "corp-ca", Some(&["other.crt"]));
        assert!(readme.touches(&bare));
        assert!(!readme.touches(&one_key), "a name:key spec ignores other keys");
        assert!(!readme.touches(&other_namespace));
        assert!(!readme.touches(&other_name));
        assert!(change("a", "corp-ca", None).touches(&one_key), "it vanished");
        assert!(change("a", "corp-ca", Some(&["ca.crt"])).touches(&one_key));
    }

    #[test]
    fn defaults_join_every_spec_that_does_not_opt_out_and_read_the_drivers_namespace() {
        let defaults = Defaults {
            named: BTreeMap::from([
                ("configmap".to_owned(), vec![Reference::object("org-ca", None)]),
                ("clustertrustbundle".to_owned(), vec![Reference::object("corp", None)]),
            ]),
            namespace: "trustmount".to_owned(),
        };
        let plain = parse_attributes(&attrs(&[(POD_NAMESPACE, "a")])).unwrap().0;
        let wanted = wanted_of(&plain, &defaults, attributes().into_iter());
        let want = config_maps_of(&plain, &defaults);
        let driver_object = ObjectKey { namespace: "trustmount".to_owned(), name: "org-ca".to_owned() };
        assert_eq!(want.object_keys(), [driver_object]);
        assert!(wanted.by_kind.iter().all(|want| !want.refs.is_empty() || want == &Want::default()));
        assert!(change("trustmount", "org-ca", Some(&["ca.crt"])).touches(&want));
        assert!(!change("a", "org-ca", Some(&["ca.crt"])).touches(&want), "not the pod's namespace");
        let bundles =
            &wanted.by_kind[KINDS.iter().position(|r| r.attributes.name().tag == "clustertrustbundle").unwrap()];
        assert_eq!(bundles.refs, [(String::new(), Reference::object("corp", None))], "cluster-scoped: no namespace");
        let opted_out =
            parse_attributes(&attrs(&[(POD_NAMESPACE, "a"), ("configMaps", "org-ca"), ("defaults", "false")]))
                .unwrap()
                .0;
        let out = wanted_of(&opted_out, &defaults, attributes().into_iter());
        assert_eq!(out.by_kind.iter().filter(|want| !want.is_empty()).count(), 1, "its own ConfigMap only");
        let own = config_maps_of(&opted_out, &defaults);
        assert!(!change("trustmount", "org-ca", None).touches(&own));
        assert!(change("a", "org-ca", None).touches(&own), "its own ConfigMap of the same name");
    }

    #[test]
    fn a_spec_names_its_sources_for_people_and_an_unknown_kind_is_kept_apart() {
        let (spec, _) = parse_attributes(&attrs(&[
            (POD_NAMESPACE, "a"),
            ("clusterTrustBundles", "corp"),
            ("signerName", "example.com/s"),
            ("configMaps", "x, y:ca.crt"),
            (SERVICE_ACCOUNT, "web"),
            ("secrets", "s"),
        ]))
        .unwrap();
        assert_eq!(
            describe(&spec),
            "ClusterTrustBundles corp and the ClusterTrustBundles of signer example.com/s and ConfigMaps x, y:ca.crt and Secrets s:ca.crt"
        );
        let mut other = spec.clone();
        other.cluster.add("bundle", [Reference::object("org", None)]);
        assert_eq!(wanted_of(&other, &Defaults::default(), attributes().into_iter()).unknown, ["bundle"]);
    }
}

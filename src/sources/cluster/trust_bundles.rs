//! ClusterTrustBundles: cluster-scoped, few and public, so one shared watch of them all, started
//! on first use. The API version is found by discovery at start: `certificates.k8s.io/v1` where
//! served (GA in Kubernetes 1.37), else `v1beta1`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use k8s_openapi::api::certificates::{v1, v1beta1};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::content::{self, KeyContent};
use super::kind::{Kind, ObjectChange, Registration, Selectable, Selected, Want};
use super::watch_loop::{self, Objects, Synced, Watched, Writer};
use super::{Change, Error, FIRST_SYNC_TIMEOUT, LastError, Result, api_error};
use crate::bundle::Certificate;
use crate::bundle::{KindName, ObjectOrigin, Scope};
use crate::domain::{self, KindAttributes, Reference};

/// How certificates and messages name the kind.
pub const KIND: KindName = KindName { tag: domain::TRUST_BUNDLES_TAG, title: "ClusterTrustBundle" };
/// Volume attribute: ClusterTrustBundles by name, comma-separated.
pub const ATTR_NAMES: &str = "clusterTrustBundles";
/// Volume attribute: every ClusterTrustBundle of this signer (whose labels match `labelSelector`).
pub const ATTR_SIGNER_NAME: &str = "signerName";
/// Volume attribute: a Kubernetes label selector narrowing `signerName`.
pub const ATTR_LABEL_SELECTOR: &str = "labelSelector";

pub const REGISTRATION: Registration = Registration {
    attributes: &Attributes,
    watched: true,
    start: |context| Box::new(TrustBundles::new(context.driver.clone(), context.changes.clone(), context.limits)),
};

struct Attributes;

impl KindAttributes for Attributes {
    fn name(&self) -> KindName {
        KIND
    }

    fn attributes(&self) -> &'static [&'static str] {
        &[ATTR_NAMES, ATTR_SIGNER_NAME, ATTR_LABEL_SELECTOR]
    }

    fn parse(&self, given: &BTreeMap<&str, &str>) -> Result<Vec<Reference>, domain::Error> {
        let mut refs = Vec::new();
        if let Some(value) = given.get(ATTR_NAMES) {
            refs.extend(domain::parse_names(ATTR_NAMES, value, "a ClusterTrustBundle name", b":")?);
        }
        let selector = given.get(ATTR_LABEL_SELECTOR).map(|value| (ATTR_LABEL_SELECTOR, *value));
        match given.get(ATTR_SIGNER_NAME) {
            Some(signer) => refs.push(domain::parse_signer((ATTR_SIGNER_NAME, signer), selector)?),
            None if selector.is_some() => {
                return Err(domain::Error::SelectorWithoutSigner {
                    selector: ATTR_LABEL_SELECTOR,
                    signer: ATTR_SIGNER_NAME,
                });
            }
            None => {}
        }
        Ok(refs)
    }

    fn namespaced(&self) -> bool {
        false
    }
}
/// The one field of a ClusterTrustBundle that holds certificates.
const TRUST_BUNDLE_FIELD: &str = "spec.trustBundle";

const GROUP: &str = "certificates.k8s.io";
const RESOURCE: &str = "clustertrustbundles";

/// Which `certificates.k8s.io` version serves ClusterTrustBundles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V1beta1,
}

impl Version {
    pub fn api_version(self) -> &'static str {
        match self {
            Self::V1 => "certificates.k8s.io/v1",
            Self::V1beta1 => "certificates.k8s.io/v1beta1",
        }
    }
}

/// One bundle as the cache holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedBundle {
    pub meta: Selectable,
    /// Shared with the watch's parse memory, so an unchanged bundle costs no second copy.
    pub content: Arc<KeyContent>,
}

/// What the cache says once synced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    NotServed,
    Synced(Arc<BTreeMap<String, CachedBundle>>),
}

pub struct TrustBundles {
    client: kube::Client,
    changes: mpsc::UnboundedSender<Change>,
    /// Empty when discovery said none is served: waiting ends either way.
    state: watch::Sender<Synced<CachedBundle>>,
    /// Set once, on first use: the watch runs from then on.
    started: OnceLock<()>,
    version: watch::Receiver<Option<Option<Version>>>,
    /// Discovery's or the watch's last error, cleared by the next good answer.
    last_error: LastError,
    limits: domain::Limits,
}

impl std::fmt::Debug for TrustBundles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustBundles").field("started", &self.started.get().is_some()).finish_non_exhaustive()
    }
}

impl TrustBundles {
    /// Starts discovery (one request, retried until it answers) in the background.
    pub fn new(client: kube::Client, changes: mpsc::UnboundedSender<Change>, limits: domain::Limits) -> Self {
        let (version_sender, version) = watch::channel(None);
        let discovering = client.clone();
        let last_error = LastError::default();
        let discovery_error = last_error.clone();
        tokio::spawn(
            async move {
                let mut delay = std::time::Duration::from_millis(500);
                loop {
                    match discover(&discovering).await {
                        Ok(found) => {
                            match found {
                                Some(version) => tracing::info!(api_version = version.api_version(), "ClusterTrustBundles served"),
                                None => tracing::warn!("this cluster serves no ClusterTrustBundles (neither certificates.k8s.io/v1 nor v1beta1); volumes naming them will fail"),
                            }
                            discovery_error.clear();
                            let _ = version_sender.send(Some(found));
                            return;
                        }
                        Err(error) => {
                            let error = api_error::describe(&error);
                            tracing::warn!(%error, "API discovery failed; retrying");
                            discovery_error.set(error);
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(std::time::Duration::from_secs(30));
                        }
                    }
                }
            }
            .in_current_span(),
        );
        Self { client, changes, state: watch::Sender::new(None), started: OnceLock::new(), version, last_error, limits }
    }

    /// Discovery's or the watch's last error, while it lasts.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.get()
    }

    /// Whether the watch was started (it then runs for the life of the driver).
    pub fn is_watching(&self) -> bool {
        self.started.get().is_some()
    }

    /// The cache's state, starting the watch if nobody used it before.
    pub fn subscribe(&self) -> watch::Receiver<Synced<CachedBundle>> {
        self.started.get_or_init(|| {
            let span = tracing::info_span!("clustertrustbundle_watch");
            let writer = Writer {
                state: self.state.clone(),
                changes: self.changes.clone(),
                last_error: self.last_error.clone(),
            };
            let task = run(self.client.clone(), self.version.clone(), writer, self.limits);
            tokio::spawn(task.instrument(span));
        });
        self.state.subscribe()
    }

    /// `None` until the first list completed (or discovery said none is served).
    pub fn get(&self) -> Option<State> {
        if *self.version.borrow() == Some(None) {
            return Some(State::NotServed);
        }
        self.state.borrow().clone().map(State::Synced)
    }
}

impl TrustBundles {
    /// Bundles named, then those of the signer that match, in name order; their certificates in
    /// (bundle name, DER) order, each once.
    fn selected(&self, want: &Want) -> Result<Vec<Certificate>> {
        let bundles = match self.get() {
            None => {
                return Err(Error::NotSynced {
                    what: "ClusterTrustBundles".to_owned(),
                    waited: FIRST_SYNC_TIMEOUT,
                    last_error: self.last_error(),
                });
            }
            Some(State::NotServed) => return Err(Error::TrustBundlesNotServed),
            Some(State::Synced(bundles)) => bundles,
        };
        let mut selected: Vec<(&String, &CachedBundle)> = Vec::new();
        for (object, _) in want.objects() {
            match bundles.get_key_value(&object.name) {
                Some(found) => selected.push(found),
                None if want.optional => {}
                None => return Err(Error::Missing { kind: KIND.title, object: object.name }),
            }
        }
        for selection in want.signers() {
            let before = selected.len();
            selected.extend(bundles.iter().filter(|(_, bundle)| bundle.meta.selected_by(selection)));
            if selected.len() == before && !want.optional {
                return Err(Error::NoMatch {
                    signer: selection.signer_name.clone(),
                    selector: selection.selector.to_string(),
                });
            }
        }
        selected.sort_by_key(|(name, _)| *name);
        selected.dedup_by_key(|(name, _)| *name);
        let mut certificates: Vec<(&String, &Certificate)> = Vec::new();
        for (name, bundle) in selected {
            match &*bundle.content {
                KeyContent::Certificates(found) => certificates.extend(found.iter().map(|c| (name, c))),
                KeyContent::Ignored(source) | KeyContent::Invalid(source) => {
                    return Err(Error::Content {
                        kind: KIND.title,
                        object: name.clone(),
                        key: TRUST_BUNDLE_FIELD.to_owned(),
                        source: Box::new(source.clone()),
                    });
                }
            }
        }
        certificates.sort_by(|a, b| (a.0, &a.1.der).cmp(&(b.0, &b.1.der)));
        let mut seen = HashSet::new();
        Ok(certificates.into_iter().filter(|(_, c)| seen.insert(c.fingerprint)).map(|(_, c)| c.clone()).collect())
    }
}

impl Kind for TrustBundles {
    fn name(&self) -> KindName {
        KIND
    }

    fn hold(&self, want: &Want) -> Result<()> {
        if !want.is_empty() {
            let _ = self.subscribe();
        }
        Ok(())
    }

    fn retain(&self, wants: &[&Want]) {
        if wants.iter().any(|want| !want.is_empty()) {
            let _ = self.subscribe();
        }
    }

    fn synced<'a>(&'a self, want: &'a Want) -> BoxFuture<'a, ()> {
        let state = (!want.is_empty()).then(|| self.subscribe());
        Box::pin(async move {
            if let Some(mut state) = state {
                let _ = state.wait_for(Option::is_some).await;
            }
        })
    }

    fn pending(&self, want: &Want) -> Vec<(String, Option<String>)> {
        if want.is_empty() || self.get().is_some() {
            return Vec::new();
        }
        vec![("ClusterTrustBundles".to_owned(), self.last_error())]
    }

    fn select(&self, want: &Want, selected: &mut Selected) -> Result<()> {
        if !want.is_empty() {
            selected.certificates.extend(self.selected(want)?);
        }
        Ok(())
    }

    fn affects(&self, change: &ObjectChange, want: &Want) -> bool {
        affects(change, want)
    }

    fn open_watches(&self) -> usize {
        usize::from(self.is_watching())
    }
}

/// It names the bundle, or a signer selection matched it before or after.
fn affects(change: &ObjectChange, want: &Want) -> bool {
    change.touches(want)
        || want.signers().any(|selection| change.selectable.iter().any(|meta| meta.selected_by(selection)))
}

async fn discover(client: &kube::Client) -> Result<Option<Version>, kube::Error> {
    for version in [Version::V1, Version::V1beta1] {
        match client.list_api_group_resources(version.api_version()).await {
            Ok(list) if list.resources.iter().any(|r| r.name == RESOURCE) => return Ok(Some(version)),
            Ok(_) => {}
            // The group version is not served at all.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    tracing::debug!(group = GROUP, "no ClusterTrustBundle resource in discovery");
    Ok(None)
}

/// Both served versions, read as one shape.
trait Object: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static {
    fn into_bundle(self) -> (Option<String>, Selectable, String);
}

impl Object for v1::ClusterTrustBundle {
    fn into_bundle(self) -> (Option<String>, Selectable, String) {
        let meta = Selectable { signer_name: self.spec.signer_name, labels: self.metadata.labels.unwrap_or_default() };
        (self.metadata.name, meta, self.spec.trust_bundle)
    }
}

impl Object for v1beta1::ClusterTrustBundle {
    fn into_bundle(self) -> (Option<String>, Selectable, String) {
        let meta = Selectable { signer_name: self.spec.signer_name, labels: self.metadata.labels.unwrap_or_default() };
        (self.metadata.name, meta, self.spec.trust_bundle)
    }
}

/// The one watch of all ClusterTrustBundles, on the shared loop.
struct Watch<K> {
    limits: domain::Limits,
    /// Each bundle's last parse by the SHA-256 of its bytes: a relist, or an update of only its
    /// labels, parses nothing again.
    parsed: HashMap<String, ([u8; 32], Arc<KeyContent>)>,
    object: std::marker::PhantomData<K>,
}

/// Bundles whose last parse is kept; past that the memory starts over (a deleted bundle's
/// entry is not otherwise dropped).
const PARSED_BUNDLES: usize = 4096;

impl<K: Object> Watched for Watch<K> {
    type Object = K;
    type Item = CachedBundle;

    const WHAT: &'static str = KIND.title;

    fn parse(&mut self, object: K) -> Option<(String, CachedBundle)> {
        let (name, meta, trust_bundle) = object.into_bundle();
        let name = name?;
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::digest(trust_bundle.as_bytes()).into();
        let content = match self.parsed.get(&name) {
            Some((before, content)) if *before == digest => Arc::clone(content),
            _ => {
                let origin = ObjectOrigin { kind: KIND, scope: Scope::Cluster, name: name.clone(), key: None };
                let content = Arc::new(content::classify(&origin, trust_bundle.as_bytes(), &self.limits));
                if self.parsed.len() >= PARSED_BUNDLES {
                    self.parsed.clear();
                }
                self.parsed.insert(name.clone(), (digest, Arc::clone(&content)));
                content
            }
        };
        Some((name, CachedBundle { meta, content }))
    }

    /// One change per bundle that appeared, vanished, or changed its content, signer or labels.
    fn changes(&self, before: &Objects<CachedBundle>, after: &Objects<CachedBundle>) -> Vec<Change> {
        watch_loop::differing(before, after)
            .into_iter()
            .map(|name| {
                Change::Object(ObjectChange {
                    selectable: [before.get(name), after.get(name)]
                        .into_iter()
                        .flatten()
                        .map(|b| b.meta.clone())
                        .collect(),
                    ..ObjectChange::cluster_scoped(KIND, name)
                })
            })
            .collect()
    }
}

async fn run(
    client: kube::Client,
    mut version: watch::Receiver<Option<Option<Version>>>,
    writer: Writer<CachedBundle>,
    limits: domain::Limits,
) {
    let Ok(found) = version.wait_for(Option::is_some).await.map(|v| v.flatten()) else { return };
    match found {
        // `get` says so; waiters wake.
        None => {
            writer.state.send_replace(Some(Arc::default()));
        }
        Some(Version::V1) => watch_bundles(kube::Api::<v1::ClusterTrustBundle>::all(client), writer, limits).await,
        Some(Version::V1beta1) => {
            watch_bundles(kube::Api::<v1beta1::ClusterTrustBundle>::all(client), writer, limits).await;
        }
    }
}

async fn watch_bundles<K: Object>(api: kube::Api<K>, writer: Writer<CachedBundle>, limits: domain::Limits) {
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let watch = Watch::<K> { limits, parsed: HashMap::new(), object: std::marker::PhantomData };
    watch_loop::run(watch, stream, writer).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::policy::tests::ca;
    use crate::sources::cluster::ObjectKey;

    fn bundle(name: &str, env: &str, pem: &str) -> v1::ClusterTrustBundle {
        let mut object = v1::ClusterTrustBundle::default();
        object.metadata.name = Some(name.to_owned());
        object.metadata.labels = Some(BTreeMap::from([("env".to_owned(), env.to_owned())]));
        object.spec.signer_name = Some("example.com/s".to_owned());
        object.spec.trust_bundle = pem.to_owned();
        object
    }

    fn pem(der: &[u8]) -> String {
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    }

    fn watch() -> Watch<v1::ClusterTrustBundle> {
        Watch { limits: domain::Limits::default(), parsed: HashMap::new(), object: std::marker::PhantomData }
    }

    #[test]
    fn the_same_bytes_again_are_not_parsed_again_whatever_the_labels() {
        let (first, second) = (pem(&ca("First").der), pem(&ca("Second").der));
        let mut watch = watch();
        let content = |parsed: Option<(String, CachedBundle)>| parsed.expect("named").1.content;
        let before = content(watch.parse(bundle("a", "prod", &first)));
        let relabelled = content(watch.parse(bundle("a", "dev", &first)));
        assert!(Arc::ptr_eq(&before, &relabelled), "the same bytes: the last parse, shared");
        let changed = content(watch.parse(bundle("a", "dev", &second)));
        assert!(!Arc::ptr_eq(&before, &changed), "new bytes: parsed");
        assert_ne!(before, changed);
        let other = content(watch.parse(bundle("b", "dev", &first)));
        assert!(!Arc::ptr_eq(&before, &other), "remembered per bundle");
    }

    /// The shared loop over many objects: what each event leaves in the cache, and its changes.
    async fn replay(events: Vec<watcher::Event<v1::ClusterTrustBundle>>) -> (Synced<CachedBundle>, Vec<Change>) {
        let (state, _) = watch::channel(None);
        let (changes, mut received) = mpsc::unbounded_channel();
        let writer = Writer { state: state.clone(), changes, last_error: LastError::default() };
        let stream = futures::stream::iter(events.into_iter().map(Ok));
        watch_loop::run(watch(), stream, writer).await;
        let mut all = Vec::new();
        while let Ok(change) = received.try_recv() {
            all.push(change);
        }
        (state.borrow().clone(), all)
    }

    #[tokio::test]
    async fn a_relabel_names_both_selections_and_a_bundle_missing_from_a_relist_is_gone() {
        let (first, second) = (pem(&ca("First").der), pem(&ca("Second").der));
        let (state, changes) = replay(vec![
            watcher::Event::Init,
            watcher::Event::InitApply(bundle("a", "prod", &first)),
            watcher::Event::InitApply(bundle("b", "prod", &second)),
            watcher::Event::InitDone,
            // Unchanged: no change.
            watcher::Event::Apply(bundle("a", "prod", &first)),
            watcher::Event::Apply(bundle("a", "dev", &first)),
            watcher::Event::Init,
            watcher::Event::InitApply(bundle("a", "dev", &first)),
            watcher::Event::InitDone,
        ])
        .await;
        let meta = |env: &str| Selectable {
            signer_name: Some("example.com/s".to_owned()),
            labels: BTreeMap::from([("env".to_owned(), env.to_owned())]),
        };
        let change = |name: &str, selectable: Vec<Selectable>| {
            let object = ObjectKey { namespace: String::new(), name: name.to_owned() };
            Change::Object(ObjectChange { kind: KIND, object, keys: None, selectable })
        };
        assert_eq!(changes, [change("a", vec![meta("prod"), meta("dev")]), change("b", vec![meta("prod")])]);
        let state = state.expect("synced");
        assert_eq!(state.keys().collect::<Vec<_>>(), ["a"]);
        let KeyContent::Certificates(certificates) = &*state["a"].content else { panic!("certificates") };
        assert_eq!(certificates[0].source.to_string(), "clustertrustbundle:a", "named as before the loop");
    }

    #[test]
    fn a_bundle_change_touches_specs_naming_it_or_whose_selector_matched_before_or_after() {
        let want = |reference: Reference| Want { refs: vec![(String::new(), reference)], ..Want::default() };
        let by_name = want(Reference::object("corp", None));
        let by_signer = want(Reference::Signer(domain::SignerSelection {
            signer_name: "example.com/s".to_owned(),
            selector: domain::LabelSelector::parse("env=prod").unwrap(),
        }));
        let meta = |signer: &str, env: &str| Selectable {
            signer_name: Some(signer.to_owned()),
            labels: BTreeMap::from([("env".to_owned(), env.to_owned())]),
        };
        let change = |name: &str, selectable: Vec<Selectable>| ObjectChange {
            kind: KIND,
            object: ObjectKey { namespace: String::new(), name: name.to_owned() },
            keys: None,
            selectable,
        };
        let relabelled = change("example.com:s:x", vec![meta("example.com/s", "prod"), meta("example.com/s", "dev")]);
        assert!(affects(&relabelled, &by_signer), "it left the selection");
        assert!(!affects(&relabelled, &by_name));
        let other_signer = change("corp", vec![meta("example.com/t", "prod")]);
        assert!(affects(&other_signer, &by_name));
        assert!(!affects(&other_signer, &by_signer));
    }
}

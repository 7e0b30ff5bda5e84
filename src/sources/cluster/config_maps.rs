//! ConfigMaps, each watched on demand with a single-object watch (`metadata.name=` field
//! selector, in its namespace) and shared by every volume that names it. Never a list or watch
//! of all ConfigMaps: that would hold every ConfigMap of the cluster on every node.
//!
//! A watch lives while a publish holds it ([`Kind::hold`]) or a live spec names its object
//! ([`Kind::retain`]); the last one gone stops it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::content::{self, KeyContent, Keys};
use super::kind::{Kind, ObjectChange, Registration, Selected, Want};
use super::watch_loop::{self, Objects, Watched};
use super::{Change, Connections, Error, FIRST_SYNC_TIMEOUT, LastError, ObjectKey, Result};
use crate::bundle::{Ignored, KindName, ObjectOrigin, Scope};
use crate::domain::{self, ListAttributes};

/// How certificates and messages name the kind.
pub const KIND: KindName = KindName { tag: domain::CONFIG_MAPS_TAG, title: "ConfigMap" };
/// Volume attribute: ConfigMaps in the pod's namespace, `name` (every key holding certificates)
/// or `name:key`, comma-separated.
pub const ATTRIBUTE: &str = "configMaps";

pub const REGISTRATION: Registration = Registration {
    attributes: &ListAttributes {
        kind: KIND,
        attributes: &[ATTRIBUTE],
        parse: |key, value| domain::parse_named_keys(key, value, KIND.title, None),
        namespaced: true,
        reads_as_pod: false,
    },
    watched: true,
    start: |context| {
        Box::new(ConfigMaps::new(
            context.watches.clone(),
            context.changes.clone(),
            context.defaults_namespace.clone(),
            context.limits,
        ))
    },
};

/// The cache's state for one ConfigMap: `None` until its first list completed, then the object
/// if it exists.
pub type Synced = watch_loop::Synced<Arc<Keys>>;

pub struct ConfigMaps {
    connections: Connections,
    changes: mpsc::UnboundedSender<Change>,
    watches: Arc<Mutex<Watches>>,
    /// The driver's own namespace (where default ConfigMaps live; empty without defaults).
    defaults_namespace: String,
    limits: domain::Limits,
}

impl std::fmt::Debug for ConfigMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigMaps").field("watches", &self.watch_count()).finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Watches {
    entries: HashMap<ObjectKey, Entry>,
    /// The objects live specs name, as of the last [`ConfigMaps::retain`].
    live: HashSet<ObjectKey>,
    /// A task is waiting to drop the lingering watches once their time is up.
    sweeping: bool,
}

#[derive(Debug)]
struct Entry {
    state: watch::Receiver<Synced>,
    /// The watch's last error, cleared by its next good event: what a publish that gave up
    /// waiting tells the kubelet (a 403, a refused connection).
    last_error: LastError,
    /// Publishes in flight holding this watch.
    held: usize,
    /// A publish gave up waiting for this watch's first list: it stays, unheld, until then, so
    /// the kubelet's retry finds it listing (or listed) instead of starting over.
    linger_until: Option<tokio::time::Instant>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long a watch nobody holds waits for the kubelet's retry of a publish that gave up on
/// it: the kubelet's backoff grows to 2 min 2 s, and the retry waits [`FIRST_SYNC_TIMEOUT`].
pub const WATCH_LINGER: std::time::Duration = std::time::Duration::from_secs(150);

impl Watches {
    fn unused(&self, key: &ObjectKey) -> bool {
        let now = tokio::time::Instant::now();
        self.entries.get(key).is_some_and(|entry| entry.held == 0 && entry.linger_until.is_none_or(|end| end <= now))
            && !self.live.contains(key)
    }

    /// Watches of objects in `namespace`, counting those `also` would add.
    fn in_namespace(&self, namespace: &str, also: &[&ObjectKey]) -> usize {
        let new = also.iter().filter(|key| !self.entries.contains_key(**key)).count();
        self.entries.keys().filter(|key| key.namespace == namespace).count() + new
    }

    fn drop_unused(&mut self) {
        let unused: Vec<ObjectKey> = self.entries.keys().filter(|key| self.unused(key)).cloned().collect();
        for key in unused {
            tracing::debug!(object = %key, "no volume uses this ConfigMap any more; watch stopped");
            self.entries.remove(&key);
        }
    }
}

impl ConfigMaps {
    pub fn new(
        connections: Connections,
        changes: mpsc::UnboundedSender<Change>,
        defaults_namespace: String,
        limits: domain::Limits,
    ) -> Self {
        Self { connections, changes, watches: Arc::default(), defaults_namespace, limits }
    }

    fn watches(&self) -> std::sync::MutexGuard<'_, Watches> {
        self.watches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds the watches of `keys` (starting those not running) until [`ConfigMaps::release_keys`].
    ///
    /// # Errors
    /// [`Error::OverNamespaceBudget`] when the watches of a namespace would outgrow
    /// `--max-namespace-watches` (the driver's own namespace, the operator's defaults, aside):
    /// nothing is held then.
    fn hold_keys(&self, keys: &[ObjectKey]) -> Result<()> {
        let mut watches = self.watches();
        let namespaces: BTreeSet<&str> = keys.iter().map(|key| key.namespace.as_str()).collect();
        for namespace in namespaces.into_iter().filter(|namespace| *namespace != self.defaults_namespace) {
            let ours: Vec<&ObjectKey> = keys.iter().filter(|key| key.namespace == namespace).collect();
            let wanted = watches.in_namespace(namespace, &ours);
            if wanted > self.limits.namespace_watches {
                return Err(Error::OverNamespaceBudget {
                    namespace: namespace.to_owned(),
                    what: "ConfigMap watches",
                    wanted,
                    budget: self.limits.namespace_watches,
                    flag: domain::NAMESPACE_WATCHES_FLAG,
                });
            }
        }
        for key in keys {
            watches.entries.entry(key.clone()).or_insert_with(|| self.start(key)).held += 1;
        }
        Ok(())
    }

    fn release_keys(&self, keys: &[ObjectKey]) {
        let mut watches = self.watches();
        let mut lingering = false;
        for key in keys {
            if let Some(entry) = watches.entries.get_mut(key) {
                entry.held = entry.held.saturating_sub(1);
                if entry.held == 0 && entry.state.borrow().is_none() {
                    entry.linger_until = Some(tokio::time::Instant::now() + WATCH_LINGER);
                    lingering = true;
                }
            }
        }
        watches.drop_unused();
        // One sweeper at a time, however many publishes give up: it wakes at the earliest
        // linger's end and stops when none is left.
        if lingering
            && !watches.sweeping
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            watches.sweeping = true;
            let watches = Arc::downgrade(&self.watches);
            runtime.spawn(async move {
                let mut next = tokio::time::Instant::now() + WATCH_LINGER;
                loop {
                    tokio::time::sleep_until(next).await;
                    let Some(watches) = watches.upgrade() else { return };
                    let mut watches = watches.lock().unwrap_or_else(PoisonError::into_inner);
                    watches.drop_unused();
                    let now = tokio::time::Instant::now();
                    let pending =
                        watches.entries.values().filter_map(|entry| entry.linger_until).filter(|end| *end > now);
                    match pending.min() {
                        Some(end) => next = end,
                        None => {
                            watches.sweeping = false;
                            return;
                        }
                    }
                }
            });
        }
    }

    /// Makes the watched set what `live` names, plus what publishes hold.
    fn retain_keys(&self, live: HashSet<ObjectKey>) {
        let mut watches = self.watches();
        watches.live = live;
        let missing: Vec<ObjectKey> =
            watches.live.iter().filter(|key| !watches.entries.contains_key(*key)).cloned().collect();
        for key in missing {
            let entry = self.start(&key);
            watches.entries.insert(key, entry);
        }
        watches.drop_unused();
    }

    /// The cached state of one object: `None` when not watched or not listed yet, else the
    /// object (`None` when it does not exist).
    fn get(&self, key: &ObjectKey) -> Option<Option<Arc<Keys>>> {
        let watches = self.watches();
        let state = watches.entries.get(key)?.state.borrow();
        state.as_ref().map(|objects| objects.get(&key.name).cloned())
    }

    /// Where certificates of `key` say they come from.
    fn origin(&self, key: &ObjectKey) -> ObjectOrigin {
        origin(key, &self.defaults_namespace)
    }

    /// The last error of the watch of `key`, while it lasts.
    fn last_error(&self, key: &ObjectKey) -> Option<String> {
        self.watches().entries.get(key).and_then(|entry| entry.last_error.get())
    }

    /// The states of every watched object, for waiting until they are all synced.
    fn states(&self, keys: &[ObjectKey]) -> Vec<(ObjectKey, watch::Receiver<Synced>)> {
        let watches = self.watches();
        keys.iter().filter_map(|key| watches.entries.get(key).map(|e| (key.clone(), e.state.clone()))).collect()
    }

    /// How many ConfigMap watches are open.
    fn watch_count(&self) -> usize {
        self.watches().entries.len()
    }

    fn start(&self, key: &ObjectKey) -> Entry {
        let (sender, state) = watch::channel(None);
        let lease = self.connections.lease();
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(lease.client(), &key.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
        let stream = watcher(api, config).default_backoff();
        let span = tracing::info_span!("configmap_watch", object = %key);
        let last_error = LastError::default();
        let source = origin(key, &self.defaults_namespace);
        let writer =
            watch_loop::Writer { state: sender, changes: self.changes.clone(), last_error: last_error.clone() };
        let watch = Watch {
            key: key.clone(),
            source,
            logged_version: None,
            limits: self.limits,
            parsed: content::Parsed::default(),
        };
        let task = tokio::spawn(
            async move {
                let _lease = lease;
                watch_loop::start_permit(&watch.key.namespace).await;
                watch_loop::run(watch, stream, writer).await;
            }
            .instrument(span),
        );
        tracing::debug!(object = %key, "watching ConfigMap");
        Entry { state, last_error, held: 0, linger_until: None, task }
    }
}

impl Kind for ConfigMaps {
    fn name(&self) -> KindName {
        KIND
    }

    fn hold(&self, want: &Want) -> Result<()> {
        self.hold_keys(&want.object_keys())
    }

    fn release(&self, want: &Want) {
        self.release_keys(&want.object_keys());
    }

    fn retain(&self, wants: &[&Want]) {
        self.retain_keys(wants.iter().flat_map(|want| want.object_keys()).collect());
    }

    fn synced<'a>(&'a self, want: &'a Want) -> BoxFuture<'a, ()> {
        let states = self.states(&want.object_keys());
        Box::pin(async move {
            for (_, mut state) in states {
                let _ = state.wait_for(Option::is_some).await;
            }
        })
    }

    fn pending(&self, want: &Want) -> Vec<(String, Option<String>)> {
        self.states(&want.object_keys())
            .into_iter()
            .filter(|(_, state)| state.borrow().is_none())
            .map(|(key, _)| (format!("{} {key}", KIND.title), self.last_error(&key)))
            .collect()
    }

    /// The certificates of each ConfigMap `want` names (into `selected`), and the keys a
    /// bare-name reference skipped.
    fn select(&self, want: &Want, selected: &mut Selected) -> Result<()> {
        let Selected { certificates, ignored } = selected;
        for (key, data_key) in want.objects() {
            let object = key.to_string();
            let content = self.get(&key).ok_or_else(|| Error::NotSynced {
                what: format!("{} {key}", KIND.title),
                waited: FIRST_SYNC_TIMEOUT,
                last_error: self.last_error(&key),
            })?;
            let Some(keys) = content.as_deref() else {
                if want.optional {
                    continue;
                }
                return Err(Error::Missing { kind: KIND.title, object });
            };
            let content_error = |data_key: &str, source: &crate::bundle::Error| Error::Content {
                kind: KIND.title,
                object: object.clone(),
                key: data_key.to_owned(),
                source: Box::new(source.clone()),
            };
            match data_key {
                Some(data_key) => match keys.get(data_key) {
                    None if want.optional => {}
                    None => return Err(Error::MissingKey { object, key: data_key.to_owned() }),
                    Some(KeyContent::Certificates(found)) => certificates.extend(found.iter().cloned()),
                    Some(KeyContent::Ignored(source) | KeyContent::Invalid(source)) => {
                        return Err(content_error(data_key, source));
                    }
                },
                None => {
                    let before = certificates.len();
                    for (data_key, value) in keys {
                        match value {
                            KeyContent::Certificates(found) => certificates.extend(found.iter().cloned()),
                            KeyContent::Ignored(_) => {}
                            KeyContent::Invalid(source) => return Err(content_error(data_key, source)),
                        }
                    }
                    if certificates.len() == before {
                        return Err(Error::NoCertificates { kind: KIND.title, object });
                    }
                    let skipped = content::ignored_keys(keys);
                    if !skipped.is_empty() {
                        ignored.push(Ignored { source: self.origin(&key).to_string(), keys: skipped });
                    }
                }
            }
        }
        Ok(())
    }

    /// It names the object, and the key unless it takes all.
    fn affects(&self, change: &ObjectChange, want: &Want) -> bool {
        change.touches(want)
    }

    fn open_watches(&self) -> usize {
        self.watch_count()
    }
}

/// One ConfigMap's watch, on the shared loop: a cache of at most that one object.
struct Watch {
    key: ObjectKey,
    /// Where certificates of this object say they come from.
    source: ObjectOrigin,
    /// The resourceVersion whose ignored keys were last logged: once per version of the object.
    logged_version: Option<String>,
    limits: domain::Limits,
    /// The last version's keys, by the hash of their bytes.
    parsed: content::Parsed,
}

impl Watched for Watch {
    type Object = ConfigMap;
    type Item = Arc<Keys>;

    const WHAT: &'static str = KIND.title;

    fn parse(&mut self, object: ConfigMap) -> Option<(String, Arc<Keys>)> {
        let name = object.metadata.name.clone().filter(|name| *name == self.key.name)?;
        let version = object.metadata.resource_version.clone();
        let keys = content::config_map(
            &self.source,
            object.data.as_ref(),
            object.binary_data.as_ref(),
            &self.limits,
            &mut self.parsed,
        );
        let ignored = content::ignored_keys(&keys);
        tracing::debug!(keys = keys.len(), ignored = ignored.len(), "ConfigMap read");
        if !ignored.is_empty() && version.is_some() && self.logged_version != version {
            tracing::info!(
                ignored = ignored.len(),
                keys = %ignored.join(", "),
                resource_version = version.as_deref().unwrap_or_default(),
                "ConfigMap keys without certificates; a configMaps source naming the ConfigMap without a key ignores them"
            );
            self.logged_version = version;
        }
        Some((name, keys))
    }

    fn changes(&self, before: &Objects<Arc<Keys>>, after: &Objects<Arc<Keys>>) -> Vec<Change> {
        let data_keys = match (before.get(&self.key.name), after.get(&self.key.name)) {
            (Some(before), Some(after)) => match changed_keys(before, after) {
                keys if keys.is_empty() => return Vec::new(),
                keys => Some(keys),
            },
            (None, None) => return Vec::new(),
            // It appeared or vanished.
            _ => None,
        };
        tracing::info!("ConfigMap changed");
        vec![Change::Object(ObjectChange {
            kind: KIND,
            object: self.key.clone(),
            keys: data_keys,
            selectable: Vec::new(),
        })]
    }
}

/// Where a ConfigMap's certificates say they come from (the `# source:` of bundles). A pod's own ConfigMap is
/// named without its namespace (always the pod's): namespaces that hold the same certificates
/// under the same name (a trust-manager target, `kube-root-ca.crt`) then render byte-identical
/// files, which the store keeps once instead of once per namespace. A default ConfigMap keeps
/// its namespace, the driver's, which is the same for every spec.
fn origin(key: &ObjectKey, defaults_namespace: &str) -> ObjectOrigin {
    let scope =
        if key.namespace == defaults_namespace { Scope::Namespace(key.namespace.clone()) } else { Scope::PodNamespace };
    ObjectOrigin { kind: KIND, scope, name: key.name.clone(), key: None }
}

/// The keys whose content differs in a way a bundle can see: a key that holds no certificate
/// before and after changes no bundle.
fn changed_keys(before: &Keys, after: &Keys) -> BTreeSet<String> {
    let keys = before.keys().chain(after.keys());
    let visible = |key: &&String| match (before.get(*key), after.get(*key)) {
        (Some(KeyContent::Ignored(_)), Some(KeyContent::Ignored(_))) => false,
        (was, is) => was != is,
    };
    keys.filter(visible).cloned().collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::bundle::policy::tests::ca;

    fn change(object: &ObjectKey, keys: Option<BTreeSet<String>>) -> Change {
        Change::Object(ObjectChange { kind: KIND, object: object.clone(), keys, selectable: Vec::new() })
    }

    fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
        let mut map = ConfigMap::default();
        map.metadata.name = Some(name.to_owned());
        map.data = Some(data.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>());
        map
    }

    fn pem(der: &[u8]) -> String {
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    }

    /// Feeds `events` to the writer and returns every state it published, and its changes.
    async fn replay(events: Vec<watcher::Event<ConfigMap>>) -> (Vec<Synced>, Vec<Change>) {
        let key = ObjectKey { namespace: "ns".to_owned(), name: "corp-ca".to_owned() };
        let (sender, mut state) = watch::channel(None);
        let (changes, mut received) = mpsc::unbounded_channel();
        let seen = tokio::spawn(async move {
            let mut states = Vec::new();
            while state.changed().await.is_ok() {
                states.push(state.borrow_and_update().clone());
            }
            states
        });
        let stream = futures::stream::iter(events.into_iter().map(Ok));
        let source = origin(&key, "");
        let watch = Watch {
            key,
            source,
            logged_version: None,
            limits: domain::Limits::default(),
            parsed: content::Parsed::default(),
        };
        let writer = watch_loop::Writer { state: sender, changes, last_error: LastError::default() };
        watch_loop::run(watch, stream, writer).await;
        let states = seen.await.expect("observer");
        let mut all = Vec::new();
        while let Ok(change) = received.try_recv() {
            all.push(change);
        }
        (states, all)
    }

    #[test]
    fn a_config_map_of_the_pods_namespace_is_named_without_it_so_namespaces_share_files() {
        let source = |namespace: &str| {
            origin(&ObjectKey { namespace: namespace.to_owned(), name: "corp-ca".to_owned() }, "trustmount").to_string()
        };
        assert_eq!(source("team-a"), source("team-b"), "the same name in two namespaces gives the same bytes");
        assert_eq!(source("team-a"), "configmap:corp-ca");
        assert_eq!(source("trustmount"), "configmap:trustmount/corp-ca", "a default keeps the driver's namespace");
    }

    #[tokio::test]
    async fn a_relist_is_applied_whole_and_a_vanished_object_is_gone() {
        let first = pem(&ca("First").der);
        let second = pem(&ca("Second").der);
        let (states, changes) = replay(vec![
            watcher::Event::Init,
            watcher::Event::InitApply(config_map("corp-ca", &[("ca.crt", &first)])),
            watcher::Event::InitDone,
            watcher::Event::Apply(config_map("corp-ca", &[("ca.crt", &first), ("README", "hi")])),
            watcher::Event::Apply(config_map("corp-ca", &[("ca.crt", &second), ("README", "hi")])),
            // A re-list in which the object is missing: it was deleted while the watch was down.
            watcher::Event::Init,
            watcher::Event::InitDone,
        ])
        .await;
        let last = states.last().cloned().flatten().expect("synced");
        assert!(last.get("corp-ca").is_none(), "not re-listed means gone");
        let keys = |names: &[&str]| Some(names.iter().map(|n| (*n).to_owned()).collect::<BTreeSet<_>>());
        let object = ObjectKey { namespace: "ns".to_owned(), name: "corp-ca".to_owned() };
        assert_eq!(
            changes,
            [change(&object, keys(&["README"])), change(&object, keys(&["ca.crt"])), change(&object, None),],
            "the first list is no change; each later one names what changed"
        );
    }

    #[tokio::test]
    async fn an_unchanged_object_or_key_without_certificates_sends_no_change() {
        let first = pem(&ca("First").der);
        let (_, changes) = replay(vec![
            watcher::Event::Init,
            watcher::Event::InitApply(config_map("corp-ca", &[("ca.crt", &first)])),
            watcher::Event::InitDone,
            watcher::Event::Apply(config_map("corp-ca", &[("ca.crt", &first)])),
            watcher::Event::Apply(config_map("corp-ca", &[("ca.crt", &first), ("README", "hi")])),
            watcher::Event::Apply(config_map("corp-ca", &[("ca.crt", &first), ("README", "a new text")])),
            watcher::Event::Apply(config_map("corp-ca", &[("ca.crt", &first)])),
            watcher::Event::Init,
            watcher::Event::InitApply(config_map("corp-ca", &[("ca.crt", &first)])),
            watcher::Event::InitDone,
        ])
        .await;
        let keys = |names: &[&str]| Some(names.iter().map(|n| (*n).to_owned()).collect::<BTreeSet<_>>());
        let object = ObjectKey { namespace: "ns".to_owned(), name: "corp-ca".to_owned() };
        // README appearing and going is visible (a `corp-ca:README` volume fails or recovers);
        // README's text changing is not: it holds no certificate before or after.
        assert_eq!(changes, [change(&object, keys(&["README"])), change(&object, keys(&["README"])),]);
    }

    fn key(namespace: &str, name: &str) -> ObjectKey {
        ObjectKey { namespace: namespace.to_owned(), name: name.to_owned() }
    }

    #[tokio::test]
    async fn a_namespace_over_its_watch_budget_is_refused_naming_it_and_others_are_not() {
        let client = kube::Client::try_from(kube::Config::new("https://127.0.0.1:1".parse().unwrap())).unwrap();
        let limits = domain::Limits { namespace_watches: 2, ..domain::Limits::default() };
        let (changes, _received) = mpsc::unbounded_channel();
        let maps = ConfigMaps::new(Connections::new(client, None), changes, "trustmount".to_owned(), limits);
        maps.hold_keys(&[key("shop", "a"), key("shop", "b")]).unwrap();
        maps.hold_keys(&[key("shop", "a")]).expect("a watch it holds already costs nothing");

        let over = maps.hold_keys(&[key("shop", "a"), key("shop", "c")]).unwrap_err();
        let message = over.to_string();
        assert!(matches!(over, Error::OverNamespaceBudget { wanted: 3, budget: 2, .. }), "{over:?}");
        assert!(message.contains("namespace shop would hold 3 ConfigMap watches"), "{message}");
        assert!(message.contains(domain::NAMESPACE_WATCHES_FLAG), "{message}");
        assert_eq!(maps.watch_count(), 2, "a refused hold holds nothing, not even the key within budget");

        maps.hold_keys(&[key("bank", "a"), key("bank", "b")]).expect("another namespace has a budget of its own");
        let defaults: Vec<ObjectKey> = (0..5).map(|i| key("trustmount", &format!("d{i}"))).collect();
        maps.hold_keys(&defaults).expect("the driver's own namespace is the operator's");

        // Given back before their first list, the watches linger for the kubelet's retry, and
        // still count; once the linger is over they go, and the budget is free again.
        maps.release_keys(&[key("shop", "a"), key("shop", "a"), key("shop", "b")]);
        assert_eq!(maps.watches().in_namespace("shop", &[]), 2, "lingering, still counted");
        assert!(maps.hold_keys(&[key("shop", "c")]).is_err());
        maps.hold_keys(&[key("shop", "a")]).expect("the retry finds its lingering watch");
        maps.release_keys(&[key("shop", "a")]);
        let mut watches = maps.watches();
        let now = tokio::time::Instant::now();
        watches.entries.values_mut().for_each(|entry| entry.linger_until = entry.linger_until.map(|_| now));
        watches.drop_unused();
        assert_eq!(watches.in_namespace("shop", &[]), 0, "the linger over, unheld and not live: gone");
        assert_eq!(watches.in_namespace("bank", &[]), 2, "still held");
    }
}

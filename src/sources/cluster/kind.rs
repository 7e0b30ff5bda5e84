//! The socket a cluster source kind plugs into. A kind is one file: its attributes
//! ([`KindAttributes`], the spec's part), its cache and how it selects certificates ([`Kind`],
//! this part), and one line in [`KINDS`](super::KINDS). Everything else — the spec, its digest, its record,
//! publish, refresh, health, metrics — speaks of kinds through these two traits and the words
//! below ([`Want`], [`Selected`], [`ObjectChange`], [`Slot`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::token::PodToken;
use super::{Change, ObjectKey, Result};
use crate::bundle::{Certificate, Ignored, KindName};
use crate::domain::{self, KindAttributes, Reference, VolumeSpec};

/// A kind as the driver starts it.
#[derive(Clone, Copy)]
pub struct Registration {
    pub attributes: &'static dyn KindAttributes,
    /// Whether it keeps watches (counted by `trustmount_watches`); a kind read as the pod has none.
    pub watched: bool,
    pub start: fn(&Context) -> Box<dyn Kind>,
}

/// What a kind's cache starts from.
pub struct Context {
    /// The driver's own identity: for a kind's few watches and requests.
    pub driver: kube::Client,
    /// The driver's identity for a kind with a watch per object: a lease each.
    pub watches: super::Connections,
    /// No identity of its own: each request carries a pod's token.
    pub as_pod: kube::Client,
    /// Where a kind sends the changes its watches see.
    pub changes: mpsc::UnboundedSender<Change>,
    /// The driver's namespace, where default sources live (empty without defaults).
    pub defaults_namespace: String,
    /// How big one object's value may be.
    pub limits: domain::Limits,
}

/// A kind's cache: what it holds for publishes, how it selects, which changes touch a spec.
pub trait Kind: Send + Sync + fmt::Debug {
    fn name(&self) -> KindName;

    /// Holds what `want` needs (starting watches) while a publish runs, until
    /// [`Kind::release`]. Must run inside the tokio runtime.
    ///
    /// # Errors
    /// What `want` needs is over a budget of its namespace; nothing is held then.
    fn hold(&self, _want: &Want) -> Result<()> {
        Ok(())
    }

    /// Gives back a [`Kind::hold`].
    fn release(&self, _want: &Want) {}

    /// Keeps exactly what `wants` (every live spec's) and the holds need.
    fn retain(&self, _wants: &[&Want]) {}

    /// Waits until what `want` needs has its first list (unbounded; the caller bounds it).
    fn synced<'a>(&'a self, _want: &'a Want) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// What `want` still waits for, each with its watch's last error, for a publish that gave up.
    fn pending(&self, _want: &Want) -> Vec<(String, Option<String>)> {
        Vec::new()
    }

    /// The certificates `want` gets from the cache, into `selected`.
    ///
    /// # Errors
    /// A missing source (unless `optional`), a source without certificates or with a private
    /// key, or a cache not synced yet.
    fn select(&self, want: &Want, selected: &mut Selected) -> Result<()>;

    /// Whether `change` (one of this kind's) touches what `want` names.
    fn affects(&self, change: &ObjectChange, want: &Want) -> bool;

    /// Watches open now.
    fn open_watches(&self) -> usize {
        0
    }

    /// For a kind read as the pod: reads what `want` names with the pod's `token`, on every
    /// publish (the read is the pod's access check).
    fn read_as_pod<'a>(&'a self, _want: &'a Want, _token: &'a PodToken) -> Option<BoxFuture<'a, Result<PodRead>>> {
        None
    }

    /// Whether a refresh, which has no token, can select for `want`.
    fn refreshable(&self, _want: &Want) -> bool {
        true
    }
}

/// What one spec wants of one kind: its own references and, unless it opts out, the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Want {
    /// Each reference with the namespace it is read in (empty for a cluster-scoped kind),
    /// sorted, each once.
    pub refs: Vec<(String, Reference)>,
    pub optional: bool,
    /// The ServiceAccount a kind read as the pod reads as.
    pub service_account: String,
}

impl Want {
    /// `spec`'s own references of `kind`, and `defaults` (the driver's, read in
    /// `defaults_namespace`) unless they do not apply to it.
    pub fn of(kind: &dyn KindAttributes, spec: &VolumeSpec, defaults: Option<(&[Reference], &str)>) -> Self {
        let tag = kind.name().tag;
        let namespace = |namespace: &str| if kind.namespaced() { namespace.to_owned() } else { String::new() };
        let mut refs: Vec<(String, Reference)> =
            spec.cluster.of(tag).iter().map(|reference| (namespace(&spec.namespace), reference.clone())).collect();
        // A spec's own references are canonical already: only the defaults need merging in.
        if let Some((defaults, defaults_namespace)) = defaults.filter(|(defaults, _)| !defaults.is_empty()) {
            refs.extend(defaults.iter().map(|reference| (namespace(defaults_namespace), reference.clone())));
            refs.sort_by(|(a, x), (b, y)| (a, x.order()).cmp(&(b, y.order())));
            refs.dedup();
        }
        Self { refs, optional: spec.cluster.optional, service_account: spec.cluster.service_account.clone() }
    }

    /// The objects named, each with the key it takes (`None`: as the kind reads a whole one).
    pub fn objects(&self) -> impl Iterator<Item = (ObjectKey, Option<&str>)> + '_ {
        self.refs.iter().filter_map(|(namespace, reference)| match reference {
            Reference::Object { name, key } => {
                Some((ObjectKey { namespace: namespace.clone(), name: name.clone() }, key.as_deref()))
            }
            Reference::Signer(_) => None,
        })
    }

    /// The objects named, each once.
    pub fn object_keys(&self) -> Vec<ObjectKey> {
        let keys: BTreeSet<ObjectKey> = self.objects().map(|(key, _)| key).collect();
        keys.into_iter().collect()
    }

    pub fn signers(&self) -> impl Iterator<Item = &domain::SignerSelection> + '_ {
        self.refs.iter().filter_map(|(_, reference)| match reference {
            Reference::Signer(signer) => Some(signer),
            Reference::Object { .. } => None,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }
}

/// What one spec wants of every kind it names: one [`Want`] per registered kind, by its index in
/// [`KINDS`] (empty for a kind it does not name), and the tags it names that no kind here serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub by_kind: Vec<Want>,
    pub unknown: Vec<String>,
}

/// What a spec gets from the kinds.
#[derive(Clone, Debug, Default)]
pub struct Selected {
    pub certificates: Vec<Certificate>,
    /// The keys without certificates that references to whole objects skipped.
    pub ignored: Vec<Ignored>,
}

/// A watched object changed in a way that can change bundles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectChange {
    pub kind: KindName,
    /// Its namespace is empty for a cluster-scoped kind.
    pub object: ObjectKey,
    /// The keys whose content changed; `None` when it appeared or vanished (or the kind reads
    /// an object whole).
    pub keys: Option<BTreeSet<String>>,
    /// What selected it before and after (signer and labels), for kinds selected by signer.
    pub selectable: Vec<Selectable>,
}

/// What selects an object by signer: its signer and labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selectable {
    pub signer_name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl Selectable {
    pub fn selected_by(&self, selection: &domain::SignerSelection) -> bool {
        self.signer_name.as_deref() == Some(selection.signer_name.as_str()) && selection.selector.matches(&self.labels)
    }
}

impl ObjectChange {
    /// A cluster-scoped object `name` appeared, vanished or changed as a whole.
    pub fn cluster_scoped(kind: KindName, name: &str) -> Self {
        let object = ObjectKey { namespace: String::new(), name: name.to_owned() };
        Self { kind, object, keys: None, selectable: Vec::new() }
    }

    /// Whether it touches `want` by name: `want` names the object, and the key unless it takes
    /// all. (Selection by signer is the kind's own business.)
    pub fn touches(&self, want: &Want) -> bool {
        want.objects().any(|(object, key)| {
            object == self.object
                && match (key, &self.keys) {
                    (_, None) | (None, Some(_)) => true,
                    (Some(key), Some(changed)) => changed.contains(key),
                }
        })
    }
}

/// One key of one object, as one ServiceAccount read it: for a kind read as the pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    pub kind: &'static str,
    pub namespace: String,
    pub service_account: String,
    pub name: String,
    pub key: Option<String>,
}

/// `Secret shop/corp-ca`, for people.
impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let title = super::name_of(self.kind).map_or(self.kind, |name| name.title);
        write!(f, "{title} {}/{}", self.namespace, self.name)
    }
}

/// What one kind read as the pod for one publish.
#[derive(Debug, Default)]
pub struct PodRead {
    /// The certificates of every reference, in reference order.
    pub certificates: Vec<Certificate>,
    /// The slots whose content differs from (or was not in) the last read.
    pub changed: Vec<Slot>,
}

/// What one publish read as the pod, every kind: given to the render instead of what the kinds
/// last read.
#[derive(Debug, Default)]
pub struct PodReads {
    pub(super) by_kind: HashMap<&'static str, Vec<Certificate>>,
    /// The slots whose content differs from the last read: specs rendering from them refresh.
    pub changed: Vec<Slot>,
}

impl PodReads {
    pub(super) fn add(&mut self, kind: &'static str, read: PodRead) {
        self.by_kind.insert(kind, read.certificates);
        self.changed.extend(read.changed);
    }
}

/// Whether `want` of kind `tag` renders from one of `slots`.
pub fn uses_slot(tag: &str, want: &Want, slots: &[Slot]) -> bool {
    want.objects().any(|(object, key)| {
        slots.iter().any(|slot| {
            slot.kind == tag
                && slot.namespace == object.namespace
                && slot.name == object.name
                && slot.key.as_deref() == key
                && slot.service_account == want.service_account
        })
    })
}

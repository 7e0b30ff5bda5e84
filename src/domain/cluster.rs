//! The cluster sources a volume names, kind by kind. A kind (ClusterTrustBundles, ConfigMaps,
//! Secrets, the next one) says which attributes it owns and parses them ([`KindAttributes`]);
//! what they name is kept here generically ([`ClusterSources`]: references per kind tag), so
//! the spec, its digest and its record need nothing new for a new kind.

use std::collections::BTreeMap;

use super::selector::LabelSelector;
use super::{Error, echo};
use crate::bundle::KindName;

/// ConfigMap, Secret and ClusterTrustBundle names are DNS subdomains: at most 253 characters.
const NAME_MAX: usize = 253;

/// The tags of the kinds that existed before kinds became a trait. The spec digest forms v2 and
/// v3 and record format 2 spell these kinds' sources in fields of their own; frozen, so those
/// digests and records stay what they are.
pub const TRUST_BUNDLES_TAG: &str = "clustertrustbundle";
pub const CONFIG_MAPS_TAG: &str = "configmap";
pub const SECRETS_TAG: &str = "secret";

/// A cluster source kind's part of the spec: the volume attributes it owns and how they parse.
/// Implemented beside the kind's cache in `sources::cluster`.
pub trait KindAttributes: Sync {
    fn name(&self) -> KindName;

    /// The attribute keys it owns (`configMaps`), in the order error messages list them.
    fn attributes(&self) -> &'static [&'static str];

    /// Its references from the attributes it owns that a volume set (never empty).
    ///
    /// # Errors
    /// A value it refuses, naming the attribute.
    fn parse(&self, given: &BTreeMap<&str, &str>) -> Result<Vec<Reference>, Error>;

    /// Whether its objects live in namespaces (the pod's own, or the driver's for defaults).
    fn namespaced(&self) -> bool {
        true
    }

    /// Whether its objects are read as the pod, with its token: the pod's ServiceAccount then
    /// becomes part of the spec.
    fn reads_as_pod(&self) -> bool {
        false
    }
}

/// The attributes of a kind whose attributes are each a list that `parse` reads alone (most
/// kinds: `configMaps`, `secrets`).
pub struct ListAttributes {
    pub kind: KindName,
    pub attributes: &'static [&'static str],
    /// One attribute's (key, value).
    pub parse: fn(&str, &str) -> Result<Vec<Reference>, Error>,
    pub namespaced: bool,
    pub reads_as_pod: bool,
}

impl KindAttributes for ListAttributes {
    fn name(&self) -> KindName {
        self.kind
    }

    fn attributes(&self) -> &'static [&'static str] {
        self.attributes
    }

    fn parse(&self, given: &BTreeMap<&str, &str>) -> Result<Vec<Reference>, Error> {
        let mut refs = Vec::new();
        for (key, value) in given {
            refs.extend((self.parse)(key, value)?);
        }
        Ok(refs)
    }

    fn namespaced(&self) -> bool {
        self.namespaced
    }

    fn reads_as_pod(&self) -> bool {
        self.reads_as_pod
    }
}

/// One thing a volume names of a kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    /// An object by name; `key`: one key of it (`None`: as the kind reads a whole object).
    Object { name: String, key: Option<String> },
    /// Every object of a signer whose labels match.
    Signer(SignerSelection),
}

impl Reference {
    pub fn object(name: &str, key: Option<&str>) -> Self {
        Self::Object { name: name.to_owned(), key: key.map(str::to_owned) }
    }

    /// Objects by (name, key), then signers by (name, canonical selector): the canonical order.
    pub fn order(&self) -> (u8, &str, String) {
        match self {
            Self::Object { name, key } => (0, name, key.clone().unwrap_or_default()),
            Self::Signer(signer) => (1, &signer.signer_name, signer.selector.to_string()),
        }
    }
}

/// `name`, `name:key`, or `signer example.com/corp (env=prod)`: as messages name a reference.
impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Object { name, key: Some(key) } => write!(f, "{name}:{key}"),
            Self::Object { name, key: None } => f.write_str(name),
            Self::Signer(signer) if signer.selector.is_empty() => write!(f, "signer {}", signer.signer_name),
            Self::Signer(signer) => write!(f, "signer {} ({})", signer.signer_name, signer.selector),
        }
    }
}

/// Sorted canonically and without duplicates: the order a list was written in is no content.
pub fn canonical(mut refs: Vec<Reference>) -> Vec<Reference> {
    refs.sort_by(|a, b| a.order().cmp(&b.order()));
    refs.dedup();
    refs
}

/// What a volume reads from the Kubernetes API. Empty for a volume of local sources only.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterSources {
    /// Per kind tag, what the volume names of it: canonical ([`canonical`]), never empty.
    pub named: BTreeMap<String, Vec<Reference>>,
    /// The ServiceAccount objects are read as; empty unless the spec names a kind read as the
    /// pod. Part of the spec (and so of its digest), so pods of another ServiceAccount never share
    /// the directory rendered from what this one may read.
    pub service_account: String,
    /// A missing source (or a selector matching nothing) is skipped instead of failing.
    pub optional: bool,
    /// `defaults: "false"` leaves out the driver-wide default sources.
    pub defaults: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SignerSelection {
    pub signer_name: String,
    /// Absent in the attributes = empty = every bundle of the signer (unlike the kubelet's
    /// projection, where an absent selector matches nothing).
    pub selector: LabelSelector,
}

impl ClusterSources {
    /// No cluster source at all (`optional` and `defaults` alone name none).
    pub fn names_none(&self) -> bool {
        self.named.values().all(Vec::is_empty)
    }

    /// Equal to the default: the spec digests as it did before cluster sources existed.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// What the volume names of kind `tag`.
    pub fn of(&self, tag: &str) -> &[Reference] {
        self.named.get(tag).map_or(&[], Vec::as_slice)
    }

    /// Adds `refs` to kind `tag`, keeping the list canonical.
    pub fn add(&mut self, tag: &str, refs: impl IntoIterator<Item = Reference>) {
        let mut all = self.named.remove(tag).unwrap_or_default();
        all.extend(refs);
        if !all.is_empty() {
            self.named.insert(tag.to_owned(), canonical(all));
        }
    }

    /// The objects named of kind `tag`, as (name, key).
    pub fn objects<'a>(&'a self, tag: &str) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        self.of(tag).iter().filter_map(|reference| match reference {
            Reference::Object { name, key } => Some((name.as_str(), key.as_deref())),
            Reference::Signer(_) => None,
        })
    }

    /// The signer selections named of kind `tag`.
    pub fn signers<'a>(&'a self, tag: &str) -> impl Iterator<Item = &'a SignerSelection> + 'a {
        self.of(tag).iter().filter_map(|reference| match reference {
            Reference::Signer(signer) => Some(signer),
            Reference::Object { .. } => None,
        })
    }

    /// Whether every kind named is one of `tags`.
    pub fn only_kinds(&self, tags: &[&str]) -> bool {
        self.named.keys().all(|tag| tags.contains(&tag.as_str()))
    }
}

/// `defaults` is true unless a volume opts out.
impl Default for ClusterSources {
    fn default() -> Self {
        Self { named: BTreeMap::new(), service_account: String::new(), optional: false, defaults: true }
    }
}

/// `key: "a, b"`: names of `what` (`"a ClusterTrustBundle name"`), each of lowercase letters,
/// digits, '-', '.' and the bytes `also` allows; sorted, without duplicates.
///
/// # Errors
/// An empty item, a name naming another namespace, or a name of other bytes.
pub fn parse_names(key: &str, value: &str, what: &str, also: &[u8]) -> Result<Vec<Reference>, Error> {
    let mut refs = Vec::new();
    for name in list(key, value)? {
        check_name(key, value, name, what, also)?;
        refs.push(Reference::object(name, None));
    }
    Ok(canonical(refs))
}

/// `key: "corp-ca, team-ca:ca.crt"`: `name` or `name:key` items of a `kind` (ConfigMap, Secret:
/// the same naming rules); a bare name takes `default_key`.
///
/// # Errors
/// As [`parse_names`], or a key that is no data key.
pub fn parse_named_keys(
    key: &str,
    value: &str,
    kind: &str,
    default_key: Option<&str>,
) -> Result<Vec<Reference>, Error> {
    let mut refs = Vec::new();
    for item in list(key, value)? {
        let (name, data_key) = match item.split_once(':') {
            Some((name, data_key)) => (name.trim(), Some(data_key.trim())),
            None => (item, None),
        };
        check_name(key, value, name, &format!("a {kind} name"), b"")?;
        if let Some(data_key) = data_key {
            let valid = !data_key.is_empty()
                && data_key.len() <= NAME_MAX
                && data_key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid {
                return Err(invalid(
                    key,
                    value,
                    format!("{item:?}: a key after ':' of letters, digits, '-', '_' or '.' (a {kind} data key)"),
                ));
            }
        }
        refs.push(Reference::object(name, data_key.or(default_key)));
    }
    Ok(canonical(refs))
}

/// `signer: (key, "example.com/corp")` with an optional `selector: (key, "env=prod")`: one
/// [`Reference::Signer`].
///
/// # Errors
/// A signer not named `<domain>/<path>`, or a selector that does not parse.
pub fn parse_signer(signer: (&str, &str), selector: Option<(&str, &str)>) -> Result<Reference, Error> {
    let (key, value) = signer;
    let valid = value.split_once('/').is_some_and(|(domain, path)| !domain.is_empty() && !path.is_empty())
        && value.len() <= NAME_MAX
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if !valid {
        return Err(invalid(key, value, "a signer name such as \"example.com/corp-ca\""));
    }
    let selector = match selector {
        None => LabelSelector::default(),
        Some((key, text)) => LabelSelector::parse(text).map_err(|reason| Error::LabelSelector {
            key: key.to_owned(),
            value: echo::value(text),
            reason,
        })?,
    };
    Ok(Reference::Signer(SignerSelection { signer_name: value.to_owned(), selector }))
}

fn list<'a>(key: &str, value: &'a str) -> Result<Vec<&'a str>, Error> {
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    if items.iter().any(|item| item.is_empty()) {
        return Err(invalid(key, value, "a comma-separated list of names, without empty items"));
    }
    Ok(items)
}

fn check_name(key: &str, value: &str, name: &str, what: &str, also: &[u8]) -> Result<(), Error> {
    if let Some((namespace, _)) = name.split_once('/') {
        return Err(Error::OtherNamespace {
            key: key.to_owned(),
            value: echo::value(value),
            namespace: echo::value(namespace),
        });
    }
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.') || also.contains(&b);
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= NAME_MAX
        && bytes.iter().copied().all(allowed)
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if valid {
        Ok(())
    } else {
        Err(invalid(
            key,
            value,
            format!("{:?} is not {what}: lowercase letters, digits, '-' and '.'", echo::value(name)),
        ))
    }
}

fn invalid(key: &str, value: &str, expected: impl Into<String>) -> Error {
    Error::InvalidValue { key: key.to_owned(), value: echo::value(value), expected: expected.into() }
}

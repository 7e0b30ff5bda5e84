//! The shared vocabulary of the house: what a volume asks for (the pod's namespace plus its
//! validated volume attributes), who it is for, and the kinds of certificate source.
//!
//! Parsing is strict — an unknown attribute is an error, so a typo (`systemroots`) never silently
//! falls back to a default. The spec's digest names the shared directory every volume with the
//! same spec is bind-mounted from.
//!
//! - [`cluster`]: the cluster sources a volume names, per kind, and the trait a kind's
//!   attributes implement ([`KindAttributes`]).
//! - [`selector`]: Kubernetes label selectors (`signerName` + `labelSelector`).
//! - [`SourceKind`]: the kinds of certificate source.
//! - [`echo`]: input echoed back in messages, bounded.
//! - [`Limits`]: what one volume may ask of the driver.

mod cluster;
pub mod echo;
mod limits;
mod selector;
mod source_kind;

pub use cluster::{
    CONFIG_MAPS_TAG, ClusterSources, KindAttributes, ListAttributes, Reference, SECRETS_TAG, SignerSelection,
    TRUST_BUNDLES_TAG, canonical, parse_named_keys, parse_names, parse_signer,
};
pub use limits::{
    ATTRIBUTE_BYTES_FLAG, Limits, NAMESPACE_SPECS_FLAG, NAMESPACE_STORE_BYTES_FLAG, NAMESPACE_STORE_FILES_FLAG,
    NAMESPACE_WATCHES_FLAG, SOURCE_BYTES_FLAG, SOURCE_CERTIFICATES_FLAG, SOURCES_FLAG, STORE_ROTATION_RESERVE_FLAG,
    VOLUME_CERTIFICATES_FLAG,
};
pub use selector::{LabelSelector, Operator as SelectorOperator, ParseError as SelectorError};
pub use source_kind::SourceKind;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::bundle::{JavaTruststore, Layout, RenderOptions};

/// Volume attribute: `"false"` leaves the system roots out of the bundle.
pub const ATTR_SYSTEM_ROOTS: &str = "systemRoots";
/// Volume attribute: the on-disk layout (`debian`, …), see [`Layout`].
pub const ATTR_LAYOUT: &str = "layout";
/// Volume attribute: the Java truststore format, see [`JavaTruststore`].
pub const ATTR_JAVA_TRUSTSTORE: &str = "javaTruststore";
/// Volume attribute: `"keep"` keeps expired certificates, `"drop"` (default) leaves them out.
pub const ATTR_EXPIRED: &str = "expired";
/// Volume attribute: `"true"` skips a missing cluster source instead of failing the publish.
pub const ATTR_OPTIONAL: &str = "optional";
/// Volume attribute: `"false"` leaves out the driver-wide default sources.
pub const ATTR_DEFAULTS: &str = "defaults";

/// Attributes the kubelet adds itself (podInfoOnMount, tokenRequests, ephemeral).
pub const KUBELET_PREFIX: &str = "csi.storage.k8s.io/";
pub const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
pub const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
pub const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";
/// The kubelet's token JSON (`tokenRequests`), in `volume_context` or the request's `secrets`:
/// a credential, never part of the spec or its digest, never logged.
pub const SERVICE_ACCOUNT_TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
const EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";

/// The attributes of every volume, listed in error messages before the kinds' own.
const CONTENT_ATTRIBUTES: &[&str] = &[ATTR_SYSTEM_ROOTS, ATTR_LAYOUT, ATTR_JAVA_TRUSTSTORE, ATTR_EXPIRED];
/// The attributes of every kind, listed after the kinds' own.
const CLUSTER_ATTRIBUTES: &[&str] = &[ATTR_OPTIONAL, ATTR_DEFAULTS];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error(
        "unknown volume attribute {key:?}; trustmount accepts {accepted} (and csi.storage.k8s.io/* keys set by the kubelet)"
    )]
    UnknownAttribute { key: String, accepted: String },
    #[error("volume attribute {key:?} has value {value:?}; use {expected}")]
    InvalidValue { key: String, value: String, expected: String },
    #[error(
        "volume attribute {key:?} has value {value:?}, which names namespace {namespace:?}; a volume reads only from its pod's own namespace, so give the bare name of an object there"
    )]
    OtherNamespace { key: String, value: String, namespace: String },
    #[error("volume attribute {key:?} has value {value:?}, which is not a label selector: {reason}")]
    LabelSelector { key: String, value: String, reason: SelectorError },
    #[error("volume attribute {selector:?} needs {signer:?}: a selector narrows the objects of one signer")]
    SelectorWithoutSigner { selector: &'static str, signer: &'static str },
}

/// The content-defining part of a volume: two volumes with equal specs see identical files.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VolumeSpec {
    /// The pod's namespace; empty when the CSIDriver does not set `podInfoOnMount`.
    pub namespace: String,
    pub system_roots: bool,
    pub render: RenderOptions,
    pub keep_expired: bool,
    /// What the volume reads from the Kubernetes API.
    pub cluster: ClusterSources,
}

/// Who the volume is for; recorded, never part of the content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub service_account: String,
    pub ephemeral: bool,
}

/// Hex SHA-256 of a spec's canonical form; names its directory in the store.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpecDigest(String);

impl SpecDigest {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Accepts only what [`VolumeSpec::digest`] produces, so a digest read back from disk can
    /// never name a path outside the store.
    pub fn parse(text: &str) -> Option<Self> {
        let valid = text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        valid.then(|| Self(text.to_owned()))
    }
}

impl std::fmt::Display for SpecDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl VolumeSpec {
    /// Parses a volume's attributes (`volume_context`); `kinds` own the cluster source
    /// attributes (`sources::cluster::parse_attributes` passes every registered kind).
    ///
    /// # Errors
    /// An unknown key or a value outside the accepted set.
    pub fn from_attributes(
        attributes: &HashMap<String, String>,
        kinds: &[&dyn KindAttributes],
    ) -> Result<(Self, PodInfo), Error> {
        let mut spec = VolumeSpec::default();
        let mut pod = PodInfo::default();
        // Sorted so the first error reported does not depend on hash order.
        let sorted: BTreeMap<&str, &str> = attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut given: Vec<BTreeMap<&str, &str>> = vec![BTreeMap::new(); kinds.len()];
        for (key, value) in sorted {
            match key {
                ATTR_SYSTEM_ROOTS => spec.system_roots = parse_bool(key, value)?,
                ATTR_LAYOUT => spec.render.layout = parse_choice(key, value, Layout::ALL, |l| l.name())?,
                ATTR_JAVA_TRUSTSTORE => {
                    spec.render.java = parse_choice(key, value, JavaTruststore::ALL, |j| j.name())?;
                }
                ATTR_EXPIRED => spec.keep_expired = parse_choice(key, value, &[false, true], expired_name)?,
                ATTR_OPTIONAL => spec.cluster.optional = parse_bool(key, value)?,
                ATTR_DEFAULTS => spec.cluster.defaults = parse_bool(key, value)?,
                // The kubelet's pod info reaches request URLs, records and messages: a value
                // Kubernetes itself could not have set is refused before it goes anywhere.
                POD_NAME => pod.name = kubelet_name(key, value, NameRule::Subdomain)?,
                POD_NAMESPACE => pod.namespace = kubelet_name(key, value, NameRule::Label)?,
                POD_UID => pod.uid = kubelet_name(key, value, NameRule::Uid)?,
                SERVICE_ACCOUNT => pod.service_account = kubelet_name(key, value, NameRule::Subdomain)?,
                EPHEMERAL => pod.ephemeral = parse_bool(key, value)?,
                // The token is a credential for this call, not content: the caller takes it
                // from the request (never from here), and it never reaches the spec.
                SERVICE_ACCOUNT_TOKENS => {}
                // Other kubelet keys (future additions) are the kubelet's business, not a user's
                // typo.
                other if other.starts_with(KUBELET_PREFIX) => {}
                other => match kinds.iter().position(|kind| kind.attributes().contains(&other)) {
                    Some(owner) => {
                        given[owner].insert(key, value);
                    }
                    None => {
                        let accepted: Vec<&str> = CONTENT_ATTRIBUTES
                            .iter()
                            .copied()
                            .chain(kinds.iter().flat_map(|kind| kind.attributes().iter().copied()))
                            .chain(CLUSTER_ATTRIBUTES.iter().copied())
                            .collect();
                        return Err(Error::UnknownAttribute { key: echo::value(other), accepted: accepted.join(", ") });
                    }
                },
            }
        }
        spec.namespace = pod.namespace.clone();
        for (kind, given) in kinds.iter().zip(&given) {
            if given.is_empty() {
                continue;
            }
            let refs = kind.parse(given)?;
            // Read as the pod's ServiceAccount, what the spec's directory holds depends on it:
            // only then is it part of the spec.
            if kind.reads_as_pod() && !refs.is_empty() {
                spec.cluster.service_account = pod.service_account.clone();
            }
            spec.cluster.add(kind.name().tag, refs);
        }
        Ok((spec, pod))
    }

    /// Whether the volume reads anything from the Kubernetes API.
    pub fn has_cluster_sources(&self) -> bool {
        !self.cluster.names_none()
    }

    pub fn digest(&self) -> SpecDigest {
        let v1 = CanonicalV1 {
            namespace: &self.namespace,
            system_roots: self.system_roots,
            render: CanonicalRender {
                layout: layout_tag(self.render.layout),
                java: java_truststore_tag(self.render.java),
            },
            keep_expired: self.keep_expired,
        };
        // Versioned so a future change of the canonical form never reuses an old directory. A
        // spec without cluster attributes keeps its v1 digest (and so its adopted directory);
        // one of the kinds before the trait keeps its v2 (without Secrets) or v3 digest; any
        // other kind digests in v4, which spells every kind alike.
        let cluster = &self.cluster;
        let v2 = || CanonicalV2 {
            v1,
            cluster_trust_bundles: cluster.objects(TRUST_BUNDLES_TAG).map(|(name, _)| name).collect(),
            signer: cluster.signers(TRUST_BUNDLES_TAG).next().map(|s| (s.signer_name.as_str(), s.selector.to_string())),
            config_maps: cluster.objects(CONFIG_MAPS_TAG).collect(),
            optional: cluster.optional,
            defaults: cluster.defaults,
        };
        let canonical = if cluster.is_default() {
            serde_json::to_vec(&("v1", v1))
        } else if !cluster.only_kinds(&[TRUST_BUNDLES_TAG, CONFIG_MAPS_TAG, SECRETS_TAG]) {
            let sources = cluster
                .named
                .iter()
                .map(|(tag, refs)| (tag.as_str(), refs.iter().map(CanonicalReference::from).collect()))
                .collect();
            let v4 = CanonicalV4 {
                v1,
                sources,
                service_account: &cluster.service_account,
                optional: cluster.optional,
                defaults: cluster.defaults,
            };
            serde_json::to_vec(&("v4", v4))
        } else if cluster.of(SECRETS_TAG).is_empty() {
            serde_json::to_vec(&("v2", v2()))
        } else {
            let v3 = CanonicalV3 {
                v2: v2(),
                secrets: cluster.objects(SECRETS_TAG).map(|(name, key)| (name, key.unwrap_or_default())).collect(),
                service_account: &cluster.service_account,
            };
            serde_json::to_vec(&("v3", v3))
        };
        let hash = Sha256::digest(canonical.unwrap_or_default());
        SpecDigest(hex::encode(&hash[..16]))
    }
}

/// v1 plus the cluster sources; same rules as [`CanonicalV1`]. The selector is digested in its
/// canonical spelling, so `a=1,b=2` and `b=2, a==1` share a directory.
#[derive(Serialize)]
struct CanonicalV2<'a> {
    #[serde(flatten)]
    v1: CanonicalV1<'a>,
    cluster_trust_bundles: Vec<&'a str>,
    signer: Option<(&'a str, String)>,
    config_maps: Vec<(&'a str, Option<&'a str>)>,
    optional: bool,
    defaults: bool,
}

/// v2 plus the Secrets and the ServiceAccount they are read as: two pods of different
/// ServiceAccounts never share a directory rendered from a Secret.
#[derive(Serialize)]
struct CanonicalV3<'a> {
    #[serde(flatten)]
    v2: CanonicalV2<'a>,
    secrets: Vec<(&'a str, &'a str)>,
    service_account: &'a str,
}

/// v1 plus the cluster sources of any kinds, by tag: a new kind needs no new version.
#[derive(Serialize)]
struct CanonicalV4<'a> {
    #[serde(flatten)]
    v1: CanonicalV1<'a>,
    sources: BTreeMap<&'a str, Vec<CanonicalReference<'a>>>,
    service_account: &'a str,
    optional: bool,
    defaults: bool,
}

/// A [`Reference`] as v4 spells it; every name explicit, as in [`CanonicalV1`].
#[derive(Serialize)]
enum CanonicalReference<'a> {
    #[serde(rename = "object")]
    Object {
        #[serde(rename = "name")]
        name: &'a str,
        #[serde(rename = "key")]
        key: Option<&'a str>,
    },
    #[serde(rename = "signer")]
    Signer {
        #[serde(rename = "signer_name")]
        signer_name: &'a str,
        #[serde(rename = "selector")]
        selector: String,
    },
}

impl<'a> From<&'a Reference> for CanonicalReference<'a> {
    fn from(reference: &'a Reference) -> Self {
        match reference {
            Reference::Object { name, key } => Self::Object { name, key: key.as_deref() },
            Reference::Signer(signer) => {
                Self::Signer { signer_name: &signer.signer_name, selector: signer.selector.to_string() }
            }
        }
    }
}

/// The digested form of a [`VolumeSpec`], spelled out so that renaming a Rust field or variant
/// cannot move a digest: digests name store directories that are adopted across restarts and
/// upgrades. Field names and order are the JSON keys; changing them needs a new version tag.
#[derive(Clone, Copy, Serialize)]
struct CanonicalV1<'a> {
    namespace: &'a str,
    system_roots: bool,
    render: CanonicalRender,
    keep_expired: bool,
}

#[derive(Clone, Copy, Serialize)]
struct CanonicalRender {
    layout: &'static str,
    java: &'static str,
}

/// The spellings serde's derive gave the variants when v1 was fixed (not the attribute values,
/// which are lowercase); frozen so existing digests stay put.
fn layout_tag(layout: Layout) -> &'static str {
    match layout {
        Layout::Debian => "Debian",
        Layout::Rhel => "Rhel",
        Layout::Suse => "Suse",
    }
}

/// As [`layout_tag`].
fn java_truststore_tag(java: JavaTruststore) -> &'static str {
    match java {
        JavaTruststore::Jks => "Jks",
        JavaTruststore::Pkcs12 => "Pkcs12",
        JavaTruststore::None => "None",
    }
}

impl Default for VolumeSpec {
    fn default() -> Self {
        Self {
            namespace: String::new(),
            system_roots: true,
            render: RenderOptions::default(),
            keep_expired: false,
            cluster: ClusterSources::default(),
        }
    }
}

/// How Kubernetes names what the kubelet's pod info carries.
#[derive(Clone, Copy)]
enum NameRule {
    /// A DNS label (RFC 1123): namespaces.
    Label,
    /// A DNS subdomain (RFC 1123): pods, ServiceAccounts.
    Subdomain,
    /// An object UID: a UUID from the API server, or a static pod's hex hash.
    Uid,
}

/// `value` when it is a name Kubernetes could have given under `rule` (empty: not given).
fn kubelet_name(key: &str, value: &str, rule: NameRule) -> Result<String, Error> {
    let bytes = value.as_bytes();
    let alphanumeric_ends = || {
        bytes.first().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && bytes.last().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let lower = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let (valid, expected) = match rule {
        NameRule::Label => (
            bytes.len() <= 63 && bytes.iter().all(lower) && alphanumeric_ends(),
            "a namespace name (a DNS label: at most 63 lowercase letters, digits and '-')",
        ),
        NameRule::Subdomain => (
            bytes.len() <= 253
                && bytes.iter().all(|b| lower(b) || *b == b'.')
                && value.split('.').all(|part| !part.is_empty() && !part.starts_with('-') && !part.ends_with('-')),
            "an object name (a DNS subdomain: at most 253 lowercase letters, digits, '-' and '.')",
        ),
        NameRule::Uid => (
            bytes.len() <= 64 && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-'),
            "a pod UID (at most 64 letters, digits and '-')",
        ),
    };
    if value.is_empty() || valid {
        Ok(value.to_owned())
    } else {
        Err(Error::InvalidValue { key: key.to_owned(), value: echo::value(value), expected: expected.to_owned() })
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, Error> {
    parse_choice(key, value, &[true, false], |b| if b { "true" } else { "false" })
}

fn expired_name(keep: bool) -> &'static str {
    if keep { "keep" } else { "drop" }
}

/// Exactly one of `choices` by its name; the error lists them all.
fn parse_choice<T: Copy>(key: &str, value: &str, choices: &[T], name: fn(T) -> &'static str) -> Result<T, Error> {
    choices.iter().copied().find(|c| name(*c) == value).ok_or_else(|| Error::InvalidValue {
        key: key.to_owned(),
        value: echo::value(value),
        expected: choices.iter().map(|c| format!("{:?}", name(*c))).collect::<Vec<_>>().join(" or "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without kinds: the attributes of every volume (each kind's file tests its own).
    fn parse(attributes: &HashMap<String, String>) -> Result<(VolumeSpec, PodInfo), Error> {
        VolumeSpec::from_attributes(attributes, &[])
    }

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_include_system_roots() {
        let (spec, pod) = parse(&attrs(&[])).unwrap();
        assert!(spec.system_roots);
        assert_eq!(pod, PodInfo::default());
    }

    #[test]
    fn system_roots_false_is_parsed() {
        let (spec, _) = parse(&attrs(&[("systemRoots", "false")])).unwrap();
        assert!(!spec.system_roots);
    }

    #[test]
    fn typo_in_attribute_is_rejected_with_accepted_names() {
        let err = parse(&attrs(&[("systemroots", "false")])).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("systemroots") && message.contains("systemRoots"), "{message}");
    }

    #[test]
    fn layout_java_and_expired_attributes_are_parsed() {
        let (spec, _) =
            parse(&attrs(&[("layout", "debian"), ("javaTruststore", "none"), ("expired", "keep")])).unwrap();
        assert_eq!(spec.render.layout, Layout::Debian);
        assert_eq!(spec.render.java, JavaTruststore::None);
        assert!(spec.keep_expired);
        assert_ne!(spec.digest(), VolumeSpec::default().digest());
    }

    #[test]
    fn unknown_layout_names_the_valid_ones() {
        let err = parse(&attrs(&[("layout", "gentoo")])).unwrap_err();
        assert!(err.to_string().contains("\"debian\""), "{err}");
    }

    #[test]
    fn non_boolean_value_is_rejected() {
        let err = parse(&attrs(&[("systemRoots", "no")])).unwrap_err();
        assert!(matches!(err, Error::InvalidValue { .. }));
    }

    #[test]
    fn kubelet_keys_fill_pod_info_and_namespace() {
        let (spec, pod) = parse(&attrs(&[
            (POD_NAME, "web-0"),
            (POD_NAMESPACE, "shop"),
            (POD_UID, "1234"),
            (SERVICE_ACCOUNT, "default"),
            (EPHEMERAL, "true"),
            ("csi.storage.k8s.io/serviceAccount.tokens", "{}"),
        ]))
        .unwrap();
        assert_eq!(spec.namespace, "shop");
        assert_eq!(pod.name, "web-0");
        assert!(pod.ephemeral);
    }

    /// Digests name directories that survive restarts and upgrades: computed once with the
    /// code of e137d69, they must never move (a new canonical form gets a new version tag).
    #[test]
    fn digests_are_pinned_to_the_v1_canonical_form() {
        assert_eq!(VolumeSpec::default().digest().as_str(), "fb1ed9f925a99a3a134377a57bfd9e52");
        let spec = VolumeSpec {
            namespace: "shop".to_owned(),
            system_roots: false,
            render: RenderOptions { layout: Layout::Rhel, java: JavaTruststore::Pkcs12 },
            keep_expired: true,
            cluster: ClusterSources::default(),
        };
        assert_eq!(spec.digest().as_str(), "4f40c66253ad2ed2fd987c5626132533");
    }

    #[test]
    fn digest_depends_on_content_not_pod_identity() {
        let a = parse(&attrs(&[(POD_NAMESPACE, "a"), (POD_NAME, "x")])).unwrap().0;
        let a2 = parse(&attrs(&[(POD_NAMESPACE, "a"), (POD_NAME, "y")])).unwrap().0;
        let b = parse(&attrs(&[(POD_NAMESPACE, "b")])).unwrap().0;
        assert_eq!(a.digest(), a2.digest());
        assert_ne!(a.digest(), b.digest());
        assert!(SpecDigest::parse(a.digest().as_str()).is_some());
        assert!(SpecDigest::parse("../etc").is_none());
    }

    /// A kind the house never had, through the trait alone: its attribute is accepted and
    /// listed, its references digest in v4 (pinned: a v4 directory is adopted across upgrades
    /// too), and another kind's spellings do not collide with it.
    struct Bundles;

    impl KindAttributes for Bundles {
        fn name(&self) -> crate::bundle::KindName {
            crate::bundle::KindName { tag: "bundle", title: "Bundle" }
        }

        fn attributes(&self) -> &'static [&'static str] {
            &["bundles"]
        }

        fn parse(&self, given: &BTreeMap<&str, &str>) -> Result<Vec<Reference>, Error> {
            let mut refs = Vec::new();
            for (key, value) in given {
                refs.extend(parse_names(key, value, "a Bundle name", b"")?);
            }
            Ok(refs)
        }

        fn namespaced(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_new_kind_needs_no_new_digest_version() {
        let parse = |pairs: &[(&str, &str)]| VolumeSpec::from_attributes(&attrs(pairs), &[&Bundles]);
        let (spec, _) = parse(&[(POD_NAMESPACE, "shop"), ("bundles", "org, corp,org")]).unwrap();
        assert_eq!(spec.cluster.of("bundle"), [Reference::object("corp", None), Reference::object("org", None)]);
        // SHA-256 (first 16 bytes) of ["v4",{"namespace":"shop",…,"sources":{"bundle":[{"object":
        // {"name":"corp","key":null}},…]},"service_account":"","optional":false,"defaults":true}],
        // computed by hand from the spelled-out form.
        assert_eq!(spec.digest().as_str(), "7973f997248cbe59c2998699b5d5ba64");
        let (reordered, _) = parse(&[(POD_NAMESPACE, "shop"), ("bundles", "corp, org")]).unwrap();
        assert_eq!(reordered.digest(), spec.digest(), "the order of a list is not content");
        let unknown = parse(&[("bundle", "org")]).unwrap_err().to_string();
        assert!(unknown.contains("bundles") && unknown.contains("systemRoots"), "{unknown}");
        assert!(self::parse(&attrs(&[("bundles", "org")])).is_err(), "a kind not given is unknown");
    }

    #[test]
    fn pod_info_kubernetes_could_not_have_set_is_refused_and_echoed_bounded() {
        let parse = |key: &str, value: &str| VolumeSpec::from_attributes(&attrs(&[(key, value)]), &[]);
        for (key, good) in [
            (POD_NAMESPACE, "team-b"),
            (POD_NAME, "web-0.shard"),
            (SERVICE_ACCOUNT, "reader"),
            (POD_UID, "0b5f4a4e-7d52-4a0e-9c1b-7f2b1d9f3c11"),
            (POD_UID, "6d0d3c5e0b8f1f3a9e2d7c4b1a0f9e8d"),
        ] {
            assert!(parse(key, good).is_ok(), "{key}={good}");
        }
        let injected = "team-b?labelSelector=x";
        for (key, bad) in [
            (POD_NAMESPACE, injected),
            (POD_NAMESPACE, "team-b/configmaps"),
            (POD_NAMESPACE, "Team"),
            (POD_NAMESPACE, &"a".repeat(64)),
            (SERVICE_ACCOUNT, "../default"),
            (POD_NAME, "web..0"),
            (POD_UID, "u/../../x"),
        ] {
            let error = parse(key, bad).unwrap_err();
            assert!(matches!(&error, Error::InvalidValue { key: k, .. } if k == key), "{key}={bad}: {error}");
        }
        let huge = "x".repeat(1 << 20);
        let message = parse(POD_NAMESPACE, &huge).unwrap_err().to_string();
        assert!(message.len() < 600, "a megabyte value is echoed bounded: {} bytes", message.len());
        assert!(message.contains("1048576 bytes in all"), "{message}");
        let message = parse(&huge, "x").unwrap_err().to_string();
        assert!(message.len() < 1000, "an unknown key too: {} bytes", message.len());
    }
}

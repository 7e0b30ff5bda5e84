//! The shared vocabulary of the house: what a volume asks for (the pod's namespace plus its
//! validated volume attributes), who it is for, and the kinds of certificate source.
//!
//! Parsing is strict — an unknown attribute is an error, so a typo (`systemroots`) never silently
//! falls back to a default. The spec's digest names the shared directory every volume with the
//! same spec is bind-mounted from.
//!
//! - [`cluster`]: the cluster sources (ClusterTrustBundles, ConfigMaps, Secrets) a volume names.
//! - [`selector`]: Kubernetes label selectors (`signerName` + `labelSelector`).
//! - [`SourceKind`]: the kinds of certificate source.

mod cluster;
mod selector;
mod source_kind;

pub use cluster::{ClusterSources, ConfigMapRef, DEFAULT_SECRET_KEY, SecretRef, SignerSelection};
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
/// Volume attribute: ClusterTrustBundles by name, comma-separated.
pub const ATTR_CLUSTER_TRUST_BUNDLES: &str = "clusterTrustBundles";
/// Volume attribute: every ClusterTrustBundle of this signer (whose labels match `labelSelector`).
pub const ATTR_SIGNER_NAME: &str = "signerName";
/// Volume attribute: a Kubernetes label selector narrowing `signerName`.
pub const ATTR_LABEL_SELECTOR: &str = "labelSelector";
/// Volume attribute: ConfigMaps in the pod's namespace, `name` or `name:key`, comma-separated.
pub const ATTR_CONFIG_MAPS: &str = "configMaps";
/// Volume attribute: Secrets in the pod's namespace, `name` (key `ca.crt`) or `name:key`,
/// comma-separated; read with the pod's own ServiceAccount token.
pub const ATTR_SECRETS: &str = "secrets";
/// Volume attribute: `"true"` skips a missing cluster source instead of failing the publish.
pub const ATTR_OPTIONAL: &str = "optional";
/// Volume attribute: `"false"` leaves out the driver-wide default sources.
pub const ATTR_DEFAULTS: &str = "defaults";

/// Attributes the kubelet adds itself (podInfoOnMount, tokenRequests, ephemeral).
const KUBELET_PREFIX: &str = "csi.storage.k8s.io/";
pub const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
pub const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";
/// The kubelet's token JSON (`tokenRequests`), in `volume_context` or the request's `secrets`:
/// a credential, never part of the spec or its digest, never logged.
pub const SERVICE_ACCOUNT_TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
const EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";

/// The attributes a user may set, listed in error messages.
pub const USER_ATTRIBUTES: &[&str] = &[
    ATTR_SYSTEM_ROOTS,
    ATTR_LAYOUT,
    ATTR_JAVA_TRUSTSTORE,
    ATTR_EXPIRED,
    ATTR_CLUSTER_TRUST_BUNDLES,
    ATTR_SIGNER_NAME,
    ATTR_LABEL_SELECTOR,
    ATTR_CONFIG_MAPS,
    ATTR_SECRETS,
    ATTR_OPTIONAL,
    ATTR_DEFAULTS,
];

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
    #[error("volume attribute \"labelSelector\" needs \"signerName\": a selector narrows the bundles of one signer")]
    SelectorWithoutSigner,
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
    /// Parses a volume's attributes (`volume_context`).
    ///
    /// # Errors
    /// An unknown key or a value outside the accepted set.
    pub fn from_attributes(attributes: &HashMap<String, String>) -> Result<(Self, PodInfo), Error> {
        let mut spec = VolumeSpec::default();
        let mut pod = PodInfo::default();
        // Sorted so the first error reported does not depend on hash order.
        let sorted: BTreeMap<&String, &String> = attributes.iter().collect();
        let mut label_selector = None;
        for (key, value) in sorted {
            match key.as_str() {
                ATTR_SYSTEM_ROOTS => spec.system_roots = parse_bool(key, value)?,
                ATTR_LAYOUT => spec.render.layout = parse_choice(key, value, Layout::ALL, |l| l.name())?,
                ATTR_JAVA_TRUSTSTORE => {
                    spec.render.java = parse_choice(key, value, JavaTruststore::ALL, |j| j.name())?;
                }
                ATTR_EXPIRED => spec.keep_expired = parse_choice(key, value, &[false, true], expired_name)?,
                ATTR_CLUSTER_TRUST_BUNDLES => spec.cluster.trust_bundles = cluster::parse_trust_bundles(key, value)?,
                ATTR_SIGNER_NAME => {
                    let signer_name = cluster::parse_signer_name(key, value)?;
                    spec.cluster.signer = Some(SignerSelection { signer_name, selector: LabelSelector::default() });
                }
                ATTR_LABEL_SELECTOR => {
                    label_selector = Some(LabelSelector::parse(value).map_err(|reason| Error::LabelSelector {
                        key: key.clone(),
                        value: value.clone(),
                        reason,
                    })?);
                }
                ATTR_CONFIG_MAPS => spec.cluster.config_maps = cluster::parse_config_maps(key, value)?,
                ATTR_SECRETS => spec.cluster.secrets = cluster::parse_secrets(key, value)?,
                ATTR_OPTIONAL => spec.cluster.optional = parse_bool(key, value)?,
                ATTR_DEFAULTS => spec.cluster.defaults = parse_bool(key, value)?,
                POD_NAME => pod.name = value.clone(),
                POD_NAMESPACE => pod.namespace = value.clone(),
                POD_UID => pod.uid = value.clone(),
                SERVICE_ACCOUNT => pod.service_account = value.clone(),
                EPHEMERAL => pod.ephemeral = parse_bool(key, value)?,
                // The token is a credential for this call, not content: the caller takes it
                // from the request (never from here), and it never reaches the spec.
                SERVICE_ACCOUNT_TOKENS => {}
                // Other kubelet keys (future additions) are the kubelet's business, not a user's
                // typo.
                other if other.starts_with(KUBELET_PREFIX) => {}
                other => {
                    return Err(Error::UnknownAttribute {
                        key: other.to_owned(),
                        accepted: USER_ATTRIBUTES.join(", "),
                    });
                }
            }
        }
        if let Some(selector) = label_selector {
            spec.cluster.signer.as_mut().ok_or(Error::SelectorWithoutSigner)?.selector = selector;
        }
        spec.namespace = pod.namespace.clone();
        // Secrets are read as the pod's ServiceAccount, so what a spec directory holds depends on
        // it: only then is it part of the spec.
        if !spec.cluster.secrets.is_empty() {
            spec.cluster.service_account = pod.service_account.clone();
        }
        Ok((spec, pod))
    }

    /// Whether the volume reads anything from the Kubernetes API.
    pub fn has_cluster_sources(&self) -> bool {
        !self.cluster.names_none()
    }

    /// Whether the volume reads Secrets, with the pod's own ServiceAccount token.
    pub fn has_secret_sources(&self) -> bool {
        !self.cluster.secrets.is_empty()
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
        // spec without cluster attributes keeps its v1 digest (and so its adopted directory).
        // A spec without Secrets keeps its v2 digest.
        let cluster = &self.cluster;
        let v2 = || CanonicalV2 {
            v1,
            cluster_trust_bundles: &cluster.trust_bundles,
            signer: cluster.signer.as_ref().map(|s| (s.signer_name.as_str(), s.selector.to_string())),
            config_maps: cluster.config_maps.iter().map(|r| (r.name.as_str(), r.key.as_deref())).collect(),
            optional: cluster.optional,
            defaults: cluster.defaults,
        };
        let canonical = if cluster.is_default() {
            serde_json::to_vec(&("v1", v1))
        } else if cluster.secrets.is_empty() {
            serde_json::to_vec(&("v2", v2()))
        } else {
            let v3 = CanonicalV3 {
                v2: v2(),
                secrets: cluster.secrets.iter().map(|r| (r.name.as_str(), r.key.as_str())).collect(),
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
    cluster_trust_bundles: &'a [String],
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
        value: value.to_owned(),
        expected: choices.iter().map(|c| format!("{:?}", name(*c))).collect::<Vec<_>>().join(" or "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a_spec_without_secrets_keeps_its_v2_digest`'s spec, digested by the code of 6fa5ddb
    /// (and by hand: SHA-256 of its canonical JSON, first 16 bytes).
    const V2_DIGEST: &str = "49bbde234262aab01b085861813a77fa";

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_include_system_roots() {
        let (spec, pod) = VolumeSpec::from_attributes(&attrs(&[])).unwrap();
        assert!(spec.system_roots);
        assert_eq!(pod, PodInfo::default());
    }

    #[test]
    fn system_roots_false_is_parsed() {
        let (spec, _) = VolumeSpec::from_attributes(&attrs(&[("systemRoots", "false")])).unwrap();
        assert!(!spec.system_roots);
    }

    #[test]
    fn typo_in_attribute_is_rejected_with_accepted_names() {
        let err = VolumeSpec::from_attributes(&attrs(&[("systemroots", "false")])).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("systemroots") && message.contains("systemRoots"), "{message}");
    }

    #[test]
    fn layout_java_and_expired_attributes_are_parsed() {
        let (spec, _) = VolumeSpec::from_attributes(&attrs(&[
            ("layout", "debian"),
            ("javaTruststore", "none"),
            ("expired", "keep"),
        ]))
        .unwrap();
        assert_eq!(spec.render.layout, Layout::Debian);
        assert_eq!(spec.render.java, JavaTruststore::None);
        assert!(spec.keep_expired);
        assert_ne!(spec.digest(), VolumeSpec::default().digest());
    }

    #[test]
    fn unknown_layout_names_the_valid_ones() {
        let err = VolumeSpec::from_attributes(&attrs(&[("layout", "gentoo")])).unwrap_err();
        assert!(err.to_string().contains("\"debian\""), "{err}");
    }

    #[test]
    fn non_boolean_value_is_rejected() {
        let err = VolumeSpec::from_attributes(&attrs(&[("systemRoots", "no")])).unwrap_err();
        assert!(matches!(err, Error::InvalidValue { .. }));
    }

    #[test]
    fn kubelet_keys_fill_pod_info_and_namespace() {
        let (spec, pod) = VolumeSpec::from_attributes(&attrs(&[
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
        let a = VolumeSpec::from_attributes(&attrs(&[(POD_NAMESPACE, "a"), (POD_NAME, "x")])).unwrap().0;
        let a2 = VolumeSpec::from_attributes(&attrs(&[(POD_NAMESPACE, "a"), (POD_NAME, "y")])).unwrap().0;
        let b = VolumeSpec::from_attributes(&attrs(&[(POD_NAMESPACE, "b")])).unwrap().0;
        assert_eq!(a.digest(), a2.digest());
        assert_ne!(a.digest(), b.digest());
        assert!(SpecDigest::parse(a.digest().as_str()).is_some());
        assert!(SpecDigest::parse("../etc").is_none());
    }

    #[test]
    fn cluster_attributes_are_parsed_sorted_and_deduplicated() {
        let (spec, _) = VolumeSpec::from_attributes(&attrs(&[
            ("clusterTrustBundles", "b, a,b"),
            ("configMaps", "team-ca:ca.crt, corp-ca,corp-ca"),
            ("signerName", "example.com/corp"),
            ("labelSelector", "env in (prod), !legacy"),
            ("optional", "true"),
            ("defaults", "false"),
        ]))
        .unwrap();
        let cluster = &spec.cluster;
        assert_eq!(cluster.trust_bundles, ["a", "b"]);
        let refs: Vec<String> = cluster.config_maps.iter().map(ToString::to_string).collect();
        assert_eq!(refs, ["corp-ca", "team-ca:ca.crt"]);
        let signer = cluster.signer.as_ref().unwrap();
        assert_eq!(signer.signer_name, "example.com/corp");
        assert_eq!(signer.selector.to_string(), "env in (prod),!legacy");
        assert!(cluster.optional && !cluster.defaults);
        assert!(spec.has_cluster_sources());
    }

    #[test]
    fn another_namespace_is_refused_by_name() {
        for (key, value) in [("configMaps", "team-b/ca"), ("configMaps", "ok, team-b/ca:ca.crt")] {
            let error = VolumeSpec::from_attributes(&attrs(&[(key, value)])).unwrap_err();
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
            assert!(VolumeSpec::from_attributes(&attrs(pairs)).is_err(), "{key}={value:?}");
        }
        let error = VolumeSpec::from_attributes(&attrs(&[("labelSelector", "a=b")])).unwrap_err();
        assert_eq!(error, Error::SelectorWithoutSigner);
    }

    #[test]
    fn cluster_sources_are_part_of_the_digest_and_equal_ones_share_it() {
        let digest = |pairs: &[(&str, &str)]| VolumeSpec::from_attributes(&attrs(pairs)).unwrap().0.digest();
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
        let (spec, _) = VolumeSpec::from_attributes(&attrs(&[
            (POD_NAMESPACE, "shop"),
            (SERVICE_ACCOUNT, "web"),
            ("secrets", "corp-ca-secret, other:ca.pem, corp-ca-secret:ca.crt"),
        ]))
        .unwrap();
        let refs: Vec<String> = spec.cluster.secrets.iter().map(ToString::to_string).collect();
        assert_eq!(refs, ["corp-ca-secret:ca.crt", "other:ca.pem"], "a bare name is name:ca.crt");
        assert_eq!(spec.cluster.service_account, "web");
        assert!(spec.has_secret_sources() && spec.has_cluster_sources());
        let error = VolumeSpec::from_attributes(&attrs(&[("secrets", "team-b/ca")])).unwrap_err();
        assert!(matches!(&error, Error::OtherNamespace { namespace, .. } if namespace == "team-b"), "{error:?}");
        for bad in ["", "Upper", "ca:", "ca:bad key", "a,,b"] {
            let error = VolumeSpec::from_attributes(&attrs(&[("secrets", bad)])).unwrap_err();
            assert!(matches!(error, Error::InvalidValue { .. }), "{bad:?}: {error:?}");
        }
    }

    /// Pods of two ServiceAccounts never share a directory rendered from a Secret; without
    /// Secrets the ServiceAccount is no content, as before.
    #[test]
    fn the_service_account_is_in_the_digest_only_of_specs_with_secrets() {
        let digest = |pairs: &[(&str, &str)]| VolumeSpec::from_attributes(&attrs(pairs)).unwrap().0.digest();
        let with = |account: &str| digest(&[(POD_NAMESPACE, "a"), (SERVICE_ACCOUNT, account), ("secrets", "ca")]);
        assert_ne!(with("granted"), with("other"));
        assert_eq!(with("granted"), with("granted"));
        let without = |account: &str| digest(&[(POD_NAMESPACE, "a"), (SERVICE_ACCOUNT, account), ("configMaps", "ca")]);
        assert_eq!(without("granted"), without("other"));
        let (spec, _) = VolumeSpec::from_attributes(&attrs(&[(SERVICE_ACCOUNT, "web"), ("configMaps", "ca")])).unwrap();
        assert!(spec.cluster.service_account.is_empty());
    }

    #[test]
    fn the_token_json_is_no_unknown_attribute_and_no_content() {
        let plain = [(POD_NAMESPACE, "a"), (SERVICE_ACCOUNT, "web"), ("secrets", "ca")];
        let (without, _) = VolumeSpec::from_attributes(&attrs(&plain)).unwrap();
        let mut with_token = plain.to_vec();
        with_token.push((SERVICE_ACCOUNT_TOKENS, r#"{"":{"token":"abc","expirationTimestamp":"x"}}"#));
        let (with, _) = VolumeSpec::from_attributes(&attrs(&with_token)).unwrap();
        assert_eq!(with, without);
        assert_eq!(with.digest(), without.digest());
    }

    /// A spec of ConfigMaps keeps the digest the code before Secret sources gave it (6fa5ddb):
    /// its directory is adopted across the upgrade.
    #[test]
    fn a_spec_without_secrets_keeps_its_v2_digest() {
        let (spec, _) = VolumeSpec::from_attributes(&attrs(&[
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
        let digest = |pairs: &[(&str, &str)]| VolumeSpec::from_attributes(&attrs(pairs)).unwrap().0.digest();
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
}

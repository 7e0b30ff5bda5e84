//! The cluster sources a volume names: ClusterTrustBundles (by name, or by signer and label
//! selector), ConfigMaps and Secrets in the pod's own namespace, parsed from their attributes.

use super::Error;
use super::selector::LabelSelector;

/// ConfigMap, Secret and ClusterTrustBundle names are DNS subdomains: at most 253 characters.
const NAME_MAX: usize = 253;
/// The key a bare Secret name takes: what cert-manager (and `kubernetes.io/tls` Secrets from
/// most CAs) call the issuing CA. A Secret is never searched key by key: its other keys are
/// usually `tls.key`.
pub const DEFAULT_SECRET_KEY: &str = "ca.crt";

/// What a volume reads from the Kubernetes API. Empty for a volume of local sources only.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterSources {
    /// ClusterTrustBundles by name, sorted, without duplicates.
    pub trust_bundles: Vec<String>,
    /// Every ClusterTrustBundle of a signer whose labels match.
    pub signer: Option<SignerSelection>,
    /// ConfigMaps in the pod's namespace, sorted, without duplicates.
    pub config_maps: Vec<ConfigMapRef>,
    /// Secrets in the pod's namespace, sorted, without duplicates; read with the pod's own
    /// ServiceAccount token, never with the driver's identity.
    pub secrets: Vec<SecretRef>,
    /// The ServiceAccount the Secrets are read as; empty unless the spec names Secrets. Part of
    /// the spec (and so of its digest), so pods of another ServiceAccount never share the
    /// directory rendered from what this one may read.
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

/// `name` (every key holding certificates) or `name:key` (that key only).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigMapRef {
    pub name: String,
    pub key: Option<String>,
}

impl std::fmt::Display for ConfigMapRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}:{key}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// `name:key` (that key) or `name` (key [`DEFAULT_SECRET_KEY`]): one key of a Secret, never
/// all of them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretRef {
    pub name: String,
    pub key: String,
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.key)
    }
}

impl ClusterSources {
    /// No cluster source at all (`optional` and `defaults` alone name none).
    pub fn names_none(&self) -> bool {
        self.trust_bundles.is_empty() && self.signer.is_none() && self.config_maps.is_empty() && self.secrets.is_empty()
    }

    /// Equal to the default: the spec digests as it did before cluster sources existed.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// `defaults` is true unless a volume opts out.
impl Default for ClusterSources {
    fn default() -> Self {
        Self {
            trust_bundles: Vec::new(),
            signer: None,
            config_maps: Vec::new(),
            secrets: Vec::new(),
            service_account: String::new(),
            optional: false,
            defaults: true,
        }
    }
}

/// `clusterTrustBundles: "a, b"`.
pub(super) fn parse_trust_bundles(key: &str, value: &str) -> Result<Vec<String>, Error> {
    let mut names = Vec::new();
    for name in list(key, value)? {
        check_name(key, value, name, "a ClusterTrustBundle name", |b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b':')
        })?;
        names.push(name.to_owned());
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// `configMaps: "corp-ca, team-ca:ca.crt"`.
pub(super) fn parse_config_maps(key: &str, value: &str) -> Result<Vec<ConfigMapRef>, Error> {
    let mut refs: Vec<ConfigMapRef> =
        parse_named_keys(key, value, "ConfigMap")?.into_iter().map(|(name, key)| ConfigMapRef { name, key }).collect();
    refs.sort();
    refs.dedup();
    Ok(refs)
}

/// `secrets: "corp-ca-secret, other:ca.pem"`: as `configMaps`, but a bare name takes key
/// [`DEFAULT_SECRET_KEY`] only.
pub(super) fn parse_secrets(key: &str, value: &str) -> Result<Vec<SecretRef>, Error> {
    let mut refs: Vec<SecretRef> = parse_named_keys(key, value, "Secret")?
        .into_iter()
        .map(|(name, key)| SecretRef { name, key: key.unwrap_or_else(|| DEFAULT_SECRET_KEY.to_owned()) })
        .collect();
    refs.sort();
    refs.dedup();
    Ok(refs)
}

/// `name` or `name:key` items of a `kind` (ConfigMap or Secret: same naming rules).
fn parse_named_keys(key: &str, value: &str, kind: &str) -> Result<Vec<(String, Option<String>)>, Error> {
    let mut refs = Vec::new();
    for item in list(key, value)? {
        let (name, data_key) = match item.split_once(':') {
            Some((name, data_key)) => (name.trim(), Some(data_key.trim())),
            None => (item, None),
        };
        check_name(key, value, name, &format!("a {kind} name"), |b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.')
        })?;
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
        refs.push((name.to_owned(), data_key.map(str::to_owned)));
    }
    Ok(refs)
}

/// `signerName: "example.com/corp"`: `<domain>/<path>` as Kubernetes signers are named.
pub(super) fn parse_signer_name(key: &str, value: &str) -> Result<String, Error> {
    let valid = value.split_once('/').is_some_and(|(domain, path)| !domain.is_empty() && !path.is_empty())
        && value.len() <= NAME_MAX
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if valid { Ok(value.to_owned()) } else { Err(invalid(key, value, "a signer name such as \"example.com/corp-ca\"")) }
}

fn list<'a>(key: &str, value: &'a str) -> Result<Vec<&'a str>, Error> {
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    if items.iter().any(|item| item.is_empty()) {
        return Err(invalid(key, value, "a comma-separated list of names, without empty items"));
    }
    Ok(items)
}

fn check_name(key: &str, value: &str, name: &str, what: &str, allowed: fn(u8) -> bool) -> Result<(), Error> {
    if let Some((namespace, _)) = name.split_once('/') {
        return Err(Error::OtherNamespace {
            key: key.to_owned(),
            value: value.to_owned(),
            namespace: namespace.to_owned(),
        });
    }
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= NAME_MAX
        && bytes.iter().copied().all(allowed)
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if valid {
        Ok(())
    } else {
        Err(invalid(key, value, format!("{name:?} is not {what}: lowercase letters, digits, '-' and '.'")))
    }
}

fn invalid(key: &str, value: &str, expected: impl Into<String>) -> Error {
    Error::InvalidValue { key: key.to_owned(), value: value.to_owned(), expected: expected.into() }
}

//! What a ConfigMap key or a ClusterTrustBundle holds, parsed once when the watch delivers it:
//! certificates, nothing of ours (ignored, counted), or something that must never reach a pod.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bundle::{self, Certificate, ObjectOrigin, Provenance, Strictness};
use crate::domain::{Limits, SOURCE_BYTES_FLAG, SOURCE_CERTIFICATES_FLAG};

/// One ConfigMap key's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyContent {
    Certificates(Vec<Certificate>),
    /// Holds no certificate (a README, a JWKS, a config file): skipped by a bare-name reference,
    /// refused (with this strict parse error) by a `name:key` one.
    Ignored(bundle::Error),
    /// Looks like certificate material but fails (a private key, a broken certificate): fails
    /// every reference to it.
    Invalid(bundle::Error),
}

/// A ConfigMap's keys as the cache holds them.
pub type Keys = BTreeMap<String, KeyContent>;

/// PEM labels that say "this is meant to be a certificate", so a parse failure is an error.
const CERTIFICATE_LABELS: [&str; 5] =
    ["CERTIFICATE-----", "TRUSTED CERTIFICATE-----", "PKCS7-----", "CMS-----", "PKCS #7 SIGNED DATA-----"];

/// Classifies one value. A private key anywhere is [`KeyContent::Invalid`]; so is a value
/// over `limits`, refused before (or, for a PKCS#7 bundle's count, right after) parsing.
pub fn classify(origin: &ObjectOrigin, bytes: &[u8], limits: &Limits) -> KeyContent {
    let over = |found: usize, max: usize, unit: &'static str, flag: &'static str| {
        KeyContent::Invalid(bundle::Error::OverLimit { source_name: origin.to_string(), found, max, unit, flag })
    };
    if bytes.len() > limits.source_bytes {
        return over(bytes.len(), limits.source_bytes, "bytes", SOURCE_BYTES_FLAG);
    }
    let blocks = pem_labels(bytes)
        .filter(|label| label.starts_with(b"CERTIFICATE-----") || label.starts_with(b"TRUSTED CERTIFICATE-----"))
        .count();
    if blocks > limits.source_certificates {
        return over(blocks, limits.source_certificates, "certificates", SOURCE_CERTIFICATES_FLAG);
    }
    match bundle::parse_source_of(&Provenance::Object(origin.clone()), bytes, Strictness::Strict) {
        Ok(parsed) if parsed.certificates.len() > limits.source_certificates => {
            over(parsed.certificates.len(), limits.source_certificates, "certificates", SOURCE_CERTIFICATES_FLAG)
        }
        Ok(parsed) => KeyContent::Certificates(parsed.certificates),
        Err(error @ (bundle::Error::PrivateKey { .. } | bundle::Error::EncryptedPem { .. })) => {
            KeyContent::Invalid(error)
        }
        Err(error) if mentions_certificates(bytes) => KeyContent::Invalid(error),
        Err(error) => KeyContent::Ignored(error),
    }
}

/// What follows each `-----BEGIN ` of `bytes` (a PEM block's label, then the rest), found
/// without parsing anything.
fn pem_labels(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    bytes
        .windows(BEGIN.len())
        .enumerate()
        .filter(|(_, window)| *window == BEGIN)
        .map(|(at, _)| &bytes[at + BEGIN.len()..])
}

fn mentions_certificates(bytes: &[u8]) -> bool {
    pem_labels(bytes).any(|after| CERTIFICATE_LABELS.iter().any(|label| after.starts_with(label.as_bytes())))
}

/// What one object's keys were last parsed from (per key, the SHA-256 of its bytes) and what
/// they gave (the same `Arc` the cache holds: one copy of the certificates). A tenant can
/// patch one key of a ConfigMap every second; only the keys whose bytes changed are parsed
/// again.
#[derive(Debug, Default)]
pub struct Parsed {
    digests: BTreeMap<String, [u8; 32]>,
    keys: Arc<Keys>,
}

/// Parses a ConfigMap's `data` and `binaryData` (a key in both is refused by the API server),
/// reusing what `previous` parsed from the same bytes; `previous` becomes this version's.
pub fn config_map(
    object: &ObjectOrigin,
    data: Option<&BTreeMap<String, String>>,
    binary_data: Option<&BTreeMap<String, k8s_openapi::ByteString>>,
    limits: &Limits,
    previous: &mut Parsed,
) -> Arc<Keys> {
    use sha2::{Digest, Sha256};
    let text = data.into_iter().flatten().map(|(key, value)| (key, value.as_bytes()));
    let binary = binary_data.into_iter().flatten().map(|(key, value)| (key, value.0.as_slice()));
    let mut digests = BTreeMap::new();
    let mut keys = Keys::new();
    for (key, bytes) in text.chain(binary) {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let content = match (previous.digests.get(key), previous.keys.get(key)) {
            (Some(before), Some(content)) if *before == digest => content.clone(),
            _ => classify(&object.with_key(key), bytes, limits),
        };
        digests.insert(key.clone(), digest);
        keys.insert(key.clone(), content);
    }
    let keys = Arc::new(keys);
    *previous = Parsed { digests, keys: Arc::clone(&keys) };
    keys
}

/// The keys a bare-name reference skips (they hold no certificate), in key order.
pub fn ignored_keys(keys: &BTreeMap<String, KeyContent>) -> Vec<String> {
    keys.iter().filter(|(_, value)| matches!(value, KeyContent::Ignored(_))).map(|(key, _)| key.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::policy::tests::ca;

    fn pem(der: &[u8]) -> String {
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    }

    fn origin() -> ObjectOrigin {
        let kind = bundle::KindName { tag: "configmap", title: "ConfigMap" };
        ObjectOrigin { kind, scope: bundle::Scope::PodNamespace, name: "s".to_owned(), key: None }
    }

    #[test]
    fn values_are_certificates_ignored_or_invalid() {
        let root = ca("Root");
        let parsed = classify(&origin().with_key("ca.crt"), pem(&root.der).as_bytes(), &Limits::default());
        assert!(matches!(&parsed, KeyContent::Certificates(c) if c.len() == 1));
        let KeyContent::Certificates(certificates) = parsed else { unreachable!() };
        assert_eq!(certificates[0].source, Provenance::Object(origin().with_key("ca.crt")), "typed, not text");
        assert!(
            matches!(classify(&origin(), &root.der, &Limits::default()), KeyContent::Certificates(c) if c.len() == 1),
            "DER"
        );
        for ignored in [&b"hello: world\n"[..], b"", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"] {
            assert!(matches!(classify(&origin(), ignored, &Limits::default()), KeyContent::Ignored(_)), "{ignored:?}");
        }
        let key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            classify(&origin(), key, &Limits::default()),
            KeyContent::Invalid(bundle::Error::PrivateKey { .. })
        ));
        let with_key = format!("{}{}", pem(&root.der), String::from_utf8_lossy(key));
        assert!(
            matches!(classify(&origin(), with_key.as_bytes(), &Limits::default()), KeyContent::Invalid(_)),
            "a key beside a CA"
        );
        let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(classify(&origin(), broken, &Limits::default()), KeyContent::Invalid(_)));
    }

    #[test]
    fn a_value_over_the_limits_is_refused_naming_the_limit_and_its_flag() {
        let root = ca("Root");
        let one = pem(&root.der);
        let limits = Limits { source_bytes: one.len() * 3, source_certificates: 2, ..Limits::default() };
        assert!(
            matches!(classify(&origin(), one.repeat(2).as_bytes(), &limits), KeyContent::Certificates(c) if c.len() == 2)
        );
        let three = classify(&origin(), one.repeat(3).as_bytes(), &limits);
        let KeyContent::Invalid(error @ bundle::Error::OverLimit { found: 3, max: 2, .. }) = three else {
            panic!("{three:?}")
        };
        assert!(error.to_string().contains(SOURCE_CERTIFICATES_FLAG), "{error}");
        let big = classify(&origin(), one.repeat(4).as_bytes(), &limits);
        let KeyContent::Invalid(error @ bundle::Error::OverLimit { unit: "bytes", .. }) = big else {
            panic!("{big:?}")
        };
        assert!(error.to_string().contains(SOURCE_BYTES_FLAG), "{error}");
    }

    #[test]
    fn only_keys_whose_bytes_changed_are_parsed_again() {
        let root = ca("Root");
        let one = pem(&root.der);
        let mut previous = Parsed::default();
        let data = BTreeMap::from([("ca.crt".to_owned(), one.clone()), ("dummy".to_owned(), "1".to_owned())]);
        let first = config_map(&origin(), Some(&data), None, &Limits::default(), &mut previous);
        assert!(matches!(&first["ca.crt"], KeyContent::Certificates(c) if c.len() == 1));
        // A limit that would refuse ca.crt now: reused from the last parse, so still the same.
        let strict = Limits { source_certificates: 0, ..Limits::default() };
        let data = BTreeMap::from([("ca.crt".to_owned(), one.clone()), ("dummy".to_owned(), "2".to_owned())]);
        let second = config_map(&origin(), Some(&data), None, &strict, &mut previous);
        assert_eq!(second["ca.crt"], first["ca.crt"], "unchanged bytes are not parsed again");
        let changed = BTreeMap::from([("ca.crt".to_owned(), format!("{one}\n"))]);
        let third = config_map(&origin(), Some(&changed), None, &strict, &mut previous);
        assert!(matches!(&third["ca.crt"], KeyContent::Invalid(bundle::Error::OverLimit { .. })), "changed: parsed");
        assert_eq!(previous.digests.len(), 1, "a removed key is forgotten");
    }
}

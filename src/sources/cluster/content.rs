//! What a ConfigMap key or a ClusterTrustBundle holds, parsed once when the watch delivers it:
//! certificates, nothing of ours (ignored, counted), or something that must never reach a pod.

use std::collections::BTreeMap;

use crate::bundle::{self, Certificate, ObjectOrigin, Provenance, Strictness};

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

/// Classifies one value. A private key anywhere is [`KeyContent::Invalid`].
pub fn classify(origin: &ObjectOrigin, bytes: &[u8]) -> KeyContent {
    match bundle::parse_source_of(&Provenance::Object(origin.clone()), bytes, Strictness::Strict) {
        Ok(parsed) => KeyContent::Certificates(parsed.certificates),
        Err(error @ (bundle::Error::PrivateKey { .. } | bundle::Error::EncryptedPem { .. })) => {
            KeyContent::Invalid(error)
        }
        Err(error) if mentions_certificates(bytes) => KeyContent::Invalid(error),
        Err(error) => KeyContent::Ignored(error),
    }
}

fn mentions_certificates(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    text.match_indices("-----BEGIN ").any(|(at, begin)| {
        let after = &text[at + begin.len()..];
        CERTIFICATE_LABELS.iter().any(|label| after.starts_with(label))
    })
}

/// Parses a ConfigMap's `data` and `binaryData` (a key in both is refused by the API server).
pub fn config_map(
    object: &ObjectOrigin,
    data: Option<&BTreeMap<String, String>>,
    binary_data: Option<&BTreeMap<String, k8s_openapi::ByteString>>,
) -> BTreeMap<String, KeyContent> {
    let text = data.into_iter().flatten().map(|(key, value)| (key, value.as_bytes()));
    let binary = binary_data.into_iter().flatten().map(|(key, value)| (key, value.0.as_slice()));
    text.chain(binary).map(|(key, bytes)| (key.clone(), classify(&object.with_key(key), bytes))).collect()
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
        let parsed = classify(&origin().with_key("ca.crt"), pem(&root.der).as_bytes());
        assert!(matches!(&parsed, KeyContent::Certificates(c) if c.len() == 1));
        let KeyContent::Certificates(certificates) = parsed else { unreachable!() };
        assert_eq!(certificates[0].source, Provenance::Object(origin().with_key("ca.crt")), "typed, not text");
        assert!(matches!(classify(&origin(), &root.der), KeyContent::Certificates(c) if c.len() == 1), "DER");
        for ignored in [&b"hello: world\n"[..], b"", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"] {
            assert!(matches!(classify(&origin(), ignored), KeyContent::Ignored(_)), "{ignored:?}");
        }
        let key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(classify(&origin(), key), KeyContent::Invalid(bundle::Error::PrivateKey { .. })));
        let with_key = format!("{}{}", pem(&root.der), String::from_utf8_lossy(key));
        assert!(matches!(classify(&origin(), with_key.as_bytes()), KeyContent::Invalid(_)), "a key beside a CA");
        let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(classify(&origin(), broken), KeyContent::Invalid(_)));
    }
}

//! DER → [`Certificate`]: parse once with x509-parser and keep what later steps need.

use sha2::{Digest, Sha256};

use super::der;
use super::provenance::Provenance;
use super::subject_hash::{SubjectHashError, subject_hash, value_to_utf8};

/// Why DER bytes are not a usable certificate. Messages read as the end of "certificate N is …"
/// or "cannot be parsed: …"; the caller adds the source and block index.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// x509-parser's error type is not `Eq` (and [`super::Error`] is), so its text is kept.
    #[error("not a valid X.509 certificate ({detail})")]
    NotX509 { detail: String },
    #[error("{count} unexpected bytes after the certificate")]
    TrailingBytes { count: usize },
    #[error("the subject cannot be hashed the way OpenSSL does: {0}")]
    SubjectHash(SubjectHashError),
}

/// One parsed certificate plus what we derive from it once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// The DER encoding, exactly as it came in.
    pub der: Vec<u8>,
    /// SHA-256 of `der`; the identity used for deduplication.
    pub fingerprint: [u8; 32],
    /// RFC 4514-style display strings.
    pub subject: String,
    pub issuer: String,
    /// Validity, in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// OpenSSL's `X509_subject_name_hash` (what `openssl x509 -subject_hash` prints).
    pub subject_hash: u32,
    /// Which source it came from: `system:embedded`, `file:/etc/corp/ca.pem`, a ConfigMap key.
    pub source: Provenance,
    /// What the certificate is for; the policy keeps CAs and self-signed end entities.
    pub kind: Kind,
}

/// What a certificate is, as far as a trust store cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// basicConstraints cA=TRUE, or a self-signed v1 certificate without extensions (old roots
    /// predate basicConstraints).
    Ca,
    /// Not a CA, but signed with its own key: trusted directly (a registry's or object store's
    /// self-signed server certificate).
    SelfSignedEndEntity,
    /// Not a CA and issued by someone else: it belongs on a server, not in a trust store.
    EndEntity,
}

impl Certificate {
    /// Parses one DER certificate. With `allow_trailing`, bytes after the certificate are
    /// ignored (OpenSSL's `TRUSTED CERTIFICATE` appends its trust settings there) and not kept.
    ///
    /// # Errors
    /// What is wrong with the bytes; the caller adds the source and block index.
    pub fn from_der(der: &[u8], source: &str, allow_trailing: bool) -> Result<Self, CertificateError> {
        Self::from_der_of(der, Provenance::Named(source.to_owned()), allow_trailing)
    }

    /// [`Certificate::from_der`] for a certificate of a typed `source`.
    ///
    /// # Errors
    /// As [`Certificate::from_der`].
    pub fn from_der_of(der: &[u8], source: Provenance, allow_trailing: bool) -> Result<Self, CertificateError> {
        Self::from_der_checking(der, source, allow_trailing, &mut SignatureChecks::unlimited())
    }

    /// [`Certificate::from_der_of`] spending `checks` on a self-signed-looking end-entity
    /// certificate's signature.
    ///
    /// # Errors
    /// As [`Certificate::from_der`].
    pub fn from_der_checking(
        der: &[u8],
        source: Provenance,
        allow_trailing: bool,
        checks: &mut SignatureChecks,
    ) -> Result<Self, CertificateError> {
        let (rest, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CertificateError::NotX509 { detail: e.to_string() })?;
        if !rest.is_empty() && !allow_trailing {
            return Err(CertificateError::TrailingBytes { count: rest.len() });
        }
        let der = &der[..der.len() - rest.len()];
        let subject_hash = subject_hash(cert.subject().as_raw()).map_err(CertificateError::SubjectHash)?;
        let validity = cert.validity();
        let kind = kind(&cert, checks);
        Ok(Self {
            der: der.to_vec(),
            fingerprint: Sha256::digest(der).into(),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            subject_hash,
            source,
            kind,
        })
    }

    /// A short human name: the subject's first CN, else O, else OU, as text. `None` if the
    /// subject has none of these (or they are not strings), so the caller falls back to the
    /// fingerprint.
    pub fn readable_name(&self) -> Option<String> {
        const CN: &[u8] = &[0x55, 0x04, 0x03];
        const O: &[u8] = &[0x55, 0x04, 0x0a];
        const OU: &[u8] = &[0x55, 0x04, 0x0b];
        let (_, cert) = x509_parser::parse_x509_certificate(&self.der).ok()?;
        let attributes = name_attributes(cert.subject().as_raw())?;
        [CN, O, OU].iter().find_map(|wanted| {
            attributes.iter().find_map(|(oid, tag, value)| {
                (oid == wanted)
                    .then(|| value_to_utf8(*tag, value)?.ok())
                    .flatten()
                    .filter(|text| !text.trim().is_empty())
            })
        })
    }
}

/// Signature verifications one source may cost: a pod author's ConfigMap of thousands of
/// self-signed end-entity certificates (P-384: ~1.4 ms each) must not buy seconds of the node's
/// CPU on every update. Past the budget, matching names decide, as for an algorithm ring cannot
/// check: the only effect is which of the source's own certificates count as self-signed, in
/// the volumes that name it.
#[derive(Debug)]
pub struct SignatureChecks {
    left: usize,
}

impl SignatureChecks {
    pub fn new(budget: usize) -> Self {
        Self { left: budget }
    }

    pub fn unlimited() -> Self {
        Self::new(usize::MAX)
    }

    /// Takes one check; false when none is left.
    fn take(&mut self) -> bool {
        let available = self.left > 0;
        self.left = self.left.saturating_sub(1);
        available
    }
}

fn kind(cert: &x509_parser::certificate::X509Certificate<'_>, checks: &mut SignatureChecks) -> Kind {
    // A duplicated or unparsable basicConstraints makes no CA: fail closed.
    let ca = cert.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca);
    // A CA is a CA whoever signed it: only other certificates pay for a signature check (RSA
    // verification was most of a render's CPU when every root was checked).
    if ca {
        return Kind::Ca;
    }
    let self_signed = self_signed(cert, checks);
    // v1 has no extensions, so no basicConstraints; such roots are CAs by convention.
    let old_root = cert.version() == x509_parser::x509::X509Version::V1 && cert.extensions().is_empty() && self_signed;
    if old_root {
        Kind::Ca
    } else if self_signed {
        Kind::SelfSignedEndEntity
    } else {
        Kind::EndEntity
    }
}

/// Issuer and subject are the same name and the certificate's own key verifies its signature.
/// A signature algorithm ring cannot check (e.g. DSA, MD5), or one past `checks`, is given the
/// benefit of the doubt: matching names are all we can tell, and trust comes from being in the
/// bundle anyway.
fn self_signed(cert: &x509_parser::certificate::X509Certificate<'_>, checks: &mut SignatureChecks) -> bool {
    if cert.subject().as_raw() != cert.issuer().as_raw() {
        return false;
    }
    if !checks.take() {
        return true;
    }
    match cert.verify_signature(None) {
        Ok(()) => true,
        Err(x509_parser::error::X509Error::SignatureUnsupportedAlgorithm) => true,
        Err(_) => false,
    }
}

/// (OID contents, value tag, value contents) of one name attribute.
type Attribute<'a> = (&'a [u8], u8, &'a [u8]);

/// Every attribute of a DER `Name`, in order.
fn name_attributes(name_der: &[u8]) -> Option<Vec<Attribute<'_>>> {
    let (name, _) = der::read_tlv(name_der).ok()?;
    let mut out = Vec::new();
    for rdn in der::read_all(name.contents).ok()? {
        for attribute in der::read_all(rdn.contents).ok()? {
            if let [oid, value] = der::read_all(attribute.contents).ok()?[..] {
                out.push((oid.contents, value.tag, value.contents));
            }
        }
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};

    /// A self-signed CA certificate with the given subject attributes, for tests across the
    /// module.
    pub(crate) fn ca_der(attributes: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for (kind, value) in attributes {
            dn.push(kind.clone(), *value);
        }
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("sign").der().to_vec()
    }

    #[test]
    fn fills_every_field_from_the_der() {
        let der = ca_der(&[(DnType::CommonName, "Test Root"), (DnType::OrganizationName, "Acme")]);
        let cert = Certificate::from_der(&der, "extra-pem:x", false).expect("parses");
        assert_eq!(cert.der, der);
        assert_eq!(cert.fingerprint, <[u8; 32]>::from(Sha256::digest(&der)));
        assert_eq!(cert.subject, "CN=Test Root, O=Acme");
        assert_eq!(cert.issuer, cert.subject);
        assert!(cert.not_before < cert.not_after);
        assert_eq!(cert.source, Provenance::Named("extra-pem:x".to_owned()));
        assert_eq!(cert.readable_name().as_deref(), Some("Test Root"));
    }

    #[test]
    fn rejects_trailing_bytes_unless_allowed() {
        let mut der = ca_der(&[(DnType::CommonName, "x")]);
        let len = der.len();
        der.extend_from_slice(&[0x30, 0x00]);
        assert_eq!(Certificate::from_der(&der, "s", false), Err(CertificateError::TrailingBytes { count: 2 }));
        let cert = Certificate::from_der(&der, "s", true).expect("leading certificate");
        assert_eq!(cert.der.len(), len);
    }

    #[test]
    fn readable_name_falls_back_from_cn_to_o_to_ou() {
        let only_o = ca_der(&[(DnType::OrganizationName, "Org"), (DnType::OrganizationalUnitName, "Unit")]);
        let cert = Certificate::from_der(&only_o, "s", false).expect("parses");
        assert_eq!(cert.readable_name().as_deref(), Some("Org"));
        let only_ou = ca_der(&[(DnType::OrganizationalUnitName, "Unit")]);
        let cert = Certificate::from_der(&only_ou, "s", false).expect("parses");
        assert_eq!(cert.readable_name().as_deref(), Some("Unit"));
        let only_c = ca_der(&[(DnType::CountryName, "DE")]);
        let cert = Certificate::from_der(&only_c, "s", false).expect("parses");
        assert_eq!(cert.readable_name(), None);
    }

    #[test]
    fn a_sources_signature_checks_are_bounded_and_past_them_matching_names_decide() {
        use crate::bundle::policy::tests::{ca, leaf};
        // Issuer and subject read the same, but another key signed it: not self-signed.
        let named_alike = leaf("same", &ca("same"));
        let checked = Certificate::from_der(&named_alike, "s", false).unwrap();
        assert_eq!(checked.kind, Kind::EndEntity, "its signature was checked");
        let unchecked = Certificate::from_der_checking(
            &named_alike,
            Provenance::Named("s".into()),
            false,
            &mut SignatureChecks::new(0),
        )
        .unwrap();
        assert_eq!(unchecked.kind, Kind::SelfSignedEndEntity, "no check left: the names decide");

        // One source of more such certificates than its budget: the first are checked.
        let pem_of = |der: &[u8]| {
            use base64::Engine;
            let body = base64::engine::general_purpose::STANDARD.encode(der);
            format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
        };
        let budget = crate::bundle::source::SIGNATURE_CHECKS_PER_SOURCE;
        let pem: String = (0..budget + 3).map(|_| pem_of(&named_alike)).collect();
        let parsed = crate::bundle::parse_source("s", pem.as_bytes(), crate::bundle::Strictness::Strict).unwrap();
        let kinds: Vec<Kind> = parsed.certificates.iter().map(|cert| cert.kind).collect();
        assert_eq!(kinds.iter().filter(|kind| **kind == Kind::EndEntity).count(), budget);
        assert_eq!(kinds[budget..], [Kind::SelfSignedEndEntity; 3]);
        // A CA costs no check at all.
        let cas: String = (0..budget + 3).map(|_| pem_of(&ca("c").der)).collect();
        let parsed = crate::bundle::parse_source("s", cas.as_bytes(), crate::bundle::Strictness::Strict).unwrap();
        assert!(parsed.certificates.iter().all(|cert| cert.kind == Kind::Ca));
    }
}

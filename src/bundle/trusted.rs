//! OpenSSL's `TRUSTED CERTIFICATE`: the certificate's DER followed by an `X509_CERT_AUX`
//! with its trust settings, as p11-kit's `openssl-bundle` and `openssl-directory` write them
//! (`ca-bundle.trust.crt` on RHEL, `/var/lib/ca-certificates/openssl` on SUSE).
//!
//! ```text
//! X509_CERT_AUX ::= SEQUENCE {
//!     trust  SEQUENCE OF OBJECT IDENTIFIER OPTIONAL,         -- purposes trusted for
//!     reject [0] IMPLICIT SEQUENCE OF OBJECT IDENTIFIER OPTIONAL,
//!     alias  UTF8String OPTIONAL,                            -- p11-kit: the label
//!     keyid  OCTET STRING OPTIONAL,
//!     other  [1] IMPLICIT SEQUENCE OF AlgorithmIdentifier OPTIONAL }
//! ```
//!
//! p11-kit writes an anchor's trust as the purposes stapled to it, which for a CA trusted for
//! TLS is `serverAuth` alone, with no reject list. A volume grants TLS trust only, so every
//! certificate gets exactly that: `openssl verify -purpose sslserver` accepts it, while
//! S/MIME or code-signing checks against this file are refused rather than silently allowed.

use super::Certificate;
use super::der::tag::{OID, SEQUENCE, UTF8_STRING};
use super::der::write_tlv;

pub(crate) const LABEL: &str = "TRUSTED CERTIFICATE";

/// 1.3.6.1.5.5.7.3.1, id-kp-serverAuth (contents only).
pub(crate) const OID_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];

/// The body of one `TRUSTED CERTIFICATE` PEM block; `alias` is what `openssl x509 -text`
/// shows (p11-kit fills it from the certificate's label).
pub(crate) fn encode(cert: &Certificate, alias: &str) -> Vec<u8> {
    let mut trust = Vec::with_capacity(OID_SERVER_AUTH.len() + 2);
    write_tlv(&mut trust, OID, OID_SERVER_AUTH);
    let mut aux = Vec::with_capacity(trust.len() + alias.len() + 8);
    write_tlv(&mut aux, SEQUENCE, &trust);
    write_tlv(&mut aux, UTF8_STRING, alias.as_bytes());
    let mut out = Vec::with_capacity(cert.der.len() + aux.len() + 4);
    out.extend_from_slice(&cert.der);
    write_tlv(&mut out, SEQUENCE, &aux);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::certificate::tests::ca_der;
    use crate::bundle::der::{read_all, read_tlv};
    use rcgen::DnType;

    #[test]
    fn appends_trust_for_server_auth_and_the_alias_after_the_certificate() {
        let der = ca_der(&[(DnType::CommonName, "Trusty Root")]);
        let cert = Certificate::from_der(&der, "s", false).expect("parses");
        let encoded = encode(&cert, "Trusty Root");
        let (aux, rest) = read_tlv(&encoded[der.len()..]).expect("aux");
        assert!(encoded.starts_with(&der) && rest.is_empty());
        assert_eq!(aux.tag, SEQUENCE);
        let fields = read_all(aux.contents).expect("fields");
        assert_eq!(fields.len(), 2, "trust and alias only, no reject");
        assert_eq!(fields[0].tag, SEQUENCE);
        let purposes = read_all(fields[0].contents).expect("purposes");
        assert_eq!(purposes.len(), 1);
        assert_eq!((purposes[0].tag, purposes[0].contents), (OID, OID_SERVER_AUTH));
        assert_eq!((fields[1].tag, fields[1].contents), (UTF8_STRING, &b"Trusty Root"[..]));
    }

    #[test]
    fn alias_is_utf8_as_given() {
        let der = ca_der(&[(DnType::CountryName, "DE")]);
        let cert = Certificate::from_der(&der, "s", false).expect("parses");
        let encoded = encode(&cert, "Zürich Root");
        let (aux, _) = read_tlv(&encoded[der.len()..]).expect("aux");
        let fields = read_all(aux.contents).expect("fields");
        assert_eq!((fields[1].tag, fields[1].contents), (UTF8_STRING, "Zürich Root".as_bytes()));
    }
}

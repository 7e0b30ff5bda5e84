//! A password-less PKCS#12 truststore (`javaTruststore: pkcs12`), hand-encoded in DER.
//!
//! The JVM opens its default truststore with a null password. A keytool-made PKCS#12 keeps its
//! certificates in `encryptedData`, which a null password cannot open, so it loads as empty.
//! This one has nothing to decrypt and nothing to verify, so Java loads every entry with a
//! null password and with any other (`changeit` included):
//!
//! ```text
//! PFX { version 3,
//!       authSafe ContentInfo { data, [0] OCTET STRING {
//!           AuthenticatedSafe { ContentInfo { data, [0] OCTET STRING {
//!               SafeContents { SafeBag* } } } } } }
//!       -- no macData
//! SafeBag { certBag, [0] CertBag { x509Certificate, [0] OCTET STRING { DER } },
//!           SET { friendlyName { BMPString alias },
//!                 Oracle trustedKeyUsage { anyExtendedKeyUsage } } }
//! ```
//!
//! Java makes a `trustedCertEntry` only of a certificate bag with the trusted-key-usage
//! attribute; without it the certificate is taken for part of a key's chain and dropped.
//! This is the form JDK 18+ writes itself when told to protect nothing
//! (`keystore.pkcs12.certProtectionAlgorithm=NONE`, `keystore.pkcs12.macAlgorithm=NONE`).

use super::Certificate;
use super::der::tag::{BMP_STRING, CONTEXT_0, INTEGER, OCTET_STRING, OID, SEQUENCE, SET};
use super::der::{tlv, write_tlv};
use super::naming::java_aliases;

/// 1.2.840.113549.1.7.1, PKCS#7 data.
pub(crate) const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
/// 1.2.840.113549.1.12.10.1.3, certBag.
pub(crate) const OID_CERT_BAG: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x03];
/// 1.2.840.113549.1.9.22.1, x509Certificate.
pub(crate) const OID_X509_CERTIFICATE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01];
/// 1.2.840.113549.1.9.20, friendlyName.
pub(crate) const OID_FRIENDLY_NAME: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x14];
/// 2.16.840.1.113894.746875.1.1, Oracle's trusted key usage.
pub(crate) const OID_TRUSTED_KEY_USAGE: &[u8] =
    &[0x60, 0x86, 0x48, 0x01, 0x86, 0xf9, 0x66, 0xad, 0xca, 0x7b, 0x01, 0x01];
/// 2.5.29.37.0, anyExtendedKeyUsage: what keytool writes for an imported CA.
pub(crate) const OID_ANY_EXTENDED_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25, 0x00];

/// Encodes the store; aliases as for the JKS store (see [`java_aliases`]).
pub(crate) fn truststore(certificates: &[Certificate], stems: &[&str]) -> Vec<u8> {
    let aliases = java_aliases(certificates, stems);
    let mut bags = Vec::new();
    for (cert, alias) in certificates.iter().zip(&aliases) {
        bags.extend_from_slice(&cert_bag(cert, alias));
    }
    let version = tlv(INTEGER, &[3]);
    let data = tlv(OID, OID_DATA);
    nested(
        &[
            (SEQUENCE, &version, &[]), // PFX
            (SEQUENCE, &data, &[]),    // ContentInfo
            (CONTEXT_0, &[], &[]),     //   [0] EXPLICIT
            (OCTET_STRING, &[], &[]),  //   data
            (SEQUENCE, &[], &[]),      // AuthenticatedSafe
            (SEQUENCE, &data, &[]),    // ContentInfo
            (CONTEXT_0, &[], &[]),     //   [0] EXPLICIT
            (OCTET_STRING, &[], &[]),  //   data
            (SEQUENCE, &[], &[]),      // SafeContents
        ],
        &bags,
    )
}

fn cert_bag(cert: &Certificate, alias: &str) -> Vec<u8> {
    let bmp: Vec<u8> = alias.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let friendly_name = attribute(OID_FRIENDLY_NAME, &tlv(BMP_STRING, &bmp));
    let trusted = attribute(OID_TRUSTED_KEY_USAGE, &tlv(OID, OID_ANY_EXTENDED_KEY_USAGE));
    let attributes = tlv(SET, &set_of(vec![friendly_name, trusted]));
    nested(
        &[
            (SEQUENCE, &tlv(OID, OID_CERT_BAG), &attributes), // SafeBag
            (CONTEXT_0, &[], &[]),                            //   [0] EXPLICIT
            (SEQUENCE, &tlv(OID, OID_X509_CERTIFICATE), &[]), // CertBag
            (CONTEXT_0, &[], &[]),                            //   [0] EXPLICIT
            (OCTET_STRING, &[], &[]),                         //   the DER
        ],
        &cert.der,
    )
}

/// `payload` inside nested TLVs, outermost first; each layer is its tag and the bytes before
/// and after the next layer inside it. Lengths are summed first, so a store of thousands of
/// certificates is copied once rather than once per layer.
fn nested(layers: &[(u8, &[u8], &[u8])], payload: &[u8]) -> Vec<u8> {
    let mut lengths = vec![0; layers.len()];
    let mut inner = payload.len();
    for (i, (_, before, after)) in layers.iter().enumerate().rev() {
        lengths[i] = before.len() + inner + after.len();
        inner = header_len(lengths[i]) + lengths[i];
    }
    let mut out = Vec::with_capacity(inner);
    for ((tag, before, _), &length) in layers.iter().zip(&lengths) {
        push_header(&mut out, *tag, length);
        out.extend_from_slice(before);
    }
    out.extend_from_slice(payload);
    for (_, _, after) in layers.iter().rev() {
        out.extend_from_slice(after);
    }
    out
}

/// Bytes of a DER tag and length (as `write_tlv` writes them) for contents of `length`.
fn header_len(length: usize) -> usize {
    let mut header = Vec::new();
    push_header(&mut header, 0, length);
    header.len()
}

/// A DER tag and length, as `write_tlv` writes them, without the contents.
fn push_header(out: &mut Vec<u8>, tag: u8, length: usize) {
    out.push(tag);
    if length < 0x80 {
        // Fits the short form: the cast cannot truncate.
        out.push(length as u8);
    } else {
        let bytes = length.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        // At most 8 length bytes: the cast cannot truncate.
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// `SEQUENCE { attrId, SET { value } }`.
fn attribute(oid: &[u8], value: &[u8]) -> Vec<u8> {
    let mut contents = tlv(OID, oid);
    write_tlv(&mut contents, SET, value);
    tlv(SEQUENCE, &contents)
}

/// DER orders the members of a SET OF by their encodings.
fn set_of(mut members: Vec<Vec<u8>>) -> Vec<u8> {
    members.sort();
    members.concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::certificate::tests::ca_der;
    use crate::bundle::der::{Tlv, read_all, read_tlv};
    use rcgen::DnType;

    /// Encodes an OID's contents from its arcs, to check the constants above.
    fn oid(arcs: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut push = |mut value: u64| {
            let mut bytes = vec![(value & 0x7f) as u8];
            value >>= 7;
            while value > 0 {
                bytes.push((value & 0x7f) as u8 | 0x80);
                value >>= 7;
            }
            bytes.reverse();
            out.extend(bytes);
        };
        push(arcs[0] * 40 + arcs[1]);
        for &arc in &arcs[2..] {
            push(arc);
        }
        out
    }

    fn cn(name: &str) -> Certificate {
        Certificate::from_der(&ca_der(&[(DnType::CommonName, name)]), "s", false).expect("parses")
    }

    fn one(input: &[u8]) -> Tlv<'_> {
        let (tlv, rest) = read_tlv(input).expect("tlv");
        assert!(rest.is_empty(), "trailing bytes");
        tlv
    }

    /// Unwraps `ContentInfo { data, [0] OCTET STRING }` and returns the octets.
    fn data_contents(info: &[u8]) -> &[u8] {
        let fields = read_all(one(info).contents).expect("content info");
        assert_eq!((fields[0].tag, fields[0].contents), (OID, OID_DATA));
        one(one(fields[1].raw).contents).contents
    }

    #[test]
    fn object_identifiers_match_their_dotted_forms() {
        assert_eq!(OID_DATA, oid(&[1, 2, 840, 113_549, 1, 7, 1]));
        assert_eq!(OID_CERT_BAG, oid(&[1, 2, 840, 113_549, 1, 12, 10, 1, 3]));
        assert_eq!(OID_X509_CERTIFICATE, oid(&[1, 2, 840, 113_549, 1, 9, 22, 1]));
        assert_eq!(OID_FRIENDLY_NAME, oid(&[1, 2, 840, 113_549, 1, 9, 20]));
        assert_eq!(OID_TRUSTED_KEY_USAGE, oid(&[2, 16, 840, 1, 113_894, 746_875, 1, 1]));
        assert_eq!(OID_ANY_EXTENDED_KEY_USAGE, oid(&[2, 5, 29, 37, 0]));
    }

    #[test]
    fn store_is_version_3_with_plain_certificate_bags_and_no_mac() {
        let certs = [cn("Alpha"), cn("Beta")];
        let bytes = truststore(&certs, &["Alpha", "Beta"]);
        let pfx = read_all(one(&bytes).contents).expect("pfx");
        assert_eq!(pfx.len(), 2, "version and authSafe, no macData");
        assert_eq!((pfx[0].tag, pfx[0].contents), (INTEGER, &[3u8][..]));
        let safes = read_all(one(data_contents(pfx[1].raw)).contents).expect("authSafe");
        assert_eq!(safes.len(), 1);
        let bags = read_all(one(data_contents(safes[0].raw)).contents).expect("bags");
        assert_eq!(bags.len(), 2);
        for (bag, (cert, alias)) in bags.iter().zip(certs.iter().zip(["alpha", "beta"])) {
            let fields = read_all(bag.contents).expect("bag");
            assert_eq!((fields[0].tag, fields[0].contents), (OID, OID_CERT_BAG));
            let cert_bag = read_all(one(one(fields[1].raw).contents).contents).expect("certBag");
            assert_eq!(cert_bag[0].contents, OID_X509_CERTIFICATE);
            assert_eq!(one(one(cert_bag[1].raw).contents).contents, &cert.der[..]);
            let attributes = read_all(fields[2].contents).expect("attributes");
            let mut found = Vec::new();
            for attribute in &attributes {
                let parts = read_all(attribute.contents).expect("attribute");
                found.push((parts[0].contents, one(parts[1].contents).raw.to_vec()));
            }
            let bmp: Vec<u8> = alias.encode_utf16().flat_map(u16::to_be_bytes).collect();
            assert!(found.contains(&(OID_FRIENDLY_NAME, tlv(BMP_STRING, &bmp))));
            assert!(found.contains(&(OID_TRUSTED_KEY_USAGE, tlv(OID, OID_ANY_EXTENDED_KEY_USAGE))));
            let raws: Vec<&[u8]> = attributes.iter().map(|a| a.raw).collect();
            let mut sorted = raws.clone();
            sorted.sort();
            assert_eq!(raws, sorted, "SET OF members in DER order");
        }
    }

    #[test]
    fn nested_headers_match_writing_each_layer_around_the_next() {
        for size in [0usize, 1, 0x7f, 0x80, 0xff, 0x100, 0x1_0000] {
            let payload = vec![0xab; size];
            let by_layers =
                tlv(SEQUENCE, &[tlv(INTEGER, &[3]), tlv(CONTEXT_0, &tlv(OCTET_STRING, &payload)), vec![5, 0]].concat());
            let at_once = nested(
                &[(SEQUENCE, &tlv(INTEGER, &[3]), &[5, 0]), (CONTEXT_0, &[], &[]), (OCTET_STRING, &[], &[])],
                &payload,
            );
            assert_eq!(at_once, by_layers, "payload of {size} bytes");
        }
    }

    #[test]
    fn same_certificates_give_identical_bytes() {
        let certs = [cn("A"), cn("B")];
        let first = truststore(&certs, &["A", "B"]);
        assert_eq!(truststore(&certs, &["A", "B"]), first);
    }

    #[test]
    fn an_empty_store_is_well_formed() {
        let bytes = truststore(&[], &[]);
        let pfx = read_all(one(&bytes).contents).expect("pfx");
        let safes = read_all(one(data_contents(pfx[1].raw)).contents).expect("authSafe");
        assert!(read_all(one(data_contents(safes[0].raw)).contents).expect("bags").is_empty());
    }
}

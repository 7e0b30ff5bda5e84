//! PKCS#7 / CMS certificate bundles (`.p7b`, `.p7c`): a `ContentInfo` of type `signedData` that
//! carries certificates and no signers, the way enterprises often hand out their CA chain
//! (`openssl crl2pkcs7 -nocrl`, Windows "export chain").
//!
//! Only the framing is walked here, with our own DER reader; each certificate is then parsed
//! like any other. Anything else a `SignedData` can carry (signers, CRLs, attribute
//! certificates) is refused: a trust bundle should hold certificates only.

use super::der::tag::{CONTEXT_0, CONTEXT_1, INTEGER, OID, SEQUENCE, SET};
use super::der::{self, DerError};

/// 1.2.840.113549.1.7.2, `id-signedData`, as DER contents.
const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
/// 1.2.840.113549.1.7, the PKCS#7 content types' arc: `data`, `signedData`, `envelopedData`, …
const PKCS7_ARC: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07];

/// Whether DER `bytes` claim to be a PKCS#7 `ContentInfo` (a SEQUENCE starting with an OID
/// under 1.2.840.113549.1.7), so errors can speak of PKCS#7 instead of a broken certificate.
pub(crate) fn looks_like_pkcs7(bytes: &[u8]) -> bool {
    let Ok((outer, _)) = der::read_tlv(bytes) else {
        return false;
    };
    let Ok((content_type, _)) = der::read_tlv(outer.contents) else {
        return false;
    };
    outer.tag == SEQUENCE && content_type.tag == OID && content_type.contents.starts_with(PKCS7_ARC)
}

/// The DER of every certificate in a certificates-only PKCS#7 `ContentInfo`, in order.
///
/// # Errors
/// Why the bytes are not such a bundle, phrased to finish "the PKCS#7 bundle …".
pub(crate) fn certificates(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let (content_info, rest) = der::read_tlv(bytes).map_err(framing)?;
    if !rest.is_empty() {
        return Err(format!("has {} unexpected bytes after it", rest.len()));
    }
    let [content_type, explicit] = sequence::<2>(content_info, "ContentInfo")?;
    if content_type.tag != OID {
        return Err("does not start with a content type".to_owned());
    }
    if content_type.contents != SIGNED_DATA {
        return Err(
            "is not of type signedData (it may be encrypted or enveloped, which trustmount cannot read)".to_owned()
        );
    }
    if explicit.tag != CONTEXT_0 {
        return Err("has no signedData content".to_owned());
    }
    let (signed_data, rest) = der::read_tlv(explicit.contents).map_err(framing)?;
    if !rest.is_empty() || signed_data.tag != SEQUENCE {
        return Err("has a malformed signedData content".to_owned());
    }
    let fields = der::read_all(signed_data.contents).map_err(framing)?;
    // version, digestAlgorithms, encapContentInfo, [0] certificates?, [1] crls?, signerInfos
    let (Some(version), Some(digests), Some(encapsulated), Some(signers)) =
        (fields.first(), fields.get(1), fields.get(2), fields.last().filter(|_| fields.len() >= 4))
    else {
        return Err("has a signedData with missing fields".to_owned());
    };
    if version.tag != INTEGER || digests.tag != SET || encapsulated.tag != SEQUENCE || signers.tag != SET {
        return Err("has a malformed signedData".to_owned());
    }
    if !signers.contents.is_empty() {
        return Err(
            "is a signed message (it has signers), not a certificate bundle; export only the certificates, e.g. with `openssl crl2pkcs7 -nocrl -certfile chain.pem`"
                .to_owned(),
        );
    }
    let optional = &fields[3..fields.len() - 1];
    let mut certificates = None;
    for (position, field) in optional.iter().enumerate() {
        match field.tag {
            CONTEXT_0 if position == 0 => certificates = Some(field),
            CONTEXT_1 if position + 1 == optional.len() => {
                return Err(
                    "contains certificate revocation lists; export it with certificates only (`openssl crl2pkcs7 -nocrl`)"
                        .to_owned(),
                );
            }
            _ => return Err("has a malformed signedData".to_owned()),
        }
    }
    let Some(certificates) = certificates else {
        return Err("holds no certificates".to_owned());
    };
    let mut out = Vec::new();
    for (i, choice) in der::read_all(certificates.contents).map_err(framing)?.into_iter().enumerate() {
        // CertificateChoices: a plain Certificate is a SEQUENCE; the tagged ones are
        // attribute or obsolete extended certificates.
        if choice.tag != SEQUENCE {
            return Err(format!("entry {} is not an X.509 certificate (an attribute or extended certificate)", i + 1));
        }
        out.push(choice.raw);
    }
    if out.is_empty() {
        return Err("holds no certificates".to_owned());
    }
    Ok(out)
}

/// The `N` TLVs of a SEQUENCE, exactly.
fn sequence<'a, const N: usize>(tlv: der::Tlv<'a>, what: &str) -> Result<[der::Tlv<'a>; N], String> {
    if tlv.tag != SEQUENCE {
        return Err(format!("is not a DER {what}"));
    }
    der::read_all(tlv.contents).map_err(framing)?.try_into().map_err(|_| format!("has a malformed {what}"))
}

fn framing(error: DerError) -> String {
    match error {
        DerError::Truncated => "is truncated".to_owned(),
        // BER's indefinite lengths land here: Windows can write them, openssl never does.
        DerError::Unsupported => {
            "is not DER (indefinite or non-minimal lengths); convert it with `openssl pkcs7 -outform DER`".to_owned()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bundle::der::tlv;

    /// A certificates-only PKCS#7, as `openssl crl2pkcs7 -nocrl` writes it.
    pub(crate) fn p7b(certificates: &[&[u8]]) -> Vec<u8> {
        let mut set = Vec::new();
        for der in certificates {
            set.extend_from_slice(der);
        }
        signed_data(&[&tlv(CONTEXT_0, &set)], &[])
    }

    /// version 1, no digest algorithms, `data` content, `optional` fields, `signers` set.
    fn signed_data(optional: &[&[u8]], signers: &[u8]) -> Vec<u8> {
        let mut fields = tlv(INTEGER, &[1]);
        fields.extend(tlv(SET, &[]));
        let data_oid = tlv(OID, &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01]);
        fields.extend(tlv(SEQUENCE, &data_oid));
        for field in optional {
            fields.extend_from_slice(field);
        }
        fields.extend(tlv(SET, signers));
        let mut content_info = tlv(OID, SIGNED_DATA);
        content_info.extend(tlv(CONTEXT_0, &tlv(SEQUENCE, &fields)));
        tlv(SEQUENCE, &content_info)
    }

    fn cert() -> Vec<u8> {
        crate::bundle::policy::tests::ca("Root").der
    }

    #[test]
    fn reads_every_certificate_in_order() {
        let (a, b) = (cert(), cert());
        let bundle = p7b(&[&a, &b]);
        assert!(looks_like_pkcs7(&bundle));
        assert_eq!(certificates(&bundle), Ok(vec![&a[..], &b[..]]));
    }

    #[test]
    fn rejects_a_bundle_without_certificates() {
        let empty_set = signed_data(&[&tlv(CONTEXT_0, &[])], &[]);
        let no_field = signed_data(&[], &[]);
        for bundle in [empty_set, no_field] {
            assert_eq!(certificates(&bundle), Err("holds no certificates".to_owned()));
        }
    }

    #[test]
    fn rejects_signers_and_crls_and_attribute_certificates() {
        let a = cert();
        let signed = signed_data(&[&tlv(CONTEXT_0, &a)], &tlv(SEQUENCE, &[]));
        assert!(certificates(&signed).unwrap_err().contains("signers"));
        let with_crl = signed_data(&[&tlv(CONTEXT_0, &a), &tlv(CONTEXT_1, &[])], &[]);
        assert!(certificates(&with_crl).unwrap_err().contains("revocation"));
        let attribute = signed_data(&[&tlv(CONTEXT_0, &tlv(0xa1, &[]))], &[]);
        assert!(certificates(&attribute).unwrap_err().contains("entry 1"));
    }

    #[test]
    fn rejects_other_content_types_and_trailing_bytes() {
        let a = cert();
        let mut enveloped = p7b(&[&a]);
        // The last byte of the content type OID: signedData (2) → envelopedData (3).
        let at = enveloped.windows(SIGNED_DATA.len()).position(|w| w == SIGNED_DATA).expect("oid");
        enveloped[at + SIGNED_DATA.len() - 1] = 3;
        assert!(looks_like_pkcs7(&enveloped));
        assert!(certificates(&enveloped).unwrap_err().contains("signedData"));
        let mut trailing = p7b(&[&a]);
        trailing.push(0);
        assert!(certificates(&trailing).unwrap_err().contains("after it"));
        assert!(!looks_like_pkcs7(&a));
    }

    #[test]
    fn rejects_every_truncated_prefix() {
        let (a, b) = (cert(), cert());
        let bundle = p7b(&[&a, &b]);
        for cut in 0..bundle.len() {
            assert!(certificates(&bundle[..cut]).is_err(), "prefix of {cut} bytes was accepted");
        }
    }
}

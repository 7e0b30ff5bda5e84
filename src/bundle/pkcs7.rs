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

/// Why bytes are not a certificates-only PKCS#7 bundle. Messages finish "the PKCS#7 bundle …".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Pkcs7Error {
    #[error("is truncated")]
    Truncated,
    /// BER's indefinite lengths land here: Windows can write them, openssl never does.
    #[error("is not DER (indefinite or non-minimal lengths); convert it with `openssl pkcs7 -outform DER`")]
    NotDer,
    #[error("has {count} unexpected bytes after it")]
    TrailingBytes { count: usize },
    #[error("is not a DER ContentInfo")]
    NotAContentInfo,
    #[error("has a malformed ContentInfo")]
    MalformedContentInfo,
    #[error("does not start with a content type")]
    NoContentType,
    #[error("is not of type signedData (it may be encrypted or enveloped, which trustmount cannot read)")]
    NotSignedData,
    #[error("has no signedData content")]
    NoSignedDataContent,
    #[error("has a malformed signedData content")]
    MalformedSignedDataContent,
    #[error("has a signedData with missing fields")]
    MissingSignedDataFields,
    #[error("has a malformed signedData")]
    MalformedSignedData,
    #[error(
        "is a signed message (it has signers), not a certificate bundle; export only the certificates, e.g. with `openssl crl2pkcs7 -nocrl -certfile chain.pem`"
    )]
    HasSigners,
    #[error("contains certificate revocation lists; export it with certificates only (`openssl crl2pkcs7 -nocrl`)")]
    HasCrls,
    #[error("holds no certificates")]
    NoCertificates,
    /// CertificateChoices: a plain Certificate is a SEQUENCE; the tagged ones are attribute or
    /// obsolete extended certificates.
    #[error("entry {position} is not an X.509 certificate (an attribute or extended certificate)")]
    NotX509Entry { position: usize },
}

impl From<DerError> for Pkcs7Error {
    fn from(error: DerError) -> Self {
        match error {
            DerError::Truncated => Self::Truncated,
            DerError::Unsupported => Self::NotDer,
        }
    }
}

/// The DER of every certificate in a certificates-only PKCS#7 `ContentInfo`, in order.
///
/// # Errors
/// Why the bytes are not such a bundle.
pub(crate) fn certificates(bytes: &[u8]) -> Result<Vec<&[u8]>, Pkcs7Error> {
    let (content_info, rest) = der::read_tlv(bytes)?;
    if !rest.is_empty() {
        return Err(Pkcs7Error::TrailingBytes { count: rest.len() });
    }
    if content_info.tag != SEQUENCE {
        return Err(Pkcs7Error::NotAContentInfo);
    }
    let [content_type, explicit]: [der::Tlv<'_>; 2] =
        der::read_all(content_info.contents)?.try_into().map_err(|_| Pkcs7Error::MalformedContentInfo)?;
    if content_type.tag != OID {
        return Err(Pkcs7Error::NoContentType);
    }
    if content_type.contents != SIGNED_DATA {
        return Err(Pkcs7Error::NotSignedData);
    }
    if explicit.tag != CONTEXT_0 {
        return Err(Pkcs7Error::NoSignedDataContent);
    }
    let (signed_data, rest) = der::read_tlv(explicit.contents)?;
    if !rest.is_empty() || signed_data.tag != SEQUENCE {
        return Err(Pkcs7Error::MalformedSignedDataContent);
    }
    let fields = der::read_all(signed_data.contents)?;
    // version, digestAlgorithms, encapContentInfo, [0] certificates?, [1] crls?, signerInfos
    let (Some(version), Some(digests), Some(encapsulated), Some(signers)) =
        (fields.first(), fields.get(1), fields.get(2), fields.last().filter(|_| fields.len() >= 4))
    else {
        return Err(Pkcs7Error::MissingSignedDataFields);
    };
    if version.tag != INTEGER || digests.tag != SET || encapsulated.tag != SEQUENCE || signers.tag != SET {
        return Err(Pkcs7Error::MalformedSignedData);
    }
    if !signers.contents.is_empty() {
        return Err(Pkcs7Error::HasSigners);
    }
    let optional = &fields[3..fields.len() - 1];
    let mut certificates = None;
    for (position, field) in optional.iter().enumerate() {
        match field.tag {
            CONTEXT_0 if position == 0 => certificates = Some(field),
            CONTEXT_1 if position + 1 == optional.len() => return Err(Pkcs7Error::HasCrls),
            _ => return Err(Pkcs7Error::MalformedSignedData),
        }
    }
    let Some(certificates) = certificates else {
        return Err(Pkcs7Error::NoCertificates);
    };
    let mut out = Vec::new();
    for (i, choice) in der::read_all(certificates.contents)?.into_iter().enumerate() {
        if choice.tag != SEQUENCE {
            return Err(Pkcs7Error::NotX509Entry { position: i + 1 });
        }
        out.push(choice.raw);
    }
    if out.is_empty() {
        return Err(Pkcs7Error::NoCertificates);
    }
    Ok(out)
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
            assert_eq!(certificates(&bundle), Err(Pkcs7Error::NoCertificates));
        }
    }

    #[test]
    fn rejects_signers_and_crls_and_attribute_certificates() {
        let a = cert();
        let signed = signed_data(&[&tlv(CONTEXT_0, &a)], &tlv(SEQUENCE, &[]));
        assert_eq!(certificates(&signed), Err(Pkcs7Error::HasSigners));
        let with_crl = signed_data(&[&tlv(CONTEXT_0, &a), &tlv(CONTEXT_1, &[])], &[]);
        assert_eq!(certificates(&with_crl), Err(Pkcs7Error::HasCrls));
        let attribute = signed_data(&[&tlv(CONTEXT_0, &tlv(0xa1, &[]))], &[]);
        assert_eq!(certificates(&attribute), Err(Pkcs7Error::NotX509Entry { position: 1 }));
    }

    #[test]
    fn rejects_other_content_types_and_trailing_bytes() {
        let a = cert();
        let mut enveloped = p7b(&[&a]);
        // The last byte of the content type OID: signedData (2) → envelopedData (3).
        let at = enveloped.windows(SIGNED_DATA.len()).position(|w| w == SIGNED_DATA).expect("oid");
        enveloped[at + SIGNED_DATA.len() - 1] = 3;
        assert!(looks_like_pkcs7(&enveloped));
        assert_eq!(certificates(&enveloped), Err(Pkcs7Error::NotSignedData));
        let mut trailing = p7b(&[&a]);
        trailing.push(0);
        assert_eq!(certificates(&trailing), Err(Pkcs7Error::TrailingBytes { count: 1 }));
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

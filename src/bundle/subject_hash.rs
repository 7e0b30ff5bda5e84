//! OpenSSL's `X509_subject_name_hash`: what `openssl x509 -subject_hash` prints and what
//! `openssl rehash` names its `<hash>.N` links after. OpenSSL looks certificates up in
//! `/etc/ssl/certs` by this value, so it must match bit for bit.
//!
//! The hash is SHA-1 over OpenSSL's *canonical* name encoding (`x509_name_canon` in
//! `crypto/x509/x_name.c`), first four bytes read little-endian.

use sha1::{Digest, Sha1};

// Tags of the string types OpenSSL canonicalises (`ASN1_MASK_CANON`), and the name framing.
use super::der::tag::{
    BMP_STRING, IA5_STRING, OID, PRINTABLE_STRING, SEQUENCE, SET, T61_STRING, UNIVERSAL_STRING, UTF8_STRING,
    VISIBLE_STRING,
};
use super::der::{self, DerError};

/// Why a name cannot be hashed. OpenSSL refuses to decode such a name, too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubjectHashError {
    #[error("the subject name is not valid DER")]
    Der,
    #[error("the subject name is not a SEQUENCE of SETs of (OID, value)")]
    Structure,
    #[error("a subject attribute is a string whose bytes are invalid for its type")]
    BadString,
}

impl From<DerError> for SubjectHashError {
    fn from(_: DerError) -> Self {
        Self::Der
    }
}

/// Computes the hash from the DER `Name` (the whole `SEQUENCE`, e.g. x509-parser's
/// `subject().as_raw()`).
///
/// # Errors
/// If the name is not well-formed DER or holds a string OpenSSL cannot convert to UTF-8.
pub fn subject_hash(name_der: &[u8]) -> Result<u32, SubjectHashError> {
    let canonical = canonical_encoding(name_der)?;
    let digest = Sha1::digest(&canonical);
    Ok(u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]))
}

/// Each RDN as a DER `SET` of canonicalised `SEQUENCE { OID, value }`, members sorted, SETs
/// concatenated with no outer `SEQUENCE`.
pub(crate) fn canonical_encoding(name_der: &[u8]) -> Result<Vec<u8>, SubjectHashError> {
    let (name, rest) = der::read_tlv(name_der)?;
    if name.tag != SEQUENCE || !rest.is_empty() {
        return Err(SubjectHashError::Structure);
    }
    let mut out = Vec::new();
    for rdn in der::read_all(name.contents)? {
        if rdn.tag != SET {
            return Err(SubjectHashError::Structure);
        }
        let mut members = Vec::new();
        for attribute in der::read_all(rdn.contents)? {
            if attribute.tag != SEQUENCE {
                return Err(SubjectHashError::Structure);
            }
            let parts = der::read_all(attribute.contents)?;
            let [oid, value] = parts[..] else {
                return Err(SubjectHashError::Structure);
            };
            if oid.tag != OID {
                return Err(SubjectHashError::Structure);
            }
            let mut body = oid.raw.to_vec();
            match value_to_utf8(value.tag, value.contents) {
                Some(Ok(text)) => der::write_tlv(&mut body, UTF8_STRING, canonical_text(&text).as_bytes()),
                Some(Err(())) => return Err(SubjectHashError::BadString),
                // Not a canonicalised string type: OpenSSL copies it unchanged.
                None => body.extend_from_slice(value.raw),
            }
            let mut member = Vec::new();
            der::write_tlv(&mut member, SEQUENCE, &body);
            members.push(member);
        }
        // DER SET OF order: by encoding, compared as bytes (OpenSSL's `der_cmp`).
        members.sort();
        der::write_tlv(&mut out, SET, &members.concat());
    }
    Ok(out)
}

/// Decodes a string attribute value the way `ASN1_STRING_to_UTF8` does.
/// `None` if `tag` is not one of the canonicalised string types; `Some(Err)` if the bytes are
/// invalid for the type.
pub(crate) fn value_to_utf8(tag: u8, contents: &[u8]) -> Option<Result<String, ()>> {
    Some(match tag {
        UTF8_STRING => std::str::from_utf8(contents).map(str::to_owned).map_err(|_| ()),
        // Single-byte types: each byte is the code point (Latin-1), as OpenSSL does for T61.
        PRINTABLE_STRING | T61_STRING | IA5_STRING | VISIBLE_STRING => {
            Ok(contents.iter().map(|&b| char::from(b)).collect())
        }
        BMP_STRING => decode_units(contents, 2),
        UNIVERSAL_STRING => decode_units(contents, 4),
        _ => return None,
    })
}

/// Big-endian fixed-width code units (UCS-2 or UCS-4); surrogates are rejected like OpenSSL does.
fn decode_units(contents: &[u8], width: usize) -> Result<String, ()> {
    if !contents.len().is_multiple_of(width) {
        return Err(());
    }
    contents
        .chunks_exact(width)
        .map(|unit| {
            let value = unit.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
            char::from_u32(value).ok_or(())
        })
        .collect()
}

/// OpenSSL's whitespace for canonicalisation: `\t \n \v \f \r` and space.
fn is_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{0b}' | '\u{0c}' | '\r' | ' ')
}

/// Trim, collapse inner whitespace runs to one space, lowercase ASCII only.
fn canonical_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.trim_matches(is_space).chars() {
        if is_space(c) {
            pending_space = true;
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (OID bytes, value tag, value bytes).
    type Attribute<'a> = (&'a [u8], u8, &'a [u8]);

    /// Builds a Name from RDNs of attributes.
    fn name(rdns: &[&[Attribute<'_>]]) -> Vec<u8> {
        let mut seq = Vec::new();
        for rdn in rdns {
            let mut set = Vec::new();
            for (oid, tag, value) in *rdn {
                let mut body = Vec::new();
                der::write_tlv(&mut body, OID, oid);
                der::write_tlv(&mut body, *tag, value);
                der::write_tlv(&mut set, SEQUENCE, &body);
            }
            der::write_tlv(&mut seq, SET, &set);
        }
        let mut out = Vec::new();
        der::write_tlv(&mut out, SEQUENCE, &seq);
        out
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const O: &[u8] = &[0x55, 0x04, 0x0a];

    #[test]
    fn empty_subject_hashes_the_empty_input() {
        // SHA-1("") = da39a3ee…; little-endian → 0xeea339da, as `openssl x509 -subject_hash`.
        assert_eq!(subject_hash(&[0x30, 0x00]), Ok(0xeea3_39da));
    }

    #[test]
    fn canonical_text_trims_collapses_and_lowercases_ascii_only() {
        assert_eq!(canonical_text("  Foo \t\r\n  BAR  "), "foo bar");
        assert_eq!(canonical_text("ÄÖÜ Straße"), "ÄÖÜ straße");
        assert_eq!(canonical_text(" \u{0b}\u{0c} "), "");
    }

    #[test]
    fn string_types_that_spell_the_same_text_hash_the_same() {
        let utf8 = name(&[&[(CN, UTF8_STRING, b"Hello World")]]);
        let printable = name(&[&[(CN, PRINTABLE_STRING, b"  hello   WORLD ")]]);
        let bmp = name(&[&[(CN, BMP_STRING, b"\0h\0e\0l\0l\0o\0 \0w\0o\0r\0l\0d")]]);
        let h = subject_hash(&utf8);
        assert!(h.is_ok());
        assert_eq!(subject_hash(&printable), h);
        assert_eq!(subject_hash(&bmp), h);
    }

    #[test]
    fn other_value_types_are_copied_unchanged() {
        let numeric = name(&[&[(CN, 0x12, b"123")]]);
        let canon = canonical_encoding(&numeric).expect("valid");
        assert_eq!(canon, numeric[2..]);
    }

    #[test]
    fn multi_valued_rdn_members_are_sorted_by_encoding() {
        let ab = name(&[&[(CN, UTF8_STRING, b"a"), (O, UTF8_STRING, b"b")]]);
        let ba = name(&[&[(O, UTF8_STRING, b"b"), (CN, UTF8_STRING, b"a")]]);
        assert_eq!(canonical_encoding(&ab), canonical_encoding(&ba));
        // …but separate RDNs keep their order.
        let two = name(&[&[(CN, UTF8_STRING, b"a")], &[(O, UTF8_STRING, b"b")]]);
        let owt = name(&[&[(O, UTF8_STRING, b"b")], &[(CN, UTF8_STRING, b"a")]]);
        assert_ne!(subject_hash(&two), subject_hash(&owt));
    }

    #[test]
    fn rejects_invalid_strings_and_structures() {
        let bad_utf8 = name(&[&[(CN, UTF8_STRING, &[0xff])]]);
        assert_eq!(subject_hash(&bad_utf8), Err(SubjectHashError::BadString));
        let odd_bmp = name(&[&[(CN, BMP_STRING, &[0, 0x41, 0])]]);
        assert_eq!(subject_hash(&odd_bmp), Err(SubjectHashError::BadString));
        let surrogate = name(&[&[(CN, BMP_STRING, &[0xd8, 0x00])]]);
        assert_eq!(subject_hash(&surrogate), Err(SubjectHashError::BadString));
        assert_eq!(subject_hash(&[0x31, 0x00]), Err(SubjectHashError::Structure));
        assert!(subject_hash(&[0x30, 0x03, 0x31, 0x01]).is_err());
        let full = name(&[&[(CN, UTF8_STRING, b"x")]]);
        for cut in 0..full.len() {
            assert!(subject_hash(&full[..cut]).is_err(), "prefix {cut}");
        }
    }
}

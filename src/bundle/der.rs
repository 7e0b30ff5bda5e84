//! A minimal DER reader/writer: just enough to walk a `Name` and re-encode it canonically.
//! Hand-written so every length and tag case is under our control (untrusted input).

/// One TLV: its (single-byte) tag, the contents, and the whole encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    pub contents: &'a [u8],
    pub raw: &'a [u8],
}

/// Why a DER walk failed; turned into a certificate error by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DerError {
    Truncated,
    /// High tag numbers, indefinite or non-minimal lengths: not DER, and never in a real name.
    Unsupported,
}

/// Reads one TLV from the front of `input`; returns it and the rest.
pub(crate) fn read_tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), DerError> {
    let (&tag, rest) = input.split_first().ok_or(DerError::Truncated)?;
    if tag & 0x1f == 0x1f {
        return Err(DerError::Unsupported);
    }
    let (&first, mut rest) = rest.split_first().ok_or(DerError::Truncated)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        // 0x80 is BER's indefinite length; more than 4 length bytes is never a real name.
        if count == 0 || count > 4 {
            return Err(DerError::Unsupported);
        }
        let bytes = rest.get(..count).ok_or(DerError::Truncated)?;
        rest = &rest[count..];
        let len = bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if bytes[0] == 0 || len < 0x80 {
            return Err(DerError::Unsupported);
        }
        len
    };
    let contents = rest.get(..len).ok_or(DerError::Truncated)?;
    let header_len = input.len() - rest.len();
    let raw = &input[..header_len + len];
    Ok((Tlv { tag, contents, raw }, &rest[len..]))
}

/// Splits `input` into consecutive TLVs, all of which must be complete.
pub(crate) fn read_all(mut input: &[u8]) -> Result<Vec<Tlv<'_>>, DerError> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (tlv, rest) = read_tlv(input)?;
        out.push(tlv);
        input = rest;
    }
    Ok(out)
}

/// The identifier octets this crate reads and writes: universal tags, and the constructed
/// context-specific ones used as `[n] EXPLICIT`.
pub(crate) mod tag {
    pub(crate) const INTEGER: u8 = 0x02;
    pub(crate) const OCTET_STRING: u8 = 0x04;
    pub(crate) const OID: u8 = 0x06;
    pub(crate) const UTF8_STRING: u8 = 0x0c;
    pub(crate) const PRINTABLE_STRING: u8 = 0x13;
    pub(crate) const T61_STRING: u8 = 0x14;
    pub(crate) const IA5_STRING: u8 = 0x16;
    pub(crate) const VISIBLE_STRING: u8 = 0x1a;
    pub(crate) const UNIVERSAL_STRING: u8 = 0x1c;
    pub(crate) const BMP_STRING: u8 = 0x1e;
    pub(crate) const SEQUENCE: u8 = 0x30;
    pub(crate) const SET: u8 = 0x31;
    pub(crate) const CONTEXT_0: u8 = 0xa0;
    pub(crate) const CONTEXT_1: u8 = 0xa1;
}

/// One TLV as a new buffer; [`write_tlv`] appends to an existing one.
pub(crate) fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(contents.len() + 6);
    write_tlv(&mut out, tag, contents);
    out
}

/// Appends `tag`, the minimal DER length of `contents`, and `contents`.
pub(crate) fn write_tlv(out: &mut Vec<u8>, tag: u8, contents: &[u8]) {
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        // Fits the short form: the cast cannot truncate.
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let significant = &bytes[skip..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(contents);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_minimal_lengths_at_every_boundary() {
        assert_eq!(tlv(0x04, &[])[..], [0x04, 0x00]);
        assert_eq!(tlv(0x04, &[7; 0x7f])[..2], [0x04, 0x7f]);
        assert_eq!(tlv(0x04, &[7; 0x80])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(tlv(0x04, &[7; 0xff])[..3], [0x04, 0x81, 0xff]);
        assert_eq!(tlv(0x04, &[7; 0x100])[..4], [0x04, 0x82, 0x01, 0x00]);
        assert_eq!(tlv(0x04, &[7; 0x10000])[..5], [0x04, 0x83, 0x01, 0x00, 0x00]);
    }

    #[test]
    fn reads_back_what_it_writes() {
        for len in [0usize, 1, 0x7f, 0x80, 0xff, 0x100, 0x1234] {
            let contents = vec![0xab; len];
            let encoded = tlv(0x30, &contents);
            let (tlv, rest) = read_tlv(&encoded).expect("valid");
            assert_eq!(tlv.tag, 0x30);
            assert_eq!(tlv.contents, &contents[..]);
            assert_eq!(tlv.raw, &encoded[..]);
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn rejects_truncated_indefinite_and_non_minimal_lengths() {
        assert_eq!(read_tlv(&[]), Err(DerError::Truncated));
        assert_eq!(read_tlv(&[0x30]), Err(DerError::Truncated));
        assert_eq!(read_tlv(&[0x30, 0x02, 0x00]), Err(DerError::Truncated));
        assert_eq!(read_tlv(&[0x30, 0x82, 0x01]), Err(DerError::Truncated));
        assert_eq!(read_tlv(&[0x30, 0x80]), Err(DerError::Unsupported));
        assert_eq!(read_tlv(&[0x30, 0x81, 0x05]), Err(DerError::Unsupported));
        assert_eq!(read_tlv(&[0x30, 0x82, 0x00, 0x90]), Err(DerError::Unsupported));
        assert_eq!(read_tlv(&[0x1f, 0x81, 0x00]), Err(DerError::Unsupported));
        assert_eq!(read_tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]), Err(DerError::Unsupported));
    }
}

//! `edk2/cacerts.bin`: the CA list firmware (OVMF's HTTPS boot) reads, as p11-kit's
//! `edk2-cacerts` format writes it: one `EFI_SIGNATURE_LIST` per certificate, back to back,
//! little-endian (UEFI 2.7, "Signature Database").
//!
//! ```text
//! EFI_SIGNATURE_LIST { SignatureType: EFI_CERT_X509_GUID, SignatureListSize: u32,
//!                      SignatureHeaderSize: u32 = 0, SignatureSize: u32 = 16 + len(DER) }
//! EFI_SIGNATURE_DATA { SignatureOwner: p11-kit's agent GUID, SignatureData: DER }
//! ```

use super::Certificate;

/// `EFI_GUID` in its on-disk form: the first three fields little-endian, the rest as is.
pub(crate) const fn guid(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> [u8; 16] {
    let a = data1.to_le_bytes();
    let b = data2.to_le_bytes();
    let c = data3.to_le_bytes();
    let d = data4;
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]
}

/// EFI_CERT_X509_GUID, A5C059A1-94E4-4AA7-87B5-AB155C2BF072.
pub(crate) const CERT_X509_GUID: [u8; 16] =
    guid(0xa5c0_59a1, 0x94e4, 0x4aa7, [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72]);

/// The owner p11-kit stamps on every entry, DCDD3B50-F405-43FD-96BE-BD33B1734776; the same one
/// keeps our file byte-identical to `update-ca-trust`'s for the same certificates.
pub(crate) const OWNER_GUID: [u8; 16] =
    guid(0xdcdd_3b50, 0xf405, 0x43fd, [0x96, 0xbe, 0xbd, 0x33, 0xb1, 0x73, 0x47, 0x76]);

/// Header (16 + 3 × 4) plus the owner GUID.
const OVERHEAD: usize = 28 + 16;

pub(crate) fn signature_lists(certificates: &[Certificate]) -> Vec<u8> {
    let total = certificates.iter().map(|c| c.der.len() + OVERHEAD).sum();
    let mut out = Vec::with_capacity(total);
    for cert in certificates {
        // Unreachable for a real certificate (they are kilobytes); skipping keeps the rest of
        // the file well-formed instead of writing a truncated size.
        let (Ok(signature_size), Ok(list_size)) =
            (u32::try_from(cert.der.len() + 16), u32::try_from(cert.der.len() + OVERHEAD))
        else {
            continue;
        };
        out.extend_from_slice(&CERT_X509_GUID);
        out.extend_from_slice(&list_size.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&signature_size.to_le_bytes());
        out.extend_from_slice(&OWNER_GUID);
        out.extend_from_slice(&cert.der);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::certificate::tests::ca_der;
    use rcgen::DnType;

    fn u32_at(bytes: &[u8], at: usize) -> usize {
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize
    }

    #[test]
    fn guids_are_stored_mixed_endian() {
        assert_eq!(
            CERT_X509_GUID,
            [0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72]
        );
        assert_eq!(OWNER_GUID[..4], [0x50, 0x3b, 0xdd, 0xdc]);
    }

    #[test]
    fn writes_one_signature_list_per_certificate_that_parses_back() {
        let certs: Vec<Certificate> = ["A", "Bee", "Sea"]
            .iter()
            .map(|n| Certificate::from_der(&ca_der(&[(DnType::CommonName, n)]), "s", false).expect("parses"))
            .collect();
        let bytes = signature_lists(&certs);
        let mut at = 0;
        for cert in &certs {
            assert_eq!(bytes[at..at + 16], CERT_X509_GUID);
            let list_size = u32_at(&bytes, at + 16);
            assert_eq!(u32_at(&bytes, at + 20), 0, "header size");
            assert_eq!(u32_at(&bytes, at + 24), cert.der.len() + 16);
            assert_eq!(list_size, cert.der.len() + 44);
            assert_eq!(bytes[at + 28..at + 44], OWNER_GUID);
            assert_eq!(bytes[at + 44..at + list_size], cert.der[..]);
            at += list_size;
        }
        assert_eq!(at, bytes.len());
        assert!(signature_lists(&[]).is_empty());
    }
}

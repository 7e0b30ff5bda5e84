//! One source's bytes → certificates: PEM (any text around the blocks, LF or CRLF), a single
//! DER certificate, or a PKCS#7 certificate bundle (PEM `PKCS7` block or DER `ContentInfo`).

use super::pem::{self, Block};
use super::{Certificate, CertificateAt, Error, Provenance, Result, SignatureChecks, pkcs7};

/// Signature checks one source value may cost ([`SignatureChecks`]): more than any real trust
/// bundle has self-signed end-entity certificates.
pub const SIGNATURE_CHECKS_PER_SOURCE: usize = 64;

/// Which sources are checked strictly: a user's source fails on any bad block; system roots
/// are best-effort (a distro bundle with one odd certificate must not take every volume down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    Strict,
    BestEffort,
}

/// Certificates from one source, plus how many blocks were skipped (BestEffort only).
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    pub certificates: Vec<Certificate>,
    pub skipped: usize,
    /// For each certificate, the 1-based PEM block it came from (1 for DER input); a PKCS#7
    /// block yields several certificates with the same index.
    pub(crate) blocks: Vec<usize>,
}

/// PEM labels of a PKCS#7 / CMS structure: OpenSSL's, RFC 7468's legacy one, and RFC 7468's.
const PKCS7_LABELS: [&str; 3] = ["PKCS7", "PKCS #7 SIGNED DATA", "CMS"];

/// Parses one source. Block indexes in errors are 1-based, counting every PEM block.
///
/// A private key or an encrypted block anywhere fails the source even with
/// [`Strictness::BestEffort`]: a file that mixes keys and certificates is a mistake we must not
/// paper over by mounting it into pods.
///
/// # Errors
/// With [`Strictness::Strict`], any block that is not a parsable certificate (or PKCS#7
/// certificate bundle) fails the source, and so does a source without certificates.
pub fn parse_source(source_name: &str, bytes: &[u8], strictness: Strictness) -> Result<Parsed> {
    parse_source_of(&Provenance::Named(source_name.to_owned()), bytes, strictness)
}

/// [`parse_source`] for a typed `source`: every certificate carries it, and errors name it as
/// its `Display` does.
///
/// # Errors
/// As [`parse_source`].
pub fn parse_source_of(source: &Provenance, bytes: &[u8], strictness: Strictness) -> Result<Parsed> {
    let name = source.to_string();
    let source_name = name.as_str();
    let mut parser = Parser {
        source,
        source_name,
        strictness,
        parsed: Parsed::default(),
        checks: SignatureChecks::new(SIGNATURE_CHECKS_PER_SOURCE),
    };

    // A DER certificate whose contents happen to include `-----BEGIN` is still DER: text
    // never parses as a whole certificate (nor as a whole PKCS#7 structure).
    if bytes.first() == Some(&0x30) {
        if let Ok(cert) = Certificate::from_der_checking(bytes, source.clone(), false, &mut parser.checks) {
            parser.push(cert, 1);
            return Ok(parser.parsed);
        }
        if pkcs7::looks_like_pkcs7(bytes) {
            parser.pkcs7(1, bytes)?;
            return parser.finish();
        }
    }
    if !pem::looks_like_pem(bytes) {
        if !bytes.trim_ascii().is_empty() {
            match Certificate::from_der_checking(bytes, source.clone(), false, &mut parser.checks) {
                Ok(cert) => parser.push(cert, 1),
                Err(reason) => parser.fail(Error::BadCertificate {
                    source_name: source_name.to_owned(),
                    index: 1,
                    at: CertificateAt::WholeSource,
                    reason,
                })?,
            }
        }
        return parser.finish();
    }

    let blocks = pem::read_blocks(bytes);
    if let Some(key) = blocks.iter().find(|b| is_private_key(&b.label)) {
        return Err(Error::PrivateKey {
            source_name: source_name.to_owned(),
            label: key.label.clone(),
            index: key.index,
        });
    }
    if let Some(index) = encrypted_block(bytes) {
        return Err(Error::EncryptedPem {
            source_name: source_name.to_owned(),
            label: blocks.get(index - 1).map(|b| b.label.clone()).unwrap_or_default(),
            index,
        });
    }
    for Block { index, label, body, .. } in blocks {
        let der = match body {
            Ok(der) => der,
            Err(e) => {
                parser.fail(Error::MalformedPem {
                    source_name: source_name.to_owned(),
                    label,
                    index,
                    reason: e.to_string(),
                })?;
                continue;
            }
        };
        let allow_trailing = match label.as_str() {
            "CERTIFICATE" => false,
            // OpenSSL's aux format: the certificate followed by its trust settings, which we
            // drop (trust is decided by being in the bundle at all).
            "TRUSTED CERTIFICATE" => true,
            _ if PKCS7_LABELS.contains(&label.as_str()) => {
                parser.pkcs7(index, &der)?;
                continue;
            }
            _ => {
                parser.fail(Error::NotACertificate { source_name: source_name.to_owned(), label, index })?;
                continue;
            }
        };
        match Certificate::from_der_checking(&der, source.clone(), allow_trailing, &mut parser.checks) {
            Ok(cert) => parser.push(cert, index),
            Err(reason) => parser.fail(Error::BadCertificate {
                source_name: source_name.to_owned(),
                index,
                at: CertificateAt::PemBlock,
                reason,
            })?,
        }
    }
    parser.finish()
}

struct Parser<'a> {
    source: &'a Provenance,
    source_name: &'a str,
    strictness: Strictness,
    parsed: Parsed,
    checks: SignatureChecks,
}

impl Parser<'_> {
    fn push(&mut self, certificate: Certificate, block: usize) {
        self.parsed.certificates.push(certificate);
        self.parsed.blocks.push(block);
    }

    /// A per-block problem: fatal when strict, counted otherwise.
    fn fail(&mut self, error: Error) -> Result<()> {
        match self.strictness {
            Strictness::Strict => Err(error),
            Strictness::BestEffort => {
                self.parsed.skipped += 1;
                Ok(())
            }
        }
    }

    /// Every certificate of one PKCS#7 bundle; a broken bundle or certificate in it counts as
    /// one bad block.
    fn pkcs7(&mut self, index: usize, der: &[u8]) -> Result<()> {
        let certificates = match pkcs7::certificates(der) {
            Ok(certificates) => certificates,
            Err(reason) => {
                return self.fail(Error::Pkcs7 { source_name: self.source_name.to_owned(), index, reason });
            }
        };
        let mut parsed = Vec::with_capacity(certificates.len());
        for (n, der) in certificates.into_iter().enumerate() {
            match Certificate::from_der_checking(der, self.source.clone(), false, &mut self.checks) {
                Ok(cert) => parsed.push(cert),
                Err(reason) => {
                    return self.fail(Error::BadCertificate {
                        source_name: self.source_name.to_owned(),
                        index,
                        at: CertificateAt::Pkcs7Entry { position: n + 1 },
                        reason,
                    });
                }
            }
        }
        for cert in parsed {
            self.push(cert, index);
        }
        Ok(())
    }

    fn finish(self) -> Result<Parsed> {
        if self.parsed.certificates.is_empty() && self.strictness == Strictness::Strict {
            return Err(Error::Empty { source_name: self.source_name.to_owned() });
        }
        Ok(self.parsed)
    }
}

/// `PRIVATE KEY`, `RSA PRIVATE KEY`, `ENCRYPTED PRIVATE KEY`, `OPENSSH PRIVATE KEY`, …
fn is_private_key(label: &str) -> bool {
    label.to_ascii_uppercase().contains("PRIVATE KEY")
}

/// The 1-based index of the first block with an RFC 1421 `Proc-Type: 4,ENCRYPTED` header.
/// Counted the way [`pem::read_blocks`] counts: every BEGIN line starts a block.
fn encrypted_block(bytes: &[u8]) -> Option<usize> {
    let mut index = 0;
    let mut inside = false;
    for line in bytes.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.starts_with(b"-----BEGIN") {
            index += 1;
            inside = true;
        } else if line.starts_with(b"-----END") {
            inside = false;
        } else if inside
            && line.len() >= 10
            && line[..10].eq_ignore_ascii_case(b"Proc-Type:")
            && line.to_ascii_uppercase().windows(9).any(|w| w == b"ENCRYPTED")
        {
            return Some(index);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::CertificateError;
    use crate::bundle::certificate::tests::ca_der;
    use crate::bundle::pem::write_block;
    use crate::bundle::pkcs7::tests::p7b;
    use rcgen::DnType;

    fn pem(label: &str, der: &[u8]) -> String {
        let mut s = String::new();
        write_block(&mut s, label, der);
        s
    }

    fn two_certs() -> (Vec<u8>, Vec<u8>) {
        (ca_der(&[(DnType::CommonName, "One")]), ca_der(&[(DnType::CommonName, "Two")]))
    }

    fn strict(bytes: &[u8]) -> Result<Parsed> {
        parse_source("test", bytes, Strictness::Strict)
    }

    fn best_effort(bytes: &[u8]) -> Result<Parsed> {
        parse_source("test", bytes, Strictness::BestEffort)
    }

    #[test]
    fn parses_pem_with_text_before_between_and_after_blocks() {
        let (a, b) = two_certs();
        let text = format!(
            "Bag Attributes\nfoo\n{}\n\nsubject=...\n{}trailing",
            pem("CERTIFICATE", &a),
            pem("CERTIFICATE", &b)
        );
        let parsed = strict(text.as_bytes()).expect("parses");
        let ders: Vec<_> = parsed.certificates.iter().map(|c| c.der.clone()).collect();
        assert_eq!(ders, [a, b]);
        assert_eq!(parsed.skipped, 0);
        assert!(parsed.certificates.iter().all(|c| c.source.to_string() == "test"));
    }

    #[test]
    fn parses_crlf_pem() {
        let (a, b) = two_certs();
        let text = format!("{}{}", pem("CERTIFICATE", &a), pem("CERTIFICATE", &b)).replace('\n', "\r\n");
        assert_eq!(strict(text.as_bytes()).expect("parses").certificates.len(), 2);
    }

    #[test]
    fn parses_a_single_der_certificate() {
        let (a, _) = two_certs();
        let parsed = strict(&a).expect("parses");
        assert_eq!(parsed.certificates.len(), 1);
        assert_eq!(parsed.certificates[0].der, a);
    }

    #[test]
    fn parses_der_even_if_it_contains_a_pem_marker() {
        let der = ca_der(&[(DnType::CommonName, "-----BEGIN CERTIFICATE-----")]);
        let parsed = strict(&der).expect("parses");
        assert_eq!(parsed.certificates[0].der, der);
    }

    #[test]
    fn rejects_der_with_trailing_bytes() {
        let (mut a, b) = two_certs();
        a.extend_from_slice(&b);
        assert!(matches!(strict(&a), Err(Error::BadCertificate { index: 1, .. })));
    }

    #[test]
    fn accepts_trusted_certificate_blocks_without_their_trust_settings() {
        let (a, _) = two_certs();
        let mut aux = a.clone();
        aux.extend_from_slice(&[0x30, 0x00]);
        let parsed = strict(pem("TRUSTED CERTIFICATE", &aux).as_bytes()).expect("parses");
        assert_eq!(parsed.certificates[0].der, a);
    }

    #[test]
    fn rejects_empty_input_as_empty_when_strict() {
        for input in [&b""[..], b"  \n\r\n", b"just a comment\n"] {
            let result = strict(input);
            assert!(
                matches!(result, Err(Error::Empty { .. }) | Err(Error::BadCertificate { .. })),
                "{input:?}: {result:?}"
            );
        }
        assert!(matches!(strict(b""), Err(Error::Empty { .. })));
        assert!(matches!(strict(b"\n"), Err(Error::Empty { .. })));
        assert!(best_effort(b"").expect("empty is fine").certificates.is_empty());
    }

    #[test]
    fn rejects_every_truncated_prefix_of_a_pem_certificate_when_strict() {
        let (a, _) = two_certs();
        let text = pem("CERTIFICATE", &a);
        let full = text.trim_end();
        for cut in 0..full.len() {
            let result = strict(&full.as_bytes()[..cut]);
            assert!(result.is_err(), "prefix of {cut} bytes was accepted");
        }
        assert!(strict(full.as_bytes()).is_ok());
    }

    #[test]
    fn rejects_every_truncated_prefix_of_a_der_certificate() {
        let (a, _) = two_certs();
        for cut in 0..a.len() {
            assert!(strict(&a[..cut]).is_err(), "prefix of {cut} bytes was accepted");
            // Never panics, and never yields a certificate either.
            assert!(best_effort(&a[..cut]).expect("best effort").certificates.is_empty());
        }
    }

    #[test]
    fn rejects_private_key_even_when_best_effort() {
        let (a, _) = two_certs();
        for label in [
            "PRIVATE KEY",
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "DSA PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
        ] {
            let text = format!("{}{}", pem("CERTIFICATE", &a), pem(label, b"secret"));
            for strictness in [Strictness::Strict, Strictness::BestEffort] {
                let result = parse_source("corp", text.as_bytes(), strictness);
                assert_eq!(
                    result.map(|p| p.certificates.len()),
                    Err(Error::PrivateKey { source_name: "corp".into(), label: label.into(), index: 2 }),
                    "{label} {strictness:?}"
                );
            }
        }
    }

    #[test]
    fn rejects_private_key_even_after_a_broken_block() {
        let text = format!("-----BEGIN CERTIFICATE-----\nabc\n{}", pem("PRIVATE KEY", b"k"));
        assert!(matches!(best_effort(text.as_bytes()), Err(Error::PrivateKey { index: 2, .. })));
    }

    #[test]
    fn private_key_error_says_what_to_do() {
        let message = strict(pem("PRIVATE KEY", b"k").as_bytes()).map(|_| ()).unwrap_err().to_string();
        assert!(message.contains("only CA certificates"), "{message}");
    }

    #[test]
    fn rejects_a_certificate_request_as_not_a_certificate() {
        let (a, _) = two_certs();
        let text = format!("{}{}", pem("CERTIFICATE", &a), pem("CERTIFICATE REQUEST", b"csr"));
        assert_eq!(
            strict(text.as_bytes()).map(|_| ()),
            Err(Error::NotACertificate { source_name: "test".into(), label: "CERTIFICATE REQUEST".into(), index: 2 })
        );
        let parsed = best_effort(text.as_bytes()).expect("skips");
        assert_eq!((parsed.certificates.len(), parsed.skipped), (1, 1));
    }

    #[test]
    fn best_effort_skips_and_counts_a_corrupt_certificate() {
        let (a, b) = two_certs();
        let mut corrupt = a.clone();
        corrupt.truncate(a.len() / 2);
        let text = format!("{}{}{}", pem("CERTIFICATE", &a), pem("CERTIFICATE", &corrupt), pem("CERTIFICATE", &b));
        let parsed = best_effort(text.as_bytes()).expect("skips");
        assert_eq!((parsed.certificates.len(), parsed.skipped), (2, 1));
        assert!(matches!(strict(text.as_bytes()), Err(Error::BadCertificate { index: 2, .. })));
    }

    #[test]
    fn rejects_bad_base64_when_strict_and_skips_it_when_best_effort() {
        let (a, _) = two_certs();
        let text =
            format!("{}-----BEGIN CERTIFICATE-----\nMII!!!\n-----END CERTIFICATE-----\n", pem("CERTIFICATE", &a));
        assert!(matches!(strict(text.as_bytes()), Err(Error::MalformedPem { index: 2, .. })));
        let parsed = best_effort(text.as_bytes()).expect("skips");
        assert_eq!((parsed.certificates.len(), parsed.skipped), (1, 1));
    }

    #[test]
    fn rejects_begin_without_end_when_strict() {
        let (a, _) = two_certs();
        let text = pem("CERTIFICATE", &a);
        let cut = text.replace("-----END CERTIFICATE-----\n", "");
        assert!(matches!(strict(cut.as_bytes()), Err(Error::MalformedPem { index: 1, .. })));
    }
    #[test]
    fn rejects_an_encrypted_block_naming_the_source_even_when_best_effort() {
        let (a, _) = two_certs();
        let encrypted = "-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END CERTIFICATE-----\n";
        let text = format!("{}{encrypted}", pem("CERTIFICATE", &a));
        for strictness in [Strictness::Strict, Strictness::BestEffort] {
            let error = parse_source("file:/corp/ca.pem", text.as_bytes(), strictness).map(|_| ()).unwrap_err();
            assert_eq!(
                error,
                Error::EncryptedPem { source_name: "file:/corp/ca.pem".into(), label: "CERTIFICATE".into(), index: 2 }
            );
            let message = error.to_string();
            assert!(message.contains("file:/corp/ca.pem") && message.contains("unencrypted"), "{message}");
        }
    }

    #[test]
    fn an_encrypted_legacy_key_is_reported_as_a_private_key() {
        let key = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(strict(key.as_bytes()), Err(Error::PrivateKey { index: 1, .. })));
    }

    #[test]
    fn a_proc_type_line_outside_a_block_is_just_text() {
        let (a, _) = two_certs();
        let text = format!("Proc-Type: 4,ENCRYPTED\n{}", pem("CERTIFICATE", &a));
        assert_eq!(strict(text.as_bytes()).expect("parses").certificates.len(), 1);
    }

    #[test]
    fn pkcs7_in_pem_and_in_der_gives_the_chain_in_order() {
        let (a, b) = two_certs();
        let der = p7b(&[&a, &b]);
        for label in ["PKCS7", "PKCS #7 SIGNED DATA", "CMS"] {
            let from_pem = strict(pem(label, &der).as_bytes()).expect("pem parses");
            let ders: Vec<_> = from_pem.certificates.iter().map(|c| c.der.clone()).collect();
            assert_eq!(ders, [a.clone(), b.clone()], "{label}");
            assert_eq!(from_pem.blocks, [1, 1]);
        }
        let from_der = strict(&der).expect("der parses");
        let ders: Vec<_> = from_der.certificates.iter().map(|c| c.der.clone()).collect();
        assert_eq!(ders, [a, b]);
    }

    #[test]
    fn pkcs7_blocks_mix_with_certificate_blocks() {
        let (a, b) = two_certs();
        let text = format!("{}{}", pem("PKCS7", &p7b(&[&a])), pem("CERTIFICATE", &b));
        let parsed = strict(text.as_bytes()).expect("parses");
        assert_eq!(parsed.certificates.len(), 2);
        assert_eq!(parsed.blocks, [1, 2]);
    }

    #[test]
    fn rejects_a_pkcs7_without_certificates_naming_the_source() {
        let empty = p7b(&[]);
        for input in [pem("PKCS7", &empty).into_bytes(), empty] {
            let error = parse_source("file:/corp/chain.p7b", &input, Strictness::Strict).map(|_| ()).unwrap_err();
            assert!(matches!(error, Error::Pkcs7 { index: 1, .. }), "{error:?}");
            let message = error.to_string();
            assert!(message.contains("file:/corp/chain.p7b") && message.contains("no certificates"), "{message}");
        }
    }

    #[test]
    fn bad_certificate_messages_say_where_the_certificate_was_found() {
        let message = |at| {
            let reason = CertificateError::TrailingBytes { count: 2 };
            Error::BadCertificate { source_name: "s".to_owned(), index: 3, at, reason }.to_string()
        };
        let tail = "2 unexpected bytes after the certificate; fix or remove that certificate";
        assert_eq!(message(CertificateAt::PemBlock), format!("source s: certificate 3 cannot be parsed: {tail}"));
        assert_eq!(
            message(CertificateAt::WholeSource),
            format!(
                "source s: certificate 3 cannot be parsed: no `-----BEGIN` line, so it was read as one DER certificate, which is {tail}"
            )
        );
        assert_eq!(
            message(CertificateAt::Pkcs7Entry { position: 2 }),
            format!("source s: certificate 3 cannot be parsed: certificate 2 of the PKCS#7 bundle is {tail}")
        );
    }

    #[test]
    fn rejects_a_pkcs7_holding_a_broken_certificate() {
        let (a, _) = two_certs();
        let broken = [0x30, 0x03, 0x02, 0x01, 0x00];
        let der = p7b(&[&a, &broken]);
        let error = strict(&der).map(|_| ()).unwrap_err();
        assert!(
            matches!(&error, Error::BadCertificate { index: 1, at: CertificateAt::Pkcs7Entry { position: 2 }, .. }),
            "{error:?}"
        );
        let parsed = best_effort(pem("PKCS7", &der).as_bytes()).expect("skips");
        assert_eq!((parsed.certificates.len(), parsed.skipped), (0, 1));
    }

    #[test]
    fn rejects_every_truncated_prefix_of_a_pkcs7_bundle() {
        let (a, b) = two_certs();
        let der = p7b(&[&a, &b]);
        for cut in 0..der.len() {
            assert!(strict(&der[..cut]).is_err(), "DER prefix of {cut} bytes was accepted");
            assert!(
                best_effort(&der[..cut]).expect("best effort").certificates.is_empty(),
                "DER prefix of {cut} bytes yielded certificates"
            );
        }
        let text = pem("PKCS7", &der);
        let full = text.trim_end();
        for cut in 0..full.len() {
            assert!(strict(&full.as_bytes()[..cut]).is_err(), "PEM prefix of {cut} bytes was accepted");
        }
        assert_eq!(strict(full.as_bytes()).expect("whole").certificates.len(), 2);
    }
}

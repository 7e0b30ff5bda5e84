//! One source's bytes → certificates: PEM (any text around the blocks, LF or CRLF) or a single
//! DER certificate.

use super::pem::{self, Block};
use super::{Certificate, Error, Result};

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
}

/// Parses one source. Block indexes in errors are 1-based, counting every PEM block.
///
/// A private key anywhere fails the source even with [`Strictness::BestEffort`]: a file that
/// mixes keys and certificates is a mistake we must not paper over by mounting it into pods.
///
/// # Errors
/// With [`Strictness::Strict`], any block that is not a parsable certificate fails the source,
/// and so does a source without certificates.
pub fn parse_source(source_name: &str, bytes: &[u8], strictness: Strictness) -> Result<Parsed> {
    let mut parsed = Parsed::default();
    // Collects per-block problems: fatal when strict, counted otherwise.
    let fail = |parsed: &mut Parsed, error: Error| match strictness {
        Strictness::Strict => Err(error),
        Strictness::BestEffort => {
            parsed.skipped += 1;
            Ok(())
        }
    };

    // A DER certificate whose contents happen to include `-----BEGIN` is still DER: text
    // never parses as a whole certificate.
    if bytes.first() == Some(&0x30)
        && let Ok(cert) = Certificate::from_der(bytes, source_name, false)
    {
        parsed.certificates.push(cert);
        return Ok(parsed);
    }
    if !pem::looks_like_pem(bytes) {
        if !bytes.trim_ascii().is_empty() {
            match Certificate::from_der(bytes, source_name, false) {
                Ok(cert) => parsed.certificates.push(cert),
                Err(reason) => fail(
                    &mut parsed,
                    Error::BadCertificate {
                        source_name: source_name.to_owned(),
                        index: 1,
                        reason: format!(
                            "no `-----BEGIN` line, so it was read as one DER certificate, which is {reason}"
                        ),
                    },
                )?,
            }
        }
        return finish(source_name, parsed, strictness);
    }

    let blocks = pem::read_blocks(bytes);
    if let Some(key) = blocks.iter().find(|b| is_private_key(&b.label)) {
        return Err(Error::PrivateKey {
            source_name: source_name.to_owned(),
            label: key.label.clone(),
            index: key.index,
        });
    }
    for Block {
        index, label, body, ..
    } in blocks
    {
        let der = match body {
            Ok(der) => der,
            Err(e) => {
                fail(
                    &mut parsed,
                    Error::MalformedPem {
                        source_name: source_name.to_owned(),
                        label,
                        index,
                        reason: e.to_string(),
                    },
                )?;
                continue;
            }
        };
        let allow_trailing = match label.as_str() {
            "CERTIFICATE" => false,
            // OpenSSL's aux format: the certificate followed by its trust settings, which we
            // drop (trust is decided by being in the bundle at all).
            "TRUSTED CERTIFICATE" => true,
            _ => {
                fail(
                    &mut parsed,
                    Error::NotACertificate {
                        source_name: source_name.to_owned(),
                        label,
                        index,
                    },
                )?;
                continue;
            }
        };
        match Certificate::from_der(&der, source_name, allow_trailing) {
            Ok(cert) => parsed.certificates.push(cert),
            Err(reason) => fail(
                &mut parsed,
                Error::BadCertificate {
                    source_name: source_name.to_owned(),
                    index,
                    reason,
                },
            )?,
        }
    }
    finish(source_name, parsed, strictness)
}

fn finish(source_name: &str, parsed: Parsed, strictness: Strictness) -> Result<Parsed> {
    if parsed.certificates.is_empty() && strictness == Strictness::Strict {
        return Err(Error::Empty {
            source_name: source_name.to_owned(),
        });
    }
    Ok(parsed)
}

/// `PRIVATE KEY`, `RSA PRIVATE KEY`, `ENCRYPTED PRIVATE KEY`, `OPENSSH PRIVATE KEY`, …
fn is_private_key(label: &str) -> bool {
    label.to_ascii_uppercase().contains("PRIVATE KEY")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::certificate::tests::ca_der;
    use crate::bundle::pem::write_block;
    use rcgen::DnType;

    fn pem(label: &str, der: &[u8]) -> String {
        let mut s = String::new();
        write_block(&mut s, label, der);
        s
    }

    fn two_certs() -> (Vec<u8>, Vec<u8>) {
        (
            ca_der(&[(DnType::CommonName, "One")]),
            ca_der(&[(DnType::CommonName, "Two")]),
        )
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
        assert!(parsed.certificates.iter().all(|c| c.source == "test"));
    }

    #[test]
    fn parses_crlf_pem() {
        let (a, b) = two_certs();
        let text =
            format!("{}{}", pem("CERTIFICATE", &a), pem("CERTIFICATE", &b)).replace('\n', "\r\n");
        assert_eq!(
            strict(text.as_bytes()).expect("parses").certificates.len(),
            2
        );
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
        assert!(matches!(
            strict(&a),
            Err(Error::BadCertificate { index: 1, .. })
        ));
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
                matches!(
                    result,
                    Err(Error::Empty { .. }) | Err(Error::BadCertificate { .. })
                ),
                "{input:?}: {result:?}"
            );
        }
        assert!(matches!(strict(b""), Err(Error::Empty { .. })));
        assert!(matches!(strict(b"\n"), Err(Error::Empty { .. })));
        assert!(
            best_effort(b"")
                .expect("empty is fine")
                .certificates
                .is_empty()
        );
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
            assert!(
                strict(&a[..cut]).is_err(),
                "prefix of {cut} bytes was accepted"
            );
            // Never panics, and never yields a certificate either.
            assert!(
                best_effort(&a[..cut])
                    .expect("best effort")
                    .certificates
                    .is_empty()
            );
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
                    Err(Error::PrivateKey {
                        source_name: "corp".into(),
                        label: label.into(),
                        index: 2
                    }),
                    "{label} {strictness:?}"
                );
            }
        }
    }

    #[test]
    fn rejects_private_key_even_after_a_broken_block() {
        let text = format!(
            "-----BEGIN CERTIFICATE-----\nabc\n{}",
            pem("PRIVATE KEY", b"k")
        );
        assert!(matches!(
            best_effort(text.as_bytes()),
            Err(Error::PrivateKey { index: 2, .. })
        ));
    }

    #[test]
    fn private_key_error_says_what_to_do() {
        let message = strict(pem("PRIVATE KEY", b"k").as_bytes())
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(message.contains("only CA certificates"), "{message}");
    }

    #[test]
    fn rejects_a_certificate_request_as_not_a_certificate() {
        let (a, _) = two_certs();
        let text = format!(
            "{}{}",
            pem("CERTIFICATE", &a),
            pem("CERTIFICATE REQUEST", b"csr")
        );
        assert_eq!(
            strict(text.as_bytes()).map(|_| ()),
            Err(Error::NotACertificate {
                source_name: "test".into(),
                label: "CERTIFICATE REQUEST".into(),
                index: 2
            })
        );
        let parsed = best_effort(text.as_bytes()).expect("skips");
        assert_eq!((parsed.certificates.len(), parsed.skipped), (1, 1));
    }

    #[test]
    fn best_effort_skips_and_counts_a_corrupt_certificate() {
        let (a, b) = two_certs();
        let mut corrupt = a.clone();
        corrupt.truncate(a.len() / 2);
        let text = format!(
            "{}{}{}",
            pem("CERTIFICATE", &a),
            pem("CERTIFICATE", &corrupt),
            pem("CERTIFICATE", &b)
        );
        let parsed = best_effort(text.as_bytes()).expect("skips");
        assert_eq!((parsed.certificates.len(), parsed.skipped), (2, 1));
        assert!(matches!(
            strict(text.as_bytes()),
            Err(Error::BadCertificate { index: 2, .. })
        ));
    }

    #[test]
    fn rejects_bad_base64_when_strict_and_skips_it_when_best_effort() {
        let (a, _) = two_certs();
        let text = format!(
            "{}-----BEGIN CERTIFICATE-----\nMII!!!\n-----END CERTIFICATE-----\n",
            pem("CERTIFICATE", &a)
        );
        assert!(matches!(
            strict(text.as_bytes()),
            Err(Error::MalformedPem { index: 2, .. })
        ));
        let parsed = best_effort(text.as_bytes()).expect("skips");
        assert_eq!((parsed.certificates.len(), parsed.skipped), (1, 1));
    }

    #[test]
    fn rejects_begin_without_end_when_strict() {
        let (a, _) = two_certs();
        let text = pem("CERTIFICATE", &a);
        let cut = text.replace("-----END CERTIFICATE-----\n", "");
        assert!(matches!(
            strict(cut.as_bytes()),
            Err(Error::MalformedPem { index: 1, .. })
        ));
    }
}

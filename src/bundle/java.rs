//! The JKS truststore (`java/cacerts`, `java-cacerts`) with one `trustedCertEntry` per
//! certificate; `pkcs12.rs` writes the same entries as a PKCS#12.
//!
//! Stored with password `changeit`: Java opens its default truststore with a null password,
//! which skips only the integrity check, and `changeit` (the JDK default) verifies it.
//! Deterministic: aliases come from the file names, timestamps from the certificates, and a
//! trusted-certificate store has no salt, so the same bundle gives the same bytes.

use std::time::{Duration, UNIX_EPOCH};

use jks::{KeyStore, KeyStoreOptions, TrustedCertificateEntry};

use super::naming::java_aliases;
use super::{Certificate, Error, Result};

pub const PASSWORD: &str = "changeit";

/// Encodes the JKS store; `stems` as for [`java_aliases`].
pub(crate) fn truststore(certificates: &[Certificate], stems: &[&str]) -> Result<Vec<u8>> {
    let aliases = java_aliases(certificates, stems);
    let mut store = KeyStore::with_options(KeyStoreOptions {
        // Sorted aliases: the store is a hash map, and iteration order must not leak out.
        ordered_aliases: true,
        ..KeyStoreOptions::default()
    });
    for (cert, alias) in certificates.iter().zip(&aliases) {
        let entry = TrustedCertificateEntry {
            // A fixed time (the certificate's own not-before) instead of "now", for
            // reproducible bytes; clamped because the format cannot hold pre-1970 times.
            creation_time: UNIX_EPOCH + Duration::from_secs(cert.not_before.max(0).unsigned_abs()),
            certificate: jks::Certificate { cert_type: "X.509".to_owned(), content: cert.der.clone() },
        };
        store
            .set_trusted_certificate_entry(alias, entry)
            .map_err(|e| Error::JavaStore(format!("certificate {alias:?}: {e}")))?;
    }
    let mut out = Vec::new();
    store.store(&mut out, PASSWORD.as_bytes()).map_err(|e| Error::JavaStore(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::certificate::tests::ca_der;
    use rcgen::DnType;

    fn cn(name: &str) -> Certificate {
        Certificate::from_der(&ca_der(&[(DnType::CommonName, name)]), "s", false).expect("parses")
    }

    #[test]
    fn stores_one_trusted_entry_per_certificate_under_lowercase_aliases() {
        let certs = [cn("A"), cn("b")];
        let bytes = truststore(&certs, &["A", "b"]).expect("stores");
        let mut store = KeyStore::new();
        store.load(&bytes[..], PASSWORD.as_bytes()).expect("loads with changeit");
        let mut aliases = store.aliases();
        aliases.sort();
        assert_eq!(aliases, ["a", "b"]);
        let entry = store.get_trusted_certificate_entry("a").expect("entry");
        assert_eq!(entry.certificate.content, certs[0].der);
    }

    #[test]
    fn aliases_differing_only_in_case_stay_distinct() {
        let certs = [cn("X"), cn("x")];
        let bytes = truststore(&certs, &["X", "x"]).expect("stores");
        let mut store = KeyStore::new();
        store.load(&bytes[..], PASSWORD.as_bytes()).expect("loads");
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn same_certificates_give_identical_bytes() {
        let certs = [cn("A"), cn("B"), cn("C")];
        let stems = ["A", "B", "C"];
        let first = truststore(&certs, &stems).expect("stores");
        for _ in 0..5 {
            assert_eq!(truststore(&certs, &stems).expect("stores"), first);
        }
    }
}

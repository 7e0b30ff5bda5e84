//! RHEL/Fedora/UBI's `/etc/pki/ca-trust/extracted`, as `update-ca-trust extract` (p11-kit)
//! leaves it. The image's own links lead here: `/etc/pki/tls/cert.pem` and
//! `/etc/pki/tls/certs/ca-bundle.crt` → `pem/tls-ca-bundle.pem`,
//! `/etc/pki/tls/certs/ca-bundle.trust.crt` → `openssl/ca-bundle.trust.crt`,
//! `$JAVA_HOME/lib/security/cacerts` → `java/cacerts`.
//!
//! ```text
//! pem/tls-ca-bundle.pem                  every certificate (p11-kit `pem-bundle`, server-auth)
//! pem/directory-hash/<name>.pem          one certificate each (p11-kit `pem-directory-hash`)
//! pem/directory-hash/<hash>.N            → <name>.pem, as `openssl rehash` makes
//! pem/directory-hash/ca-bundle.crt       → ../tls-ca-bundle.pem
//! pem/directory-hash/ca-certificates.crt → ../tls-ca-bundle.pem
//! openssl/ca-bundle.trust.crt            TRUSTED CERTIFICATE blocks, trusted for serverAuth
//! java/cacerts                           Java truststore (JKS or PKCS#12)
//! edk2/cacerts.bin                       EFI_SIGNATURE_LISTs for firmware (OVMF)
//! ```
//!
//! Not written: `pem/email-ca-bundle.pem` and `pem/objsign-ca-bundle.pem`. A volume grants
//! trust for TLS only; listing the same CAs for S/MIME or code signing would grant trust nobody
//! asked for, and no TLS client reads those files.

use super::{Entry, JavaTruststore, Prepared};
use crate::bundle::Result;

pub(super) const BUNDLE: &str = "pem/tls-ca-bundle.pem";
pub(super) const HASH_DIR: &str = "pem/directory-hash";
pub(super) const TRUST_BUNDLE: &str = "openssl/ca-bundle.trust.crt";
pub(super) const JAVA_STORE: &str = "java/cacerts";
pub(super) const EDK2: &str = "edk2/cacerts.bin";

pub(super) fn entries(prepared: &Prepared<'_>, java_format: JavaTruststore) -> Result<Vec<(String, Entry)>> {
    let mut entries = Vec::with_capacity(prepared.certificates.len() * 2 + 7);
    entries.push((BUNDLE.to_owned(), prepared.bundle()));
    prepared.hashed_directory(HASH_DIR, &mut entries);
    // Debian's and older Fedora's names for the bundle, as update-ca-trust links them.
    for link in ["ca-bundle.crt", "ca-certificates.crt"] {
        entries.push((format!("{HASH_DIR}/{link}"), Entry::Symlink("../tls-ca-bundle.pem".to_owned())));
    }
    entries.push((TRUST_BUNDLE.to_owned(), prepared.trusted_bundle()));
    if let Some(store) = prepared.java_store(java_format)? {
        entries.push((JAVA_STORE.to_owned(), Entry::File(store)));
    }
    entries.push((EDK2.to_owned(), prepared.edk2()));
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{cert, cn, file, get, options, paths, pem_ders, resolve};
    use super::super::{Files, Layout, render};
    use super::*;
    use crate::bundle::{Bundle, Strictness, parse_source};
    use rcgen::DnType;

    fn rhel(bundle: &Bundle, java: JavaTruststore) -> Files {
        render(bundle, &options(Layout::Rhel, java)).expect("renders")
    }

    #[test]
    fn renders_the_update_ca_trust_file_set() {
        let a = cn("Alpha Root");
        let files = rhel(&Bundle::new([a.clone()]), JavaTruststore::Jks);
        let hash = format!("{HASH_DIR}/{:08x}.0", a.subject_hash);
        let mut expected = vec![
            "edk2/cacerts.bin",
            "java/cacerts",
            "openssl/ca-bundle.trust.crt",
            "pem/directory-hash/Alpha_Root.pem",
            "pem/directory-hash/ca-bundle.crt",
            "pem/directory-hash/ca-certificates.crt",
            hash.as_str(),
            "pem/tls-ca-bundle.pem",
        ];
        expected.sort_unstable();
        assert_eq!(paths(&files), expected);
        assert_eq!(get(&files, &hash), Some(&Entry::Symlink("Alpha_Root.pem".into())));
        assert_eq!(resolve(&files, "pem/directory-hash/ca-bundle.crt"), Some(file(&files, BUNDLE)));
    }

    #[test]
    fn every_file_holds_every_certificate_in_bundle_order() {
        let bundle = Bundle::new([cn("B"), cn("A"), cn("C")]);
        let files = rhel(&bundle, JavaTruststore::Jks);
        let ders: Vec<Vec<u8>> = bundle.certificates().iter().map(|c| c.der.clone()).collect();
        assert_eq!(pem_ders(file(&files, BUNDLE), "CERTIFICATE"), ders);
        // A TRUSTED CERTIFICATE is the certificate followed by its trust settings.
        let trusted = pem_ders(file(&files, TRUST_BUNDLE), "TRUSTED CERTIFICATE");
        assert_eq!(trusted.len(), ders.len());
        for (block, der) in trusted.iter().zip(&ders) {
            assert!(block.starts_with(der) && block.len() > der.len());
        }
    }

    #[test]
    fn trust_bundle_parses_back_with_its_source_comments() {
        let bundle = Bundle::new([cn("A")]);
        let files = rhel(&bundle, JavaTruststore::None);
        let text = file(&files, TRUST_BUNDLE);
        assert!(text.starts_with(b"# CN=A\n# source: test:src\n-----BEGIN TRUSTED CERTIFICATE-----\n"));
        let parsed = parse_source("trust", text, Strictness::Strict).expect("parses back");
        assert_eq!(parsed.certificates[0].der, bundle.certificates()[0].der);
    }

    #[test]
    fn trust_bundle_aliases_are_the_readable_name_else_the_subject() {
        let named = cn("Named Root");
        let unnamed = cert(&[(DnType::CountryName, "DE")]);
        let files = rhel(&Bundle::new([named, unnamed]), JavaTruststore::None);
        let blocks = pem_ders(file(&files, TRUST_BUNDLE), "TRUSTED CERTIFICATE");
        let tails: Vec<&[u8]> = blocks.iter().map(|b| &b[b.len() - 10..]).collect();
        assert!(tails.iter().any(|t| t.ends_with(b"Named Root")), "{tails:?}");
        assert!(tails.iter().any(|t| t.ends_with(b"\x0c\x04C=DE")), "{tails:?}");
    }

    #[test]
    fn java_none_drops_only_the_java_store() {
        let bundle = Bundle::new([cn("A")]);
        let with = rhel(&bundle, JavaTruststore::Pkcs12);
        let without = rhel(&bundle, JavaTruststore::None);
        let mut expected: Vec<&str> = paths(&with);
        expected.retain(|p| *p != JAVA_STORE);
        assert_eq!(paths(&without), expected);
        assert!(get(&without, EDK2).is_some());
    }
}

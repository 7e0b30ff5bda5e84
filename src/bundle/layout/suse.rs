//! SLES/openSUSE's `/var/lib/ca-certificates`, as `update-ca-certificates` (its `*.run`
//! scripts, all p11-kit extracts) leaves it. The image's links lead here: `/etc/ssl/certs` →
//! `pem`, `/etc/ssl/ca-bundle.pem` → `ca-bundle.pem`, the JDK's `cacerts` → `java-cacerts`.
//!
//! ```text
//! ca-bundle.pem          every certificate (certbundle.run: `pem-bundle`, server-auth)
//! pem/<name>.pem         one certificate each (etc_ssl.run: `pem-directory-hash`)
//! pem/<hash>.N           → <name>.pem, as `openssl rehash` makes
//! openssl/<name>.pem     TRUSTED CERTIFICATE each (openssl.run: `openssl-directory`)
//! openssl/<hash>.N       → <name>.pem
//! java-cacerts           Java truststore (java.run: `java-cacerts`), JKS or PKCS#12
//! ```

use super::{Entry, JavaTruststore, Prepared};
use crate::bundle::Result;

pub(super) const BUNDLE: &str = "ca-bundle.pem";
pub(super) const PEM_DIR: &str = "pem";
pub(super) const OPENSSL_DIR: &str = "openssl";
pub(super) const JAVA_STORE: &str = "java-cacerts";

pub(super) fn entries(prepared: &Prepared<'_>, java_format: JavaTruststore) -> Result<Vec<(String, Entry)>> {
    let mut entries = Vec::with_capacity(prepared.certificates.len() * 4 + 2);
    entries.push((BUNDLE.to_owned(), prepared.bundle()));
    prepared.hashed_directory(PEM_DIR, &mut entries);
    prepared.trusted_hashed_directory(OPENSSL_DIR, &mut entries);
    if let Some(store) = prepared.java_store(java_format)? {
        entries.push((JAVA_STORE.to_owned(), Entry::File(store)));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{cn, file, get, options, paths, pem_ders};
    use super::super::{Files, Layout, render};
    use super::*;
    use crate::bundle::Bundle;

    fn suse(bundle: &Bundle, java: JavaTruststore) -> Files {
        render(bundle, &options(Layout::Suse, java)).expect("renders")
    }

    #[test]
    fn renders_the_update_ca_certificates_file_set() {
        let a = cn("Alpha Root");
        let files = suse(&Bundle::new([a.clone()]), JavaTruststore::Jks);
        let pem_link = format!("pem/{:08x}.0", a.subject_hash);
        let openssl_link = format!("openssl/{:08x}.0", a.subject_hash);
        let mut expected = vec![
            "ca-bundle.pem",
            "java-cacerts",
            "openssl/Alpha_Root.pem",
            openssl_link.as_str(),
            "pem/Alpha_Root.pem",
            pem_link.as_str(),
        ];
        expected.sort_unstable();
        assert_eq!(paths(&files), expected);
        for link in [&pem_link, &openssl_link] {
            assert_eq!(get(&files, link), Some(&Entry::Symlink("Alpha_Root.pem".into())));
        }
    }

    #[test]
    fn pem_files_are_plain_and_openssl_files_carry_trust_settings() {
        let a = cn("A");
        let files = suse(&Bundle::new([a.clone()]), JavaTruststore::None);
        assert_eq!(pem_ders(file(&files, "pem/A.pem"), "CERTIFICATE"), std::slice::from_ref(&a.der));
        let trusted = pem_ders(file(&files, "openssl/A.pem"), "TRUSTED CERTIFICATE");
        assert_eq!(trusted.len(), 1);
        assert!(trusted[0].starts_with(&a.der) && trusted[0].len() > a.der.len());
        assert_eq!(pem_ders(file(&files, BUNDLE), "CERTIFICATE"), [a.der]);
        assert!(get(&files, JAVA_STORE).is_none());
    }
}

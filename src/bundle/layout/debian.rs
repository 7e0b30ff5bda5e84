//! Debian's `/etc/ssl/certs`, also right for Ubuntu, Alpine and distroless:
//!
//! ```text
//! ca-certificates.crt        every certificate, each after `# <subject>` / `# source: …`
//! ca-bundle.crt, cert.pem    → ca-certificates.crt (Fedora/Alpine/OpenSSL default names)
//! <name>.pem                 one certificate each, named after its CN (else O, OU, fingerprint)
//! <hash>.N                   → <name>.pem, exactly what `openssl rehash` makes
//! java/cacerts               Java truststore (JKS or PKCS#12), password `changeit`
//! adoptium/cacerts           → ../java/cacerts (Temurin's Debian packages read it there)
//! ```

use super::{BUNDLE_FILE, Entry, JAVA_STORE, JavaTruststore, Prepared};
use crate::bundle::Result;

pub(super) fn entries(prepared: &Prepared<'_>, java_format: JavaTruststore) -> Result<Vec<(String, Entry)>> {
    let mut entries = Vec::with_capacity(prepared.certificates.len() * 2 + 5);
    entries.push((BUNDLE_FILE.to_owned(), prepared.bundle()));
    for link in ["ca-bundle.crt", "cert.pem"] {
        entries.push((link.to_owned(), Entry::Symlink(BUNDLE_FILE.to_owned())));
    }
    prepared.hashed_directory("", &mut entries);
    if let Some(store) = prepared.java_store(java_format)? {
        entries.push((JAVA_STORE.to_owned(), Entry::File(store)));
        entries.push(("adoptium/cacerts".to_owned(), Entry::Symlink(format!("../{JAVA_STORE}"))));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{cn, file, get, options, paths, pem_ders};
    use super::super::{Files, Layout, RenderOptions, render};
    use super::*;
    use crate::bundle::{Bundle, Strictness, parse_source};

    fn debian(bundle: &Bundle, java: JavaTruststore) -> Files {
        render(bundle, &options(Layout::Debian, java)).expect("renders")
    }

    #[test]
    fn renders_the_debian_file_set_sorted_by_path() {
        let a = cn("Alpha Root");
        let bundle = Bundle::new([a.clone()]);
        let files = render(&bundle, &RenderOptions::default()).expect("renders");
        let hash = format!("{:08x}.0", a.subject_hash);
        let mut expected = vec![
            "Alpha_Root.pem",
            "adoptium/cacerts",
            "ca-bundle.crt",
            "ca-certificates.crt",
            "cert.pem",
            hash.as_str(),
            "java/cacerts",
        ];
        expected.sort_unstable();
        assert_eq!(paths(&files), expected);
        assert_eq!(get(&files, "cert.pem"), Some(&Entry::Symlink("ca-certificates.crt".into())));
        assert_eq!(get(&files, "ca-bundle.crt"), Some(&Entry::Symlink("ca-certificates.crt".into())));
        assert_eq!(get(&files, &hash), Some(&Entry::Symlink("Alpha_Root.pem".into())));
        assert_eq!(get(&files, "adoptium/cacerts"), Some(&Entry::Symlink("../java/cacerts".into())));
    }

    #[test]
    fn bundle_file_has_subject_and_source_comments_and_parses_back() {
        let bundle = Bundle::new([cn("B"), cn("A")]);
        let files = render(&bundle, &RenderOptions::default()).expect("renders");
        let text = String::from_utf8(file(&files, BUNDLE_FILE).to_vec()).expect("utf-8");
        assert!(text.starts_with("# CN=A\n# source: test:src\n-----BEGIN CERTIFICATE-----\n"), "{text}");
        let parsed = parse_source("again", text.as_bytes(), Strictness::Strict).expect("parses back");
        let ders: Vec<_> = parsed.certificates.iter().map(|c| &c.der).collect();
        let original: Vec<_> = bundle.certificates().iter().map(|c| &c.der).collect();
        assert_eq!(ders, original);
    }

    #[test]
    fn per_certificate_files_hold_exactly_one_certificate() {
        let bundle = Bundle::new([cn("A"), cn("B")]);
        let files = render(&bundle, &RenderOptions::default()).expect("renders");
        for name in ["A.pem", "B.pem"] {
            let text = file(&files, name);
            assert!(text.starts_with(b"-----BEGIN CERTIFICATE-----\n"));
            assert_eq!(pem_ders(text, "CERTIFICATE").len(), 1);
        }
    }

    #[test]
    fn pkcs12_keeps_the_store_name_and_none_drops_it_with_its_link() {
        let bundle = Bundle::new([cn("A")]);
        let jks = debian(&bundle, JavaTruststore::Jks);
        let p12 = debian(&bundle, JavaTruststore::Pkcs12);
        assert_eq!(paths(&jks), paths(&p12));
        assert_ne!(file(&jks, JAVA_STORE), file(&p12, JAVA_STORE));
        // A PKCS#12 PFX is a SEQUENCE; a JKS starts with its magic number.
        assert_eq!(file(&p12, JAVA_STORE)[0], 0x30);
        assert_eq!(file(&jks, JAVA_STORE)[..4], [0xfe, 0xed, 0xfe, 0xed]);
        let none = debian(&bundle, JavaTruststore::None);
        assert!(get(&none, JAVA_STORE).is_none());
        assert!(get(&none, "adoptium/cacerts").is_none());
    }

    #[test]
    fn renders_an_empty_bundle() {
        let files = render(&Bundle::default(), &RenderOptions::default()).expect("renders");
        assert_eq!(get(&files, BUNDLE_FILE), Some(&Entry::File(Vec::new())));
        assert!(get(&files, JAVA_STORE).is_some());
    }
}

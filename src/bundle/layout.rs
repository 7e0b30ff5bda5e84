//! A [`Bundle`] → the files of a layout. Only Debian's for now:
//!
//! ```text
//! ca-certificates.crt        every certificate, each after `# <subject>` / `# source: …`
//! ca-bundle.crt, cert.pem    → ca-certificates.crt (Fedora/Alpine/OpenSSL default names)
//! <name>.pem                 one certificate each, named after its CN (else O, OU, fingerprint)
//! <hash>.N                   → <name>.pem, exactly what `openssl rehash` makes
//! java/cacerts               JKS truststore, password `changeit`
//! adoptium/cacerts           → ../java/cacerts
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Bundle, Certificate, Result, java, pem};

/// Which on-disk layout a volume gets. Only `debian` for now.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Layout {
    #[default]
    Debian,
}

/// One entry of a rendered volume. Directories are implied by the paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    File(Vec<u8>),
    /// A relative symlink target, e.g. `ca-certificates.crt` or `../java/cacerts`.
    Symlink(String),
}

/// The rendered files, sorted by relative path (`/`-separated, no `..`, no leading `/`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Files {
    pub entries: Vec<(String, Entry)>,
}

pub const BUNDLE_FILE: &str = "ca-certificates.crt";
pub const JAVA_STORE: &str = "java/cacerts";

/// Names a per-certificate file must never take: the bundle's own files and directories.
/// Dot-files are excluded separately (the volume's atomic-swap machinery uses them).
const RESERVED: &[&str] = &[BUNDLE_FILE, "ca-bundle.crt", "cert.pem", "java", "adoptium"];

/// Longest readable stem we keep, so names stay well under the 255-byte limit.
const MAX_STEM: usize = 64;

/// Lays a bundle out as files.
///
/// # Errors
/// Only if the Java store cannot be encoded.
pub fn render(bundle: &Bundle, options: &RenderOptions) -> Result<Files> {
    match options.layout {
        Layout::Debian => debian(bundle, options.java),
    }
}

/// How a volume's files are laid out; set by volume attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RenderOptions {
    pub layout: Layout,
    pub java: JavaTruststore,
}

/// Which Java truststore a volume gets (volume attribute `javaTruststore`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum JavaTruststore {
    #[default]
    Jks,
    None,
}

impl JavaTruststore {
    /// Every accepted attribute value, in the order error messages list them.
    pub const ALL: &[Self] = &[Self::Jks, Self::None];

    pub fn name(self) -> &'static str {
        match self {
            Self::Jks => "jks",
            Self::None => "none",
        }
    }
}

impl Layout {
    /// Every accepted attribute value, in the order error messages list them.
    pub const ALL: &[Self] = &[Self::Debian];

    pub fn name(self) -> &'static str {
        match self {
            Self::Debian => "debian",
        }
    }
}

fn debian(bundle: &Bundle, java_format: JavaTruststore) -> Result<Files> {
    let certificates = bundle.certificates();
    let names = file_names(certificates);
    let mut entries = Vec::with_capacity(certificates.len() * 2 + 5);

    entries.push((
        BUNDLE_FILE.to_owned(),
        Entry::File(bundle_text(certificates).into_bytes()),
    ));
    for link in ["ca-bundle.crt", "cert.pem"] {
        entries.push((link.to_owned(), Entry::Symlink(BUNDLE_FILE.to_owned())));
    }
    for (cert, name) in certificates.iter().zip(&names) {
        let mut text = String::new();
        pem::write_block(&mut text, "CERTIFICATE", &cert.der);
        entries.push((name.clone(), Entry::File(text.into_bytes())));
    }
    for (link, target) in hash_links(certificates, &names) {
        entries.push((link, Entry::Symlink(target)));
    }
    let stems: Vec<&str> = names
        .iter()
        .map(|n| n.strip_suffix(".pem").unwrap_or(n))
        .collect();
    match java_format {
        JavaTruststore::Jks => {
            entries.push((
                JAVA_STORE.to_owned(),
                Entry::File(java::truststore(certificates, &stems)?),
            ));
            entries.push((
                "adoptium/cacerts".to_owned(),
                Entry::Symlink(format!("../{JAVA_STORE}")),
            ));
        }
        JavaTruststore::None => {}
    }

    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Files { entries })
}

/// The concatenated bundle. The comment lines are tolerated between PEM blocks by OpenSSL,
/// Go, GnuTLS and Java (Fedora's bundle has them too), and `inspect` reads `# source:` back.
fn bundle_text(certificates: &[Certificate]) -> String {
    let mut text = String::new();
    for cert in certificates {
        text.push_str("# ");
        text.push_str(&comment_safe(&cert.subject));
        text.push_str("\n# source: ");
        text.push_str(&comment_safe(&cert.source));
        text.push('\n');
        pem::write_block(&mut text, "CERTIFICATE", &cert.der);
    }
    text
}

/// Keeps a comment on one line and free of anything a lax PEM reader could take for a boundary
/// (subjects are attacker-influenced text).
fn comment_safe(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    while out.contains("-----") {
        out = out.replace("-----", "-- --");
    }
    out
}

/// One `.pem` file name per certificate, in the same order, all distinct.
pub(crate) fn file_names(certificates: &[Certificate]) -> Vec<String> {
    let stems: Vec<String> = certificates
        .iter()
        .map(|c| {
            c.readable_name()
                .map(|name| sanitize(&name))
                .unwrap_or_else(|| hex::encode(c.fingerprint))
        })
        .collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for stem in &stems {
        *counts.entry(stem).or_default() += 1;
    }
    let preferred = certificates.iter().zip(&stems).map(|(cert, stem)| {
        let name = format!("{stem}.pem");
        if counts.get(stem.as_str()).copied().unwrap_or(0) > 1 || RESERVED.contains(&name.as_str())
        {
            format!("{stem}_{}.pem", short_fingerprint(cert))
        } else {
            name
        }
    });
    let fallbacks = certificates
        .iter()
        .zip(&stems)
        .map(|(cert, stem)| (stem, hex::encode(cert.fingerprint)));
    make_unique(
        preferred
            .zip(fallbacks)
            .map(|(name, (stem, fp))| (name, format!("{stem}_{fp}"), ".pem")),
    )
}

/// Keeps each preferred name unless an earlier one took it; then falls back to a longer name,
/// numbered if even that is taken (only possible with adversarial subjects).
pub(crate) fn make_unique(
    candidates: impl Iterator<Item = (String, String, &'static str)>,
) -> Vec<String> {
    let mut taken = HashSet::new();
    candidates
        .map(|(preferred, fallback, suffix)| {
            let mut name = preferred;
            let mut n = 1;
            while taken.contains(&name) {
                name = if n == 1 {
                    format!("{fallback}{suffix}")
                } else {
                    format!("{fallback}_{n}{suffix}")
                };
                n += 1;
            }
            taken.insert(name.clone());
            name
        })
        .collect()
}

pub(crate) fn short_fingerprint(cert: &Certificate) -> String {
    hex::encode(&cert.fingerprint[..4])
}

/// `[A-Za-z0-9._-]` only, never starting with a dot, at most [`MAX_STEM`] characters.
fn sanitize(name: &str) -> String {
    let mut out: String = name
        .trim()
        .chars()
        .take(MAX_STEM)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with('.') {
        out.replace_range(..1, "_");
    }
    out
}

/// `<hash>.N` → file: for each hash, N counts from 0 in file-name order, as `openssl rehash`
/// numbers a fresh directory.
fn hash_links(certificates: &[Certificate], names: &[String]) -> Vec<(String, String)> {
    let mut by_hash: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for (cert, name) in certificates.iter().zip(names) {
        by_hash.entry(cert.subject_hash).or_default().push(name);
    }
    let mut links = Vec::new();
    for (hash, mut files) in by_hash {
        files.sort_unstable();
        for (n, file) in files.into_iter().enumerate() {
            links.push((format!("{hash:08x}.{n}"), file.to_owned()));
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::certificate::tests::ca_der;
    use crate::bundle::{Strictness, parse_source};
    use rcgen::DnType;

    fn cert(attributes: &[(DnType, &str)]) -> Certificate {
        Certificate::from_der(&ca_der(attributes), "test:src", false).expect("parses")
    }

    fn cn(name: &str) -> Certificate {
        cert(&[(DnType::CommonName, name)])
    }

    fn paths(files: &Files) -> Vec<&str> {
        files.entries.iter().map(|(p, _)| p.as_str()).collect()
    }

    fn get<'a>(files: &'a Files, path: &str) -> Option<&'a Entry> {
        files
            .entries
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, e)| e)
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
        assert_eq!(
            get(&files, "cert.pem"),
            Some(&Entry::Symlink("ca-certificates.crt".into()))
        );
        assert_eq!(
            get(&files, "ca-bundle.crt"),
            Some(&Entry::Symlink("ca-certificates.crt".into()))
        );
        assert_eq!(
            get(&files, &hash),
            Some(&Entry::Symlink("Alpha_Root.pem".into()))
        );
        assert_eq!(
            get(&files, "adoptium/cacerts"),
            Some(&Entry::Symlink("../java/cacerts".into()))
        );
    }

    #[test]
    fn bundle_file_has_subject_and_source_comments_and_parses_back() {
        let bundle = Bundle::new([cn("B"), cn("A")]);
        let files = render(&bundle, &RenderOptions::default()).expect("renders");
        let Some(Entry::File(text)) = get(&files, BUNDLE_FILE) else {
            panic!("no bundle file");
        };
        let text = String::from_utf8(text.clone()).expect("utf-8");
        assert!(
            text.starts_with("# CN=A\n# source: test:src\n-----BEGIN CERTIFICATE-----\n"),
            "{text}"
        );
        let parsed =
            parse_source("again", text.as_bytes(), Strictness::Strict).expect("parses back");
        let ders: Vec<_> = parsed.certificates.iter().map(|c| &c.der).collect();
        let original: Vec<_> = bundle.certificates().iter().map(|c| &c.der).collect();
        assert_eq!(ders, original);
    }

    #[test]
    fn per_certificate_files_hold_exactly_one_certificate() {
        let bundle = Bundle::new([cn("A"), cn("B")]);
        let files = render(&bundle, &RenderOptions::default()).expect("renders");
        for name in ["A.pem", "B.pem"] {
            let Some(Entry::File(text)) = get(&files, name) else {
                panic!("missing {name}");
            };
            assert!(text.starts_with(b"-----BEGIN CERTIFICATE-----\n"));
            let parsed = parse_source(name, text, Strictness::Strict).expect("parses");
            assert_eq!(parsed.certificates.len(), 1);
        }
    }

    #[test]
    fn comments_cannot_break_out_of_their_line() {
        assert_eq!(
            comment_safe("CN=x\n-----BEGIN CERTIFICATE-----"),
            "CN=x -- --BEGIN CERTIFICATE-- --"
        );
        assert!(!comment_safe(&"-".repeat(40)).contains("-----"));
    }

    #[test]
    fn file_names_come_from_cn_then_o_then_ou_then_fingerprint() {
        let certs = [
            cn("Root CA 1"),
            cert(&[(DnType::OrganizationName, "Acme, Inc.")]),
            cert(&[(DnType::OrganizationalUnitName, "Ops")]),
            cert(&[(DnType::CountryName, "DE")]),
        ];
        let names = file_names(&certs);
        assert_eq!(names[..3], ["Root_CA_1.pem", "Acme__Inc..pem", "Ops.pem"]);
        assert_eq!(
            names[3],
            format!("{}.pem", hex::encode(certs[3].fingerprint))
        );
    }

    #[test]
    fn file_names_are_sanitized_and_never_hidden() {
        assert_eq!(sanitize("Ünïcode/../etc passwd"), "_n_code_.._etc_passwd");
        assert_eq!(sanitize("..hidden"), "_.hidden");
        assert_eq!(sanitize(&"x".repeat(300)).len(), MAX_STEM);
    }

    #[test]
    fn colliding_and_reserved_names_get_a_fingerprint_suffix() {
        let (a1, a2, c, other) = (cn("Same"), cn("Same"), cn("cert"), cn("Other"));
        let names = file_names(&[a1.clone(), a2.clone(), c.clone(), other]);
        assert_eq!(
            names,
            [
                format!("Same_{}.pem", short_fingerprint(&a1)),
                format!("Same_{}.pem", short_fingerprint(&a2)),
                format!("cert_{}.pem", short_fingerprint(&c)),
                "Other.pem".to_owned(),
            ]
        );
    }

    #[test]
    fn file_names_stay_unique_even_with_adversarial_subjects() {
        let a = cn("x");
        let b = cn("x");
        let tricky = cn(&format!("x_{}", short_fingerprint(&a)));
        let names = file_names(&[a, b, tricky]);
        let unique: HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), 3, "{names:?}");
    }

    #[test]
    fn hash_links_number_same_subject_certificates_in_file_name_order() {
        let certs = [cn("Same"), cn("Same"), cn("Same")];
        let names = file_names(&certs);
        let links = hash_links(&certs, &names);
        let mut sorted = names.clone();
        sorted.sort();
        let hash = certs[0].subject_hash;
        let expected: Vec<_> = sorted
            .iter()
            .enumerate()
            .map(|(n, f)| (format!("{hash:08x}.{n}"), f.clone()))
            .collect();
        assert_eq!(links, expected);
    }

    #[test]
    fn render_is_independent_of_input_order() {
        let certs = vec![cn("C"), cn("A"), cn("B"), cn("A"), cn("Same"), cn("Same")];
        let mut shuffled = certs.clone();
        shuffled.rotate_left(2);
        shuffled.swap(0, 3);
        let reversed: Vec<_> = certs.iter().rev().cloned().collect();
        let one = render(&Bundle::new(certs), &RenderOptions::default()).expect("renders");
        assert_eq!(
            one,
            render(&Bundle::new(shuffled), &RenderOptions::default()).expect("renders")
        );
        assert_eq!(
            one,
            render(&Bundle::new(reversed), &RenderOptions::default()).expect("renders")
        );
    }

    #[test]
    fn renders_an_empty_bundle() {
        let files = render(&Bundle::default(), &RenderOptions::default()).expect("renders");
        assert_eq!(get(&files, BUNDLE_FILE), Some(&Entry::File(Vec::new())));
        assert!(get(&files, JAVA_STORE).is_some());
    }
}

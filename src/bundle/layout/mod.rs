//! A [`Bundle`] → the files of a layout, one module per distro family:
//!
//! - [`Layout::Debian`] (`debian.rs`): `/etc/ssl/certs` of Debian, Ubuntu, Alpine, distroless.
//! - [`Layout::Rhel`] (`rhel.rs`): `/etc/pki/ca-trust/extracted` of RHEL, Fedora, UBI, as
//!   `update-ca-trust extract` leaves it.
//! - [`Layout::Suse`] (`suse.rs`): `/var/lib/ca-certificates` of SLES and openSUSE, as
//!   `update-ca-certificates` leaves it.
//!
//! Shared here: the bundle text, per-certificate file names (made in `naming.rs`), OpenSSL
//! hash links and the Java store, so each layout only says where things go.

mod debian;
mod rhel;
mod suse;

use std::collections::BTreeMap;

use super::files::{Entry, Files};
use super::{Bundle, Certificate, Ignored, Result, edk2, java, naming, pem, pkcs12, trusted};

/// Which on-disk layout a volume gets (volume attribute `layout`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    #[default]
    Debian,
    Rhel,
    Suse,
}

/// The Debian layout's bundle file.
pub const BUNDLE_FILE: &str = "ca-certificates.crt";
/// The Debian layout's Java store.
pub const JAVA_STORE: &str = "java/cacerts";

/// Names a per-certificate file must never take: the bundle's own files and directories in
/// any layout. Dot-files are excluded separately (the volume's atomic-swap machinery uses them).
const RESERVED: &[&str] =
    &[BUNDLE_FILE, "ca-bundle.crt", "cert.pem", "java", "adoptium", "ca-bundle.pem", "java-cacerts"];

/// Lays a bundle out as files.
///
/// # Errors
/// Only if the Java store cannot be encoded.
pub fn render(bundle: &Bundle, options: &RenderOptions) -> Result<Files> {
    let prepared = Prepared::new(bundle.certificates(), bundle.ignored());
    let mut entries = match options.layout {
        Layout::Debian => debian::entries(&prepared, options.java)?,
        Layout::Rhel => rhel::entries(&prepared, options.java)?,
        Layout::Suse => suse::entries(&prepared, options.java)?,
    };
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Files { entries })
}

/// How a volume's files are laid out; set by volume attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RenderOptions {
    pub layout: Layout,
    pub java: JavaTruststore,
}

/// Which Java truststore a volume gets (volume attribute `javaTruststore`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum JavaTruststore {
    #[default]
    Jks,
    /// Password-less PKCS#12: plain certificate bags, no MAC (see `pkcs12.rs`).
    Pkcs12,
    None,
}

impl JavaTruststore {
    /// Every accepted attribute value, in the order error messages list them.
    pub const ALL: &[Self] = &[Self::Jks, Self::Pkcs12, Self::None];

    pub fn name(self) -> &'static str {
        match self {
            Self::Jks => "jks",
            Self::Pkcs12 => "pkcs12",
            Self::None => "none",
        }
    }
}

impl Layout {
    /// Every accepted attribute value, in the order error messages list them.
    pub const ALL: &[Self] = &[Self::Debian, Self::Rhel, Self::Suse];

    pub fn name(self) -> &'static str {
        match self {
            Self::Debian => "debian",
            Self::Rhel => "rhel",
            Self::Suse => "suse",
        }
    }
}

/// What every layout derives from the certificates once: their order and file names.
pub(super) struct Prepared<'a> {
    certificates: &'a [Certificate],
    /// Named in the bundle file's header.
    ignored: &'a [Ignored],
    /// The subject's CN, else O, else OU (see [`Certificate::readable_name`]), parsed once:
    /// file names, Java aliases and OpenSSL aliases all come from it.
    readable: Vec<Option<String>>,
    /// `<name>.pem`, one per certificate, in the same order, all distinct.
    names: Vec<String>,
}

impl<'a> Prepared<'a> {
    fn new(certificates: &'a [Certificate], ignored: &'a [Ignored]) -> Self {
        let readable: Vec<Option<String>> = certificates.iter().map(Certificate::readable_name).collect();
        let names = naming::file_names(certificates, &readable, RESERVED);
        Self { certificates, ignored, readable, names }
    }

    /// The file names without `.pem`: Java aliases come from them.
    fn stems(&self) -> Vec<&str> {
        self.names.iter().map(|n| n.strip_suffix(".pem").unwrap_or(n)).collect()
    }

    /// `<dir>/<name>.pem` with one `CERTIFICATE` block each, plus `<dir>/<hash>.N` links to
    /// them: an OpenSSL `-CApath` directory.
    fn hashed_directory(&self, dir: &str, entries: &mut Vec<(String, Entry)>) {
        self.per_certificate_files(dir, Block::Certificate, entries);
        self.hash_links(dir, entries);
    }

    /// Like [`Self::hashed_directory`], but each file is a `TRUSTED CERTIFICATE` (the
    /// certificate plus OpenSSL's trust settings), as p11-kit's `openssl-directory` writes.
    fn trusted_hashed_directory(&self, dir: &str, entries: &mut Vec<(String, Entry)>) {
        self.per_certificate_files(dir, Block::Trusted, entries);
        self.hash_links(dir, entries);
    }

    fn per_certificate_files(&self, dir: &str, block: Block, entries: &mut Vec<(String, Entry)>) {
        for (i, name) in self.names.iter().enumerate() {
            let mut text = String::new();
            self.write_block(&mut text, block, i);
            entries.push((join(dir, name), Entry::File(text.into_bytes())));
        }
    }

    fn hash_links(&self, dir: &str, entries: &mut Vec<(String, Entry)>) {
        for (link, target) in hash_links(self.certificates, &self.names) {
            entries.push((join(dir, &link), Entry::Symlink(target)));
        }
    }

    /// The Java store in the chosen format, or `None` for `javaTruststore: none`.
    fn java_store(&self, format: JavaTruststore) -> Result<Option<Vec<u8>>> {
        let stems = self.stems();
        Ok(match format {
            JavaTruststore::Jks => Some(java::truststore(self.certificates, &stems)?),
            JavaTruststore::Pkcs12 => Some(pkcs12::truststore(self.certificates, &stems)),
            JavaTruststore::None => None,
        })
    }

    /// The concatenated PEM bundle (see [`Self::bundle_text`]).
    fn bundle(&self) -> Entry {
        Entry::File(self.bundle_text(Block::Certificate).into_bytes())
    }

    /// The concatenated `TRUSTED CERTIFICATE` bundle, same comments.
    fn trusted_bundle(&self) -> Entry {
        Entry::File(self.bundle_text(Block::Trusted).into_bytes())
    }

    /// The concatenated bundle. The comment lines are tolerated between PEM blocks by
    /// OpenSSL, Go, GnuTLS and Java (Fedora's bundle has them too), and `inspect` reads
    /// `# source:` and the `# ignored:` header back.
    fn bundle_text(&self, block: Block) -> String {
        let mut text = String::new();
        for ignored in self.ignored {
            text.push_str(&ignored.header_line(comment_safe));
            text.push('\n');
        }
        for (i, cert) in self.certificates.iter().enumerate() {
            text.push_str("# ");
            text.push_str(&comment_safe(&cert.subject));
            text.push_str("\n# source: ");
            text.push_str(&comment_safe(&cert.source.to_string()));
            text.push('\n');
            self.write_block(&mut text, block, i);
        }
        text
    }

    /// Certificate `i` as one PEM block.
    fn write_block(&self, out: &mut String, block: Block, i: usize) {
        let cert = &self.certificates[i];
        match block {
            Block::Certificate => pem::write_block(out, "CERTIFICATE", &cert.der),
            Block::Trusted => {
                // p11-kit's alias is the label: the readable name, else the whole subject.
                let alias = self.readable[i].as_deref().unwrap_or(&cert.subject);
                pem::write_block(out, trusted::LABEL, &trusted::encode(cert, alias));
            }
        }
    }

    /// `EFI_SIGNATURE_LIST`s for firmware (see `edk2.rs`).
    fn edk2(&self) -> Entry {
        Entry::File(edk2::signature_lists(self.certificates))
    }
}

/// What a PEM block holds.
#[derive(Clone, Copy)]
enum Block {
    /// `CERTIFICATE`: the DER, read by everything.
    Certificate,
    /// `TRUSTED CERTIFICATE`: the DER plus OpenSSL's trust settings (see `trusted.rs`).
    Trusted,
}

/// `dir/name`, or `name` at the volume root.
fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_owned() } else { format!("{dir}/{name}") }
}

/// Keeps a comment on one line and free of anything a lax PEM reader could take for a boundary
/// (subjects are attacker-influenced text).
fn comment_safe(text: &str) -> String {
    let mut out: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    while out.contains("-----") {
        out = out.replace("-----", "-- --");
    }
    out
}

/// One `.pem` file name per certificate, in the same order, all distinct.
#[cfg(test)]
fn file_names(certificates: &[Certificate]) -> Vec<String> {
    let readable: Vec<_> = certificates.iter().map(Certificate::readable_name).collect();
    naming::file_names(certificates, &readable, RESERVED)
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
pub(super) mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::bundle::certificate::tests::ca_der;
    use crate::bundle::naming::{MAX_STEM, sanitize, short_fingerprint};
    use rcgen::DnType;

    pub(crate) fn cert(attributes: &[(DnType, &str)]) -> Certificate {
        Certificate::from_der(&ca_der(attributes), "test:src", false).expect("parses")
    }

    pub(crate) fn cn(name: &str) -> Certificate {
        cert(&[(DnType::CommonName, name)])
    }

    pub(crate) fn paths(files: &Files) -> Vec<&str> {
        files.entries.iter().map(|(p, _)| p.as_str()).collect()
    }

    pub(crate) fn get<'a>(files: &'a Files, path: &str) -> Option<&'a Entry> {
        files.entries.iter().find(|(p, _)| p == path).map(|(_, e)| e)
    }

    pub(crate) fn file<'a>(files: &'a Files, path: &str) -> &'a [u8] {
        match get(files, path) {
            Some(Entry::File(bytes)) => bytes,
            other => panic!("{path} is not a file: {other:?}"),
        }
    }

    pub(crate) fn options(layout: Layout, java: JavaTruststore) -> RenderOptions {
        RenderOptions { layout, java }
    }

    /// Follows `path` through symlinks inside the volume; `None` if a link leaves the volume,
    /// dangles or loops.
    pub(crate) fn resolve<'a>(files: &'a Files, path: &str) -> Option<&'a [u8]> {
        let mut current = path.to_owned();
        for _ in 0..16 {
            match get(files, &current)? {
                Entry::File(bytes) => return Some(bytes),
                Entry::Symlink(target) => {
                    let mut parts: Vec<&str> = current.split('/').collect();
                    parts.pop();
                    for part in target.split('/') {
                        match part {
                            ".." => {
                                parts.pop()?;
                            }
                            "." | "" => {}
                            _ => parts.push(part),
                        }
                    }
                    current = parts.join("/");
                }
            }
        }
        None
    }

    /// The certificates of a PEM text, in order.
    pub(crate) fn pem_ders(text: &[u8], label: &str) -> Vec<Vec<u8>> {
        pem::read_blocks(text)
            .into_iter()
            .filter(|b| b.label == label)
            .map(|b| b.body.expect("well-formed block"))
            .collect()
    }

    /// Rendering every layout with every Java format: sorted unique paths, every symlink
    /// resolving to a file inside the volume, and the same bytes for the same input in any
    /// order.
    #[test]
    fn every_layout_and_java_format_renders_sorted_resolvable_and_deterministic() {
        let certs = vec![cn("C"), cn("A"), cn("B"), cn("Same"), cn("Same")];
        let mut reversed = certs.clone();
        reversed.reverse();
        for &layout in Layout::ALL {
            for &java in JavaTruststore::ALL {
                let opts = options(layout, java);
                let files = render(&Bundle::new(certs.clone()), &opts).expect("renders");
                let listed = paths(&files);
                let mut sorted = listed.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(listed, sorted, "{opts:?}");
                for (path, entry) in &files.entries {
                    if let Entry::Symlink(target) = entry {
                        assert!(!target.starts_with('/'), "{path} → {target}");
                        assert!(resolve(&files, path).is_some(), "{opts:?}: {path} → {target}");
                    }
                }
                let again = render(&Bundle::new(reversed.clone()), &opts).expect("renders");
                assert_eq!(files, again, "{opts:?}");
            }
        }
    }

    #[test]
    fn every_layout_renders_an_empty_bundle() {
        for &layout in Layout::ALL {
            for &java in JavaTruststore::ALL {
                render(&Bundle::default(), &options(layout, java)).expect("renders");
            }
        }
    }

    #[test]
    fn attribute_names_are_distinct_and_lowercase() {
        let layouts: HashSet<_> = Layout::ALL.iter().map(|l| l.name()).collect();
        assert_eq!(layouts, HashSet::from(["debian", "rhel", "suse"]));
        let java: HashSet<_> = JavaTruststore::ALL.iter().map(|j| j.name()).collect();
        assert_eq!(java, HashSet::from(["jks", "pkcs12", "none"]));
    }

    #[test]
    fn comments_cannot_break_out_of_their_line() {
        assert_eq!(comment_safe("CN=x\n-----BEGIN CERTIFICATE-----"), "CN=x -- --BEGIN CERTIFICATE-- --");
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
        assert_eq!(names[3], format!("{}.pem", hex::encode(certs[3].fingerprint)));
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
        let bundle_named = cn("ca-bundle");
        assert_eq!(
            file_names(std::slice::from_ref(&bundle_named)),
            [format!("ca-bundle_{}.pem", short_fingerprint(&bundle_named))]
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
        let expected: Vec<_> = sorted.iter().enumerate().map(|(n, f)| (format!("{hash:08x}.{n}"), f.clone())).collect();
        assert_eq!(links, expected);
    }
}

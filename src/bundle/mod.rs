//! Pure certificate logic: bytes in, files out. No file system, no clock, no tokio — `now` is
//! passed in, so every function here is deterministic and unit-testable.
//!
//! - [`parse_source`]: one source's bytes (PEM with or without text between blocks, or DER) →
//!   certificates, strictly (a private key or a bad block fails the whole source).
//! - [`Bundle::new`]: dedupe by SHA-256 of the DER, deterministic order.
//! - [`render`]: a bundle → the files of a layout (`ca-certificates.crt`, per-certificate PEM
//!   files, OpenSSL `<hash>.N` links, `java/cacerts`, …).

// TODO(helper): split into one file per concern: pem/der parsing, certificate, dedupe, subject
// hash, layout, java store.

/// One parsed certificate plus what we derive from it once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// The DER encoding, exactly as it came in.
    pub der: Vec<u8>,
    /// SHA-256 of `der`; the identity used for deduplication.
    pub fingerprint: [u8; 32],
    /// RFC 4514-style display strings.
    pub subject: String,
    pub issuer: String,
    /// Validity, in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// OpenSSL's `X509_subject_name_hash` (what `openssl x509 -subject_hash` prints).
    pub subject_hash: u32,
    /// Which source it came from, e.g. `extra-pem:/etc/corp/ca.pem` or `system:embedded`.
    pub source: String,
}

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

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("source {source_name} contains a private key ({label}) at PEM block {index}; trustmount never copies keys into pods — give it a file with only CA certificates")]
    PrivateKey {
        source_name: String,
        label: String,
        index: usize,
    },
    #[error("source {source_name}: certificate {index} cannot be parsed: {reason}")]
    BadCertificate {
        source_name: String,
        index: usize,
        reason: String,
    },
    #[error("source {source_name}: PEM block {index} is a {label:?}, not a CERTIFICATE")]
    NotACertificate {
        source_name: String,
        label: String,
        index: usize,
    },
    #[error("source {source_name} holds no certificate (expected PEM CERTIFICATE blocks or one DER certificate)")]
    Empty { source_name: String },
    #[error("cannot write the Java truststore: {0}")]
    JavaStore(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parses one source.
///
/// # Errors
/// With [`Strictness::Strict`], any block that is not a parsable certificate fails the source.
pub fn parse_source(source_name: &str, bytes: &[u8], strictness: Strictness) -> Result<Parsed> {
    let _ = (source_name, bytes, strictness);
    todo!("bundle helper")
}

/// A deduplicated, deterministically ordered set of certificates.
#[derive(Clone, Debug, Default)]
pub struct Bundle {
    certificates: Vec<Certificate>,
}

impl Bundle {
    /// Dedupes by fingerprint (the first source wins) and sorts, so the same certificates give
    /// byte-identical output whatever order the sources came in.
    pub fn new(certificates: impl IntoIterator<Item = Certificate>) -> Self {
        let _ = certificates.into_iter();
        todo!("bundle helper")
    }

    pub fn certificates(&self) -> &[Certificate] {
        &self.certificates
    }
}

/// Which on-disk layout a volume gets. Only `debian` for now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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

/// Lays a bundle out as files.
///
/// # Errors
/// Only if the Java store cannot be encoded.
pub fn render(bundle: &Bundle, layout: Layout) -> Result<Files> {
    let _ = (bundle, layout);
    todo!("bundle helper")
}

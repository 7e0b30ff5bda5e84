//! Pure certificate logic: bytes in, files out. No file system, no clock, no tokio — `now` is
//! passed in, so every function here is deterministic and unit-testable.
//!
//! - [`parse_source`]: one source's bytes (PEM with or without text between blocks, DER, or a
//!   PKCS#7 bundle) → certificates, strictly (a private key or a bad block fails the source).
//! - [`policy::apply`]: which certificates a volume keeps (CAs and self-signed end entities,
//!   unexpired unless the spec keeps expired ones), at render time.
//! - [`Bundle::new`]: dedupe by SHA-256 of the DER, deterministic order.
//! - [`render`]: a bundle → the files of a layout (`ca-certificates.crt`, per-certificate PEM
//!   files, OpenSSL `<hash>.N` links, `java/cacerts`, …).
//! - [`inspect`]: a report on a bundle file for the CLI, with the keys sources skipped
//!   ([`Ignored`], named in the bundle file's header).

mod certificate;
mod dedupe;
mod der;
mod edk2;
mod files;
mod ignored;
mod inspect;
mod java;
mod layout;
mod naming;
mod pem;
mod pkcs12;
mod pkcs7;
pub mod policy;
mod provenance;
mod source;
mod subject_hash;
mod trusted;

pub use certificate::{Certificate, CertificateError, Kind, SignatureChecks};
pub use dedupe::Bundle;
pub use files::{Entry, Files};
pub use ignored::Ignored;
pub use inspect::{
    CertificateReport, DropCount, IgnoredCount, Inspection, ignored_keys, ignored_text, inspect, to_text,
};
pub use java::PASSWORD as JAVA_STORE_PASSWORD;
pub use layout::{BUNDLE_FILE, JAVA_STORE, JavaTruststore, Layout, RenderOptions, render};
pub use pkcs7::Pkcs7Error;
pub use policy::{DropReason, Dropped};
pub use provenance::{KindName, ObjectOrigin, Provenance, Scope};
pub use source::{Parsed, Strictness, parse_source, parse_source_of};
pub use subject_hash::{SubjectHashError, subject_hash};

/// Block and certificate indexes are 1-based, counting every PEM block of the source.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error(
        "source {source_name} contains a private key ({label}) at PEM block {index}; trustmount never copies keys into pods — give it a file with only CA certificates"
    )]
    PrivateKey { source_name: String, label: String, index: usize },
    // Reasons are part of the message rather than `#[source]`, so `{:#}` chains print them once.
    #[error(
        "source {source_name}: certificate {index} cannot be parsed: {}; fix or remove that certificate",
        .at.explain(.reason)
    )]
    BadCertificate { source_name: String, index: usize, at: CertificateAt, reason: CertificateError },
    #[error(
        "source {source_name}: PEM block {index} is a {label:?}, not a CERTIFICATE; remove it so the source holds only CA certificates"
    )]
    NotACertificate { source_name: String, label: String, index: usize },
    #[error("source {source_name}: PEM block {index} ({label:?}) is malformed: {reason}; fix or remove that block")]
    MalformedPem { source_name: String, label: String, index: usize, reason: String },
    #[error(
        "source {source_name}: PEM block {index} ({label:?}) is encrypted (Proc-Type: 4,ENCRYPTED); CA certificates need no encryption — give trustmount the certificates unencrypted"
    )]
    EncryptedPem { source_name: String, label: String, index: usize },
    #[error(
        "source {source_name}: the PKCS#7 bundle at block {index} {reason}; export the CA chain again as a certificates-only PKCS#7 or as PEM"
    )]
    Pkcs7 { source_name: String, index: usize, reason: Pkcs7Error },
    #[error(
        "source {source_name} holds no certificate (expected PEM CERTIFICATE blocks, one DER certificate or a PKCS#7 certificate bundle)"
    )]
    Empty { source_name: String },
    #[error("cannot write the Java truststore: {0}")]
    JavaStore(String),
    #[error(
        "source {source_name} holds {found} {unit}, over the driver's limit of {max} per source ({flag}); split it, or ask the cluster operator to raise {flag}"
    )]
    OverLimit { source_name: String, found: usize, max: usize, unit: &'static str, flag: &'static str },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in a source a certificate that does not parse was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateAt {
    /// A `CERTIFICATE` or `TRUSTED CERTIFICATE` PEM block.
    PemBlock,
    /// The whole source: it has no `-----BEGIN` line, so it was read as one DER certificate.
    WholeSource,
    /// The `position`th (1-based) certificate of a PKCS#7 bundle.
    Pkcs7Entry { position: usize },
}

impl CertificateAt {
    /// The reason, with where it was found when that is not obvious from the block index.
    fn explain(self, reason: &CertificateError) -> String {
        match self {
            Self::PemBlock => reason.to_string(),
            Self::WholeSource => {
                format!("no `-----BEGIN` line, so it was read as one DER certificate, which is {reason}")
            }
            Self::Pkcs7Entry { position } => format!("certificate {position} of the PKCS#7 bundle is {reason}"),
        }
    }
}

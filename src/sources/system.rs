//! The system roots: the node's CA bundle, the embedded Mozilla set, a given file, or none.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::Result;
use crate::bundle::{self, Certificate, Strictness};

/// Every system root's `source` starts with this.
const SOURCE_PREFIX: &str = "system:";

/// Debian's generated bundle; where `auto` looks first.
const HOST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SystemRoots {
    /// The host's bundle when present, else the embedded set.
    Auto,
    /// The Mozilla roots compiled into the binary (`webpki-root-certs`).
    Embedded,
    None,
    File(PathBuf),
}

impl FromStr for SystemRoots {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(match value {
            "auto" => Self::Auto,
            "embedded" => Self::Embedded,
            "none" => Self::None,
            path => Self::File(PathBuf::from(path)),
        })
    }
}

impl SystemRoots {
    /// The file this setting reads, if it names one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::File(path) => Some(path),
            Self::Auto | Self::Embedded | Self::None => None,
        }
    }

    /// # Errors
    /// Only an explicitly named file (or the host bundle) that cannot be read or is larger
    /// than `max_source_size`; `auto` without a host bundle falls back to embedded.
    pub fn load(&self, max_source_size: u64) -> Result<Vec<Certificate>> {
        match self {
            Self::None => Ok(Vec::new()),
            Self::Embedded => Ok(embedded()),
            Self::Auto if Path::new(HOST_BUNDLE).is_file() => from_file(Path::new(HOST_BUNDLE), max_source_size),
            Self::Auto => Ok(embedded()),
            Self::File(path) => from_file(path, max_source_size),
        }
    }
}

fn from_file(path: &Path, max_size: u64) -> Result<Vec<Certificate>> {
    let bytes = super::files::read_bounded(path, max_size)?;
    let name = format!("{SOURCE_PREFIX}{}", path.display());
    let parsed = bundle::parse_source(&name, &bytes, Strictness::BestEffort)?;
    if parsed.skipped > 0 {
        tracing::warn!(path = %path.display(), skipped = parsed.skipped, "skipped unparsable system roots");
    }
    Ok(parsed.certificates)
}

fn embedded() -> Vec<Certificate> {
    let name = format!("{SOURCE_PREFIX}embedded");
    let mut certificates = Vec::new();
    let mut skipped = 0usize;
    for der in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        match bundle::parse_source(&name, der.as_ref(), Strictness::BestEffort) {
            // Best effort reports a bad DER root as skipped, not as an error.
            Ok(parsed) => {
                skipped += parsed.skipped;
                certificates.extend(parsed.certificates);
            }
            Err(_) => skipped += 1,
        }
    }
    if skipped > 0 {
        tracing::warn!(skipped, "skipped unparsable embedded roots");
    }
    certificates
}

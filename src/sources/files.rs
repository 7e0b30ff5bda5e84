//! Local PEM/DER files given with `--extra-pem` (or `render --pem`): strict.

use std::path::Path;

use super::{Error, Result};
use crate::bundle::{self, Certificate, Strictness};

/// Reads one file and parses every certificate in it.
///
/// # Errors
/// The file cannot be read, or any block in it is not a certificate.
pub fn load_pem_file(path: &Path) -> Result<Vec<Certificate>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let name = format!("file:{}", path.display());
    let parsed = bundle::parse_source(&name, &bytes, Strictness::Strict)?;
    Ok(parsed.certificates)
}

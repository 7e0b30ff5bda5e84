//! Local PEM/DER/PKCS#7 files given with `--extra-pem` (or `render --pem`): strict.

use std::io::Read;
use std::path::Path;

use super::{Error, Result};
use crate::bundle::{self, Certificate, Provenance, Strictness};

/// Reads one file and parses every certificate in it.
///
/// # Errors
/// The file cannot be read, is larger than `max_size` bytes, or any block in it is not a
/// certificate.
pub fn load_pem_file(path: &Path, max_size: u64) -> Result<Vec<Certificate>> {
    let bytes = read_bounded(path, max_size)?;
    let parsed = bundle::parse_source_of(&Provenance::File(path.to_owned()), &bytes, Strictness::Strict)?;
    Ok(parsed.certificates)
}

/// Reads a whole file of at most `max_size` bytes. The size is checked before reading, and the
/// read is bounded too: the file may grow in between, and some files (pipes, /proc) report no
/// size at all.
///
/// # Errors
/// The file cannot be read or is larger than `max_size`.
pub(crate) fn read_bounded(path: &Path, max_size: u64) -> Result<Vec<u8>> {
    let read_error = |source| Error::Read { path: path.to_owned(), source };
    let too_large = |size| Error::TooLarge { path: path.to_owned(), size, max: max_size };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    if size > max_size {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(max_size.saturating_add(1)).read_to_end(&mut bytes).map_err(read_error)?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > max_size {
        return Err(too_large(read));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(len: usize) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), vec![b'x'; len]).expect("write");
        file
    }

    #[test]
    fn a_file_of_exactly_the_limit_is_read() {
        let file = file_of(100);
        assert_eq!(read_bounded(file.path(), 100).expect("reads").len(), 100);
    }

    #[test]
    fn a_file_one_byte_over_the_limit_is_refused_with_its_size() {
        let file = file_of(101);
        let error = read_bounded(file.path(), 100).expect_err("too large");
        assert!(matches!(error, Error::TooLarge { size: 101, max: 100, .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("101 bytes") && message.contains("--max-source-size"), "{message}");
        assert!(message.contains(&file.path().display().to_string()), "{message}");
    }

    #[test]
    fn a_file_without_a_size_is_still_bounded() {
        // /proc files report size 0 but have contents: only the bounded read catches them.
        let error = read_bounded(Path::new("/proc/self/status"), 10).expect_err("too large");
        assert!(matches!(error, Error::TooLarge { size: 11, max: 10, .. }), "{error:?}");
    }
}

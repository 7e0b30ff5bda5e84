//! The store's names, as start-up adopts them, and its format marker.
//!
//! ```text
//! <state_dir>/volumes/<sha256(target)[..16] hex>.json|.pending   the records (see `record`)
//! <state_dir>/tmpfs/                     the driver's tmpfs
//! <state_dir>/tmpfs/store-format         this marker: the store format, "1\n"
//! <state_dir>/tmpfs/specs/<digest>/      one spec dir per digest: `..data` -> `..<generation>`
//! <state_dir>/tmpfs/blobs/               what spec dirs hard-link (`f-<sha256>`, `l-<sha256>`)
//! <state_dir>/store/                     a bind mount of tmpfs/specs
//! ```
//!
//! Store format 1 is that layout, as 02e7ca2 made it without a marker: an absent marker is
//! format 1. The marker is written when the driver finds none (at the tmpfs's creation, or
//! the first start after an upgrade from 02e7ca2), and read at every adoption.

use super::Error;

/// `--state-dir`'s subdirectories.
pub const TMPFS_DIR: &str = "tmpfs";
pub const STORE_DIR: &str = "store";
pub const RECORDS_DIR: &str = "volumes";
/// Inside the tmpfs.
pub const SPECS_DIR: &str = "specs";
pub const BLOBS_DIR: &str = "blobs";
pub const MARKER_FILE: &str = "store-format";
/// Inside a spec dir: the link to its current generation.
pub const DATA_LINK: &str = "..data";

/// The store format this driver lays out and adopts.
pub const STORE_FORMAT: u32 = 1;
const WHAT: &str = "store";

/// The marker's content for [`STORE_FORMAT`].
pub fn marker() -> String {
    format!("{STORE_FORMAT}\n")
}

/// The store format a marker's content names.
///
/// # Errors
/// [`Error::Newer`] for a format after [`STORE_FORMAT`]; [`Error::Invalid`] for anything that is
/// not a format number.
pub fn parse_marker(text: &str) -> Result<u32, Error> {
    let trimmed = text.trim_end_matches('\n');
    match trimmed.parse::<u64>() {
        Ok(found) if found == u64::from(STORE_FORMAT) => Ok(STORE_FORMAT),
        Ok(found) if found > u64::from(STORE_FORMAT) => Err(Error::Newer { what: WHAT, found, known: STORE_FORMAT }),
        _ => Err(Error::Invalid {
            what: WHAT,
            version: STORE_FORMAT,
            reason: format!("its marker {MARKER_FILE} holds {trimmed:?}, not a store format number"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_written_is_read_back_as_this_store_format() {
        assert_eq!(marker(), "1\n", "store format 1 is pinned: the layout of 02e7ca2");
        assert_eq!(parse_marker(&marker()).unwrap(), STORE_FORMAT);
    }

    #[test]
    fn a_newer_store_format_is_newer_and_garbage_is_invalid() {
        assert!(matches!(parse_marker("2\n"), Err(Error::Newer { found: 2, known: 1, .. })));
        for garbage in ["", "one\n", "0\n", "-1", "1.5\n"] {
            assert!(matches!(parse_marker(garbage), Err(Error::Invalid { .. })), "{garbage:?}");
        }
    }
}

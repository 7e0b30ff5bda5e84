//! What the driver leaves on disk for the next driver to read, spelled out field by field and
//! versioned, so that renaming a Rust field or variant never changes it. Domain types carry no
//! serde for persistence: everything that crosses a restart or an upgrade goes through here.
//!
//! - [`record`]: the volume records in `<state_dir>/volumes/`. Version 1 is what every driver
//!   up to 02e7ca2 wrote (serde's derive of the domain types, no version field); version 2
//!   ([`RECORD_FORMAT`](record::RECORD_FORMAT)) adds `"format": 2` and writes every key, in
//!   version 1's shapes, so 02e7ca2 still reads it (a rollback adopts). Every version ever
//!   written is read; only the newest is written.
//! - [`store`]: the names of the store's directories and links (what start-up adopts), and
//!   the store-format marker at the root of the driver's tmpfs.
//!
//! The spec digest's input (`CanonicalV1..V3` in `domain`) is the third persisted thing: it
//! names the spec directories, and is pinned there by its own tests.
//!
//! A change to any of this is a new version here: a new DTO, read beside the old ones, and
//! golden files in `tests/fixtures/records/` pinning what it writes.

pub(super) mod record;
pub(super) mod store;

pub(super) use record::{decode, encode};

/// Why bytes read from disk are not something this driver can use.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("it is not JSON ({0})")]
    Syntax(#[source] serde_json::Error),
    /// Written by a newer driver: not damaged, only not understood here.
    #[error(
        "it is {what} format {found}, written by a newer trustmount (this one reads formats up to {known}); run that version or a newer one"
    )]
    Newer { what: &'static str, found: u64, known: u32 },
    #[error("it is not a valid {what} of format {version}: {reason}")]
    Invalid { what: &'static str, version: u32, reason: String },
}

//! The rendered file tree of a volume: what every layout produces and the volume store writes.

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

//! What a spec directory costs the node, and the budgets that bound it: per namespace, the
//! store's pages and the kernel's dentries its spec directories take; for the whole store, the
//! share kept free so that a published spec can always rotate.
//!
//! A spec's cost is what it would take alone (every file its own pages), not what it adds
//! beside the specs whose blobs it shares: that way one namespace's charge never depends on
//! what another namespace has published, and a namespace that leaves never makes another one
//! over budget.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use crate::bundle::{Entry, Files};

use super::fsutil::{read_dir, walk};
use super::{Error, Result};

/// tmpfs charges whole pages for a file's content.
const PAGE: u64 = 4096;
/// tmpfs keeps a symlink target shorter than this in the inode (`SHORT_SYMLINK_LEN`); a longer
/// one takes a page.
const SHORT_SYMLINK: usize = 128;

/// The store pages and the directory entries of one generation of a spec directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Bytes in whole pages: every file rounded up, long symlinks a page.
    pub bytes: u64,
    /// Directory entries: every file, symlink and directory of the generation, the visible
    /// top-level links and `..data`. Each is a dentry the kernel allocates outside the tmpfs's
    /// size (about 200 bytes of slab with its inode).
    pub files: u64,
}

fn pages(len: u64) -> u64 {
    len.div_ceil(PAGE) * PAGE
}

impl Cost {
    /// What writing `files` as one generation takes (see the module doc).
    pub fn of(files: &Files) -> Self {
        let mut dirs = BTreeSet::new();
        let mut top_level = BTreeSet::new();
        let mut bytes = 0;
        for (path, entry) in &files.entries {
            for (end, _) in path.match_indices('/') {
                dirs.insert(&path[..end]);
            }
            top_level.insert(path.split('/').next().unwrap_or(path));
            bytes += match entry {
                Entry::File(content) => pages(content.len() as u64),
                Entry::Symlink(target) if target.len() >= SHORT_SYMLINK => PAGE,
                Entry::Symlink(_) => 0,
            };
        }
        // The generation directory, its entries and dirs, a visible link per top-level name,
        // `..data`.
        let files = 1 + files.entries.len() + dirs.len() + top_level.len() + 1;
        Self { bytes, files: files as u64 }
    }

    /// The cost of the current generation of `spec_dir` as it is on disk (a spec adopted at
    /// start, whose files were rendered by an earlier process).
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn measure(spec_dir: &Path) -> Result<Self> {
        let generation = super::atomic::current_generation(spec_dir)?;
        let mut cost = Self::default();
        walk(&generation, &mut |meta| {
            cost.files += 1;
            if meta.is_file() {
                cost.bytes += pages(meta.len());
            } else if meta.is_symlink() && meta.len() >= SHORT_SYMLINK as u64 {
                cost.bytes += PAGE;
            }
        })?;
        // The generation directory itself, the visible links and `..data`.
        cost.files += read_dir(spec_dir)?.len() as u64;
        Ok(cost)
    }

    pub fn plus(self, other: Self) -> Self {
        Self { bytes: self.bytes + other.bytes, files: self.files + other.files }
    }

    pub fn minus(self, other: Self) -> Self {
        Self { bytes: self.bytes.saturating_sub(other.bytes), files: self.files.saturating_sub(other.files) }
    }
}

/// A charge against a budget, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    Bytes(u64),
    Files(u64),
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Bytes(bytes) => Bytes(bytes).fmt(f),
            Self::Files(files) => write!(f, "{files} files, links and directories"),
        }
    }
}

/// Bytes for people: `12.3 MiB`, `640.0 KiB`, `512 B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    #[allow(clippy::cast_precision_loss)]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        match self.0 {
            b if b >= MIB => write!(f, "{:.1} MiB", b as f64 / MIB as f64),
            b if b >= KIB => write!(f, "{:.1} KiB", b as f64 / KIB as f64),
            b => write!(f, "{b} B"),
        }
    }
}

/// The budgets the index enforces (flags in `domain::Limits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    /// Distinct specs the pods of one namespace use on this node.
    pub namespace_specs: usize,
    /// Store bytes ([`Cost::bytes`]) of those specs together.
    pub namespace_bytes: u64,
    /// Directory entries ([`Cost::files`]) of those specs together.
    pub namespace_files: u64,
    /// Percent of the store a new spec may not fill: room kept for the next generation of the
    /// specs already published.
    pub rotation_reserve_percent: u8,
}

impl Default for Budgets {
    fn default() -> Self {
        Self::from(&crate::domain::Limits::default())
    }
}

impl From<&crate::domain::Limits> for Budgets {
    fn from(limits: &crate::domain::Limits) -> Self {
        Self {
            namespace_specs: limits.namespace_specs,
            namespace_bytes: limits.namespace_store_bytes,
            namespace_files: limits.namespace_store_files,
            rotation_reserve_percent: limits.store_rotation_reserve_percent,
        }
    }
}

impl Budgets {
    /// Refuses `wanted` (what `namespace`'s specs would cost together) over either budget.
    ///
    /// # Errors
    /// [`Error::OverNamespaceStore`] naming the first budget passed.
    pub fn check_namespace(&self, namespace: &str, wanted: Cost) -> Result<()> {
        let over = |wanted, budget, flag| {
            Err(Error::OverNamespaceStore { namespace: namespace.to_owned(), wanted, budget, flag })
        };
        if wanted.bytes > self.namespace_bytes {
            return over(
                Amount::Bytes(wanted.bytes),
                Amount::Bytes(self.namespace_bytes),
                crate::domain::NAMESPACE_STORE_BYTES_FLAG,
            );
        }
        if wanted.files > self.namespace_files {
            return over(
                Amount::Files(wanted.files),
                Amount::Files(self.namespace_files),
                crate::domain::NAMESPACE_STORE_FILES_FLAG,
            );
        }
        Ok(())
    }

    /// The bytes of a store of `size` that new specs may fill; the rest is the rotation reserve.
    pub fn fill_limit(&self, size: u64) -> u64 {
        let reserve = u64::from(self.rotation_reserve_percent.min(100));
        size / 100 * (100 - reserve) + size % 100 * (100 - reserve) / 100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, len: usize) -> (String, Entry) {
        (path.to_owned(), Entry::File(vec![b'x'; len]))
    }

    #[test]
    fn a_generation_costs_whole_pages_and_a_dentry_per_name() {
        let files = Files {
            entries: vec![
                file("ca-certificates.crt", 5000),
                file("java/cacerts", 1),
                ("java/link".into(), Entry::Symlink("cacerts".into())),
                ("long".into(), Entry::Symlink("x".repeat(200))),
                file("pem/a/b.pem", 4096),
            ],
        };
        let cost = Cost::of(&files);
        // 5000 bytes in two pages, 1 byte in one, the short symlink in its inode, the long one a
        // page, 4096 bytes exactly one.
        assert_eq!(cost.bytes, 8192 + 4096 + 4096 + 4096);
        // generation dir + 5 entries + dirs {java, pem, pem/a} + visible {ca-certificates.crt,
        // java, long, pem} + ..data
        assert_eq!(cost.files, 1 + 5 + 3 + 4 + 1);
    }

    #[test]
    fn a_spec_dir_measured_on_disk_costs_what_its_files_were_charged() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = super::super::blobs::Blobs::open(&tmp.path().join("blobs")).unwrap();
        let files = Files {
            entries: vec![
                file("ca-certificates.crt", 5000),
                file("java/cacerts", 1),
                ("java/link".into(), Entry::Symlink("cacerts".into())),
                file("pem/a/b.pem", 4096),
            ],
        };
        let spec_dir = super::super::atomic::create_spec_dir(&blobs, tmp.path(), "spec", &files).unwrap();
        assert_eq!(Cost::measure(&spec_dir).unwrap(), Cost::of(&files));
    }

    #[test]
    fn over_budget_names_the_namespace_the_amounts_and_the_flag() {
        let budgets = Budgets {
            namespace_specs: 4,
            namespace_bytes: 1 << 20,
            namespace_files: 100,
            rotation_reserve_percent: 50,
        };
        budgets.check_namespace("shop", Cost { bytes: 1 << 20, files: 100 }).expect("at the budget is fine");
        let bytes = budgets.check_namespace("shop", Cost { bytes: 3 << 19, files: 1 }).unwrap_err().to_string();
        assert!(bytes.contains("namespace shop would take 1.5 MiB"), "{bytes}");
        assert!(bytes.contains("its budget of 1.0 MiB (--max-namespace-store-bytes)"), "{bytes}");
        let files = budgets.check_namespace("bank", Cost { bytes: 0, files: 101 }).unwrap_err().to_string();
        assert!(files.contains("101 files, links and directories"), "{files}");
        assert!(files.contains("--max-namespace-store-files"), "{files}");
        assert!(files.contains("other namespaces' volumes are unaffected"), "{files}");
    }

    #[test]
    fn the_fill_limit_leaves_the_reserve_and_does_not_overflow() {
        let budgets = |rotation_reserve_percent| Budgets { rotation_reserve_percent, ..Budgets::default() };
        assert_eq!(budgets(50).fill_limit(256 << 20), 128 << 20);
        assert_eq!(budgets(0).fill_limit(1000), 1000);
        assert_eq!(budgets(100).fill_limit(1000), 0);
        assert_eq!(budgets(200).fill_limit(1000), 0, "a reserve over 100% is the whole store");
        assert_eq!(budgets(25).fill_limit(u64::MAX), u64::MAX / 100 * 75 + u64::MAX % 100 * 75 / 100);
    }
}

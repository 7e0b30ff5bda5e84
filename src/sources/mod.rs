//! Where certificates come from. Sources are read and parsed once, at start, and kept parsed,
//! so publishing a volume never touches the disk for certificate input.
//!
//! - [`system`]: the node's or the embedded Mozilla roots (best-effort: a bad root is counted
//!   and skipped).
//! - [`files`]: `--extra-pem` files added to every volume (strict: a bad file stops the driver
//!   from starting instead of silently serving less trust).

mod files;
mod live;
mod system;
mod watch;

use std::path::PathBuf;

use crate::bundle::{self, Bundle, Certificate, Files};
use crate::spec::VolumeSpec;

pub use live::{Reload, Sources};
pub use system::SystemRoots;
pub use watch::{SourceWatch, watch_files};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read certificate source {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Bundle(#[from] bundle::Error),
    #[error(
        "the volume's bundle would be empty: systemRoots is \"false\" and no other source has certificates; add a source or keep the system roots"
    )]
    EmptyBundle,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the daemon (or `render`) was told to load.
#[derive(Clone, Debug)]
pub struct Config {
    pub system_roots: SystemRoots,
    pub extra_pem: Vec<PathBuf>,
}

/// All loaded sources, parsed.
#[derive(Debug, Default)]
pub struct Catalog {
    system: Vec<Certificate>,
    extra: Vec<Certificate>,
}

/// A rendered volume plus what health reporting needs to know about it.
#[derive(Debug)]
pub struct Rendered {
    pub files: Files,
    /// The earliest-expiring certificate that did not come from the system roots:
    /// (subject, not_after in Unix seconds). System roots are the distro's business.
    pub earliest_user_expiry: Option<(String, i64)>,
    pub certificate_count: usize,
}

impl Catalog {
    /// Reads and parses every configured source.
    ///
    /// # Errors
    /// An unreadable or invalid `--extra-pem` file, or an unreadable `--system-roots` file.
    pub fn load(config: &Config) -> Result<Self> {
        let system = config.system_roots.load()?;
        let mut extra = Vec::new();
        for path in &config.extra_pem {
            extra.extend(files::load_pem_file(path)?);
        }
        tracing::debug!(system = system.len(), extra = extra.len(), "certificate sources loaded");
        Ok(Self { system, extra })
    }

    /// Whether two catalogs hold the same certificates from the same sources.
    pub fn same_certificates(&self, other: &Catalog) -> bool {
        let key = |c: &Certificate| (c.fingerprint, c.source.clone());
        self.system.iter().map(key).eq(other.system.iter().map(key))
            && self.extra.iter().map(key).eq(other.extra.iter().map(key))
    }

    pub fn system_count(&self) -> usize {
        self.system.len()
    }

    /// The certificates a volume with this spec trusts.
    pub fn bundle_for(&self, spec: &VolumeSpec) -> Bundle {
        let system = spec.system_roots.then_some(&self.system).into_iter().flatten();
        // Extra certificates first so that, when a user source repeats a system root, the
        // bundle reports the user's source for it.
        Bundle::new(self.extra.iter().chain(system).cloned())
    }

    /// The earliest-expiring certificate a volume with this spec gets from a non-system source:
    /// (subject, not_after). System roots are the distro's business, not the user's.
    pub fn earliest_user_expiry(&self, _spec: &VolumeSpec) -> Option<(String, i64)> {
        self.extra
            .iter()
            .min_by_key(|c| c.not_after)
            .map(|c| (c.subject.clone(), c.not_after))
    }

    /// Resolves and renders a spec's files.
    ///
    /// # Errors
    /// An empty bundle (an empty trust store is never what anyone wants), or a render failure.
    pub fn render(&self, spec: &VolumeSpec) -> Result<Rendered> {
        let bundle = self.bundle_for(spec);
        if bundle.certificates().is_empty() {
            return Err(Error::EmptyBundle);
        }
        let earliest_user_expiry = self.earliest_user_expiry(spec);
        Ok(Rendered {
            certificate_count: bundle.certificates().len(),
            files: bundle::render(&bundle, &spec.render)?,
            earliest_user_expiry,
        })
    }
}

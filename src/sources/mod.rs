//! Where certificates come from. Sources are read and parsed at start, and again only when a
//! watched file changes ([`Sources::reload`]); they are kept parsed, so publishing a volume never
//! touches the disk for certificate input.
//!
//! - [`system`]: the node's or the embedded Mozilla roots (best-effort: a bad root is counted
//!   and skipped).
//! - [`files`]: `--extra-pem` files added to every volume (strict: a bad file stops the driver
//!   from starting instead of silently serving less trust).
//! - [`cluster`]: ClusterTrustBundles and ConfigMaps a volume names, cached by watches, and
//!   Secrets read with the pod's own token at each publish (strict: a missing source or a
//!   private key fails the publish, or keeps the last good bundle on refresh).
//!
//! Every source file is size-checked before it is read (`--max-source-size`). The certificate
//! policy (drop expired certificates and end entities issued by a CA) runs per volume at render
//! time at the `now` its caller reads from its clock, since what is expired changes while the
//! catalog stays loaded.

pub mod cluster;
mod files;
mod live;
mod memo;
mod system;
mod watch;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::bundle::{self, Bundle, Certificate, DropReason, Files, Ignored, Provenance, policy};
use crate::domain::VolumeSpec;

pub use live::{ClusterAccess, Reload, Sources};
pub use memo::RenderMemo;
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
    #[error(
        "certificate source {path} is {size} bytes, more than the limit of {max} bytes; give trustmount a smaller file or raise --max-source-size"
    )]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error(transparent)]
    Bundle(#[from] bundle::Error),
    #[error(transparent)]
    Cluster(#[from] cluster::Error),
    #[error(
        "the volume's bundle would be empty: no source gives it a certificate to keep (systemRoots may be \"false\"; expired certificates and end-entity certificates issued by a CA are dropped, see the log); add a CA certificate, keep the system roots, or set expired: \"keep\""
    )]
    EmptyBundle,
    #[error(
        "the volume's bundle would hold {found} certificates, over the driver's limit of {max} per volume ({flag}); name fewer sources, or ask the cluster operator to raise {flag}",
        flag = crate::domain::VOLUME_CERTIFICATES_FLAG
    )]
    TooManyCertificates { found: usize, max: usize },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the daemon (or `render`) was told to load.
#[derive(Clone, Debug)]
pub struct Config {
    pub system_roots: SystemRoots,
    pub extra_pem: Vec<PathBuf>,
    /// Larger source files are refused before being read (a mistaken path to a disk image or
    /// log must not eat the driver's memory).
    pub max_source_size: u64,
}

/// `--max-source-size`'s default: far above any real CA bundle (Debian's is ~200 KiB).
pub const DEFAULT_MAX_SOURCE_SIZE: u64 = 4 << 20;

/// All loaded sources, parsed.
#[derive(Debug, Default)]
pub struct Catalog {
    system: Vec<Certificate>,
    extra: Vec<Certificate>,
    /// Drops already logged, so every publish and refresh does not log them again.
    logged_drops: Mutex<HashSet<([u8; 32], DropReason)>>,
}

/// The earliest-expiring certificate of one non-system source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expiry {
    pub subject: String,
    /// As certificates name it (for a volume's health, with the pod's namespace spelled out).
    pub source: Provenance,
    pub not_after: i64,
}

/// A rendered volume, and how many certificates it holds.
#[derive(Debug)]
pub struct Rendered {
    pub files: Files,
    pub certificate_count: usize,
}

impl Catalog {
    /// Reads and parses every configured source.
    ///
    /// # Errors
    /// An unreadable or invalid `--extra-pem` file, or an unreadable `--system-roots` file.
    pub fn load(config: &Config) -> Result<Self> {
        let system = config.system_roots.load(config.max_source_size)?;
        let mut extra = Vec::new();
        for path in &config.extra_pem {
            extra.extend(files::load_pem_file(path, config.max_source_size)?);
        }
        tracing::debug!(system = system.len(), extra = extra.len(), "certificate sources loaded");
        Ok(Self { system, extra, logged_drops: Mutex::default() })
    }

    /// Whether two catalogs hold the same certificates from the same sources.
    pub fn same_certificates(&self, other: &Catalog) -> bool {
        let key = |c: &Certificate| (c.fingerprint, c.source.clone());
        self.system.iter().map(key).eq(other.system.iter().map(key))
            && self.extra.iter().map(key).eq(other.extra.iter().map(key))
    }

    /// Whether two catalogs hold the same `--extra-pem` certificates (a reload that changed
    /// only the system roots is a rotation of those).
    pub fn same_extra(&self, other: &Catalog) -> bool {
        let key = |c: &Certificate| (c.fingerprint, c.source.clone());
        self.extra.iter().map(key).eq(other.extra.iter().map(key))
    }

    pub fn system_count(&self) -> usize {
        self.system.len()
    }

    /// The certificates a volume with this spec would hold before the policy, deduplicated;
    /// `cluster` is what its cluster sources give it.
    fn candidates(&self, spec: &VolumeSpec, cluster: &[Certificate]) -> Bundle {
        let system = spec.system_roots.then_some(&self.system).into_iter().flatten();
        // User certificates first so that, when a user source repeats a system root, the
        // bundle reports the user's source for it.
        Bundle::new(self.extra.iter().chain(cluster).chain(system).cloned())
    }

    /// The certificates a volume with this spec trusts at `now` (Unix seconds), and the ones the
    /// policy drops.
    pub fn bundle_at(&self, spec: &VolumeSpec, now: i64) -> (Bundle, Vec<bundle::Dropped>) {
        self.bundle_with_at(spec, &[], now)
    }

    /// [`Catalog::bundle_at`] with the certificates of the spec's cluster sources.
    pub fn bundle_with_at(
        &self,
        spec: &VolumeSpec,
        cluster: &[Certificate],
        now: i64,
    ) -> (Bundle, Vec<bundle::Dropped>) {
        let candidates = self.candidates(spec, cluster);
        let (kept, dropped) = policy::apply(candidates.certificates().iter().cloned(), now, spec.keep_expired);
        (Bundle::new(kept), dropped)
    }

    /// Per non-system source (every `--extra-pem` certificate, and `cluster`: what the spec's
    /// cluster sources give it), its earliest-expiring certificate, soonest first. System roots
    /// are the distro's business, not the user's. An expired one counts even when volumes leave
    /// it out — its source still needs a new certificate, and its clients have just lost trust —
    /// but an end-entity certificate issued by a CA, which no volume ever holds, does not.
    pub fn user_expiries_at(&self, cluster: &[Certificate], now: i64) -> Vec<Expiry> {
        let mut earliest: std::collections::BTreeMap<&Provenance, &Certificate> = std::collections::BTreeMap::new();
        for certificate in self.extra.iter().chain(cluster) {
            if policy::drop_reason(certificate, now, true).is_some() {
                continue;
            }
            let slot = earliest.entry(&certificate.source).or_insert(certificate);
            if certificate.not_after < slot.not_after {
                *slot = certificate;
            }
        }
        let mut expiries: Vec<Expiry> = earliest
            .into_values()
            .map(|c| Expiry { subject: c.subject.clone(), source: c.source.clone(), not_after: c.not_after })
            .collect();
        expiries.sort_by(|a, b| (a.not_after, &a.source).cmp(&(b.not_after, &b.source)));
        expiries
    }

    /// Resolves and renders a spec's files at `now` (Unix seconds), with the certificates of
    /// the spec's cluster sources and the keys those sources skipped (named in the bundle file).
    ///
    /// # Errors
    /// An empty bundle (an empty trust store is never what anyone wants), or a render failure.
    pub fn render(
        &self,
        spec: &VolumeSpec,
        cluster: &[Certificate],
        ignored: Vec<Ignored>,
        now: i64,
    ) -> Result<Rendered> {
        let (bundle, dropped) = self.bundle_with_at(spec, cluster, now);
        let bundle = bundle.with_ignored(ignored);
        self.log_drops(&dropped);
        if bundle.certificates().is_empty() {
            return Err(Error::EmptyBundle);
        }
        Ok(Rendered { certificate_count: bundle.certificates().len(), files: bundle::render(&bundle, &spec.render)? })
    }

    /// Logs each (certificate, reason) once per catalog: renders run on every publish and
    /// refresh, and the same drop every time is noise.
    fn log_drops(&self, dropped: &[bundle::Dropped]) {
        if dropped.is_empty() {
            return;
        }
        let mut logged = self.logged_drops.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for bundle::Dropped { certificate, reason } in dropped {
            if logged.insert((certificate.fingerprint, *reason)) {
                tracing::info!(
                    subject = %certificate.subject,
                    source = %certificate.source,
                    sha256 = %hex::encode(certificate.fingerprint),
                    reason = reason.explain(),
                    "certificate left out of volumes"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::policy::tests::{ca, cert, expired_ca, leaf, self_signed_leaf};

    /// 2025-01-01T00:00:00Z, inside the test certificates' 2020–2040 validity.
    const NOW: i64 = 1_735_689_600;

    fn catalog(extra: &[Vec<u8>]) -> Catalog {
        Catalog { extra: extra.iter().map(|der| cert(der)).collect(), ..Catalog::default() }
    }

    fn spec(keep_expired: bool) -> VolumeSpec {
        VolumeSpec { system_roots: false, keep_expired, ..VolumeSpec::default() }
    }

    fn fingerprints(bundle: &Bundle) -> Vec<[u8; 32]> {
        bundle.certificates().iter().map(|c| c.fingerprint).collect()
    }

    #[test]
    fn render_keeps_cas_and_self_signed_end_entities_and_drops_issued_ones() {
        let root = ca("Root");
        let registry = self_signed_leaf("registry.corp");
        let catalog = catalog(&[root.der.clone(), leaf("server.corp", &root), registry.clone()]);
        let (bundle, dropped) = catalog.bundle_at(&spec(false), NOW);
        assert_eq!(fingerprints(&bundle), fingerprints(&Bundle::new([cert(&root.der), cert(&registry)])));
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].reason, DropReason::EndEntityNotSelfSigned);
        let rendered = catalog.render(&spec(false), &[], Vec::new(), NOW).expect("renders");
        assert_eq!(rendered.certificate_count, 2);
    }

    #[test]
    fn expired_certificates_are_dropped_per_spec() {
        let old = expired_ca("Old Root");
        let catalog = catalog(&[ca("Root").der, old.clone()]);
        assert_eq!(catalog.render(&spec(false), &[], Vec::new(), NOW).expect("renders").certificate_count, 1);
        assert_eq!(catalog.render(&spec(true), &[], Vec::new(), NOW).expect("renders").certificate_count, 2);
    }

    #[test]
    fn a_bundle_empty_after_the_policy_is_an_error() {
        let catalog = catalog(&[expired_ca("Old Root")]);
        assert!(matches!(catalog.render(&spec(false), &[], Vec::new(), NOW), Err(Error::EmptyBundle)));
        assert!(catalog.render(&spec(true), &[], Vec::new(), NOW).is_ok());
    }

    #[test]
    fn health_counts_expired_user_certificates_but_not_end_entities_issued_by_a_ca() {
        let root = ca("Root");
        let old = cert(&expired_ca("Old Root"));
        let issued = leaf("server.corp", &root);
        let root_cert = cert(&root.der);
        let expiry =
            |c: &Certificate| Expiry { subject: c.subject.clone(), source: c.source.clone(), not_after: c.not_after };
        // Without the expired CA, the earliest is the root: the issued leaf never counts.
        let without_old = catalog(&[root.der.clone(), issued.clone()]);
        assert_eq!(without_old.user_expiries_at(&[], NOW), [expiry(&root_cert)]);
        // The expired CA counts (volumes keep it or leave it out); each source has its earliest.
        let catalog = catalog(&[root.der.clone(), old.der.clone(), issued]);
        assert_eq!(catalog.user_expiries_at(&[], NOW), [expiry(&old)]);
        let mut from_cluster = cert(&ca("Cluster Root").der);
        from_cluster.source = Provenance::Object(bundle::ObjectOrigin {
            kind: bundle::KindName { tag: "configmap", title: "ConfigMap" },
            scope: bundle::Scope::PodNamespace,
            name: "corp-ca".to_owned(),
            key: Some("ca.crt".to_owned()),
        });
        assert_eq!(
            catalog.user_expiries_at(std::slice::from_ref(&from_cluster), NOW),
            [expiry(&old), expiry(&from_cluster)]
        );
    }

    #[test]
    fn each_drop_is_logged_once_however_often_volumes_render() {
        let root = ca("Root");
        let catalog = catalog(&[root.der.clone(), leaf("server.corp", &root), expired_ca("Old")]);
        for _ in 0..3 {
            catalog.render(&spec(false), &[], Vec::new(), NOW).expect("renders");
        }
        let logged = catalog.logged_drops.lock().expect("lock").len();
        assert_eq!(logged, 2);
    }

    #[test]
    fn an_oversize_extra_file_fails_the_load_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, vec![b'#'; 33]).expect("write");
        let config = |max_source_size| Config {
            system_roots: SystemRoots::None,
            extra_pem: vec![path.clone()],
            max_source_size,
        };
        let error = Catalog::load(&config(32)).expect_err("too large");
        assert!(matches!(&error, Error::TooLarge { size: 33, max: 32, path: p } if *p == path), "{error:?}");
        // At the limit the file is read, and then refused for what it is: not a certificate.
        assert!(matches!(Catalog::load(&config(33)), Err(Error::Bundle(_))));
    }
}

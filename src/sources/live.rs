//! The live sources: the current parsed catalog, replaced whole when a source file changes.
//! A reload that fails keeps the last good catalog (a bad source never replaces a good bundle)
//! and is remembered so volume health can report it. Cluster sources come from the caches of
//! [`Cluster`], read from memory at render time; Secret sources from what the publish read with
//! the pod's token (or, for a refresh, what was last read).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::bundle::Files;
use crate::domain::VolumeSpec;
use crate::metrics::Metrics;

use super::cluster::{self, Change, Cluster, Hold, PodReads, PodToken, Slot};
use super::memo::{RenderKey, RenderMemo};
use super::{Catalog, Config, Error, Expiry, Result};

#[derive(Debug)]
pub struct Sources {
    config: Config,
    state: RwLock<State>,
    cluster: ClusterAccess,
    metrics: Metrics,
    max_volume_certificates: usize,
}

/// Whether the driver reads from a cluster.
#[derive(Clone, Debug)]
pub enum ClusterAccess {
    /// Local sources only, and why (for the error a volume naming a cluster source gets).
    Standalone(&'static str),
    /// Cluster access, served while the CSIDriver check allows it ([`Cluster::pod_info`]): only
    /// with `podInfoOnMount: true` can the pod's namespace be trusted.
    Connected(Arc<Cluster>),
}

#[derive(Debug)]
struct State {
    catalog: Arc<Catalog>,
    /// Bumped each time the catalog is replaced.
    generation: u64,
    refresh_error: Option<Arc<Error>>,
}

/// What a reload found.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Changed,
    /// The files could not be loaded; the previous catalog stays in use.
    Failed(Arc<Error>),
}

impl Sources {
    /// # Errors
    /// Any source that cannot be loaded at start: better to refuse to start than to serve less
    /// trust than configured.
    pub fn load(config: Config) -> Result<Self> {
        let catalog = Arc::new(Catalog::load(&config)?);
        Ok(Self {
            config,
            state: RwLock::new(State { catalog, generation: 0, refresh_error: None }),
            cluster: ClusterAccess::Standalone("no cluster configuration"),
            metrics: Metrics::default(),
            max_volume_certificates: crate::domain::Limits::default().volume_certificates,
        })
    }

    /// The most certificates one volume's bundle may hold (`--max-volume-certificates`).
    pub fn set_max_volume_certificates(&mut self, max: usize) {
        self.max_volume_certificates = max;
    }

    /// Where renders count their certificates.
    pub fn set_metrics(&mut self, metrics: Metrics) {
        self.metrics = metrics;
    }

    /// Watches open now, per watched kind (by its tag, `configmap`), every kind listed.
    pub fn open_watches(&self) -> Vec<(&'static str, usize)> {
        Cluster::open_watches(match &self.cluster {
            ClusterAccess::Connected(cluster) => Some(cluster),
            ClusterAccess::Standalone(_) => None,
        })
    }

    /// Gives the sources their cluster (or says why there is none).
    pub fn set_cluster(&mut self, cluster: ClusterAccess) {
        self.cluster = cluster;
    }

    /// The cluster, when `spec` reads from it (sources of its own, or the defaults); `None` for
    /// a spec of local sources only, or one that only the defaults would give cluster sources on
    /// a driver without them.
    /// While cluster sources are not allowed, a spec with no cluster sources of its own renders
    /// without the defaults, as on a standalone driver.
    fn cluster(&self, spec: &VolumeSpec) -> Result<Option<&Arc<Cluster>>> {
        let cluster = match &self.cluster {
            ClusterAccess::Connected(cluster) => cluster,
            _ if !spec.has_cluster_sources() => return Ok(None),
            ClusterAccess::Standalone(reason) => {
                return Err(Error::Cluster(cluster::Error::Standalone { what: describe(spec), reason }));
            }
        };
        let allowed = cluster.pod_info();
        if allowed != cluster::PodInfoMode::On && cluster.reads_for(spec) {
            cluster.went_without();
        }
        match allowed {
            cluster::PodInfoMode::On => Ok(cluster.reads_for(spec).then_some(cluster)),
            _ if !spec.has_cluster_sources() => Ok(None),
            cluster::PodInfoMode::Refused(problem) => {
                Err(Error::Cluster(cluster::Error::PodInfoOff { what: describe(spec), problem }))
            }
            cluster::PodInfoMode::Unknown { driver, last_error } => {
                Err(Error::Cluster(cluster::Error::PodInfoNotChecked { what: describe(spec), driver, last_error }))
            }
        }
    }

    /// For a spec with cluster sources: holds their watches (starting new ones) and waits for
    /// their first lists, bounded. `None` for a spec of local sources only.
    ///
    /// # Errors
    /// A standalone driver, cluster sources not allowed, or a first list that does not complete
    /// in time.
    pub async fn hold(&self, spec: &VolumeSpec) -> Result<Option<Hold>> {
        match self.cluster(spec)? {
            Some(cluster) => Ok(Some(cluster.hold(spec).await?)),
            None => Ok(None),
        }
    }

    /// For a spec naming kinds read as the pod (Secrets): reads them with the pod's `token`, on
    /// every publish (the read is the pod's access check). `None` for a spec naming none.
    ///
    /// # Errors
    /// A standalone driver, no token, or as [`Cluster::read_as_pod`].
    pub async fn read_as_pod(&self, spec: &VolumeSpec, token: Option<&PodToken>) -> Result<Option<PodReads>> {
        if !cluster::reads_as_pod(spec) {
            return Ok(None);
        }
        // Such a spec has cluster sources, so a connected driver always reads for it.
        let Some(cluster) = self.cluster(spec)? else { return Ok(None) };
        let token = token.ok_or(Error::Cluster(cluster::Error::NoToken))?;
        Ok(Some(cluster.read_as_pod(spec, token).await?))
    }

    /// Whether a refresh, which has no token, can render `spec` (see [`Cluster::refreshable`]).
    pub fn refreshable(&self, spec: &VolumeSpec) -> bool {
        match &self.cluster {
            ClusterAccess::Connected(cluster) => cluster.refreshable(spec),
            // Nothing to render from the cluster: the refresh fails on its own terms, or not at all.
            ClusterAccess::Standalone(_) => true,
        }
    }

    /// Whether `spec` renders from one of the `slots` a publish just read as the pod.
    pub fn uses_read(&self, spec: &VolumeSpec, slots: &[Slot]) -> bool {
        match &self.cluster {
            ClusterAccess::Connected(cluster) => cluster.uses_read(spec, slots),
            ClusterAccess::Standalone(_) => false,
        }
    }

    /// Keeps the watches that `live_specs` need (and those publishes hold), no others.
    /// `live_changes` is the live set's version ([`Store::live_changes`](crate::volume::Store::live_changes)),
    /// read before the specs: a version retained already is skipped without reading them.
    pub fn retain(&self, live_changes: u64, live_specs: impl FnOnce() -> Vec<VolumeSpec>) {
        if let ClusterAccess::Connected(cluster) = &self.cluster {
            cluster.retain(live_changes, live_specs);
        }
    }

    /// Waits until the caches `specs` need have their first lists (unbounded).
    pub async fn synced(&self, specs: &[VolumeSpec]) {
        if let ClusterAccess::Connected(cluster) = &self.cluster {
            cluster.synced(specs).await;
        }
    }

    /// Whether a cluster change can change the bundle of `spec`.
    pub fn affected_by(&self, change: &Change, spec: &VolumeSpec) -> bool {
        match &self.cluster {
            ClusterAccess::Connected(cluster) => cluster.affects(change, spec),
            ClusterAccess::Standalone(_) => false,
        }
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&self.read().catalog)
    }

    /// The current catalog with its generation, read together.
    fn snapshot(&self) -> (Arc<Catalog>, u64) {
        let state = self.read();
        (Arc::clone(&state.catalog), state.generation)
    }

    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// Renders a spec's files at `now` (Unix seconds) with the current catalog and the objects a
    /// publish just read as the pod (`None`: as last read, for a refresh). Within a rotation
    /// pass, specs whose inputs are equal share one render through `memo` (see [`RenderMemo`]).
    ///
    /// # Errors
    /// As [`Catalog::render`].
    pub fn render(
        &self,
        spec: &VolumeSpec,
        reads: Option<&PodReads>,
        memo: Option<&RenderMemo>,
        now: i64,
    ) -> Result<Files> {
        let cluster = self.cluster_certificates(spec, reads)?;
        let (catalog, generation) = self.snapshot();
        let render = || {
            let rendered = catalog.render(spec, &cluster.certificates, cluster.ignored.clone(), now)?;
            Ok::<_, Error>((rendered.files, rendered.certificate_count))
        };
        let (files, certificate_count) = match memo {
            Some(memo) => {
                let key = RenderKey::new(generation, spec, &cluster.certificates, &cluster.ignored, now);
                memo.get_or_render(key, render)?
            }
            None => render()?,
        };
        if certificate_count > self.max_volume_certificates {
            return Err(Error::TooManyCertificates { found: certificate_count, max: self.max_volume_certificates });
        }
        self.metrics.bundle_rendered(certificate_count);
        Ok(files)
    }

    /// What `spec`'s cluster sources give it from the caches (and `secrets`), none for a spec
    /// the cluster has nothing for.
    fn cluster_certificates(&self, spec: &VolumeSpec, secrets: Option<&PodReads>) -> Result<cluster::Selected> {
        Ok(match self.cluster(spec)? {
            Some(cluster) => cluster.certificates(spec, secrets)?,
            None => cluster::Selected::default(),
        })
    }

    /// The earliest expiry of each non-system source `spec` gets certificates from (its own
    /// cluster sources, the defaults, `--extra-pem`), at `now`: what volume health warns about.
    pub fn user_expiries_at(&self, spec: &VolumeSpec, now: i64) -> Vec<Expiry> {
        let cluster = match &self.cluster {
            ClusterAccess::Connected(cluster)
                if cluster.pod_info() == cluster::PodInfoMode::On && cluster.reads_for(spec) =>
            {
                cluster.certificates_for_health(spec)
            }
            ClusterAccess::Connected(_) | ClusterAccess::Standalone(_) => Vec::new(),
        };
        let mut expiries = self.catalog().user_expiries_at(&cluster, now);
        for expiry in &mut expiries {
            expiry.source = expiry.source.clone().in_namespace(&spec.namespace);
        }
        expiries
    }

    /// The earliest `not_after` among the non-system certificates `spec` renders from now (its
    /// `--extra-pem` files and its cluster sources as cached), for the expiry gauge: the same
    /// certificates volume health looks at. Reads memory only.
    pub fn earliest_user_expiry(&self, spec: &VolumeSpec, now: i64) -> Option<i64> {
        self.user_expiries_at(spec, now).into_iter().map(|expiry| expiry.not_after).min()
    }

    /// Why the last reload failed, while the failure lasts.
    pub fn refresh_error(&self) -> Option<Arc<Error>> {
        self.read().refresh_error.clone()
    }

    /// Files whose changes should trigger [`Sources::reload`].
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = self.config.extra_pem.clone();
        files.extend(self.config.system_roots.file().map(PathBuf::from));
        files
    }

    /// Re-reads every source. Blocking (file reads).
    pub fn reload(&self) -> Reload {
        match Catalog::load(&self.config) {
            Err(error) => {
                tracing::warn!(%error, "source reload failed; keeping the previous certificates");
                let error = Arc::new(error);
                self.write().refresh_error = Some(Arc::clone(&error));
                Reload::Failed(error)
            }
            Ok(catalog) => {
                let mut state = self.write();
                state.refresh_error = None;
                if catalog.same_certificates(&state.catalog) {
                    return Reload::Unchanged;
                }
                state.catalog = Arc::new(catalog);
                state.generation += 1;
                Reload::Changed
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn describe(spec: &VolumeSpec) -> String {
    cluster::describe(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::SystemRoots;

    fn ca_pem(name: &str) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()
    }

    #[test]
    fn reload_swaps_on_change_and_keeps_the_old_catalog_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, ca_pem("First CA")).unwrap();
        let sources = Sources::load(Config {
            system_roots: SystemRoots::None,
            extra_pem: vec![file.clone()],
            max_source_size: crate::sources::DEFAULT_MAX_SOURCE_SIZE,
        })
        .unwrap();
        assert!(matches!(sources.reload(), Reload::Unchanged));

        std::fs::write(&file, ca_pem("Second CA")).unwrap();
        assert!(matches!(sources.reload(), Reload::Changed));
        let good = sources.catalog();

        std::fs::write(&file, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
        assert!(matches!(sources.reload(), Reload::Failed(_)));
        assert!(Arc::ptr_eq(&good, &sources.catalog()), "a bad source must not replace good certificates");
        let error = sources.refresh_error().unwrap();
        assert!(matches!(*error, Error::Bundle(crate::bundle::Error::PrivateKey { .. })), "{error:?}");

        std::fs::write(&file, ca_pem("Third CA")).unwrap();
        assert!(matches!(sources.reload(), Reload::Changed));
        assert!(sources.refresh_error().is_none());
    }
}

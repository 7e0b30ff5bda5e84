//! Keeps published bundles current. When a source file changes, the sources are reloaded and
//! every live spec gets a new generation: one `..data` swap that all its pods see at once. When
//! a watched cluster object changes, only the specs that name it (and whose certificates can
//! differ) get one. Rotation re-enters the data flow at `sources/` and leaves through `volume/`.
//!
//! A reload or render that fails leaves the current generation in place and is remembered per
//! spec, so NodeGetVolumeStats can report the volume abnormal until it recovers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tracing::Instrument;

use crate::events::PodEvents;
use crate::readiness::{Condition, Readiness};
use crate::sources::cluster::Change;
use crate::sources::{self, Reload, Sources};
use crate::spec::{SpecDigest, VolumeSpec};
use crate::volume::{self, Store};

/// File updates come in bursts (a ConfigMap swap is several renames); wait for the burst to end
/// so one reload sees the final state.
const SETTLE: Duration = Duration::from_millis(200);
/// Watch events come in bursts too (an apply touching several objects); one pass for a burst.
const CLUSTER_SETTLE: Duration = Duration::from_millis(50);

/// Why one spec's refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Render(#[from] sources::Error),
    #[error(transparent)]
    Volume(#[from] volume::Error),
}

/// Why a spec's bundle is not current.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Problem {
    /// The sources could not be reloaded: every spec keeps its previous bundle.
    #[error("the trust bundle could not be refreshed ({0}); the volume keeps the previous certificates")]
    Reload(Arc<sources::Error>),
    /// This spec's last refresh failed.
    #[error("the trust bundle could not be refreshed ({0}); the volume keeps the previous certificates")]
    Refresh(Arc<Error>),
}

#[derive(Debug)]
pub struct Rotation {
    sources: Arc<Sources>,
    store: Store,
    /// Specs whose last refresh failed, with why.
    failures: Mutex<HashMap<SpecDigest, Arc<Error>>>,
    requested: Notify,
    events: PodEvents,
}

impl Rotation {
    /// `events` hears of every failed refresh and of each recovery, per pod.
    pub fn new(sources: Arc<Sources>, store: Store, events: PodEvents) -> Arc<Self> {
        Arc::new(Self { sources, store, failures: Mutex::new(HashMap::new()), requested: Notify::new(), events })
    }

    /// Asks for a refresh pass over every live spec (e.g. a publish rendered from a catalog
    /// that was replaced while it ran).
    pub fn request_refresh(&self) {
        self.requested.notify_one();
    }

    /// Why this spec's bundle is not current, if it is not.
    pub fn problem(&self, digest: &SpecDigest) -> Option<Problem> {
        if let Some(error) = self.sources.refresh_error() {
            return Some(Problem::Reload(error));
        }
        self.failures().get(digest).cloned().map(Problem::Refresh)
    }

    /// Runs for the life of the driver: the adopted specs' cluster caches (then `readiness`
    /// learns [`Condition::CachesSynced`]), a first pass over the specs adopted from a previous
    /// run (then [`Condition::VolumesRefreshed`]), and a pass on each source change (or
    /// request).
    pub async fn run(
        self: Arc<Self>,
        mut changes: mpsc::Receiver<()>,
        mut cluster_changes: Option<mpsc::UnboundedReceiver<Change>>,
        readiness: Readiness,
    ) {
        // Adopted specs re-acquire the watches their records name.
        self.sources.retain(|| self.store.live_specs());
        self.sources.synced(&self.store.live_specs()).await;
        readiness.mark(Condition::CachesSynced);
        // Spec directories adopted from a previous run were rendered from the sources of that
        // run, which may have changed (new flags, edited files) while the driver was down.
        self.refresh_all().await;
        readiness.mark(Condition::VolumesRefreshed);
        loop {
            let reload = tokio::select! {
                Some(change) = next_change(&mut cluster_changes) => {
                    tokio::time::sleep(CLUSTER_SETTLE).await;
                    let mut burst = vec![change];
                    if let Some(receiver) = cluster_changes.as_mut() {
                        while let Ok(change) = receiver.try_recv() {
                            burst.push(change);
                        }
                    }
                    self.refresh_where(|spec| burst.iter().any(|change| self.sources.affected_by(change, spec))).await;
                    continue;
                }
                change = changes.recv() => match change {
                    Some(()) => true,
                    // No watch (no files to watch): refresh passes on request only.
                    None => { self.requested.notified().await; false }
                },
                () = self.requested.notified() => false,
            };
            if reload {
                tokio::time::sleep(SETTLE).await;
                while changes.try_recv().is_ok() {}
                let sources = Arc::clone(&self.sources);
                let span = tracing::Span::current();
                match tokio::task::spawn_blocking(move || span.in_scope(|| sources.reload())).await {
                    Ok(Reload::Changed) => {}
                    Ok(Reload::Unchanged | Reload::Failed(_)) => continue,
                    Err(error) => {
                        tracing::warn!(%error, "source reload task failed");
                        continue;
                    }
                }
            }
            self.refresh_all().await;
        }
    }

    async fn refresh_all(&self) {
        self.refresh_where(|_| true).await;
    }

    /// Refreshes the live specs `affected` picks; the others keep their generation untouched.
    /// A spec whose Secrets were not read since the driver started is left as it is: a refresh
    /// has no token to read them with, and the kubelet's next republish (which reads them)
    /// refreshes it.
    pub async fn refresh_where(&self, affected: impl Fn(&VolumeSpec) -> bool) {
        let (specs, waiting): (Vec<VolumeSpec>, Vec<VolumeSpec>) = self
            .store
            .live_specs()
            .into_iter()
            .filter(|spec| affected(spec))
            .partition(|spec| self.sources.refreshable(spec));
        if !waiting.is_empty() {
            tracing::debug!(specs = waiting.len(), "specs with Secrets not read yet wait for their republish");
        }
        if specs.is_empty() {
            tracing::debug!("no published bundle is affected");
            return;
        }
        tracing::info!(specs = specs.len(), "refreshing published bundles");
        for spec in specs {
            let digest = spec.digest();
            let sources = Arc::clone(&self.sources);
            let render = {
                let spec = spec.clone();
                move || sources.render_files(&spec).map_err(Error::Render)
            };
            let span = tracing::info_span!("refresh", spec = %digest);
            match self.store.refresh(spec, render).instrument(span).await {
                Ok(_) => {
                    let recovered = self.failures().remove(&digest).is_some();
                    if recovered {
                        self.events.refreshed(self.store.pods_of(&digest).await);
                    }
                }
                Err(error) => {
                    tracing::warn!(spec = %digest, %error, "refresh failed; keeping the current bundle");
                    let error = Arc::new(error);
                    self.failures().insert(digest.clone(), Arc::clone(&error));
                    // Every failure is recorded: the recorder makes repeats one event series.
                    let problem = Problem::Refresh(error).to_string();
                    self.events.refresh_failed(self.store.pods_of(&digest).await, &problem);
                }
            }
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<SpecDigest, Arc<Error>>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The next cluster change; pending forever when the driver is standalone or the caches are gone.
async fn next_change(receiver: &mut Option<mpsc::UnboundedReceiver<Change>>) -> Option<Change> {
    match receiver {
        Some(receiver) => match receiver.recv().await {
            Some(change) => Some(change),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

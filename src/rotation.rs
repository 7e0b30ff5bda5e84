//! Keeps published bundles current. When a source file changes, the sources are reloaded and
//! every live spec gets a new generation: one `..data` swap that all its pods see at once. When
//! a watched cluster object changes, only the specs that name it (and whose certificates can
//! differ) get one. Rotation re-enters the data flow at `sources/` and leaves through `volume/`.
//!
//! A reload or render that fails leaves the current generation in place and is remembered per
//! spec, so NodeGetVolumeStats can report the volume abnormal until it recovers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::{Notify, mpsc};
use tracing::Instrument;

use crate::domain::SourceKind;
use crate::domain::{SpecDigest, VolumeSpec};
use crate::events::PodEvents;
use crate::metrics::Metrics;
use crate::readiness::{Condition, Readiness};
use crate::sources::cluster::Change;
use crate::sources::{self, Reload, RenderMemo, Sources};
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
    metrics: Metrics,
    events: PodEvents,
}

/// What set off a refresh pass, for the metrics and the rotation's log line.
#[derive(Clone, Debug)]
pub struct Trigger {
    /// `None` for a catch-up pass (at start, or on request) that follows no change of its own:
    /// logged, not counted as a rotation.
    pub kind: Option<SourceKind>,
    /// What changed, for people: object names are fine in the log (not in metric labels).
    pub source: String,
    pub seen: Instant,
}

impl Trigger {
    /// A change of a `kind` source, seen now.
    pub fn change(kind: SourceKind, source: impl Into<String>) -> Self {
        Self { kind: Some(kind), source: source.into(), seen: Instant::now() }
    }

    fn catch_up(why: &str) -> Self {
        Self { kind: None, source: why.to_owned(), seen: Instant::now() }
    }
}

impl Rotation {
    /// `events` hears of every failed refresh and of each recovery, per pod.
    pub fn new(sources: Arc<Sources>, store: Store, metrics: Metrics, events: PodEvents) -> Arc<Self> {
        let failures = Mutex::new(HashMap::new());
        Arc::new(Self { sources, store, failures, requested: Notify::new(), metrics, events })
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
        self.refresh_where(Trigger::catch_up("start: volumes adopted from the previous run"), |_| true).await;
        readiness.mark(Condition::VolumesRefreshed);
        loop {
            let reload = tokio::select! {
                Some(change) = next_change(&mut cluster_changes) => {
                    let seen = Instant::now();
                    tokio::time::sleep(CLUSTER_SETTLE).await;
                    let mut burst = vec![change];
                    if let Some(receiver) = cluster_changes.as_mut() {
                        while let Ok(change) = receiver.try_recv() {
                            burst.push(change);
                        }
                    }
                    let trigger = Trigger { seen, ..cluster_trigger(&burst) };
                    self.refresh_where(trigger, |spec| burst.iter().any(|change| self.sources.affected_by(change, spec))).await;
                    continue;
                }
                change = changes.recv() => match change {
                    Some(()) => Some(Instant::now()),
                    // No watch (no files to watch): refresh passes on request only.
                    None => { self.requested.notified().await; None }
                },
                () = self.requested.notified() => None,
            };
            let trigger = if let Some(seen) = reload {
                tokio::time::sleep(SETTLE).await;
                while changes.try_recv().is_ok() {}
                let before = self.sources.catalog();
                let sources = Arc::clone(&self.sources);
                let span = tracing::Span::current();
                match tokio::task::spawn_blocking(move || span.in_scope(|| sources.reload())).await {
                    Ok(Reload::Changed) => {}
                    Ok(Reload::Unchanged) => continue,
                    Ok(Reload::Failed(_)) => {
                        self.metrics.rotation_failed(SourceKind::File);
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "source reload task failed");
                        continue;
                    }
                }
                let (kind, source) = if before.same_extra(&self.sources.catalog()) {
                    (SourceKind::System, "the --system-roots file")
                } else {
                    (SourceKind::File, "the --extra-pem files")
                };
                Trigger { seen, ..Trigger::change(kind, source) }
            } else {
                Trigger::catch_up("a publish raced a reload")
            };
            self.refresh_where(trigger, |_| true).await;
        }
    }

    /// Refreshes the live specs `affected` picks; the others keep their generation untouched.
    /// A spec whose Secrets were not read since the driver started is left as it is: a refresh
    /// has no token to read them with, and the kubelet's next republish (which reads them)
    /// refreshes it.
    pub async fn refresh_where(&self, trigger: Trigger, affected: impl Fn(&VolumeSpec) -> bool) {
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
        tracing::debug!(specs = specs.len(), "refreshing published bundles");
        let memo = Arc::new(RenderMemo::default());
        // Specs are refreshed side by side, one per core: each holds only its own spec lock,
        // and a pass over 100 specs is otherwise 100 renders and link trees in a row.
        let parallel = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let mut refreshes = futures::stream::iter(specs)
            .map(|spec| {
                let digest = spec.digest();
                let (sources, memo) = (Arc::clone(&self.sources), Arc::clone(&memo));
                let render = {
                    let spec = spec.clone();
                    move || sources.render_files_memo(&spec, &memo).map_err(Error::Render)
                };
                let span = tracing::info_span!("refresh", spec = %digest);
                self.store.refresh(spec, render).instrument(span).map(|outcome| (digest, outcome))
            })
            .buffer_unordered(parallel);
        let mut swapped = Vec::new();
        let (mut volumes, mut failed) = (0, 0);
        while let Some((digest, outcome)) = refreshes.next().await {
            match outcome {
                Ok(refreshed) => {
                    let recovered = self.failures().remove(&digest).is_some();
                    if recovered {
                        self.events.refreshed(self.store.pods_of(&digest).await);
                    }
                    if refreshed {
                        if let Some(kind) = trigger.kind {
                            self.metrics.rotated(kind, trigger.seen.elapsed());
                        }
                        volumes += self.store.volumes_of(&digest);
                        swapped.push(digest);
                    }
                }
                Err(error) => {
                    tracing::warn!(spec = %digest, %error, "refresh failed; keeping the current bundle");
                    if let Some(kind) = trigger.kind {
                        self.metrics.rotation_failed(kind);
                    }
                    failed += 1;
                    let error = Arc::new(error);
                    self.failures().insert(digest.clone(), Arc::clone(&error));
                    // Every failure is recorded: the recorder makes repeats one event series.
                    let problem = Problem::Refresh(error).to_string();
                    self.events.refresh_failed(self.store.pods_of(&digest).await, &problem);
                }
            }
        }
        tracing::info!(
            source.kind = trigger.kind.map_or("catch-up", SourceKind::as_str),
            source = %trigger.source,
            specs = swapped.len(),
            volumes,
            failed,
            latency_ms = trigger.seen.elapsed().as_micros() as f64 / 1000.0,
            renders = memo.distinct(),
            spec_digests = %list(swapped.iter().map(|digest| digest.as_str())),
            "rotation"
        );
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<SpecDigest, Arc<Error>>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The kind and objects of a burst of cluster changes (the kind of its first object change:
/// bursts are 50 ms of one apply, rarely of both kinds). A burst that only says cluster
/// sources are allowed now is a catch-up pass.
fn cluster_trigger(burst: &[Change]) -> Trigger {
    let Some((kind, _)) = burst.iter().find_map(Change::object) else {
        return Trigger::catch_up("cluster sources allowed");
    };
    Trigger::change(kind, list(burst.iter().filter_map(Change::object).map(|(_, object)| object)))
}

/// At most [`LISTED`] items, comma-separated, then how many more: a log line stays a line when
/// a change touches a thousand specs.
fn list<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    const LISTED: usize = 10;
    let mut text = String::new();
    let mut more = 0usize;
    for (i, item) in items.enumerate() {
        if i >= LISTED {
            more += 1;
            continue;
        }
        if i > 0 {
            text.push_str(", ");
        }
        text.push_str(&item.to_string());
    }
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::cluster::ObjectKey;

    #[test]
    fn a_long_list_is_cut_after_ten_and_says_how_many_more() {
        assert_eq!(list(std::iter::empty::<&str>()), "");
        assert_eq!(list(["a", "b"].into_iter()), "a, b");
        let many = list(0..25);
        assert!(many.starts_with("0, 1, 2") && many.ends_with("9 and 15 more"), "{many}");
    }

    #[test]
    fn a_cluster_burst_is_labelled_by_its_first_change_and_names_every_object() {
        let config_map = Change::ConfigMap {
            object: ObjectKey { namespace: "shop".into(), name: "corp-ca".into() },
            data_keys: None,
        };
        let bundle = Change::TrustBundle { name: "corp:root".into(), before: None, after: None };
        let trigger = cluster_trigger(&[bundle.clone(), config_map.clone()]);
        assert_eq!(trigger.kind, Some(SourceKind::ClusterTrustBundle));
        assert_eq!(trigger.source, "ClusterTrustBundle corp:root, ConfigMap shop/corp-ca");
        assert_eq!(cluster_trigger(&[config_map]).kind, Some(SourceKind::ConfigMap));
    }
}

//! A refresh pass: the live specs a change affects get a new generation each (one `..data` swap
//! that all their pods see at once), side by side, with the pass's metrics, pod events and log
//! line. What sets a pass off is [`triggers`](super::triggers); what a failed spec leaves behind
//! is [`failures`](super::failures). A reload or render that fails leaves the current generation
//! in place.

use std::sync::Arc;
use std::time::Instant;

use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::Notify;
use tracing::Instrument;

use super::Error;
use super::failures::{Failures, Problem};
use crate::clock::Clock;
use crate::domain::{SourceKind, SpecDigest, VolumeSpec, echo};
use crate::events::PodEvents;
use crate::metrics::Metrics;
use crate::sources::{RenderMemo, Sources};
use crate::volume::Store;

/// The refresh use case, one per driver: publish asks it for passes, [`Rotation::run`] (in
/// `triggers.rs`) runs them on changes, health asks it what failed.
#[derive(Debug)]
pub struct Rotation {
    pub(super) sources: Arc<Sources>,
    pub(super) store: Store,
    failures: Failures,
    pub(super) requested: Notify,
    pub(super) metrics: Metrics,
    events: PodEvents,
    /// When triggers are seen and what `now` a pass renders at (certificate expiry).
    pub(super) clock: Clock,
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
    /// A change of a `kind` source, seen at `seen`.
    pub fn change(kind: SourceKind, source: impl Into<String>, seen: Instant) -> Self {
        Self { kind: Some(kind), source: source.into(), seen }
    }

    pub(super) fn catch_up(why: &str, seen: Instant) -> Self {
        Self { kind: None, source: why.to_owned(), seen }
    }
}

/// `specs` taken round-robin by namespace: every namespace's first, then every second, and so
/// on; within a namespace, in the order given.
fn fair_order(specs: Vec<VolumeSpec>) -> Vec<VolumeSpec> {
    let mut by_namespace: std::collections::BTreeMap<String, std::collections::VecDeque<VolumeSpec>> =
        std::collections::BTreeMap::new();
    let total = specs.len();
    for spec in specs {
        by_namespace.entry(spec.namespace.clone()).or_default().push_back(spec);
    }
    let mut ordered = Vec::with_capacity(total);
    while ordered.len() < total {
        for queue in by_namespace.values_mut() {
            ordered.extend(queue.pop_front());
        }
    }
    ordered
}

impl Rotation {
    /// `events` hears of every failed refresh and of each recovery, per pod.
    pub fn new(sources: Arc<Sources>, store: Store, metrics: Metrics, events: PodEvents, clock: Clock) -> Arc<Self> {
        let failures = Failures::default();
        Arc::new(Self { sources, store, failures, requested: Notify::new(), metrics, events, clock })
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
        self.failures.get(digest).map(Problem::Refresh)
    }

    /// Refreshes the live specs `affected` picks; the others keep their generation untouched.
    /// A spec whose Secrets were not read since the driver started is left as it is: a refresh
    /// has no token to read them with, and the kubelet's next republish (which reads them)
    /// refreshes it.
    pub async fn refresh_where(&self, trigger: Trigger, affected: impl Fn(&VolumeSpec) -> bool) {
        // A lookup per spec the events remember (few: only failed ones), no digest computed.
        self.events.retain(|digest| self.store.volumes_of(digest) > 0);
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
        // A namespace with many affected specs does not keep another's one waiting behind them.
        let specs = fair_order(specs);
        let memo = Arc::new(RenderMemo::default());
        // One `now` for the whole pass, so specs rendering across a second boundary still share.
        let now = self.clock.unix_seconds();
        // Specs are refreshed side by side, one per core: each holds only its own spec lock,
        // and a pass over 100 specs is otherwise 100 renders and link trees in a row.
        let parallel = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let mut refreshes = futures::stream::iter(specs)
            .map(|spec| {
                let digest = spec.digest();
                let (sources, memo) = (Arc::clone(&self.sources), Arc::clone(&memo));
                let render = {
                    let spec = spec.clone();
                    move || sources.render(&spec, None, Some(&memo), now).map_err(Error::Sources)
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
                    let recovered = self.failures.forget(&digest);
                    if recovered {
                        self.events.refreshed(&digest, self.store.pods_of(&digest).await);
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
                    self.failures.remember(digest.clone(), Arc::clone(&error));
                    // The events' gate tells each pod a failure once, within the limits.
                    let problem = Problem::Refresh(error).to_string();
                    self.events.refresh_failed(&digest, self.store.pods_of(&digest).await, &problem);
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
            spec_digests = %echo::names(swapped.iter().map(|digest| digest.as_str())),
            "rotation"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_takes_each_namespace_in_turn() {
        let spec = |namespace: &str, keep_expired| VolumeSpec {
            namespace: namespace.to_owned(),
            keep_expired,
            ..VolumeSpec::default()
        };
        let specs = vec![spec("a", false), spec("a", true), spec("b", false), spec("a", false), spec("c", true)];
        let order: Vec<(String, bool)> =
            fair_order(specs).into_iter().map(|spec| (spec.namespace, spec.keep_expired)).collect();
        let expected = [("a", false), ("b", false), ("c", true), ("a", true), ("a", false)];
        assert_eq!(order, expected.map(|(namespace, keep)| (namespace.to_owned(), keep)));
    }
}

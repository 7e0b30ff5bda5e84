//! What sets refresh passes off, for the life of the driver: a first pass over the volumes
//! adopted at start, a pass per settled burst of file changes (after a reload of the sources) or
//! of cluster changes (over the specs they affect), and a catch-up pass on request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::refresh::{Rotation, Trigger};
use crate::domain::SourceKind;
use crate::domain::echo;
use crate::readiness::{Condition, Readiness};
use crate::sources::Reload;
use crate::sources::cluster::Change;

/// File updates come in bursts (a ConfigMap swap is several renames); wait for the burst to end
/// so one reload sees the final state.
const SETTLE: Duration = Duration::from_millis(200);
/// Watch events come in bursts too (an apply touching several objects); one pass for a burst.
const CLUSTER_SETTLE: Duration = Duration::from_millis(50);

impl Rotation {
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
        self.sources.retain(self.store.live_changes(), || self.store.live_specs());
        self.sources.synced(&self.store.live_specs()).await;
        readiness.mark(Condition::CachesSynced);
        // Spec directories adopted from a previous run were rendered from the sources of that
        // run, which may have changed (new flags, edited files) while the driver was down.
        self.refresh_where(
            Trigger::catch_up("start: volumes adopted from the previous run", self.clock.instant()),
            |_| true,
        )
        .await;
        readiness.mark(Condition::VolumesRefreshed);
        loop {
            let reload = tokio::select! {
                Some(change) = next_change(&mut cluster_changes) => {
                    let seen = self.clock.instant();
                    tokio::time::sleep(CLUSTER_SETTLE).await;
                    let mut burst = vec![change];
                    if let Some(receiver) = cluster_changes.as_mut() {
                        while let Ok(change) = receiver.try_recv() {
                            burst.push(change);
                        }
                    }
                    if burst.contains(&Change::ClusterSourcesAllowed) {
                        // The caches of specs rendered without cluster sources may still be on
                        // their first list (their watches backed off while not allowed): this
                        // pass renders what is synced, and another follows once all are.
                        let rotation = Arc::clone(&self);
                        tokio::spawn(async move {
                            // Specs published while refused took no watches (their publish
                            // held nothing): start them, so there is a first list to wait for.
                            rotation.sources.retain(rotation.store.live_changes(), || rotation.store.live_specs());
                            rotation.sources.synced(&rotation.store.live_specs()).await;
                            rotation.requested.notify_one();
                        });
                    }
                    let trigger = cluster_trigger(&burst, seen);
                    self.refresh_where(trigger, |spec| burst.iter().any(|change| self.sources.affected_by(change, spec))).await;
                    continue;
                }
                change = changes.recv() => match change {
                    Some(()) => Some(self.clock.instant()),
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
                Trigger::change(kind, source, seen)
            } else {
                Trigger::catch_up(
                    "requested: a publish raced a reload, or the caches of allowed cluster sources synced",
                    self.clock.instant(),
                )
            };
            self.refresh_where(trigger, |_| true).await;
        }
    }
}

/// The kind and objects of a burst of cluster changes (the kind of its first object change:
/// bursts are 50 ms of one apply, rarely of both kinds). A burst that only says cluster
/// sources are allowed now is a catch-up pass.
fn cluster_trigger(burst: &[Change], seen: Instant) -> Trigger {
    let Some((kind, _)) = burst.iter().find_map(Change::object) else {
        return Trigger::catch_up("cluster sources allowed", seen);
    };
    Trigger::change(kind, echo::names(burst.iter().filter_map(Change::object).map(|(_, object)| object)), seen)
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
    use crate::sources::cluster::{self, ObjectChange, ObjectKey};

    fn change(tag: &str, namespace: &str, name: &str) -> Change {
        let object = ObjectKey { namespace: namespace.into(), name: name.into() };
        let kind = cluster::name_of(tag).expect("a registered kind");
        Change::Object(ObjectChange { kind, object, keys: None, selectable: Vec::new() })
    }

    #[test]
    fn a_cluster_burst_is_labelled_by_its_first_change_and_names_every_object() {
        let config_map = change("configmap", "shop", "corp-ca");
        let bundle = change("clustertrustbundle", "", "corp:root");
        let trigger = cluster_trigger(&[bundle.clone(), config_map.clone()], Instant::now());
        assert_eq!(trigger.kind, Some(SourceKind::Cluster("clustertrustbundle")));
        assert_eq!(trigger.source, "ClusterTrustBundle corp:root, ConfigMap shop/corp-ca");
        assert_eq!(cluster_trigger(&[config_map], Instant::now()).kind, Some(SourceKind::Cluster("configmap")));
    }
}

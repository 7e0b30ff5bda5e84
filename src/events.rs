//! Kubernetes Events on the pods whose trust bundle could not be refreshed, and again when it
//! recovers, so `kubectl describe pod` tells the pod's owner what NodeGetVolumeStats tells the
//! kubelet. Recorded through kube's event recorder (events.k8s.io/v1): a repeat of the same
//! event on the same pod becomes a series on one object instead of a flood of new ones.
//!
//! Recording never holds up a rotation: each event is sent from a task of its own, and a
//! failure to record one is logged, not retried. What is sent at all, [`gate`] decides: one
//! event per pod per distinct failure of its spec, within a budget per namespace and per driver.

mod gate;

pub use gate::Limits;

use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::clock::Clock;
use crate::domain::{PodInfo, SpecDigest};
use crate::metrics::Metrics;
use gate::{EventGate, Verdict};

/// `reportingController` of every event: what `kubectl events` shows as the source.
pub const REPORTING_CONTROLLER: &str = "trustmount";
/// The reasons, PascalCase like the kubelet's own.
pub const REASON_REFRESH_FAILED: &str = "TrustBundleRefreshFailed";
pub const REASON_REFRESHED: &str = "TrustBundleRefreshed";
const ACTION: &str = "RefreshTrustBundle";
/// events.k8s.io caps a note at 1 kB.
const MAX_NOTE_BYTES: usize = 1024;

/// Where events go: nowhere on a standalone driver.
#[derive(Clone)]
pub struct PodEvents {
    recording: Option<Recording>,
}

#[derive(Clone)]
struct Recording {
    recorder: Recorder,
    gate: Arc<Mutex<EventGate>>,
    clock: Clock,
    metrics: Metrics,
}

impl std::fmt::Debug for PodEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodEvents").field("recording", &self.recording.is_some()).finish()
    }
}

impl PodEvents {
    /// Records nothing (standalone, or no client).
    pub fn off() -> Self {
        Self { recording: None }
    }

    /// Records as `trustmount` on `node_id` (the reporting instance, so events from different
    /// nodes' drivers are told apart), within `limits` by `clock`; what is not sent is counted
    /// in `metrics`.
    pub fn new(client: kube::Client, node_id: &str, limits: Limits, clock: Clock, metrics: Metrics) -> Self {
        let reporter = Reporter { controller: REPORTING_CONTROLLER.to_owned(), instance: Some(node_id.to_owned()) };
        let gate = Arc::new(Mutex::new(EventGate::new(limits, clock.instant())));
        Self { recording: Some(Recording { recorder: Recorder::new(client, reporter), gate, clock, metrics }) }
    }

    /// A Warning on each pod of `spec`: its volume keeps the previous bundle, and why. Only the
    /// pods not yet told `why` hear it, within the limits.
    pub fn refresh_failed(&self, spec: &SpecDigest, pods: Vec<PodInfo>, why: &str) {
        let Some(recording) = &self.recording else { return };
        let note = truncate(why, MAX_NOTE_BYTES);
        let pods = nameable(pods);
        let Verdict { send, dropped } = recording.gate().failed(spec, pods, &note, recording.clock.instant());
        for reason in &dropped {
            recording.metrics.event_dropped(reason.as_str());
        }
        if !dropped.is_empty() {
            tracing::debug!(spec = %spec, sent = send.len(), dropped = dropped.len(), "pod events not sent (repeats, or over the limits)");
        }
        recording.record(send, EventType::Warning, REASON_REFRESH_FAILED, note);
    }

    /// A Normal event on each pod of `spec` that was told of its failure: it is current again.
    pub fn refreshed(&self, spec: &SpecDigest, pods: Vec<PodInfo>) {
        let Some(recording) = &self.recording else { return };
        let told = recording.gate().recovered(spec, nameable(pods));
        recording.record(
            told,
            EventType::Normal,
            REASON_REFRESHED,
            "the trust bundle is current again: the volume has the sources' latest certificates".to_owned(),
        );
    }

    /// Forgets what the specs `live` does not keep were told: no volume uses them any more.
    pub fn retain(&self, live: impl Fn(&SpecDigest) -> bool) {
        let Some(recording) = &self.recording else { return };
        recording.gate().retain(live, recording.clock.instant());
    }
}

impl Recording {
    fn gate(&self) -> std::sync::MutexGuard<'_, EventGate> {
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, pods: Vec<PodInfo>, type_: EventType, reason: &'static str, note: String) {
        for pod in pods {
            let recorder = self.recorder.clone();
            let event = Event {
                type_,
                reason: reason.to_owned(),
                note: Some(note.clone()),
                action: ACTION.to_owned(),
                secondary: None,
            };
            tokio::spawn(async move {
                let reference = pod_reference(&pod);
                if let Err(error) = recorder.publish(&event, &reference).await {
                    tracing::warn!(
                        pod = %format_args!("{}/{}", pod.namespace, pod.name),
                        reason,
                        %error,
                        "cannot record an event on the pod (does the driver's ClusterRole allow create and patch on events.k8s.io events?)"
                    );
                }
            });
        }
    }
}

/// The pods an event can regard: a publish without pod info names none.
fn nameable(pods: Vec<PodInfo>) -> Vec<PodInfo> {
    pods.into_iter().filter(|pod| !pod.name.is_empty() && !pod.namespace.is_empty()).collect()
}

fn pod_reference(pod: &PodInfo) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        name: Some(pod.name.clone()),
        namespace: Some(pod.namespace.clone()),
        uid: (!pod.uid.is_empty()).then(|| pod.uid.clone()),
        ..ObjectReference::default()
    }
}

/// At most `max` bytes, cut at a character boundary, with an ellipsis when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let ellipsis = "…";
    let mut end = max - ellipsis.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_note_is_cut_at_a_character_boundary_within_the_limit() {
        let text = "é".repeat(600);
        let cut = truncate(&text, MAX_NOTE_BYTES);
        assert!(cut.len() <= MAX_NOTE_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short", MAX_NOTE_BYTES), "short");
    }

    #[test]
    fn the_reference_names_the_pod_with_its_uid() {
        let pod = PodInfo {
            name: "web-0".into(),
            namespace: "team-a".into(),
            uid: "0c1f".into(),
            service_account: "default".into(),
            ephemeral: true,
        };
        let reference = pod_reference(&pod);
        assert_eq!(
            (
                reference.kind.as_deref(),
                reference.namespace.as_deref(),
                reference.name.as_deref(),
                reference.uid.as_deref()
            ),
            (Some("Pod"), Some("team-a"), Some("web-0"), Some("0c1f"))
        );
    }
}

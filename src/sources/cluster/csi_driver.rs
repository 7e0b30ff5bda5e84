//! The driver watches its own CSIDriver object, since only with `podInfoOnMount: true` does the
//! kubelet pass (and overwrite) the pod's namespace, which bounds what a cluster source may read.
//! `podInfoOnMount` is mutable: with it switched off, the kubelet passes a pod author's own
//! `csi.storage.k8s.io/pod.namespace` untouched, so one read at start is not enough. The watch
//! (one object, by field selector: RBAC can name it) refuses cluster sources from the event that
//! says so, and allows them again when the object is fixed, without a restart.
//!
//! The watcher retries with backoff until the API server gives a definite answer (the object,
//! its absence, or Forbidden); until then, and while the watch is down, the last definite
//! answer stands (the publish checks the pod UID against its target path as well, so a stale
//! "on" alone does not open the namespace boundary).

use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::{Change, api_error};

/// What the CSIDriver object said, when it did not say `podInfoOnMount: true`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PodInfoProblem {
    #[error("CSIDriver {driver} sets podInfoOnMount: {value}")]
    Off { driver: String, value: String },
    #[error("CSIDriver {driver} does not exist")]
    Missing { driver: String },
    #[error("CSIDriver {driver} cannot be read: {reason}")]
    Unreadable { driver: String, reason: String },
}

/// Whether cluster sources may be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodInfoMode {
    /// No definite answer yet: the API server did not answer (or not usefully), and why.
    Unknown {
        driver: String,
        last_error: Option<String>,
    },
    On,
    Refused(PodInfoProblem),
}

/// The check's state and the one task watching the object.
pub struct PodInfoCheck {
    driver: String,
    state: watch::Sender<PodInfoMode>,
    changes: mpsc::UnboundedSender<Change>,
    /// Something was rendered (or refused) without cluster sources since the last time they
    /// became allowed: only then does becoming allowed refresh anything.
    missed: AtomicBool,
}

impl std::fmt::Debug for PodInfoCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodInfoCheck").field("driver", &self.driver).field("state", &*self.state.borrow()).finish()
    }
}

impl PodInfoCheck {
    /// Starts watching CSIDriver `driver` (must run inside the tokio runtime). `changes`
    /// learns when cluster sources become allowed, so volumes rendered or refreshed without
    /// them are refreshed.
    pub fn start(client: kube::Client, driver: &str, changes: mpsc::UnboundedSender<Change>) -> std::sync::Arc<Self> {
        let check = Self::unwatched(driver, changes);
        let background = std::sync::Arc::clone(&check);
        let span = tracing::info_span!("csidriver_watch", driver = %driver);
        tokio::spawn(async move { background.watch(client).await }.instrument(span));
        check
    }

    /// A check that only learns what it is told ([`PodInfoCheck::settle`]).
    fn unwatched(driver: &str, changes: mpsc::UnboundedSender<Change>) -> std::sync::Arc<Self> {
        let unknown = PodInfoMode::Unknown { driver: driver.to_owned(), last_error: None };
        std::sync::Arc::new(Self {
            driver: driver.to_owned(),
            state: watch::Sender::new(unknown),
            changes,
            missed: AtomicBool::new(false),
        })
    }

    pub fn state(&self) -> PodInfoMode {
        self.state.borrow().clone()
    }

    /// Records that a publish or refresh went without cluster sources because they were not
    /// allowed, so that becoming allowed refreshes the specs that read from the cluster (a
    /// change sent at most once per such stretch, even if it became allowed meanwhile).
    pub fn missed(&self) {
        self.missed.store(true, Ordering::SeqCst);
        if self.state() == PodInfoMode::On {
            self.send_allowed();
        }
    }

    fn send_allowed(&self) {
        if self.missed.swap(false, Ordering::SeqCst) {
            let _ = self.changes.send(Change::ClusterSourcesAllowed);
        }
    }

    /// Waits (unbounded) until the API server gave a definite answer.
    pub async fn answered(&self) {
        let mut state = self.state.subscribe();
        let _ = state.wait_for(|state| !matches!(state, PodInfoMode::Unknown { .. })).await;
    }

    /// The one writer of the state, for the life of the driver: every event of the watch is
    /// a definite answer; an error is one only when it is Forbidden.
    async fn watch(&self, client: kube::Client) {
        let api: kube::Api<CSIDriver> = kube::Api::all(client);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.driver));
        let stream = watcher(api, config).default_backoff();
        futures::pin_mut!(stream);
        // The object of a re-list in progress (`Init`…`InitDone`): none listed is its absence.
        let mut relisting: Option<Option<CSIDriver>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => relisting = Some(None),
                Ok(watcher::Event::InitApply(object)) => relisting = Some(Some(object)),
                Ok(watcher::Event::InitDone) => self.settle(self.judge(relisting.take().flatten().as_ref())),
                Ok(watcher::Event::Apply(object)) => self.settle(self.judge(Some(&object))),
                Ok(watcher::Event::Delete(_)) => self.settle(self.judge(None)),
                Err(error) => {
                    let reason = api_error::describe_watch(&error);
                    if api_error::watch_code(&error) == Some(403) {
                        self.settle(Err(PodInfoProblem::Unreadable { driver: self.driver.clone(), reason }));
                    } else {
                        tracing::warn!(error = %reason, "the CSIDriver watch failed; retrying with backoff (the last answer stands)");
                        self.note_error(reason);
                    }
                }
            }
        }
    }

    /// What the object (or its absence) says.
    fn judge(&self, object: Option<&CSIDriver>) -> Result<(), PodInfoProblem> {
        let driver = self.driver.clone();
        let Some(object) = object else {
            return Err(PodInfoProblem::Missing { driver });
        };
        match object.spec.pod_info_on_mount {
            Some(true) => Ok(()),
            Some(false) => Err(PodInfoProblem::Off { driver, value: "false".to_owned() }),
            None => Err(PodInfoProblem::Off { driver, value: "unset (false)".to_owned() }),
        }
    }

    /// While there is no definite answer, the newest reason why not.
    fn note_error(&self, error: String) {
        self.state.send_if_modified(|state| match state {
            PodInfoMode::Unknown { last_error, .. } => {
                *last_error = Some(error);
                true
            }
            PodInfoMode::On | PodInfoMode::Refused(_) => false,
        });
    }

    /// Keeps a definite answer, logging it when it differs from the last one.
    fn settle(&self, result: Result<(), PodInfoProblem>) {
        let next = match result {
            Ok(()) => PodInfoMode::On,
            Err(problem) => PodInfoMode::Refused(problem),
        };
        let previous = self.state.send_replace(next.clone());
        if previous == next {
            return;
        }
        match &next {
            PodInfoMode::On => {
                tracing::info!("the CSIDriver sets podInfoOnMount: true; cluster sources on");
                // Volumes rendered or refreshed while refused lack their cluster sources.
                self.send_allowed();
            }
            PodInfoMode::Refused(problem) => tracing::error!(
                %problem,
                "cluster sources refused: the CSIDriver must set podInfoOnMount: true, so the kubelet passes the pod's namespace; volumes naming cluster sources fail with FAILED_PRECONDITION until it does (the driver watches the object)"
            ),
            PodInfoMode::Unknown { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A check told everything by the test.
    fn told_check() -> (std::sync::Arc<PodInfoCheck>, mpsc::UnboundedReceiver<Change>) {
        let (changes, received) = mpsc::unbounded_channel();
        (PodInfoCheck::unwatched("csi.example", changes), received)
    }

    #[tokio::test]
    async fn becoming_allowed_refreshes_once_and_only_if_something_went_without() {
        let (check, mut received) = told_check();
        assert!(matches!(check.state(), PodInfoMode::Unknown { .. }));
        check.settle(Ok(()));
        assert_eq!(check.state(), PodInfoMode::On);
        assert!(received.try_recv().is_err(), "nothing went without cluster sources");

        let missing = PodInfoProblem::Missing { driver: "csi.example".into() };
        check.settle(Err(missing.clone()));
        assert_eq!(check.state(), PodInfoMode::Refused(missing));
        check.missed();
        check.missed();
        check.settle(Ok(()));
        assert_eq!(received.try_recv().ok(), Some(Change::ClusterSourcesAllowed));
        assert!(received.try_recv().is_err(), "one change per stretch");

        // Went without just as it became allowed: the change is sent then.
        check.missed();
        assert_eq!(received.try_recv().ok(), Some(Change::ClusterSourcesAllowed));
    }

    #[tokio::test]
    async fn an_unreachable_api_server_leaves_the_state_unknown_with_its_error() {
        // Nothing listens on port 1: every list is refused.
        let config = kube::Config::new("https://127.0.0.1:1".parse().expect("URL"));
        let client = kube::Client::try_from(config).expect("client");
        let (changes, _received) = mpsc::unbounded_channel();
        let check = PodInfoCheck::start(client, "csi.example", changes);
        let mut state = check.state.subscribe();
        let known = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            state.wait_for(|state| matches!(state, PodInfoMode::Unknown { last_error: Some(_), .. })),
        )
        .await;
        assert!(known.is_ok(), "the watch's error is kept: {:?}", check.state());
        match check.state() {
            PodInfoMode::Unknown { last_error: Some(error), .. } => {
                assert!(error.to_lowercase().contains("connection refused"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_object_says_on_only_with_pod_info_on_mount_true() {
        let (check, _received) = told_check();
        let with = |value: Option<bool>| {
            let mut object = CSIDriver::default();
            object.spec.pod_info_on_mount = value;
            check.judge(Some(&object))
        };
        assert_eq!(with(Some(true)), Ok(()));
        assert!(matches!(with(Some(false)), Err(PodInfoProblem::Off { value, .. }) if value == "false"));
        assert!(matches!(with(None), Err(PodInfoProblem::Off { value, .. }) if value.starts_with("unset")));
        assert_eq!(check.judge(None), Err(PodInfoProblem::Missing { driver: "csi.example".into() }));
    }
}

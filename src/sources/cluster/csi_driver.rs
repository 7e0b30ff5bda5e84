//! The driver reads its own CSIDriver object, since only with `podInfoOnMount: true` does the
//! kubelet pass (and overwrite) the pod's namespace, which bounds what a cluster source may read.
//!
//! Read at start in the background, retried with backoff until the API server gives a definite
//! answer (the object, NotFound or Forbidden); an API server that is down at start must not
//! leave cluster sources refused until a restart. A refusal is kept, and re-read (at most once
//! per [`RECHECK_INTERVAL`]) when a publish it refuses comes in, so fixing the object takes
//! effect at the kubelet's next retry. Once allowed, never read again: a CSIDriver switched to
//! `podInfoOnMount: false` later makes the kubelet stop sending pod info, which every publish
//! checks anyway.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::storage::v1::CSIDriver;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::{Change, api_error};

/// How long one read of the CSIDriver may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Refused publishes re-read the object at most this often (the kubelet retries each volume
/// with its own backoff; many volumes must not mean many reads).
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

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

/// The check's state and the one task reading the object.
pub struct PodInfoCheck {
    client: kube::Client,
    driver: String,
    state: watch::Sender<PodInfoMode>,
    changes: mpsc::UnboundedSender<Change>,
    /// When a refused publish last re-read the object; held while one does, so concurrent
    /// publishes share its answer.
    last_recheck: tokio::sync::Mutex<Option<Instant>>,
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
    /// Starts reading CSIDriver `driver` in the background (must run inside the tokio runtime).
    /// `changes` learns when cluster sources become allowed, so volumes rendered or refreshed
    /// without them are refreshed.
    pub fn start(client: kube::Client, driver: &str, changes: mpsc::UnboundedSender<Change>) -> std::sync::Arc<Self> {
        let unknown = PodInfoMode::Unknown { driver: driver.to_owned(), last_error: None };
        let check = std::sync::Arc::new(Self {
            client,
            driver: driver.to_owned(),
            state: watch::Sender::new(unknown),
            changes,
            last_recheck: tokio::sync::Mutex::new(None),
            missed: AtomicBool::new(false),
        });
        let background = std::sync::Arc::clone(&check);
        let span = tracing::info_span!("csidriver_check", driver = %driver);
        tokio::spawn(async move { background.until_answered().await }.instrument(span));
        check
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

    /// For a publish that names cluster sources: unless they are allowed, reads the object again
    /// (bounded, shared with concurrent publishes, at most once per [`RECHECK_INTERVAL`]), so an
    /// object created or fixed since the last read takes effect now.
    pub async fn recheck_unless_on(&self) {
        if self.state() == PodInfoMode::On {
            return;
        }
        let mut last = self.last_recheck.lock().await;
        if self.state() == PodInfoMode::On || last.is_some_and(|at| at.elapsed() < RECHECK_INTERVAL) {
            return;
        }
        let answer = read(&self.client, &self.driver).await;
        *last = Some(Instant::now());
        match answer {
            Answer::Definite(result) => self.settle(result),
            // A refusal stays what it was; an unknown state learns the newer error.
            Answer::Unanswered(error) => self.note_error(error),
        }
    }

    /// Retries with backoff until a definite answer (or until a publish's re-read got one).
    async fn until_answered(&self) {
        let mut delay = FIRST_RETRY;
        loop {
            if !matches!(self.state(), PodInfoMode::Unknown { .. }) {
                return;
            }
            match read(&self.client, &self.driver).await {
                Answer::Definite(result) => return self.settle(result),
                Answer::Unanswered(error) => {
                    tracing::warn!(%error, retry_in = ?delay, "cannot read the CSIDriver yet; cluster sources wait for it");
                    self.note_error(error);
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY);
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
                "cluster sources refused: the CSIDriver must set podInfoOnMount: true, so the kubelet passes the pod's namespace; volumes naming cluster sources fail with FAILED_PRECONDITION until it does (read again on their next publish)"
            ),
            PodInfoMode::Unknown { .. } => {}
        }
    }
}

/// What one read gave.
enum Answer {
    /// The object (with or without `podInfoOnMount: true`), NotFound, or Forbidden.
    Definite(Result<(), PodInfoProblem>),
    /// No answer to go by (unreachable, timed out, 5xx, 401): why.
    Unanswered(String),
}

/// GETs the CSIDriver `driver` (one request, bounded by [`READ_TIMEOUT`]).
async fn read(client: &kube::Client, driver: &str) -> Answer {
    let api: kube::Api<CSIDriver> = kube::Api::all(client.clone());
    let found = match tokio::time::timeout(READ_TIMEOUT, api.get_opt(driver)).await {
        Err(_) => return Answer::Unanswered(format!("no answer within {READ_TIMEOUT:?}")),
        Ok(Err(kube::Error::Api(status))) if status.code == 403 => {
            let reason = api_error::describe(&kube::Error::Api(status));
            return Answer::Definite(Err(PodInfoProblem::Unreadable { driver: driver.to_owned(), reason }));
        }
        Ok(Err(error)) => return Answer::Unanswered(api_error::describe(&error)),
        Ok(Ok(found)) => found,
    };
    let Some(object) = found else {
        return Answer::Definite(Err(PodInfoProblem::Missing { driver: driver.to_owned() }));
    };
    Answer::Definite(match object.spec.pod_info_on_mount {
        Some(true) => Ok(()),
        Some(false) => Err(PodInfoProblem::Off { driver: driver.to_owned(), value: "false".to_owned() }),
        None => Err(PodInfoProblem::Off { driver: driver.to_owned(), value: "unset (false)".to_owned() }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A check whose API server refuses every connection (nothing listens on port 1), so only
    /// what the test settles is ever known.
    fn unreachable_check() -> (std::sync::Arc<PodInfoCheck>, mpsc::UnboundedReceiver<Change>) {
        let config = kube::Config::new("https://127.0.0.1:1".parse().expect("URL"));
        let client = kube::Client::try_from(config).expect("client");
        let (changes, received) = mpsc::unbounded_channel();
        (PodInfoCheck::start(client, "csi.example", changes), received)
    }

    #[tokio::test]
    async fn becoming_allowed_refreshes_once_and_only_if_something_went_without() {
        let (check, mut received) = unreachable_check();
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
        let (check, _received) = unreachable_check();
        check.recheck_unless_on().await;
        match check.state() {
            PodInfoMode::Unknown { last_error: Some(error), .. } => {
                assert!(error.to_lowercase().contains("connection refused"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }
}

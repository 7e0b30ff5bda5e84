//! Whether the driver is ready: a publish can succeed now. Named start-up conditions, each met
//! once by the daemon wiring; [`Readiness::is_ready`] when all are.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// One thing that must be true before a publish can succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Condition {
    /// The certificate sources are loaded and parsed.
    SourcesLoaded,
    /// The driver's tmpfs is mounted (or adopted) and the records are loaded.
    StoreOpen,
    /// The caches of the cluster sources adopted volumes name have their first lists, and the
    /// CSIDriver check has an answer (nothing to wait for when standalone or without such
    /// volumes).
    CachesSynced,
    /// Volumes adopted from a previous run were refreshed with this run's sources (a failure is
    /// recorded in their health; the pass ran).
    VolumesRefreshed,
}

impl Condition {
    /// What `trustmount serve` waits for.
    pub const DAEMON: [Condition; 4] =
        [Condition::SourcesLoaded, Condition::StoreOpen, Condition::CachesSynced, Condition::VolumesRefreshed];
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SourcesLoaded => "sources loaded",
            Self::StoreOpen => "store open",
            Self::CachesSynced => "cluster caches synced",
            Self::VolumesRefreshed => "adopted volumes refreshed",
        })
    }
}

/// The conditions still pending; cheap to clone, shared by the wiring (writer) and Probe
/// (reader).
#[derive(Clone, Debug)]
pub struct Readiness {
    pending: Arc<Mutex<BTreeSet<Condition>>>,
}

impl Readiness {
    /// Not ready until every one of `conditions` is met.
    pub fn new(conditions: impl IntoIterator<Item = Condition>) -> Self {
        Self { pending: Arc::new(Mutex::new(conditions.into_iter().collect())) }
    }

    /// Records that `condition` holds; meeting one twice, or one not waited for, changes nothing.
    pub fn mark(&self, condition: Condition) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.remove(&condition) {
            tracing::debug!(%condition, pending = pending.len(), "start-up condition met");
            if pending.is_empty() {
                tracing::info!("ready");
            }
        }
    }

    pub fn is_ready(&self) -> bool {
        self.pending().is_empty()
    }

    /// The conditions not met yet, in a fixed order.
    pub fn pending(&self) -> Vec<Condition> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_once_every_condition_is_met_in_any_order() {
        let readiness = Readiness::new(Condition::DAEMON);
        let reader = readiness.clone();
        assert!(!reader.is_ready());
        readiness.mark(Condition::VolumesRefreshed);
        readiness.mark(Condition::SourcesLoaded);
        readiness.mark(Condition::CachesSynced);
        assert_eq!(reader.pending(), [Condition::StoreOpen]);
        assert!(!reader.is_ready());
        readiness.mark(Condition::StoreOpen);
        assert!(reader.is_ready());
        readiness.mark(Condition::StoreOpen);
        assert!(reader.is_ready(), "meeting a condition twice changes nothing");
    }

    #[test]
    fn no_conditions_is_ready_and_an_unawaited_one_changes_nothing() {
        let readiness = Readiness::new([]);
        assert!(readiness.is_ready());
        readiness.mark(Condition::SourcesLoaded);
        assert!(readiness.is_ready());
    }
}

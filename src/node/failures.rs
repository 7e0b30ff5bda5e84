//! What the refreshes remember between passes: the specs whose last refresh failed, and why, so
//! NodeGetVolumeStats can report a volume abnormal until its spec recovers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::Error;
use crate::domain::SpecDigest;
use crate::sources;

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

/// Specs whose last refresh failed, with why.
#[derive(Debug, Default)]
pub(super) struct Failures {
    by_spec: Mutex<HashMap<SpecDigest, Arc<Error>>>,
}

impl Failures {
    fn by_spec(&self) -> MutexGuard<'_, HashMap<SpecDigest, Arc<Error>>> {
        self.by_spec.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn get(&self, digest: &SpecDigest) -> Option<Arc<Error>> {
        self.by_spec().get(digest).cloned()
    }

    pub(super) fn remember(&self, digest: SpecDigest, error: Arc<Error>) {
        self.by_spec().insert(digest, error);
    }

    /// Forgets the spec's failure; true when it had one (it has recovered).
    pub(super) fn forget(&self, digest: &SpecDigest) -> bool {
        self.by_spec().remove(digest).is_some()
    }
}

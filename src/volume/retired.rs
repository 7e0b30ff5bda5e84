//! Generations a refresh swapped out, kept for a grace period before they are removed. A reader
//! that resolved `..data` just before the swap is still looking up a file in the old generation;
//! removing it at once (as kubelet's AtomicWriter does) makes that lookup fail with ENOENT, a
//! missing bundle, which is worse than a stale one. Readers that already opened a file are
//! unaffected either way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::Clock;

/// Far longer than any path lookup, short enough that old content does not pile up.
pub(super) const GRACE: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(super) struct Retired {
    since: Mutex<HashMap<PathBuf, Instant>>,
    clock: Clock,
}

impl Retired {
    pub(super) fn new(clock: Clock) -> Self {
        Self { since: Mutex::default(), clock }
    }

    fn since(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Instant>> {
        self.since.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `generation` was swapped out just now.
    pub(super) fn add(&self, generation: PathBuf) {
        self.since().insert(generation, self.clock.instant());
    }

    /// Swapped out less than [`GRACE`] ago: keep it.
    pub(super) fn is_recent(&self, generation: &Path) -> bool {
        let now = self.clock.instant();
        self.since().get(generation).is_some_and(|since| now.saturating_duration_since(*since) < GRACE)
    }

    /// Forgets the generations of `spec_dir` whose grace is over (they may go now).
    pub(super) fn expire(&self, spec_dir: &Path) {
        let now = self.clock.instant();
        self.since().retain(|generation, since| {
            !generation.starts_with(spec_dir) || now.saturating_duration_since(*since) < GRACE
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_is_recent_until_its_grace_is_over_and_then_forgotten() {
        let clock = Clock::manual(0);
        let retired = Retired::new(clock.clone());
        let generation = PathBuf::from("/store/abc/..2026_01_01_00_00_00.x");
        assert!(!retired.is_recent(&generation));
        retired.add(generation.clone());
        assert!(retired.is_recent(&generation));
        retired.expire(Path::new("/store/abc"));
        assert!(retired.is_recent(&generation), "still within its grace");
        clock.advance(GRACE - Duration::from_millis(1));
        assert!(retired.is_recent(&generation), "a millisecond of grace left");
        clock.advance(Duration::from_millis(1));
        assert!(!retired.is_recent(&generation));
        retired.expire(Path::new("/store/other"));
        assert_eq!(retired.since().len(), 1, "another spec's expiry leaves it");
        retired.expire(Path::new("/store/abc"));
        assert!(retired.since().is_empty());
    }
}

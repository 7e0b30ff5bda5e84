//! [`Clock`]: where the use cases and the store read the time. The daemon runs on the system's
//! clocks; a test moves a manual one by hand, so expiry, health and grace periods are checked
//! without waiting for them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

#[derive(Clone, Debug)]
pub struct Clock {
    manual: Option<Arc<Mutex<Manual>>>,
}

#[derive(Debug)]
struct Manual {
    instant: Instant,
    unix_seconds: i64,
}

impl Clock {
    /// The system's monotonic and wall clocks.
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// A clock that stands still at `unix_seconds` until [`Clock::advance`] moves it.
    pub fn manual(unix_seconds: i64) -> Self {
        Self { manual: Some(Arc::new(Mutex::new(Manual { instant: Instant::now(), unix_seconds }))) }
    }

    /// Moves a manual clock (and every clone of it) forward by `by`. A system clock moves by
    /// itself, so this leaves it alone.
    pub fn advance(&self, by: Duration) {
        if let Some(manual) = &self.manual {
            let mut manual = manual.lock().unwrap_or_else(PoisonError::into_inner);
            manual.instant += by;
            manual.unix_seconds = manual.unix_seconds.saturating_add(i64::try_from(by.as_secs()).unwrap_or(i64::MAX));
        }
    }

    /// For measuring durations (grace periods, latencies).
    pub fn instant(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(manual) => manual.lock().unwrap_or_else(PoisonError::into_inner).instant,
        }
    }

    /// Seconds since the Unix epoch, for comparing with certificates' `notAfter`.
    pub fn unix_seconds(&self) -> i64 {
        match &self.manual {
            None => OffsetDateTime::now_utc().unix_timestamp(),
            Some(manual) => manual.lock().unwrap_or_else(PoisonError::into_inner).unix_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_its_clones_move_with_it() {
        let clock = Clock::manual(1_000);
        let clone = clock.clone();
        let start = clock.instant();
        assert_eq!(clock.unix_seconds(), 1_000);
        assert_eq!(clock.instant(), start);
        clock.advance(Duration::from_secs(90));
        assert_eq!(clone.unix_seconds(), 1_090);
        assert_eq!(clone.instant() - start, Duration::from_secs(90));
    }

    #[test]
    fn the_system_clock_reads_the_wall_clock() {
        let clock = Clock::system();
        let before = OffsetDateTime::now_utc().unix_timestamp();
        clock.advance(Duration::from_secs(3600));
        let read = clock.unix_seconds();
        assert!((before..before + 60).contains(&read), "{read} is not about {before}");
    }
}

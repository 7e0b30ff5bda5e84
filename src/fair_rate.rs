//! [`FairRate`]: a token bucket per namespace under one for the whole driver. The namespace is
//! asked first, so a flooding namespace spends its own budget and leaves the driver's to the
//! others. Pure (`now` passed in); Events and new watches each keep one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Sustained rates and bursts, per namespace and for the driver.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    pub namespace_per_minute: f64,
    pub namespace_burst: f64,
    pub driver_per_minute: f64,
    pub driver_burst: f64,
}

/// Whose budget is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    Namespace,
    Driver,
}

#[derive(Debug)]
pub struct FairRate {
    rates: Rates,
    namespaces: HashMap<String, Bucket>,
    driver: Bucket,
}

impl FairRate {
    pub fn new(rates: Rates, now: Instant) -> Self {
        Self { rates, namespaces: HashMap::new(), driver: Bucket::full(rates.driver_burst, now) }
    }

    /// Takes one token from `namespace` and one from the driver, or neither.
    ///
    /// # Errors
    /// The budget that is spent, the namespace's first.
    pub fn admit(&mut self, namespace: &str, now: Instant) -> Result<(), Over> {
        let rates = self.rates;
        let bucket =
            self.namespaces.entry(namespace.to_owned()).or_insert_with(|| Bucket::full(rates.namespace_burst, now));
        if bucket.tokens_at(rates.namespace_per_minute, rates.namespace_burst, now) < 1.0 {
            return Err(Over::Namespace);
        }
        if self.driver.tokens_at(rates.driver_per_minute, rates.driver_burst, now) < 1.0 {
            return Err(Over::Driver);
        }
        bucket.take(rates.namespace_per_minute, rates.namespace_burst, now);
        self.driver.take(rates.driver_per_minute, rates.driver_burst, now);
        Ok(())
    }

    /// How long until [`FairRate::admit`] of `namespace` could succeed (zero: now).
    pub fn wait(&self, namespace: &str, now: Instant) -> Duration {
        let rates = self.rates;
        let namespace = self
            .namespaces
            .get(namespace)
            .map_or(Duration::ZERO, |bucket| bucket.until_one(rates.namespace_per_minute, rates.namespace_burst, now));
        namespace.max(self.driver.until_one(rates.driver_per_minute, rates.driver_burst, now))
    }

    /// Forgets the namespaces whose bucket has filled up again (an absent bucket is a full one).
    pub fn forget_full(&mut self, now: Instant) {
        let (rate, burst) = (self.rates.namespace_per_minute, self.rates.namespace_burst);
        self.namespaces.retain(|_, bucket| bucket.tokens_at(rate, burst, now) < burst);
    }

    pub fn namespaces_remembered(&self) -> usize {
        self.namespaces.len()
    }
}

/// A token bucket, refilled continuously from `at`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self { tokens: burst, at: now }
    }

    fn tokens_at(&self, per_minute: f64, burst: f64, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at);
        (self.tokens + elapsed.as_secs_f64() * per_minute / 60.0).min(burst)
    }

    fn take(&mut self, per_minute: f64, burst: f64, now: Instant) {
        self.tokens = self.tokens_at(per_minute, burst, now) - 1.0;
        // A clock read before `at` (another thread's `now`) must not move `at` back.
        self.at = self.at.max(now);
    }

    fn until_one(&self, per_minute: f64, burst: f64, now: Instant) -> Duration {
        let missing = 1.0 - self.tokens_at(per_minute, burst, now);
        if missing <= 0.0 || per_minute <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(missing * 60.0 / per_minute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: Rates =
        Rates { namespace_per_minute: 60.0, namespace_burst: 2.0, driver_per_minute: 120.0, driver_burst: 3.0 };

    #[test]
    fn a_namespace_spends_its_burst_then_waits_its_rate_and_leaves_the_driver_to_others() {
        let start = Instant::now();
        let mut rate = FairRate::new(RATES, start);
        assert_eq!(rate.admit("a", start), Ok(()));
        assert_eq!(rate.admit("a", start), Ok(()));
        assert_eq!(rate.admit("a", start), Err(Over::Namespace), "a's burst is spent, not the driver's");
        assert_eq!(rate.wait("a", start), Duration::from_secs(1), "60 a minute: one a second");
        assert_eq!(rate.wait("b", start), Duration::ZERO, "the driver has one left, for b");
        assert_eq!(rate.admit("b", start), Ok(()));
        assert_eq!(rate.admit("c", start), Err(Over::Driver), "three at once for the driver");
        assert_eq!(rate.wait("c", start), Duration::from_millis(500), "120 a minute");

        let later = start + Duration::from_secs(1);
        assert_eq!(rate.admit("a", later), Ok(()), "refilled at its rate");
        rate.forget_full(later + Duration::from_secs(60));
        assert_eq!(rate.namespaces_remembered(), 0, "full buckets are forgotten");
    }
}

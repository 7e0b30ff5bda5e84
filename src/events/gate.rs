//! [`EventGate`]: which of a refresh's pod events are worth a request to the API server. Pure
//! (no runtime, no client, `now` passed in) so the dedup and the limits are tested without
//! waiting.
//!
//! - **Dedup per spec.** A spec's pods are told of a failure once per distinct message: the
//!   same failure again (a tenant patching a bad ConfigMap in a loop) sends nothing, even though
//!   kube's recorder would fold it into a series, because each fold is still a request. A pod
//!   that joined the spec since, or was passed over by the limits, is told on the next failure.
//! - **Limits.** A token bucket per namespace and one for the whole driver: one namespace's flood
//!   uses its own budget, never all of the driver's (whose identity the API server's priority and
//!   fairness shares across every namespace on the node). Over a limit, the event is dropped.
//! - **Recoveries** go only to the pods that were told of the failure, and are not charged: each
//!   answers one Warning that was, so they at most double the limited rate, and a pod never keeps
//!   a stale Warning because its recovery was dropped.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash as _, Hasher as _};
use std::time::Instant;

use crate::domain::{PodInfo, SpecDigest};
use crate::fair_rate::{FairRate, Over, Rates};

/// How many events the gate lets through.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Events per namespace, sustained.
    pub namespace_per_minute: f64,
    /// Events per namespace at once: a spec failing on all of a namespace's pods at a time.
    pub namespace_burst: f64,
    /// Events of the whole driver, sustained and at once.
    pub driver_per_minute: f64,
    pub driver_burst: f64,
    /// Specs whose last failure is remembered; the oldest is forgotten beyond that (it costs at
    /// most one repeated event per pod).
    pub max_specs: usize,
}

impl Default for Limits {
    /// 10 a minute and 20 at once per namespace, 100 a minute for the driver: a spec failing on
    /// 20 pods is told at once, a namespace patching bad content in a loop costs the API server
    /// one request every 6 s, and all namespaces together fewer than two a second.
    fn default() -> Self {
        Self {
            namespace_per_minute: 10.0,
            namespace_burst: 20.0,
            driver_per_minute: 100.0,
            driver_burst: 100.0,
            max_specs: 4096,
        }
    }
}

impl Limits {
    fn rates(&self) -> Rates {
        Rates {
            namespace_per_minute: self.namespace_per_minute,
            namespace_burst: self.namespace_burst,
            driver_per_minute: self.driver_per_minute,
            driver_burst: self.driver_burst,
        }
    }
}

/// Why an event was not sent, the `reason` label of `trustmount_events_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dropped {
    /// The pod was already told this failure.
    Duplicate,
    /// Its namespace used its budget.
    NamespaceLimit,
    /// The driver used its budget.
    DriverLimit,
}

impl Dropped {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::NamespaceLimit => "namespace_limit",
            Self::DriverLimit => "driver_limit",
        }
    }
}

/// What to do with one refresh's events: send to `send`, count `dropped`.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    pub send: Vec<PodInfo>,
    pub dropped: Vec<Dropped>,
}

#[derive(Debug)]
pub struct EventGate {
    limits: Limits,
    /// Per spec, each pod told of a failure and the hash of what it was told.
    told: HashMap<SpecDigest, Told>,
    rate: FairRate,
    /// Orders the specs by last failure, for forgetting the oldest.
    ticks: u64,
}

#[derive(Debug, Default)]
struct Told {
    pods: HashMap<String, u64>,
    tick: u64,
}

impl EventGate {
    pub fn new(limits: Limits, now: Instant) -> Self {
        Self { limits, told: HashMap::new(), rate: FairRate::new(limits.rates(), now), ticks: 0 }
    }

    /// A refresh of `spec` failed with `message`; `pods` are the spec's pods now.
    pub fn failed(&mut self, spec: &SpecDigest, pods: Vec<PodInfo>, message: &str, now: Instant) -> Verdict {
        let message = hash(message);
        self.ticks += 1;
        let tick = self.ticks;
        let mut told = self.told.remove(spec).unwrap_or_default();
        // Only the spec's pods now: one that left will not be told again, so forget it.
        let current: HashSet<String> = pods.iter().map(pod_key).collect();
        told.pods.retain(|pod, _| current.contains(pod));
        told.tick = tick;
        let mut verdict = Verdict::default();
        for pod in pods {
            let key = pod_key(&pod);
            if told.pods.get(&key) == Some(&message) {
                verdict.dropped.push(Dropped::Duplicate);
                continue;
            }
            match self.admit(&pod.namespace, now) {
                Ok(()) => {
                    told.pods.insert(key, message);
                    verdict.send.push(pod);
                }
                Err(dropped) => verdict.dropped.push(dropped),
            }
        }
        if !told.pods.is_empty() {
            self.told.insert(spec.clone(), told);
        }
        self.forget_oldest_beyond_cap();
        verdict
    }

    /// `spec` is current again: the pods told of its failure hear so (uncharged, see the module
    /// comment), and its next failure is news whatever it says.
    pub fn recovered(&mut self, spec: &SpecDigest, pods: Vec<PodInfo>) -> Vec<PodInfo> {
        let Some(told) = self.told.remove(spec) else { return Vec::new() };
        let mut seen = HashSet::new();
        pods.into_iter()
            .filter(|pod| {
                let key = pod_key(pod);
                told.pods.contains_key(&key) && seen.insert(key)
            })
            .collect()
    }

    /// Forgets the specs `live` does not keep (no volume uses them any more), and the namespaces
    /// whose bucket has filled up again (an absent bucket is a full one).
    pub fn retain(&mut self, live: impl Fn(&SpecDigest) -> bool, now: Instant) {
        self.told.retain(|spec, _| live(spec));
        self.rate.forget_full(now);
    }

    fn admit(&mut self, namespace: &str, now: Instant) -> Result<(), Dropped> {
        self.rate.admit(namespace, now).map_err(|over| match over {
            Over::Namespace => Dropped::NamespaceLimit,
            Over::Driver => Dropped::DriverLimit,
        })
    }

    fn forget_oldest_beyond_cap(&mut self) {
        while self.told.len() > self.limits.max_specs {
            let Some(oldest) = self.told.iter().min_by_key(|(_, told)| told.tick).map(|(spec, _)| spec.clone()) else {
                return;
            };
            self.told.remove(&oldest);
        }
    }

    #[cfg(test)]
    fn specs_remembered(&self) -> usize {
        self.told.len()
    }

    #[cfg(test)]
    fn namespaces_remembered(&self) -> usize {
        self.rate.namespaces_remembered()
    }
}

/// How a pod is told apart: its UID, or its name where a publish had none.
fn pod_key(pod: &PodInfo) -> String {
    if pod.uid.is_empty() { format!("{}/{}", pod.namespace, pod.name) } else { pod.uid.clone() }
}

/// Messages are remembered by hash: up to 1 kB each, for every spec, is not worth keeping.
fn hash(message: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    message.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pod(namespace: &str, name: &str) -> PodInfo {
        PodInfo {
            name: name.into(),
            namespace: namespace.into(),
            uid: format!("uid-{namespace}-{name}"),
            service_account: "default".into(),
            ephemeral: true,
        }
    }

    fn pods(namespace: &str, count: usize) -> Vec<PodInfo> {
        (0..count).map(|i| pod(namespace, &format!("web-{i}"))).collect()
    }

    /// A digest of its own per name.
    fn spec(name: &str) -> SpecDigest {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        SpecDigest::parse(&format!("{hex:0>32}")).expect("a valid digest")
    }

    /// The time to refill one namespace's bucket from empty.
    fn namespace_refill(limits: &Limits) -> Duration {
        Duration::from_secs_f64(limits.namespace_burst * 60.0 / limits.namespace_per_minute)
    }

    fn names(sent: &[PodInfo]) -> Vec<&str> {
        sent.iter().map(|pod| pod.name.as_str()).collect()
    }

    fn count(verdict: &Verdict, reason: Dropped) -> usize {
        verdict.dropped.iter().filter(|dropped| **dropped == reason).count()
    }

    /// Limits far above what a test sends, so only the dedup decides.
    fn unlimited() -> Limits {
        Limits {
            namespace_per_minute: 1e9,
            namespace_burst: 1e9,
            driver_per_minute: 1e9,
            driver_burst: 1e9,
            max_specs: 4096,
        }
    }

    #[test]
    fn the_same_failure_again_sends_nothing_and_a_new_message_or_a_recovery_sends_again() {
        let now = Instant::now();
        let mut gate = EventGate::new(unlimited(), now);
        let (a, three) = (spec("a"), pods("team-a", 3));
        assert_eq!(gate.failed(&a, three.clone(), "private key", now).send.len(), 3);
        let repeat = gate.failed(&a, three.clone(), "private key", now);
        assert!(repeat.send.is_empty(), "{repeat:?}");
        assert_eq!(count(&repeat, Dropped::Duplicate), 3);
        assert_eq!(gate.failed(&a, three.clone(), "corrupt block", now).send.len(), 3, "a new message is news");
        assert_eq!(names(&gate.recovered(&a, three.clone())), ["web-0", "web-1", "web-2"]);
        assert!(gate.recovered(&a, three.clone()).is_empty(), "a recovery is told once");
        assert_eq!(gate.failed(&a, three, "corrupt block", now).send.len(), 3, "after a recovery, news again");
    }

    #[test]
    fn dedup_is_per_spec_and_a_pod_that_joined_a_failing_spec_is_told() {
        let now = Instant::now();
        let mut gate = EventGate::new(unlimited(), now);
        let (a, b) = (spec("a"), spec("b"));
        gate.failed(&a, pods("team-a", 2), "private key", now);
        assert_eq!(gate.failed(&b, pods("team-a", 2), "private key", now).send.len(), 2, "another spec's pods");
        let joined = gate.failed(&a, pods("team-a", 3), "private key", now);
        assert_eq!(names(&joined.send), ["web-2"]);
        // Two volumes of one spec in one pod: one event.
        let twice = vec![pod("team-c", "app"), pod("team-c", "app")];
        assert_eq!(gate.failed(&spec("c"), twice.clone(), "x", now).send.len(), 1);
        assert_eq!(gate.recovered(&spec("c"), twice).len(), 1);
    }

    #[test]
    fn a_namespace_gets_its_burst_then_its_rate_and_leaves_the_others_their_budget() {
        let start = Instant::now();
        let mut gate = EventGate::new(Limits::default(), start);
        let (noisy, quiet) = (spec("noisy"), spec("quiet"));
        let first = gate.failed(&noisy, pods("noisy", 30), "message 0", start);
        assert_eq!((first.send.len(), count(&first, Dropped::NamespaceLimit)), (20, 10), "the burst is 20");
        // A new message every second for a minute: 10 more get through, one per 6 s.
        let mut sent = 0;
        for second in 1..=60 {
            let now = start + Duration::from_secs(second);
            sent += gate.failed(&noisy, pods("noisy", 30), &format!("message {second}"), now).send.len();
        }
        assert_eq!(sent, 10);
        // The noisy namespace used only its own budget.
        let later = start + Duration::from_secs(60);
        assert_eq!(gate.failed(&quiet, pods("quiet", 20), "private key", later).send.len(), 20);
    }

    #[test]
    fn the_driver_cap_holds_across_namespaces() {
        let start = Instant::now();
        let mut gate = EventGate::new(Limits::default(), start);
        let mut sent = 0;
        let mut driver_drops = 0;
        for namespace in 0..10 {
            let verdict =
                gate.failed(&spec(&format!("s{namespace}")), pods(&format!("ns-{namespace}"), 15), "bad", start);
            sent += verdict.send.len();
            driver_drops += count(&verdict, Dropped::DriverLimit);
        }
        assert_eq!((sent, driver_drops), (100, 50));
        // 30 s later the driver has 50 tokens again.
        let later = start + Duration::from_secs(30);
        let verdict = gate.failed(&spec("late"), pods("ns-late", 20), "bad", later);
        assert_eq!(verdict.send.len(), 20);
    }

    #[test]
    fn a_pod_passed_over_by_the_limit_is_told_later_and_recoveries_go_only_to_pods_told() {
        let start = Instant::now();
        let limits = Limits { namespace_burst: 2.0, namespace_per_minute: 60.0, ..Limits::default() };
        let mut gate = EventGate::new(limits, start);
        let (a, b) = (spec("a"), spec("b"));
        let first = gate.failed(&a, pods("team-a", 3), "private key", start);
        assert_eq!(names(&first.send), ["web-0", "web-1"]);
        let retry = gate.failed(&a, pods("team-a", 3), "private key", start + Duration::from_secs(1));
        assert_eq!(names(&retry.send), ["web-2"], "the one passed over, once a token is back");
        assert_eq!(gate.recovered(&a, pods("team-a", 3)).len(), 3);

        let mut gate = EventGate::new(limits, start);
        gate.failed(&b, pods("team-b", 3), "private key", start);
        assert_eq!(names(&gate.recovered(&b, pods("team-b", 3))), ["web-0", "web-1"], "web-2 never got a Warning");
    }

    #[test]
    fn specs_no_longer_live_and_full_buckets_are_forgotten_and_the_spec_map_is_capped() {
        let start = Instant::now();
        let mut gate = EventGate::new(Limits { max_specs: 3, ..Limits::default() }, start);
        for i in 0..5 {
            gate.failed(&spec(&format!("s{i}")), pods(&format!("ns-{i}"), 1), "bad", start);
        }
        assert_eq!(gate.specs_remembered(), 3);
        // The newest three are kept: s4's repeat is a duplicate, s0's is news.
        assert!(gate.failed(&spec("s4"), pods("ns-4", 1), "bad", start).send.is_empty());
        assert_eq!(gate.failed(&spec("s0"), pods("ns-0", 1), "bad", start).send.len(), 1);
        let live = spec("s0");
        gate.retain(|digest| *digest == live, start);
        assert_eq!(gate.specs_remembered(), 1);
        assert_eq!(gate.namespaces_remembered(), 5, "buckets not yet full are kept");
        gate.retain(|_| true, start + namespace_refill(&Limits::default()));
        assert_eq!(gate.namespaces_remembered(), 0);
    }
}

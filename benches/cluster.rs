//! `cargo bench --bench cluster`: cluster sources (ConfigMaps, ClusterTrustBundles) against the
//! real kube-apiserver + etcd of tests/support/control_plane.rs, over the real CSI socket with
//! real mounts. Every figure stands beside a baseline run side by side in the same run.
//!
//! Sections, picked by a word (`cargo bench --bench cluster -- watches`); no word runs all:
//! - `warm`: publish+unpublish of a volume with a ConfigMap and a ClusterTrustBundle whose spec
//!   is already rendered, against the same volume with local sources only (`--extra-pem`), on
//!   the same connected driver and on a standalone one; rounds interleaved.
//! - `first`: the first publish naming a ConfigMap never referenced before (its watch starts and
//!   the publish waits for the first list), against a cold local spec (a new namespace).
//! - `requests`: API requests per publish as the API server's audit log records them (the
//!   driver's own user only, never the driver's own count): warm publishes, and the first
//!   publish of a new reference.
//! - `watches`: 500 volumes over 50 namespaces sharing 5 ConfigMap names: the watches the API
//!   server holds open for the driver (audit log, and `apiserver_longrunning_requests`) against
//!   the distinct objects referenced, and that unpublishing all drops them.
//! - `memory`: Shmem + Slab growth (/proc/meminfo) and the daemon's RSS while one volume per
//!   namespace is published in 1000 namespaces: local sources only (the baseline), a ConfigMap
//!   with the same CA in every namespace, and one with a CA of each namespace's own.
//!
//! - `noisy`: namespace B's warm and cold publishes and CA rotations on one driver, quiet and
//!   while namespace A attacks it (three 400-certificate ConfigMaps patched every 200 ms, and
//!   volumes past A's watch and spec budgets published again and again), side by side.
//!
//! With `TRUSTMOUNT_BENCH_BASELINE_BIN=<another build of trustmount>`, `warm` and `first` also
//! run a connected driver of that build, its rounds interleaved with this build's, and give
//! this build's figures as a ratio to that build's.
//!
//! It mounts, so it re-executes itself inside a private mount namespace first; nothing reaches
//! the host. Needs root, and the Kubernetes components `tests/run` builds (found as
//! tests/support/control_plane.rs finds them: `TRUSTMOUNT_K8S_BIN`, else the build's cache).

// A bench uses a part of the tests' support (the test suite uses all of it).
#[allow(dead_code)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::ClusterTrustBundle;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::api::{Api, PostParams};
use support::certs::TestCa;
use support::client::{publish_request, unpublish_request};
use support::control_plane::ControlPlane;
use support::daemon::{Daemon, DaemonOptions};
use support::deploy;
use support::measure::{self, ms, peak_rss_kib, percentile, ratio, rss_kib, shmem_and_slab_kib, used_bytes};

const IN_NAMESPACE: &str = "TRUSTMOUNT_BENCH_IN_MOUNT_NS";
const BASELINE_ENV: &str = "TRUSTMOUNT_BENCH_BASELINE_BIN";
const SECTIONS: [&str; 6] = ["warm", "first", "requests", "watches", "memory", "noisy"];
/// The CSIDriver deploy/kubernetes/csidriver.yaml ships (the driver's start-up check reads it).
const SHIPPED_DRIVER: &str = "csi.trustmount.io";

/// Warm cycles per case and concurrency, in `WARM_ROUNDS` interleaved rounds.
const WARM_OPERATIONS: usize = 1000;
const WARM_ROUNDS: usize = 10;
const CONCURRENCY: usize = 32;
/// First publishes of a new reference (each with a ConfigMap of its own), and as many cold
/// local ones, alternating.
const FIRST_OPERATIONS: usize = 200;
/// Warm cycles per case whose requests are counted, and first publishes counted one by one.
const REQUEST_WARM_CYCLES: usize = 200;
const REQUEST_FIRST_PUBLISHES: usize = 20;
const WATCH_VOLUMES: usize = 500;
const WATCH_NAMESPACES: usize = 50;
const WATCH_NAMES: usize = 5;
const MEMORY_NAMESPACES: usize = 1000;
/// Room for 1000 specs of different content (each has its own bundle file and Java store).
const MEMORY_STORE_SIZE: &str = "2Gi";
/// B's warm and cold cycles and rotations per run of `noisy`.
const NOISY_CYCLES: usize = 500;
const NOISY_ROTATIONS: usize = 20;
/// A's heavy ConfigMaps and the certificates in each.
const NOISY_HEAVY: usize = 3;
const NOISY_HEAVY_CERTIFICATES: usize = 400;
/// Bounds every wait for the API server to show something (audit line, gauge); never a figure.
const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// API writes in flight while setting up (namespaces, ConfigMaps).
const SETUP_CONCURRENCY: usize = 8;

fn main() {
    measure::reexec_in_private_mount_namespace(IN_NAMESPACE);
    let words = measure::sections();
    for word in &words {
        assert!(SECTIONS.contains(&word.as_str()), "unknown section {word:?}; pick from {SECTIONS:?}");
    }
    let wanted = |section: &str| words.is_empty() || words.iter().any(|w| w == section);
    let plane = ControlPlane::shared();
    support::block_on(async {
        let bench = Bench::new(plane).await;
        if wanted("warm") {
            bench.warm().await;
        }
        if wanted("first") {
            bench.first().await;
        }
        if wanted("requests") {
            bench.requests().await;
        }
        if wanted("watches") {
            bench.watches().await;
        }
        if wanted("memory") {
            bench.memory().await;
        }
        if wanted("noisy") {
            bench.noisy().await;
        }
    });
}

/// The control plane, its admin client, and what every section shares: the local CA every
/// driver gets as `--extra-pem`, and one ClusterTrustBundle.
struct Bench {
    plane: &'static ControlPlane,
    admin: kube::Client,
    dir: tempfile::TempDir,
    local_ca: TestCa,
    cluster_ca: TestCa,
    trust_bundle: String,
    /// Another build of the driver to run beside this one (`warm`, `first`).
    baseline: Option<PathBuf>,
}

/// A connected driver with an identity of its own (so the audit log tells its requests apart),
/// and the audit log read as that identity's requests.
struct Driver {
    daemon: Arc<Daemon>,
    audit: Audit,
    /// The driver's identity, for sentinel requests that close an audit window.
    as_driver: Api<ConfigMap>,
    _dir: tempfile::TempDir,
}

/// Namespace B's figures in one run of `noisy`.
#[derive(Default)]
struct VictimTimings {
    warm: Vec<Duration>,
    cold: Vec<Duration>,
    rotations: Vec<Duration>,
}

/// Namespace A's heavy ConfigMaps swapped between two versions every 200 ms until `stop`; the
/// patches made.
async fn patch_loop(
    admin: kube::Client,
    namespace: String,
    heavy_names: Vec<String>,
    heavy: Arc<Vec<String>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    let maps: Api<ConfigMap> = Api::namespaced(admin, &namespace);
    let mut patches = 0;
    let mut round = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for name in &heavy_names {
            let map = ConfigMap {
                data: Some(BTreeMap::from([("ca.crt".to_owned(), heavy[(round + 1) % 2].clone())])),
                ..ConfigMap::default()
            };
            support::objects::put(&maps, name, map).await;
            patches += 1;
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    patches
}

/// Namespace A's volumes past its watch budget (five of 64 names) and its spec budget (36
/// distinct specs), published and unpublished again until `stop`. (refusals by code, published).
async fn flood_loop(
    daemon: Arc<Daemon>,
    namespace: String,
    heavy_name: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (BTreeMap<String, usize>, usize) {
    let (mut refused, mut published) = (BTreeMap::new(), 0);
    let mut flood: Vec<(Vec<(String, String)>, String)> = Vec::new();
    for v in 0..5 {
        let names: Vec<String> = (0..63).map(|i| format!("absent-{v}-{i}")).chain([heavy_name.clone()]).collect();
        let attributes = vec![
            ("csi.storage.k8s.io/pod.namespace".to_owned(), namespace.clone()),
            ("configMaps".to_owned(), names.join(",")),
            ("optional".to_owned(), "true".to_owned()),
        ];
        flood.push((attributes, format!("noisy-a-names-{v}")));
    }
    // 36 distinct specs (3 layouts × 3 stores × 2 × 2), past the budget of 32.
    for s in 0..36 {
        let attributes = vec![
            ("csi.storage.k8s.io/pod.namespace".to_owned(), namespace.clone()),
            ("configMaps".to_owned(), heavy_name.clone()),
            ("layout".to_owned(), ["debian", "rhel", "suse"][s % 3].to_owned()),
            ("javaTruststore".to_owned(), ["none", "jks", "pkcs12"][(s / 3) % 3].to_owned()),
            ("expired".to_owned(), ["drop", "keep"][(s / 9) % 2].to_owned()),
            ("systemRoots".to_owned(), ["true", "false"][(s / 18) % 2].to_owned()),
        ];
        flood.push((attributes, format!("noisy-a-spec-{s}")));
    }
    let mut round = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let mut up = Vec::new();
        for (attributes, volume) in &flood {
            let job = job(&daemon, &format!("{volume}-{round}"), attributes);
            let pairs: Vec<(&str, &str)> = attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let request = publish_request(&job.volume, &job.target, &pairs);
            match daemon.node().node_publish_volume(request).await {
                Ok(_) => {
                    published += 1;
                    up.push(job);
                }
                // RESOURCE_EXHAUSTED past a budget; UNAVAILABLE when its watches' starts
                // (rate-limited per namespace) outlast the first-sync wait.
                Err(status) => *refused.entry(format!("{:?}", status.code())).or_default() += 1,
            }
        }
        for job in &up {
            call_unpublish(&daemon, job).await;
        }
        round += 1;
    }
    (refused, published)
}

/// Volume attributes, as the kubelet passes them.
type Attributes = [(String, String)];

/// One volume to publish and unpublish.
struct Job {
    volume: String,
    target: PathBuf,
    attributes: Vec<(String, String)>,
}

#[derive(Default)]
struct Timings {
    publishes: Vec<Duration>,
    unpublishes: Vec<Duration>,
    cycles: Vec<Duration>,
    elapsed: Duration,
}

impl Timings {
    fn extend(&mut self, other: Timings) {
        self.publishes.extend(other.publishes);
        self.unpublishes.extend(other.unpublishes);
        self.cycles.extend(other.cycles);
        self.elapsed += other.elapsed;
    }

    fn sort(&mut self) {
        self.publishes.sort();
        self.unpublishes.sort();
        self.cycles.sort();
    }
}

impl Bench {
    async fn new(plane: &'static ControlPlane) -> Self {
        let admin = plane.admin_client().await;
        // Built from source, the API server reports no release in /version: tests/k8s pins it.
        println!(
            "trustmount cluster-source benchmark ({} cores; kube-apiserver + etcd as tests/k8s pins them, on this machine)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        if Api::<CSIDriver>::all(admin.clone()).get_opt(SHIPPED_DRIVER).await.expect("get CSIDriver").is_none() {
            deploy::apply(&admin, &deploy::manifest("csidriver.yaml")).await;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let local_ca = TestCa::new(dir.path(), "local");
        let cluster_ca = TestCa::new(dir.path(), "cluster");
        let bundle_ca = TestCa::new(dir.path(), "bundle");
        let trust_bundle = format!("bench-{}", std::process::id());
        let mut bundle = ClusterTrustBundle::default();
        bundle.metadata.name = Some(trust_bundle.clone());
        bundle.spec.trust_bundle = bundle_ca.pem.clone();
        Api::<ClusterTrustBundle>::all(admin.clone())
            .create(&PostParams::default(), &bundle)
            .await
            .expect("create the ClusterTrustBundle");
        let baseline = std::env::var_os(BASELINE_ENV).map(PathBuf::from);
        Self { plane, admin, dir, local_ca, cluster_ca, trust_bundle, baseline }
    }

    async fn namespace(&self, name: &str) -> String {
        create_namespaces(&self.admin, &[name.to_owned()]).await;
        name.to_owned()
    }

    /// A driver with `--kubeconfig` under an identity bound to the shipped ClusterRole (made in
    /// namespace `bench-<label>`), `--extra-pem` the local CA, plus `extra_args`.
    async fn driver(&self, label: &str, extra_args: &[&str]) -> Driver {
        self.driver_of(label, extra_args, None).await
    }

    /// [`Bench::driver`] of another build of the driver (`None`: this one).
    async fn driver_of(&self, label: &str, extra_args: &[&str], binary: Option<PathBuf>) -> Driver {
        let namespace = self.namespace(&format!("bench-{label}")).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = deploy::driver_identity(self.plane, &self.admin, &namespace, dir.path()).await;
        let audit = Audit::new(&self.plane.audit_log, &identity.user);
        let mut args = vec!["--kubeconfig".to_owned(), identity.kubeconfig.display().to_string()];
        args.extend(extra_args.iter().map(|arg| (*arg).to_owned()));
        let options =
            DaemonOptions { extra_args: args, binary, ..DaemonOptions::default() }.extra_pem(&self.local_ca.cert_path);
        let daemon = Arc::new(Daemon::start(options).await);
        let as_driver = Api::namespaced(self.plane.token_client(&identity.token), &namespace);
        Driver { daemon, audit, as_driver, _dir: dir }
    }

    /// The same driver without cluster access: local sources only.
    async fn standalone(&self) -> Arc<Daemon> {
        Arc::new(Daemon::start(DaemonOptions::default().extra_pem(&self.local_ca.cert_path)).await)
    }

    fn local_attributes(namespace: &str) -> Vec<(String, String)> {
        vec![("csi.storage.k8s.io/pod.namespace".to_owned(), namespace.to_owned())]
    }

    fn cluster_attributes(&self, namespace: &str, config_map: &str) -> Vec<(String, String)> {
        let mut attributes = Self::local_attributes(namespace);
        attributes.push(("configMaps".to_owned(), config_map.to_owned()));
        attributes.push(("clusterTrustBundles".to_owned(), self.trust_bundle.clone()));
        attributes
    }

    // ---- warm ----------------------------------------------------------------------------

    async fn warm(&self) {
        let driver = self.driver("warm", &[]).await;
        let standalone = self.standalone().await;
        let namespace = self.namespace("bench-warm-pods").await;
        put_config_maps(&self.admin, vec![(namespace.clone(), "corp-ca".to_owned(), self.cluster_ca.pem.clone())])
            .await;
        let local = Self::local_attributes(&namespace);
        let cluster = self.cluster_attributes(&namespace, "corp-ca");
        let mut cases: Vec<(&str, &Arc<Daemon>, &Attributes)> = vec![
            ("local, standalone driver", &standalone, &local),
            ("local, connected driver", &driver.daemon, &local),
            ("cluster (ConfigMap + CTB)", &driver.daemon, &cluster),
        ];
        // The baseline build's rows 3 and 4 stand beside this build's rows 1 and 2.
        let base = match &self.baseline {
            Some(binary) => Some(self.driver_of("warm-base", &[], Some(binary.clone())).await),
            None => None,
        };
        if let Some(base) = &base {
            cases.push(("local, connected (baseline)", &base.daemon, &local));
            cases.push(("cluster (baseline)", &base.daemon, &cluster));
        }
        // Anchors keep each spec rendered (and the cluster one's watches running), so every
        // measured publish is warm.
        for (i, (_, daemon, attributes)) in cases.iter().enumerate() {
            let anchor = job(daemon, &format!("warm-anchor-{i}"), attributes);
            call_publish(daemon, &anchor).await;
        }
        println!(
            "\nwarm publish+unpublish, {WARM_OPERATIONS} volumes per row in {WARM_ROUNDS} interleaved rounds (ms); ratio = row / \"local, connected driver\""
        );
        println!(
            "{:<28} {:>4} {:>8} {:>8} {:>10} {:>10} {:>10} {:>7} {:>12} {:>13} {:>14}",
            "",
            "in flight",
            "pub p50",
            "pub p99",
            "unpub p50",
            "unpub p99",
            "cycle p50",
            "ops/s",
            "ratio pub p50",
            "ratio pub p99",
            "ratio cycle p50"
        );
        for concurrency in [1, CONCURRENCY] {
            let mut timings: Vec<Timings> = cases.iter().map(|_| Timings::default()).collect();
            for round in 0..WARM_ROUNDS {
                for offset in 0..cases.len() {
                    let case = (round + offset) % cases.len();
                    let (_, daemon, attributes) = &cases[case];
                    let jobs = (0..WARM_OPERATIONS / WARM_ROUNDS)
                        .map(|i| job(daemon, &format!("warm-{concurrency}-{case}-{round}-{i}"), attributes))
                        .collect();
                    timings[case].extend(cycles(daemon, jobs, concurrency).await);
                }
            }
            timings.iter_mut().for_each(Timings::sort);
            let baseline = &timings[1];
            for ((name, _, _), t) in cases.iter().zip(&timings) {
                println!(
                    "{name:<28} {concurrency:>9} {:>8.3} {:>8.3} {:>10.3} {:>10.3} {:>10.3} {:>7.0} {:>12.2}x {:>12.2}x {:>13.2}x",
                    ms(percentile(&t.publishes, 50)),
                    ms(percentile(&t.publishes, 99)),
                    ms(percentile(&t.unpublishes, 50)),
                    ms(percentile(&t.unpublishes, 99)),
                    ms(percentile(&t.cycles, 50)),
                    (2 * t.publishes.len()) as f64 / t.elapsed.as_secs_f64(),
                    ratio(percentile(&t.publishes, 50), percentile(&baseline.publishes, 50)),
                    ratio(percentile(&t.publishes, 99), percentile(&baseline.publishes, 99)),
                    ratio(percentile(&t.cycles, 50), percentile(&baseline.cycles, 50)),
                );
            }
            for (ours, theirs) in [(1, 3), (2, 4)].into_iter().filter(|&(_, theirs)| theirs < cases.len()) {
                println!("  {}", versus(cases[ours].0, &timings[ours], &timings[theirs]));
            }
        }
        println!("  target: cluster within 10% of local (ratio <= 1.10x)");
    }

    // ---- first ---------------------------------------------------------------------------

    async fn first(&self) {
        // Every first publish is a spec of its own in one namespace: over its default budgets.
        let budgets = [
            "--max-namespace-specs",
            "100000",
            "--max-namespace-store-bytes",
            "1Gi",
            "--max-namespace-store-files",
            "100000000",
        ];
        let mut drivers = vec![("", self.driver("first", &budgets).await)];
        if let Some(binary) = &self.baseline {
            drivers.push((" (baseline)", self.driver_of("first-base", &[], Some(binary.clone())).await));
        }
        let namespace = self.namespace("bench-first-pods").await;
        // ConfigMaps of each driver's own, so each publish is that driver's first of its name.
        let names: Vec<Vec<String>> =
            (0..drivers.len()).map(|d| (0..FIRST_OPERATIONS).map(|i| format!("fresh-{d}-{i}")).collect()).collect();
        put_config_maps(
            &self.admin,
            names.iter().flatten().map(|name| (namespace.clone(), name.clone(), self.cluster_ca.pem.clone())).collect(),
        )
        .await;
        // The ClusterTrustBundle watch is running: only the ConfigMap is new.
        let mut bundle_only = Self::local_attributes(&namespace);
        bundle_only.push(("clusterTrustBundles".to_owned(), self.trust_bundle.clone()));
        for (_, driver) in &drivers {
            call_publish(&driver.daemon, &job(&driver.daemon, "first-anchor", &bundle_only)).await;
        }

        let mut first: Vec<Timings> = drivers.iter().map(|_| Timings::default()).collect();
        let mut cold: Vec<Timings> = drivers.iter().map(|_| Timings::default()).collect();
        // `i` also picks which driver goes first, not only the names.
        #[allow(clippy::needless_range_loop)]
        for i in 0..FIRST_OPERATIONS {
            // Which driver goes first alternates too.
            for offset in 0..drivers.len() {
                let d = (i + offset) % drivers.len();
                let daemon = &drivers[d].1.daemon;
                let cluster = job(daemon, &format!("first-{i}"), &self.cluster_attributes(&namespace, &names[d][i]));
                let local = job(daemon, &format!("cold-{i}"), &Self::local_attributes(&format!("cold-{i}")));
                // Alternating which goes first, so neither always follows the other's unpublish.
                if i % 2 == 0 {
                    first[d].extend(cycles(daemon, vec![cluster], 1).await);
                    cold[d].extend(cycles(daemon, vec![local], 1).await);
                } else {
                    cold[d].extend(cycles(daemon, vec![local], 1).await);
                    first[d].extend(cycles(daemon, vec![cluster], 1).await);
                }
            }
        }
        first.iter_mut().chain(&mut cold).for_each(Timings::sort);
        println!("\nfirst publish of a new reference, {FIRST_OPERATIONS} each, sequential, alternating (ms)");
        println!(
            "{:<65} {:>8} {:>8} {:>10} {:>10} {:>12} {:>12}",
            "", "pub p50", "pub p99", "unpub p50", "unpub p99", "ratio p50", "ratio p99"
        );
        for (((build, _), first), cold) in drivers.iter().zip(&first).zip(&cold) {
            for (name, t) in [
                ("cold local spec (a new namespace: render only)", cold),
                ("new ConfigMap (render + its watch + first list)", first),
            ] {
                println!(
                    "{:<65} {:>8.2} {:>8.2} {:>10.2} {:>10.2} {:>11.2}x {:>11.2}x",
                    format!("{name}{build}"),
                    ms(percentile(&t.publishes, 50)),
                    ms(percentile(&t.publishes, 99)),
                    ms(percentile(&t.unpublishes, 50)),
                    ms(percentile(&t.unpublishes, 99)),
                    ratio(percentile(&t.publishes, 50), percentile(&cold.publishes, 50)),
                    ratio(percentile(&t.publishes, 99), percentile(&cold.publishes, 99)),
                );
            }
            println!(
                "  the new reference's extra cost{build}: {:.2} ms p50 (its list request; its watch starts after the list)",
                ms(percentile(&first.publishes, 50)) - ms(percentile(&cold.publishes, 50))
            );
        }
        if drivers.len() > 1 {
            println!("  {}", versus("cold local spec", &cold[0], &cold[1]));
            println!("  {}", versus("new ConfigMap", &first[0], &first[1]));
        }
    }

    // ---- requests ------------------------------------------------------------------------

    async fn requests(&self) {
        let mut driver = self.driver("requests", &[]).await;
        let namespace = self.namespace("bench-requests-pods").await;
        let names: Vec<String> = (0..REQUEST_FIRST_PUBLISHES).map(|i| format!("new-{i}")).collect();
        let mut maps = vec![(namespace.clone(), "corp-ca".to_owned(), self.cluster_ca.pem.clone())];
        maps.extend(names.iter().map(|name| (namespace.clone(), name.clone(), self.cluster_ca.pem.clone())));
        put_config_maps(&self.admin, maps).await;
        let local = Self::local_attributes(&namespace);
        let cluster = self.cluster_attributes(&namespace, "corp-ca");
        let daemon = Arc::clone(&driver.daemon);
        call_publish(&daemon, &job(&daemon, "requests-anchor-local", &local)).await;
        call_publish(&daemon, &job(&daemon, "requests-anchor-cluster", &cluster)).await;
        // Watches start right after their first list: both must be open before counting.
        let open = driver.audit.wait_for_open(|open| total(open) == 2).await;
        println!("\nAPI requests per publish, from the API server's audit log (the driver's own user only)");
        println!("  open watches before counting: {}", describe_counts(&open));

        let mut warm_rows = Vec::new();
        for (name, attributes) in [("local", &local), ("cluster (ConfigMap + CTB)", &cluster)] {
            driver.audit.begin_window();
            let jobs = (0..REQUEST_WARM_CYCLES).map(|i| job(&daemon, &format!("requests-warm-{name}-{i}"), attributes));
            cycles(&daemon, jobs.collect(), 1).await;
            let sent = driver.end_window().await;
            warm_rows.push((name, sent));
        }
        println!("  {:<50} {:>9} {:>10} {:>14}", "", "publishes", "requests", "per publish");
        for (name, sent) in &warm_rows {
            println!(
                "  {:<50} {REQUEST_WARM_CYCLES:>9} {:>10} {:>14.2}{}",
                format!("warm publish+unpublish, {name}"),
                sent.len(),
                sent.len() as f64 / REQUEST_WARM_CYCLES as f64,
                listing(sent)
            );
        }

        // First publishes of a new reference: each counted until its watch is open (it starts
        // after the publish returned), then its unpublish until the watch is closed.
        let mut on_publish: Vec<AuditEvent> = Vec::new();
        let mut on_unpublish: Vec<AuditEvent> = Vec::new();
        // Per first publish: call → list received, list in the API server, list done → publish
        // returned, list done → watch received (seconds, from the audit log's timestamps).
        let mut phases: Vec<[f64; 4]> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let job = job(&daemon, &format!("requests-first-{i}"), &self.cluster_attributes(&namespace, name));
            driver.audit.begin_window();
            let called = unix_now();
            call_publish(&daemon, &job).await;
            let returned = unix_now();
            driver.audit.wait_for_open(|open| total(open) == 3).await;
            let sent = driver.end_window().await;
            let list = sent.iter().find(|e| e.verb == "list");
            let watch = sent.iter().find(|e| e.verb == "watch");
            if let (Some(list), Some(watch)) = (list, watch) {
                phases.push([
                    list.received - called,
                    list.at - list.received,
                    returned - list.at,
                    watch.received - list.at,
                ]);
            }
            on_publish.extend(sent);
            driver.audit.begin_window();
            call_unpublish(&daemon, &job).await;
            driver.audit.wait_for_open(|open| total(open) == 2).await;
            on_unpublish.extend(driver.end_window().await);
        }
        let n = REQUEST_FIRST_PUBLISHES as f64;
        println!(
            "  {:<50} {REQUEST_FIRST_PUBLISHES:>9} {:>10} {:>14.2}{}",
            "first publish of a new ConfigMap (until its watch)",
            on_publish.len(),
            on_publish.len() as f64 / n,
            listing(&on_publish)
        );
        println!(
            "  {:<50} {REQUEST_FIRST_PUBLISHES:>9} {:>10} {:>14.2}{}",
            "its unpublish (until its watch is closed)",
            on_unpublish.len(),
            on_unpublish.len() as f64 / n,
            listing(&on_unpublish)
        );
        let median = |i: usize| {
            let mut values: Vec<f64> = phases.iter().map(|p| p[i]).collect();
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or(0.0) * 1000.0
        };
        println!(
            "  first publish, where the time goes (p50 ms, audit timestamps): call -> list reaches the API server {:.1}, list in the API server {:.1}, list done -> publish returns {:.1}; list done -> watch reaches the API server {:.1}",
            median(0),
            median(1),
            median(2),
            median(3)
        );
        println!("  target: 0 per warm publish");
    }

    // ---- watches -------------------------------------------------------------------------

    /// This build, then the baseline build (when given) on the same objects.
    async fn watches(&self) {
        let namespaces: Vec<String> = (0..WATCH_NAMESPACES).map(|i| format!("bench-watch-{i}")).collect();
        create_namespaces(&self.admin, &namespaces).await;
        let maps = namespaces
            .iter()
            .flat_map(|ns| (0..WATCH_NAMES).map(move |k| (ns.clone(), format!("team-ca-{k}"))))
            .map(|(ns, name)| (ns, name, self.cluster_ca.pem.clone()))
            .collect();
        put_config_maps(&self.admin, maps).await;
        self.watches_of("", None, &namespaces).await;
        if let Some(binary) = &self.baseline {
            self.watches_of(" (baseline)", Some(binary.clone()), &namespaces).await;
        }
    }

    async fn watches_of(&self, label: &str, binary: Option<PathBuf>, namespaces: &[String]) {
        let mut driver = self.driver_of(&format!("watches{}", label.len()), &[], binary).await;
        let daemon = Arc::clone(&driver.daemon);
        let gauge_before = stable_watch_gauge(&self.admin).await;
        let idle_rss = rss_kib(daemon.pid());

        let jobs: Vec<Job> = (0..WATCH_VOLUMES)
            .map(|k| {
                let namespace = &namespaces[k % WATCH_NAMESPACES];
                let name = format!("team-ca-{}", (k / WATCH_NAMESPACES) % WATCH_NAMES);
                job(&daemon, &format!("watch-{k}"), &self.cluster_attributes(namespace, &name))
            })
            .collect();
        let distinct: HashSet<(String, String)> = jobs
            .iter()
            .map(|job| (attribute(job, "csi.storage.k8s.io/pod.namespace"), attribute(job, "configMaps")))
            .collect();
        let expected = distinct.len() + 1;
        let started = Instant::now();
        let mut first_use = Vec::new();
        let mut shared = Vec::new();
        let mut seen = HashSet::new();
        for job in &jobs {
            let key = (attribute(job, "csi.storage.k8s.io/pod.namespace"), attribute(job, "configMaps"));
            let took = call_publish(&daemon, job).await;
            if seen.insert(key) { first_use.push(took) } else { shared.push(took) }
        }
        let publish_all = started.elapsed();
        let open = driver.audit.wait_for_open(|open| total(open) >= expected).await;
        let settled = started.elapsed();
        let gauge_after = stable_watch_gauge(&self.admin).await;
        let connections = support::measure::tcp_connections_to(daemon.pid(), server_port(self.plane));
        let busy_rss = rss_kib(daemon.pid());
        first_use.sort();
        shared.sort();

        println!(
            "\nopen watches{label}: {WATCH_VOLUMES} volumes over {WATCH_NAMESPACES} namespaces sharing {WATCH_NAMES} ConfigMap names (+ one ClusterTrustBundle each)"
        );
        println!(
            "  distinct objects referenced:            {} ConfigMaps + ClusterTrustBundles (one shared watch) = {expected}",
            distinct.len()
        );
        println!(
            "  open watches, audit log (driver's user): {} = {} (ratio {:.2}x the distinct objects)",
            describe_counts(&open),
            total(&open),
            total(&open) as f64 / expected as f64
        );
        println!(
            "  open watches, apiserver_longrunning_requests{{verb=\"WATCH\"}} growth: {} = {}",
            describe_counts(&growth(&gauge_before, &gauge_after)),
            total(&growth(&gauge_before, &gauge_after))
        );
        println!(
            "  the driver's TCP connections to the API server: {connections} ({:.1} watches per connection)",
            total(&open) as f64 / connections.max(1) as f64
        );
        println!(
            "  publishing all {WATCH_VOLUMES}: {:.1} s; all watches open {:.1} s after the first publish",
            publish_all.as_secs_f64(),
            settled.as_secs_f64()
        );
        println!(
            "  publish p50/p99 (ms): first volume of an object {:.2}/{:.2} ({} volumes), second volume (spec rendered) {:.2}/{:.2} ({})",
            ms(percentile(&first_use, 50)),
            ms(percentile(&first_use, 99)),
            first_use.len(),
            ms(percentile(&shared, 50)),
            ms(percentile(&shared, 99)),
            shared.len()
        );
        println!(
            "  daemon RSS: {:.1} MiB (before any volume: {:.1} MiB, ratio {:.2}x)",
            busy_rss as f64 / 1024.0,
            idle_rss as f64 / 1024.0,
            busy_rss as f64 / idle_rss.max(1) as f64
        );
        println!(
            "  RSS per open watch: {:.1} KiB",
            busy_rss.saturating_sub(idle_rss) as f64 / total(&open).max(1) as f64
        );

        let started = Instant::now();
        for job in &jobs {
            call_unpublish(&daemon, job).await;
        }
        let unpublish_all = started.elapsed();
        // The ClusterTrustBundle watch is one for the node, started on first use, and stays.
        let open = driver.audit.wait_for_open(|open| !open.contains_key("configmaps")).await;
        let dropped = started.elapsed();
        let gauge_end = wait_for_gauge(&self.admin, &gauge_before).await;
        println!(
            "  after unpublishing all ({:.1} s): open, audit log: {}; gauge growth: {}; ConfigMap watches all closed {:.1} s after the first unpublish",
            unpublish_all.as_secs_f64(),
            describe_counts(&open),
            describe_counts(&growth(&gauge_before, &gauge_end)),
            dropped.as_secs_f64()
        );
    }

    // ---- noisy ---------------------------------------------------------------------------

    async fn noisy(&self) {
        let driver = self.driver("noisy", &[]).await;
        let daemon = Arc::clone(&driver.daemon);
        let victim = self.namespace("bench-noisy-b").await;
        let attacker = self.namespace("bench-noisy-a").await;
        put_config_maps(&self.admin, vec![(victim.clone(), "corp-ca".to_owned(), self.cluster_ca.pem.clone())]).await;
        // A's heavy ConfigMaps, two versions each, and a volume on each.
        let heavy: Arc<Vec<String>> = Arc::new(
            (0..2)
                .map(|v| {
                    (0..NOISY_HEAVY_CERTIFICATES)
                        .map(|i| TestCa::new(self.dir.path(), &format!("noisy-{v}-{i}")).pem)
                        .collect()
                })
                .collect(),
        );
        let heavy_names: Vec<String> = (0..NOISY_HEAVY).map(|i| format!("heavy-{i}")).collect();
        put_config_maps(
            &self.admin,
            heavy_names.iter().map(|n| (attacker.clone(), n.clone(), heavy[0].clone())).collect(),
        )
        .await;
        for name in &heavy_names {
            let mut attributes = Self::local_attributes(&attacker);
            attributes.push(("configMaps".to_owned(), name.clone()));
            call_publish(&daemon, &job(&daemon, &format!("noisy-a-{name}"), &attributes)).await;
        }
        let rotations: Vec<TestCa> =
            (0..2 * NOISY_ROTATIONS).map(|i| TestCa::new(self.dir.path(), &format!("noisy-rotation-{i}"))).collect();

        let quiet = self.victim_round(&daemon, &victim, &rotations[..NOISY_ROTATIONS]).await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let patching = tokio::spawn(patch_loop(
            self.admin.clone(),
            attacker.clone(),
            heavy_names.clone(),
            Arc::clone(&heavy),
            Arc::clone(&stop),
        ));
        let flooding =
            tokio::spawn(flood_loop(Arc::clone(&daemon), attacker.clone(), heavy_names[0].clone(), Arc::clone(&stop)));
        // The attack under way before B is measured.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let loud = self.victim_round(&daemon, &victim, &rotations[NOISY_ROTATIONS..]).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let patches = patching.await.expect("the patch loop");
        let (refused, published) = flooding.await.expect("the flood loop");

        println!(
            "\nnoisy neighbour: namespace B on one driver, quiet and while namespace A attacks ({patches} patches of {NOISY_HEAVY} ConfigMaps of {NOISY_HEAVY_CERTIFICATES} certificates; {published} flood volumes published, refused: {refused:?})"
        );
        println!("{:<34} {:>14} {:>14} {:>8} {:>8}", "(ms)", "quiet p50/p99", "attack p50/p99", "p50 x", "p99 x");
        for (name, quiet, loud) in [
            ("warm publish (spec rendered)", &quiet.warm, &loud.warm),
            ("cold publish (render)", &quiet.cold, &loud.cold),
            ("rotation (ConfigMap to volume)", &quiet.rotations, &loud.rotations),
        ] {
            let at = |t: &[Duration], p| ms(percentile(t, p));
            println!(
                "{name:<34} {:>6.2}/{:<7.2} {:>6.2}/{:<7.2} {:>7.2}x {:>7.2}x",
                at(quiet, 50),
                at(quiet, 99),
                at(loud, 50),
                at(loud, 99),
                ratio(percentile(loud, 50), percentile(quiet, 50)),
                ratio(percentile(loud, 99), percentile(quiet, 99)),
            );
        }
        println!("  B's failures: none (a failure panics the bench); goal: every ratio within 2x");
    }

    /// B's warm cycles (an anchor keeps the spec rendered), cold cycles (a spec no volume uses,
    /// rendered on publish and removed on unpublish) and rotations of its ConfigMap to `cas`
    /// (each timed until the anchor's bundle holds it).
    async fn victim_round(&self, daemon: &Arc<Daemon>, namespace: &str, cas: &[TestCa]) -> VictimTimings {
        let mut warm_attributes = Self::local_attributes(namespace);
        warm_attributes.push(("configMaps".to_owned(), "corp-ca".to_owned()));
        let mut cold_attributes = warm_attributes.clone();
        cold_attributes.push(("layout".to_owned(), "rhel".to_owned()));
        let anchor = job(daemon, "noisy-b-anchor", &warm_attributes);
        call_publish(daemon, &anchor).await;
        let mut timings = VictimTimings::default();
        for i in 0..NOISY_CYCLES {
            let warm = job(daemon, &format!("noisy-b-warm-{i}"), &warm_attributes);
            timings.warm.push(call_publish(daemon, &warm).await);
            call_unpublish(daemon, &warm).await;
            let cold = job(daemon, &format!("noisy-b-cold-{i}"), &cold_attributes);
            timings.cold.push(call_publish(daemon, &cold).await);
            call_unpublish(daemon, &cold).await;
        }
        let maps: Api<ConfigMap> = Api::namespaced(self.admin.clone(), namespace);
        for ca in cas {
            let map = ConfigMap {
                data: Some(BTreeMap::from([("ca.crt".to_owned(), ca.pem.clone())])),
                ..ConfigMap::default()
            };
            let started = Instant::now();
            support::objects::put(&maps, "corp-ca", map).await;
            while !support::certs::bundle_ders(&anchor.target).contains(&ca.der) {
                assert!(started.elapsed() < WAIT_LIMIT, "B's rotation did not reach its volume");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            timings.rotations.push(started.elapsed());
        }
        call_unpublish(daemon, &anchor).await;
        timings.warm.sort();
        timings.cold.sort();
        timings.rotations.sort();
        timings
    }

    // ---- memory --------------------------------------------------------------------------

    async fn memory(&self) {
        let count = MEMORY_NAMESPACES;
        let setup = Instant::now();
        let namespaces: Vec<String> = (0..count).map(|i| format!("bench-mem-{i}")).collect();
        let mut all = namespaces.clone();
        all.push("bench-mem-first".to_owned());
        create_namespaces(&self.admin, &all).await;
        let own_cas: Vec<TestCa> = (0..=count).map(|i| TestCa::new(self.dir.path(), &format!("own-{i}"))).collect();
        let mut maps = Vec::new();
        for (namespace, own) in all.iter().zip(&own_cas) {
            maps.push((namespace.clone(), "same-ca".to_owned(), self.cluster_ca.pem.clone()));
            maps.push((namespace.clone(), "own-ca".to_owned(), own.pem.clone()));
        }
        put_config_maps(&self.admin, maps).await;
        println!(
            "\nkernel memory and RSS, one volume per namespace in {count} namespaces (set-up: {:.0} s)",
            setup.elapsed().as_secs_f64()
        );
        println!("  Shmem + Slab growth in /proc/meminfo (machine-wide); RSS of the daemon; one spec published first");
        println!(
            "  {:<40} {:>10} {:>10} {:>10} {:>9} {:>9} {:>10} {:>9} {:>10} {:>7}",
            "", "total MiB", "KiB/spec", "Shmem KiB", "Slab KiB", "ratio", "tmpfs KiB", "RSS MiB", "RSS ratio", "conns"
        );
        let mut baseline: Option<MemoryFigures> = None;
        for (label, cluster_map) in [
            ("local sources only (baseline)", None),
            ("cluster, same CA in every namespace", Some("same-ca")),
            ("cluster, a CA of each namespace's own", Some("own-ca")),
        ] {
            let figures = self.memory_run(&namespaces, cluster_map).await;
            let base = baseline.get_or_insert(figures);
            let n = count as f64;
            println!(
                "  {label:<40} {:>10.1} {:>10.1} {:>10.1} {:>9.1} {:>8.2}x {:>10.1} {:>9.1} {:>9.2}x {:>7}",
                (figures.shmem + figures.slab) as f64 / 1024.0,
                (figures.shmem + figures.slab) as f64 / n,
                figures.shmem as f64 / n,
                figures.slab as f64 / n,
                (figures.shmem + figures.slab) as f64 / (base.shmem + base.slab).max(1) as f64,
                figures.tmpfs_kib as f64 / n,
                figures.rss_kib as f64 / 1024.0,
                figures.rss_kib as f64 / base.rss_kib.max(1) as f64,
                figures.connections,
            );
            println!(
                "  {:<40} publishing took {:.1} s; RSS after the first volume {:.1} MiB, peak {:.1} MiB",
                "",
                figures.publish_time.as_secs_f64(),
                figures.first_rss_kib as f64 / 1024.0,
                figures.peak_rss_kib as f64 / 1024.0
            );
        }
        println!("  (KiB/spec columns are per namespace; ratio = total / the baseline's total)");
    }

    /// One fresh driver, one volume in `bench-mem-first` (so "same CA" specs find their content
    /// stored), then one volume per namespace: local sources only, or `config_map` + the CTB.
    async fn memory_run(&self, namespaces: &[String], config_map: Option<&str>) -> MemoryFigures {
        let driver =
            self.driver(&format!("mem-{}", config_map.unwrap_or("local")), &["--store-size", MEMORY_STORE_SIZE]).await;
        let daemon = Arc::clone(&driver.daemon);
        let attributes = |namespace: &str| match config_map {
            Some(name) => self.cluster_attributes(namespace, name),
            None => Self::local_attributes(namespace),
        };
        let first = job(&daemon, "mem-first", &attributes("bench-mem-first"));
        call_publish(&daemon, &first).await;
        let jobs: Vec<Job> =
            namespaces.iter().enumerate().map(|(i, ns)| job(&daemon, &format!("mem-{i}"), &attributes(ns))).collect();
        let first_rss_kib = rss_kib(daemon.pid());
        let tmpfs_before = used_bytes(&daemon.store_dir());
        let (shmem_before, slab_before) = shmem_and_slab_kib();
        let started = Instant::now();
        for job in &jobs {
            call_publish(&daemon, job).await;
        }
        let publish_time = started.elapsed();
        if config_map.is_some() {
            // The watches (and their connections) are part of what a cluster volume costs.
            let mut audit = driver.audit;
            audit.wait_for_open(|open| total(open) >= namespaces.len() + 2).await;
        }
        let (shmem_after, slab_after) = shmem_and_slab_kib();
        let figures = MemoryFigures {
            shmem: shmem_after.saturating_sub(shmem_before),
            slab: slab_after.saturating_sub(slab_before),
            tmpfs_kib: used_bytes(&daemon.store_dir()).saturating_sub(tmpfs_before) / 1024,
            rss_kib: rss_kib(daemon.pid()),
            first_rss_kib,
            peak_rss_kib: peak_rss_kib(daemon.pid()),
            connections: support::measure::tcp_connections_to(daemon.pid(), server_port(self.plane)),
            publish_time,
        };
        for job in &jobs {
            call_unpublish(&daemon, job).await;
        }
        call_unpublish(&daemon, &first).await;
        figures
    }
}

impl Driver {
    /// Sends a sentinel request as the driver and returns the driver's new requests since
    /// [`Audit::begin_window`], up to the sentinel's.
    async fn end_window(&mut self) -> Vec<AuditEvent> {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!("{SENTINEL_PREFIX}{}", COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let _ = self.as_driver.get_opt(&name).await;
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            self.audit.read();
            if let Some(window) = self.audit.marks.remove(&name) {
                return window;
            }
            assert!(Instant::now() < deadline, "the sentinel request {name} never reached the audit log");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[derive(Clone, Copy)]
struct MemoryFigures {
    shmem: u64,
    slab: u64,
    tmpfs_kib: u64,
    rss_kib: u64,
    first_rss_kib: u64,
    peak_rss_kib: u64,
    connections: usize,
    publish_time: Duration,
}

// ---- the audit log ------------------------------------------------------------------------

/// A sentinel GET (a ConfigMap that does not exist) marks the end of a counting window.
const SENTINEL_PREFIX: &str = "bench-sentinel-";

/// One audit event of the driver's user.
#[derive(Clone, Debug)]
struct AuditEvent {
    id: String,
    stage: String,
    verb: String,
    resource: String,
    uri: String,
    /// `requestReceivedTimestamp` and `stageTimestamp`, Unix seconds.
    received: f64,
    at: f64,
}

/// The audit log read forward as one user's requests: which watches are open (ResponseStarted
/// without ResponseComplete), and the requests new since a window began.
struct Audit {
    path: PathBuf,
    offset: u64,
    user: String,
    seen: HashSet<String>,
    /// Open watches: audit ID → resource.
    open: HashMap<String, String>,
    window: Vec<AuditEvent>,
    /// Closed windows by sentinel name.
    marks: HashMap<String, Vec<AuditEvent>>,
}

impl Audit {
    fn new(path: &Path, user: &str) -> Self {
        let offset = std::fs::metadata(path).map_or(0, |m| m.len());
        Self {
            path: path.to_path_buf(),
            offset,
            user: user.to_owned(),
            seen: HashSet::new(),
            open: HashMap::new(),
            window: Vec::new(),
            marks: HashMap::new(),
        }
    }

    /// Applies every complete line written since the last read.
    fn read(&mut self) {
        let mut bytes = Vec::new();
        if let Ok(mut file) = std::fs::File::open(&self.path) {
            let _ = file.seek(SeekFrom::Start(self.offset));
            let _ = file.read_to_end(&mut bytes);
        }
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.offset += complete as u64;
        for line in bytes[..complete].split(|b| *b == b'\n').filter(|line| !line.is_empty()) {
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
            if value["user"]["username"].as_str() != Some(self.user.as_str()) {
                continue;
            }
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            self.apply(AuditEvent {
                id: text(&value["auditID"]),
                stage: text(&value["stage"]),
                verb: text(&value["verb"]),
                resource: text(&value["objectRef"]["resource"]),
                uri: text(&value["requestURI"]),
                received: unix_seconds(value["requestReceivedTimestamp"].as_str().unwrap_or_default()),
                at: unix_seconds(value["stageTimestamp"].as_str().unwrap_or_default()),
            });
        }
    }

    fn apply(&mut self, event: AuditEvent) {
        if event.verb == "watch" {
            match event.stage.as_str() {
                "ResponseStarted" => {
                    self.open.insert(event.id.clone(), event.resource.clone());
                }
                "ResponseComplete" => {
                    self.open.remove(&event.id);
                }
                _ => {}
            }
        }
        if let Some(name) = event.uri.rsplit('/').next().filter(|name| name.starts_with(SENTINEL_PREFIX)) {
            self.marks.insert(name.to_owned(), std::mem::take(&mut self.window));
            return;
        }
        if self.seen.insert(event.id.clone()) {
            self.window.push(event);
        }
    }

    fn begin_window(&mut self) {
        self.read();
        self.window.clear();
    }

    fn open_watches(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for resource in self.open.values() {
            *counts.entry(resource.clone()).or_default() += 1;
        }
        counts
    }

    /// Waits (bounded) until the open watches satisfy `done`; returns them.
    async fn wait_for_open(&mut self, done: impl Fn(&BTreeMap<String, usize>) -> bool) -> BTreeMap<String, usize> {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            self.read();
            let open = self.open_watches();
            if done(&open) {
                return open;
            }
            assert!(Instant::now() < deadline, "open watches never settled; last seen: {}", describe_counts(&open));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `2026-12-01T12:00:00.123456Z` as Unix seconds (0 when it is not that shape).
fn unix_seconds(timestamp: &str) -> f64 {
    let number = |range: std::ops::Range<usize>| timestamp.get(range).and_then(|s| s.parse::<i64>().ok());
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute)) =
        (number(0..4), number(5..7), number(8..10), number(11..13), number(14..16))
    else {
        return 0.0;
    };
    let seconds: f64 = timestamp.get(17..).map(|s| s.trim_end_matches('Z')).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    // Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    (days * 86_400 + hour * 3600 + minute * 60) as f64 + seconds
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn total(counts: &BTreeMap<String, usize>) -> usize {
    counts.values().sum()
}

fn describe_counts(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts.iter().map(|(resource, n)| format!("{resource} {n}")).collect::<Vec<_>>().join(", ")
}

/// " (list configmaps 20, watch configmaps 20)": the requests by verb and resource.
fn listing(events: &[AuditEvent]) -> String {
    if events.is_empty() {
        return String::new();
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for event in events {
        *counts.entry(format!("{} {}", event.verb, event.resource)).or_default() += 1;
    }
    format!("  ({})", counts.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "))
}

// ---- the API server's watch gauge ---------------------------------------------------------

/// `apiserver_longrunning_requests{verb="WATCH"}` by resource, from the API server's /metrics.
async fn watch_gauge(admin: &kube::Client) -> BTreeMap<String, usize> {
    let request = http::Request::get("/metrics").body(Vec::new()).expect("metrics request");
    let text = admin.request_text(request).await.expect("GET /metrics as admin");
    let mut counts = BTreeMap::new();
    for line in text.lines().filter(|line| line.starts_with("apiserver_longrunning_requests{")) {
        if !line.contains("verb=\"WATCH\"") {
            continue;
        }
        let resource = line.split("resource=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("?");
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *counts.entry(resource.to_owned()).or_default() += value as usize;
    }
    counts
}

/// The gauge once two readings half a second apart agree (watches of earlier drivers close
/// asynchronously).
async fn stable_watch_gauge(admin: &kube::Client) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + WAIT_LIMIT;
    let mut last = watch_gauge(admin).await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = watch_gauge(admin).await;
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Waits (bounded) until the gauge's ConfigMap watches are back at `baseline`.
async fn wait_for_gauge(admin: &kube::Client, baseline: &BTreeMap<String, usize>) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let now = watch_gauge(admin).await;
        if !growth(baseline, &now).contains_key("configmaps") || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Growth per resource of the driver's kinds (ConfigMaps, ClusterTrustBundles).
fn growth(before: &BTreeMap<String, usize>, after: &BTreeMap<String, usize>) -> BTreeMap<String, usize> {
    ["configmaps", "clustertrustbundles"]
        .into_iter()
        .map(|resource| {
            let get = |m: &BTreeMap<String, usize>| m.get(resource).copied().unwrap_or(0);
            (resource.to_owned(), get(after).saturating_sub(get(before)))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

// ---- set-up -------------------------------------------------------------------------------

async fn create_namespaces(admin: &kube::Client, names: &[String]) {
    let api: Api<Namespace> = Api::all(admin.clone());
    futures::stream::iter(names)
        .map(|name| {
            let api = api.clone();
            async move {
                let mut namespace = Namespace::default();
                namespace.metadata.name = Some(name.clone());
                api.create(&PostParams::default(), &namespace)
                    .await
                    .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}

/// Creates ConfigMaps `(namespace, name, PEM under ca.crt)`.
async fn put_config_maps(admin: &kube::Client, maps: Vec<(String, String, String)>) {
    futures::stream::iter(maps)
        .map(|(namespace, name, pem)| {
            let api: Api<ConfigMap> = Api::namespaced(admin.clone(), &namespace);
            async move {
                let mut map = ConfigMap::default();
                map.metadata.name = Some(name.clone());
                map.data = Some(BTreeMap::from([("ca.crt".to_owned(), pem)]));
                api.create(&PostParams::default(), &map)
                    .await
                    .unwrap_or_else(|e| panic!("create ConfigMap {namespace}/{name}: {e}"));
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}

// ---- publishing ---------------------------------------------------------------------------

fn job(daemon: &Daemon, volume: &str, attributes: &[(String, String)]) -> Job {
    Job { volume: volume.to_owned(), target: daemon.target(volume, "trust"), attributes: attributes.to_vec() }
}

fn attribute(job: &Job, key: &str) -> String {
    job.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default()
}

/// Publishes then unpublishes every job, `concurrency` in flight.
async fn cycles(daemon: &Arc<Daemon>, jobs: Vec<Job>, concurrency: usize) -> Timings {
    let started = Instant::now();
    let results: Vec<(Duration, Duration)> = futures::stream::iter(jobs)
        .map(|job| {
            let daemon = Arc::clone(daemon);
            async move {
                let published = call_publish(&daemon, &job).await;
                let unpublished = call_unpublish(&daemon, &job).await;
                (published, unpublished)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    Timings {
        publishes: results.iter().map(|(p, _)| *p).collect(),
        unpublishes: results.iter().map(|(_, u)| *u).collect(),
        cycles: results.iter().map(|(p, u)| *p + *u).collect(),
        elapsed,
    }
}

async fn call_publish(daemon: &Daemon, job: &Job) -> Duration {
    let attributes: Vec<(&str, &str)> = job.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let request = publish_request(&job.volume, &job.target, &attributes);
    let started = Instant::now();
    daemon
        .node()
        .node_publish_volume(request)
        .await
        .unwrap_or_else(|status| panic!("publish {}: {status}\n{}", job.volume, daemon.stderr()));
    started.elapsed()
}

async fn call_unpublish(daemon: &Daemon, job: &Job) -> Duration {
    let started = Instant::now();
    daemon
        .node()
        .node_unpublish_volume(unpublish_request(&job.volume, &job.target))
        .await
        .unwrap_or_else(|status| panic!("unpublish {}: {status}\n{}", job.volume, daemon.stderr()));
    started.elapsed()
}

// ---- measuring ----------------------------------------------------------------------------

/// "`name`, this / baseline: ..." for a case measured on both builds.
fn versus(name: &str, ours: &Timings, theirs: &Timings) -> String {
    let at = |t: &[Duration], theirs: &[Duration], pct| ratio(percentile(t, pct), percentile(theirs, pct));
    format!(
        "{name}, this build / baseline: pub p50 {:.2}x, pub p99 {:.2}x, unpub p50 {:.2}x, cycle p50 {:.2}x",
        at(&ours.publishes, &theirs.publishes, 50),
        at(&ours.publishes, &theirs.publishes, 99),
        at(&ours.unpublishes, &theirs.unpublishes, 50),
        at(&ours.cycles, &theirs.cycles, 50),
    )
}

fn server_port(plane: &ControlPlane) -> u16 {
    plane.server.rsplit(':').next().and_then(|port| port.parse().ok()).expect("the API server's port")
}

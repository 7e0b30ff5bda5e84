//! `cargo bench --bench rotation`: how fast a change in the cluster reaches every mounted
//! bundle, against the real kube-apiserver + etcd of tests/support/control_plane.rs and the real
//! daemon over its socket, with real mounts (in a private mount namespace, as root).
//!
//! - `one-spec`: 1 000 volumes sharing one spec (one namespace, one ConfigMap). Each rotation is
//!   timed from just before the API write to the moment the last of the 1 000 targets shows the
//!   new generation (its `..data` changed; the last one's bundle is then checked for the new CA).
//! - `many-specs`: 100 specs sharing one ClusterTrustBundle (100 namespaces, one volume each),
//!   timed the same way; and publish+unpublish latency of a warm volume while those rotations
//!   run, beside the same calls with no rotation running.
//!
//! - `many-specs-vs-baseline` and `one-spec-vs-baseline` (only with
//!   `TRUSTMOUNT_BENCH_BASELINE_BIN=<another build of trustmount>`): the `many-specs` or
//!   `one-spec` rotation on this build and on the baseline build side by side, rotations
//!   alternating between the two, timed the same way, with the CPU time each daemon spent per
//!   rotation (less at the mercy of the machine's other load than wall time).
//!
//! Both with the embedded system roots in every bundle (what a pod gets by default), and the
//! daemon's RSS and the store's tmpfs usage. The baseline is the kubelet's own refresh of a
//! ConfigMap or ClusterTrustBundle volume: its resync period, 60–90 s (60 s is used for the
//! ratio, the kubelet's best case).
// A bench uses a part of the tests' support (the test suite uses all of it).
#[allow(dead_code)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::certificates::v1::ClusterTrustBundle;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use support::certs::TestCa;
use support::client::{publish_request, unpublish_request};
use support::control_plane::ControlPlane;
use support::daemon::{Daemon, DaemonOptions};
use support::deploy;
use support::measure::{self, mib, ms, peak_rss_kib, percentile, rss_kib, used_bytes};
use support::objects::{self, put_config_map, put_trust_bundle};

const IN_NAMESPACE: &str = "TRUSTMOUNT_BENCH_IN_MOUNT_NS";
const BASELINE_ENV: &str = "TRUSTMOUNT_BENCH_BASELINE_BIN";
const ONE_SPEC_VOLUMES: usize = 1000;
const MANY_SPECS: usize = 100;
const ROTATIONS: usize = 10;
/// The kubelet's resync period, its best case for refreshing a projected volume.
const KUBELET_REFRESH: Duration = Duration::from_secs(60);
/// Bounds a rotation that never arrives; a hang, not a figure.
const LIMIT: Duration = Duration::from_secs(120);

fn main() {
    measure::reexec_in_private_mount_namespace(IN_NAMESPACE);
    println!("trustmount rotation benchmark ({} cores)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    let sections = measure::sections();
    let wanted = |name: &str| sections.is_empty() || sections.iter().any(|s| s == name);
    support::block_on(async {
        let bench = Bench::start().await;
        if wanted("one-spec") {
            bench.one_spec().await;
        }
        if wanted("many-specs") {
            bench.many_specs().await;
        }
        if let Some(baseline) = std::env::var_os(BASELINE_ENV).map(PathBuf::from) {
            if wanted("one-spec-vs-baseline") {
                bench.one_spec_vs(&baseline).await;
            }
            if wanted("many-specs-vs-baseline") {
                bench.many_specs_vs(&baseline).await;
            }
        }
    });
}

/// The cluster object a side-by-side rotation rewrites.
enum Rotated {
    ConfigMap(Api<ConfigMap>, String),
    TrustBundle(Api<ClusterTrustBundle>, String),
}

impl Rotated {
    async fn put(&self, pem: &str) {
        match self {
            Self::ConfigMap(api, name) => put_config_map(api, name, pem).await,
            Self::TrustBundle(api, name) => put_trust_bundle(api, name, pem).await,
        }
    }

    async fn delete(&self) {
        match self {
            Self::ConfigMap(api, name) => drop(api.delete(name, &Default::default()).await.unwrap()),
            Self::TrustBundle(api, name) => drop(api.delete(name, &Default::default()).await.unwrap()),
        }
    }
}

/// One build's daemon, the object its volumes name, and its volumes (volume id, target).
struct Fleet {
    label: &'static str,
    daemon: Daemon,
    source: Rotated,
    volumes: Vec<(String, PathBuf)>,
}

struct Bench {
    plane: &'static ControlPlane,
    admin: kube::Client,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Bench {
    async fn start() -> Self {
        let plane = ControlPlane::shared();
        let admin = plane.admin_client().await;
        objects::ensure_shipped_csidriver(&admin).await;
        let dir = tempfile::tempdir().unwrap();
        let driver_namespace = plane.namespace("bench-driver").await;
        let identity = deploy::driver_identity(plane, &admin, &driver_namespace, dir.path()).await;
        Self { plane, admin, dir, kubeconfig: identity.kubeconfig }
    }

    /// A daemon under the driver's identity, with the embedded system roots.
    async fn daemon(&self) -> Daemon {
        self.daemon_of(None).await
    }

    /// [`Bench::daemon`] of another build of the driver (`None`: this one).
    async fn daemon_of(&self, binary: Option<PathBuf>) -> Daemon {
        let options = DaemonOptions {
            extra_args: vec!["--kubeconfig".into(), self.kubeconfig.display().to_string()],
            binary,
            ..DaemonOptions::default()
        };
        Daemon::start(options).await
    }

    /// `MANY_SPECS` volumes naming the ClusterTrustBundle `bundle`, each in a namespace of its
    /// own (so each its own spec): their (volume id, target), and the namespaces. `group` keeps
    /// the pod UIDs of different fleets apart.
    async fn one_volume_per_namespace(
        &self,
        daemon: &Daemon,
        bundle: &str,
        prefix: &str,
        group: u16,
    ) -> (Vec<(String, PathBuf)>, Vec<String>) {
        let (mut volumes, mut namespaces) = (Vec::new(), Vec::new());
        for s in 0..MANY_SPECS {
            let namespace = self.plane.namespace(&format!("bench-{prefix}")).await;
            let (volume, target) =
                (format!("{prefix}-{s}"), daemon.target(&format!("0c1f4d6e-{group:04}-4000-8000-{s:012}"), "trust"));
            let attributes =
                [("csi.storage.k8s.io/pod.namespace", namespace.as_str()), ("clusterTrustBundles", bundle)];
            publish(daemon, &volume, &target, &attributes).await;
            volumes.push((volume, target));
            namespaces.push(namespace);
        }
        (volumes, namespaces)
    }

    /// `many-specs` on this build and on `baseline`, rotations alternating between them.
    async fn many_specs_vs(&self, baseline: &Path) {
        let bundles: Api<ClusterTrustBundle> = Api::all(self.admin.clone());
        let mut fleets = Vec::new();
        for (label, binary) in [("this build", None), ("baseline", Some(baseline.to_path_buf()))] {
            let daemon = self.daemon_of(binary).await;
            let name = format!("bench-vs-{}-{}", fleets.len(), std::process::id());
            let source = Rotated::TrustBundle(bundles.clone(), name.clone());
            source.put(&self.first_ca("vs").pem).await;
            let (volumes, _) = self.one_volume_per_namespace(&daemon, &name, "vs", 3).await;
            fleets.push(Fleet { label, daemon, source, volumes });
        }
        let title = format!("{MANY_SPECS} specs sharing one ClusterTrustBundle");
        self.versus(&title, "vs", baseline, fleets).await;
    }

    /// `one-spec` on this build and on `baseline`, rotations alternating between them.
    async fn one_spec_vs(&self, baseline: &Path) {
        let mut fleets = Vec::new();
        for (label, binary) in [("this build", None), ("baseline", Some(baseline.to_path_buf()))] {
            let daemon = self.daemon_of(binary).await;
            let namespace = self.plane.namespace("bench-one-vs").await;
            let source = Rotated::ConfigMap(Api::namespaced(self.admin.clone(), &namespace), "corp-ca".into());
            source.put(&self.first_ca("one-vs").pem).await;
            let volumes = one_spec_volumes(&daemon, &namespace).await;
            fleets.push(Fleet { label, daemon, source, volumes });
        }
        let title = format!("{ONE_SPEC_VOLUMES} volumes sharing one spec (one ConfigMap)");
        self.versus(&title, "one-vs", baseline, fleets).await;
    }

    /// The CA every fleet of a side-by-side section starts with (`versus` rotates to
    /// `<prefix>-1` and on).
    fn first_ca(&self, prefix: &str) -> TestCa {
        TestCa::new(self.dir.path(), &format!("{prefix}-0"))
    }

    /// `ROTATIONS` rotations of each fleet's object, alternating between the fleets; reports
    /// each fleet's wall time and daemon CPU time per rotation and the ratios, then unpublishes.
    async fn versus(&self, title: &str, prefix: &str, baseline: &Path, fleets: Vec<Fleet>) {
        let cas: Vec<TestCa> =
            (1..=ROTATIONS).map(|i| TestCa::new(self.dir.path(), &format!("{prefix}-{i}"))).collect();
        let mut measured: Vec<(Vec<Duration>, Vec<Duration>)> = fleets.iter().map(|_| Default::default()).collect();
        for ca in &cas {
            for (fleet, (times, cpu)) in fleets.iter().zip(&mut measured) {
                let before = generations(&fleet.volumes);
                let cpu_before = measure::cpu_time(fleet.daemon.pid());
                let start = Instant::now();
                fleet.source.put(&ca.pem).await;
                times.push(until_every_target_moved(&fleet.volumes, &before, start, ca).await);
                // The pass is done once the last target moved; its log line and sweeps are not.
                cpu.push(measure::cpu_time(fleet.daemon.pid()) - cpu_before);
            }
        }
        println!("\n== {title}, {ROTATIONS} rotations each, alternating: this build vs {}", baseline.display());
        let mut p50s = Vec::new();
        for (fleet, (times, cpu)) in fleets.iter().zip(&mut measured) {
            times.sort();
            cpu.sort();
            println!(
                "{:>10}: p50 {:.1} ms, max {:.1} ms; daemon CPU per rotation p50 {:.0} ms, max {:.0} ms; RSS {:.1} MiB (peak {:.1} MiB)",
                fleet.label,
                ms(percentile(times, 50)),
                ms(*times.last().unwrap_or(&Duration::ZERO)),
                ms(percentile(cpu, 50)),
                ms(*cpu.last().unwrap_or(&Duration::ZERO)),
                rss_kib(fleet.daemon.pid()) as f64 / 1024.0,
                peak_rss_kib(fleet.daemon.pid()) as f64 / 1024.0,
            );
            p50s.push((percentile(times, 50), percentile(cpu, 50)));
        }
        let ratio = |new: Duration, old: Duration| old.as_secs_f64() / new.as_secs_f64().max(f64::MIN_POSITIVE);
        println!(
            "baseline / this build: wall p50 {:.2}x, CPU p50 {:.2}x (this build / baseline: wall {:.2}x, CPU {:.2}x)",
            ratio(p50s[0].0, p50s[1].0),
            ratio(p50s[0].1, p50s[1].1),
            ratio(p50s[1].0, p50s[0].0),
            ratio(p50s[1].1, p50s[0].1)
        );
        for fleet in &fleets {
            for (volume, target) in &fleet.volumes {
                unpublish(&fleet.daemon, volume, target).await;
            }
            fleet.source.delete().await;
        }
    }

    async fn one_spec(&self) {
        let daemon = self.daemon().await;
        let namespace = self.plane.namespace("bench-one").await;
        let config_maps: Api<ConfigMap> = Api::namespaced(self.admin.clone(), &namespace);
        let cas: Vec<TestCa> = (0..=ROTATIONS).map(|i| TestCa::new(self.dir.path(), &format!("one-{i}"))).collect();
        put_config_map(&config_maps, "corp-ca", &cas[0].pem).await;
        let volumes = one_spec_volumes(&daemon, &namespace).await;
        let (rss, used) = (rss_kib(daemon.pid()), used_bytes(&daemon.store_dir()));

        let mut times = Vec::new();
        for ca in &cas[1..] {
            let before = generations(&volumes);
            let start = Instant::now();
            put_config_map(&config_maps, "corp-ca", &ca.pem).await;
            times.push(until_every_target_moved(&volumes, &before, start, ca).await);
        }
        times.sort();
        println!("\n== {ONE_SPEC_VOLUMES} volumes sharing one spec (one ConfigMap), {ROTATIONS} rotations");
        report_rotation(&times);
        println!(
            "daemon RSS {:.1} MiB (peak {:.1} MiB); store tmpfs {:.2} MiB",
            rss as f64 / 1024.0,
            peak_rss_kib(daemon.pid()) as f64 / 1024.0,
            mib(used)
        );
        for (volume, target) in &volumes {
            unpublish(&daemon, volume, target).await;
        }
    }

    async fn many_specs(&self) {
        let daemon = Arc::new(self.daemon().await);
        let bundles: Api<ClusterTrustBundle> = Api::all(self.admin.clone());
        let cas: Vec<TestCa> = (0..=ROTATIONS).map(|i| TestCa::new(self.dir.path(), &format!("many-{i}"))).collect();
        let name = format!("bench-corp-{}", std::process::id());
        put_trust_bundle(&bundles, &name, &cas[0].pem).await;
        let (volumes, namespaces) = self.one_volume_per_namespace(&daemon, &name, "many", 1).await;
        let (rss, used) = (rss_kib(daemon.pid()), used_bytes(&daemon.store_dir()));

        // A warm volume of the first spec, published and unpublished in a loop.
        let churn = {
            let daemon = Arc::clone(&daemon);
            let namespace = namespaces[0].clone();
            let name = name.clone();
            move |stop: Arc<AtomicBool>| {
                let daemon = Arc::clone(&daemon);
                let (namespace, name) = (namespace.clone(), name.clone());
                tokio::spawn(async move {
                    let target = daemon.target("0c1f4d6e-0002-4000-8000-000000000000", "trust");
                    let attributes = [
                        ("csi.storage.k8s.io/pod.namespace", namespace.as_str()),
                        ("clusterTrustBundles", name.as_str()),
                    ];
                    let mut cycles = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        publish(&daemon, "churn", &target, &attributes).await;
                        unpublish(&daemon, "churn", &target).await;
                        cycles.push(start.elapsed());
                    }
                    cycles.sort();
                    cycles
                })
            }
        };
        let idle_stop = Arc::new(AtomicBool::new(false));
        let idle = churn(Arc::clone(&idle_stop));
        tokio::time::sleep(Duration::from_secs(3)).await;
        idle_stop.store(true, Ordering::Relaxed);
        let idle = idle.await.unwrap();

        let busy_stop = Arc::new(AtomicBool::new(false));
        let busy = churn(Arc::clone(&busy_stop));
        let mut times = Vec::new();
        for ca in &cas[1..] {
            let before = generations(&volumes);
            let start = Instant::now();
            put_trust_bundle(&bundles, &name, &ca.pem).await;
            times.push(until_every_target_moved(&volumes, &before, start, ca).await);
        }
        busy_stop.store(true, Ordering::Relaxed);
        let busy = busy.await.unwrap();
        times.sort();
        println!("\n== {MANY_SPECS} specs sharing one ClusterTrustBundle (one volume each), {ROTATIONS} rotations");
        report_rotation(&times);
        println!(
            "daemon RSS {:.1} MiB (peak {:.1} MiB); store tmpfs {:.2} MiB",
            rss as f64 / 1024.0,
            peak_rss_kib(daemon.pid()) as f64 / 1024.0,
            mib(used)
        );
        println!(
            "warm publish+unpublish while rotating: p50 {:.2} ms, p99 {:.2} ms ({} cycles); idle: p50 {:.2} ms, p99 {:.2} ms ({} cycles); p50 ratio {:.2}x",
            ms(percentile(&busy, 50)),
            ms(percentile(&busy, 99)),
            busy.len(),
            ms(percentile(&idle, 50)),
            ms(percentile(&idle, 99)),
            idle.len(),
            percentile(&busy, 50).as_secs_f64() / percentile(&idle, 50).as_secs_f64().max(f64::MIN_POSITIVE)
        );
        for (volume, target) in &volumes {
            unpublish(&daemon, volume, target).await;
        }
        bundles.delete(&name, &Default::default()).await.unwrap();
    }
}

/// `ONE_SPEC_VOLUMES` volumes of one spec in `namespace`, naming its ConfigMap `corp-ca`,
/// published: their (volume id, target).
async fn one_spec_volumes(daemon: &Daemon, namespace: &str) -> Vec<(String, PathBuf)> {
    let volumes: Vec<(String, PathBuf)> = (0..ONE_SPEC_VOLUMES)
        .map(|v| (format!("one-{v}"), daemon.target(&format!("0c1f4d6e-0000-4000-8000-{v:012}"), "trust")))
        .collect();
    let attributes = [("csi.storage.k8s.io/pod.namespace", namespace), ("configMaps", "corp-ca")];
    for (volume, target) in &volumes {
        publish(daemon, volume, target, &attributes).await;
    }
    volumes
}

fn report_rotation(times: &[Duration]) {
    let p50 = percentile(times, 50);
    println!(
        "API write → last volume shows the new bundle: p50 {:.1} ms, max {:.1} ms; kubelet refresh {} s: {:.0}x sooner (p50)",
        ms(p50),
        ms(*times.last().unwrap_or(&Duration::ZERO)),
        KUBELET_REFRESH.as_secs(),
        KUBELET_REFRESH.as_secs_f64() / p50.as_secs_f64().max(f64::MIN_POSITIVE)
    );
}

/// Each target's current generation (what `..data` names).
fn generations(volumes: &[(String, PathBuf)]) -> BTreeMap<PathBuf, PathBuf> {
    volumes
        .iter()
        .map(|(_, target)| (target.clone(), std::fs::read_link(target.join("..data")).expect("a published volume")))
        .collect()
}

/// Waits until every target names a generation other than `before`, then checks the last one
/// holds `ca`; the time from `start` to the moment the last target moved.
async fn until_every_target_moved(
    volumes: &[(String, PathBuf)],
    before: &BTreeMap<PathBuf, PathBuf>,
    start: Instant,
    ca: &TestCa,
) -> Duration {
    let mut waiting: Vec<&PathBuf> = volumes.iter().map(|(_, target)| target).collect();
    loop {
        waiting.retain(|target| std::fs::read_link(target.join("..data")).ok().as_ref() == before.get(*target));
        if waiting.is_empty() {
            break;
        }
        assert!(start.elapsed() < LIMIT, "a rotation did not reach {} volumes within {LIMIT:?}", waiting.len());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed();
    let last = &volumes.last().expect("volumes").1;
    let bundle = std::fs::read_to_string(last.join("ca-certificates.crt")).unwrap();
    let body = ca.pem.lines().nth(1).expect("a PEM body line");
    assert!(bundle.contains(body), "{}: the new generation lacks the new CA", last.display());
    elapsed
}

async fn publish(daemon: &Daemon, volume: &str, target: &Path, attributes: &[(&str, &str)]) {
    daemon
        .node()
        .node_publish_volume(publish_request(volume, target, attributes))
        .await
        .unwrap_or_else(|status| panic!("publish {volume}: {status:?}"));
}

async fn unpublish(daemon: &Daemon, volume: &str, target: &Path) {
    daemon
        .node()
        .node_unpublish_volume(unpublish_request(volume, target))
        .await
        .unwrap_or_else(|status| panic!("unpublish {volume}: {status:?}"));
}

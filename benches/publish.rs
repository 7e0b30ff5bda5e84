//! `cargo bench --bench publish`: figures for the README, measured on the machine it runs on.
//!
//! - NodePublishVolume+NodeUnpublishVolume latency over the real socket with real mounts:
//!   warm (spec already rendered) and cold (a new spec each time: full render incl. the Java
//!   store), 1000 sequential and 32-way concurrent.
//! - 1000 volumes of one spec published: the driver's tmpfs usage and the daemon's peak RSS,
//!   each beside the same figure with one volume published (measured first, so the peak is
//!   not the cold renders').
//! - `trustmount render` against `update-ca-certificates --fresh` on the same certificates,
//!   run side by side, as a ratio.
//! - Kernel memory per spec (`memory`): growth of Shmem + Slab in /proc/meminfo while 100 and
//!   1000 specs with identical content (one per namespace) are published, and while specs with
//!   different content (every attribute combination) are. `df` would count tmpfs pages only and
//!   hide the inodes and dentries. Run only this part with `cargo bench --bench publish -- memory`.
//! - With `TRUSTMOUNT_BENCH_BASELINE_BIN=<another build of trustmount>`: warm and cold sequential
//!   publishes on this build and on that one, rounds alternating between the two daemons, with
//!   the state dir on disk and on tmpfs, and that build's `render` beside ours. Run only this
//!   part with `cargo bench --bench publish -- vs-baseline`.
//!
//! It mounts, so it re-executes itself inside a private mount namespace first; nothing reaches
//! the host. Needs root.

// A bench uses a part of the tests' support (the test suite uses all of it).
#[allow(dead_code)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::certs::TestCa;
use support::client::{publish_request, unpublish_request};
use support::daemon::{BIN, Daemon, DaemonOptions};
use support::measure::{self, kernel_kib, mib, ms, peak_rss_kib, percentile, ratio, used_bytes};

const IN_NAMESPACE: &str = "TRUSTMOUNT_BENCH_IN_MOUNT_NS";
const BASELINE_ENV: &str = "TRUSTMOUNT_BENCH_BASELINE_BIN";
/// Rounds of the side-by-side runs; each daemon gets `OPERATIONS / VS_ROUNDS` per round.
const VS_ROUNDS: usize = 10;
const OPERATIONS: usize = 1000;
const CONCURRENCY: usize = 32;
const SCALE_VOLUMES: usize = 1000;
const RENDER_RUNS: usize = 7;

fn main() {
    measure::reexec_in_private_mount_namespace(IN_NAMESPACE);
    println!("trustmount benchmark ({} cores)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    let sections = measure::sections();
    if sections.iter().any(|s| s == "memory") {
        support::block_on(memory_benchmarks());
        return;
    }
    let baseline = std::env::var_os(BASELINE_ENV).map(PathBuf::from);
    if sections.iter().any(|s| s == "vs-baseline") {
        let baseline = baseline.unwrap_or_else(|| panic!("vs-baseline needs {BASELINE_ENV}"));
        support::block_on(publish_versus(&baseline, "disk (/tmp)"));
        mount_tmpfs_over_tmp();
        support::block_on(publish_versus(&baseline, "tmpfs"));
        render_against_update_ca_certificates(Some(&baseline));
        return;
    }
    let disk_cost = metadata_cycle_cost(Path::new("/tmp"));
    println!(
        "\n== state dir (records) on this machine's /tmp: create+rename+unlink costs {:.0} µs here",
        disk_cost.as_secs_f64() * 1e6
    );
    support::block_on(publish_benchmarks(true));
    if let Some(baseline) = &baseline {
        support::block_on(publish_versus(baseline, "disk (/tmp)"));
    }
    // Before /tmp becomes a tmpfs: records and target dirs on disk, as on a node.
    support::block_on(memory_benchmarks());
    // Same runs with /tmp on tmpfs (this namespace only): the driver's own cost, without the
    // disk's metadata latency.
    mount_tmpfs_over_tmp();
    let tmpfs_cost = metadata_cycle_cost(Path::new("/tmp"));
    println!(
        "\n== state dir on tmpfs: create+rename+unlink costs {:.0} µs ({:.0}x less than the disk)",
        tmpfs_cost.as_secs_f64() * 1e6,
        disk_cost.as_secs_f64() / tmpfs_cost.as_secs_f64()
    );
    support::block_on(publish_benchmarks(false));
    if let Some(baseline) = &baseline {
        support::block_on(publish_versus(baseline, "tmpfs"));
    }
    render_against_update_ca_certificates(baseline.as_deref());
}

/// Specs per run of identical content: a node's namespaces.
const MEMORY_SPECS: [usize; 2] = [100, 1000];
/// Enough for 1000 specs stored the way the store did before content was shared.
const MEMORY_STORE_SIZE: &str = "2Gi";

/// Every combination of the attributes that change a volume's content.
fn content_variants() -> Vec<Vec<(&'static str, &'static str)>> {
    let mut variants = Vec::new();
    for system_roots in ["true", "false"] {
        for layout in ["debian", "rhel", "suse"] {
            for java in ["jks", "pkcs12", "none"] {
                for expired in ["drop", "keep"] {
                    variants.push(vec![
                        ("systemRoots", system_roots),
                        ("layout", layout),
                        ("javaTruststore", java),
                        ("expired", expired),
                    ]);
                }
            }
        }
    }
    variants
}

/// Kernel memory a spec costs: publishes one volume per spec into a fresh driver, measuring the
/// growth of Shmem + Slab (and of the tmpfs's own page count) across the batch. The first spec
/// is published before the "before" reading, so "identical" measures what a spec whose content
/// another spec already has costs.
async fn memory_benchmarks() {
    println!("\nkernel memory per spec (Shmem + Slab growth in /proc/meminfo; tmpfs pages from statvfs)");
    println!("{:<34} {:>6} {:>12} {:>13} {:>13}", "", "specs", "total MiB", "KiB per spec", "tmpfs KiB/spec");
    for count in MEMORY_SPECS {
        let label = format!("identical content, {count} namespaces");
        let specs: Vec<Vec<(String, String)>> = (0..count).map(|i| namespace_attributes(&format!("ns-{i}"))).collect();
        memory_run(&label, &specs).await;
    }
    let variants: Vec<Vec<(String, String)>> = content_variants()
        .into_iter()
        .map(|variant| {
            let mut attributes = namespace_attributes("ns-variants");
            attributes.extend(variant.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())));
            attributes
        })
        .collect();
    memory_run(&format!("different content ({} variants)", variants.len()), &variants).await;
}

fn namespace_attributes(namespace: &str) -> Vec<(String, String)> {
    vec![("csi.storage.k8s.io/pod.namespace".to_owned(), namespace.to_owned())]
}

async fn memory_run(label: &str, specs: &[Vec<(String, String)>]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "Bench Private CA");
    let mut options = DaemonOptions::default().extra_pem(&ca.cert_path);
    // One namespace holds every content variant: more specs, bytes and files than its default
    // budgets.
    let args = [
        "--store-size",
        MEMORY_STORE_SIZE,
        "--max-namespace-specs",
        "100000",
        "--max-namespace-store-bytes",
        MEMORY_STORE_SIZE,
        "--max-namespace-store-files",
        "100000000",
    ];
    options.extra_args.extend(args.map(str::to_owned));
    let daemon = Daemon::start(options).await;
    // The content every spec of the batch has (for "identical"), already in the store.
    let first = daemon.target("memory-first", "trust");
    call_publish(&daemon, "memory-first", &first, &[("csi.storage.k8s.io/pod.namespace", "ns-first")]).await;

    let targets: Vec<PathBuf> = (0..specs.len()).map(|i| daemon.target(&format!("memory-{i}"), "trust")).collect();
    let tmpfs_before = used_bytes(&daemon.store_dir());
    let before = kernel_kib();
    for (i, (target, attributes)) in targets.iter().zip(specs).enumerate() {
        let attributes: Vec<(&str, &str)> = attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        call_publish(&daemon, &format!("memory-{i}"), target, &attributes).await;
    }
    let grown = kernel_kib().saturating_sub(before);
    let tmpfs_grown = used_bytes(&daemon.store_dir()).saturating_sub(tmpfs_before);
    let n = specs.len() as f64;
    println!(
        "{label:<34} {:>6} {:>12.1} {:>13.1} {:>13.1}",
        specs.len(),
        grown as f64 / 1024.0,
        grown as f64 / n,
        tmpfs_grown as f64 / 1024.0 / n
    );
    for (i, target) in targets.iter().enumerate() {
        call_unpublish(&daemon, &format!("memory-{i}"), target).await;
    }
    call_unpublish(&daemon, "memory-first", &first).await;
}

fn mount_tmpfs_over_tmp() {
    let status = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1g", "tmpfs", "/tmp"]).status();
    assert!(status.is_ok_and(|s| s.success()), "mount tmpfs over /tmp in the bench namespace");
}

/// Mean cost of the file-system work one record costs (create, rename, unlink) in `dir`.
fn metadata_cycle_cost(dir: &Path) -> Duration {
    const ROUNDS: u32 = 200;
    let scratch = tempfile::tempdir_in(dir).expect("scratch dir");
    let started = Instant::now();
    for i in 0..ROUNDS {
        let tmp = scratch.path().join(format!(".tmp-{i}"));
        let record = scratch.path().join(format!("{i}.json"));
        std::fs::write(&tmp, [b'x'; 400]).expect("write");
        std::fs::rename(&tmp, &record).expect("rename");
        std::fs::remove_file(&record).expect("unlink");
    }
    started.elapsed() / ROUNDS
}

async fn publish_benchmarks(with_scale: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "Bench Private CA");
    let daemon = Arc::new(Daemon::start(DaemonOptions::default().extra_pem(&ca.cert_path)).await);

    // Keeps the shared spec alive, so every "warm" publish finds it rendered.
    let anchor = daemon.target("anchor", "trust");
    call_publish(&daemon, "anchor", &anchor, &[]).await;
    let idle_rss = peak_rss_kib(daemon.pid());

    if with_scale {
        scale(&daemon, idle_rss).await;
    }

    println!("\n{OPERATIONS} volumes each: NodePublishVolume, then NodeUnpublishVolume (ms)");
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>11} {:>11} {:>9}",
        "", "pub p50", "pub p99", "pub max", "unpub p50", "unpub p99", "ops/s"
    );
    for (name, cold, concurrency) in [
        ("warm, sequential", false, 1),
        ("warm, 32 concurrent", false, CONCURRENCY),
        ("cold, sequential", true, 1),
        ("cold, 32 concurrent", true, CONCURRENCY),
    ] {
        let started = Instant::now();
        let (mut publishes, mut unpublishes) =
            publish_unpublish_cycles(&daemon, name, OPERATIONS, cold, concurrency).await;
        let per_second = (2 * OPERATIONS) as f64 / started.elapsed().as_secs_f64();
        publishes.sort();
        unpublishes.sort();
        println!(
            "{name:<22} {:>9.3} {:>9.3} {:>9.3} {:>11.3} {:>11.3} {:>9.0}",
            ms(percentile(&publishes, 50)),
            ms(percentile(&publishes, 99)),
            ms(*publishes.last().unwrap_or(&Duration::ZERO)),
            ms(percentile(&unpublishes, 50)),
            ms(percentile(&unpublishes, 99)),
            per_second
        );
    }

    call_unpublish(&daemon, "anchor", &anchor).await;
}

/// Warm and cold sequential publishes on this build and on `baseline`, each case in
/// `VS_ROUNDS` rounds alternating between the two daemons (which goes first alternates too),
/// so the machine's drift and other load hit both alike.
async fn publish_versus(baseline: &Path, state_dir: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "Bench Private CA");
    let mut daemons = Vec::new();
    for binary in [None, Some(baseline.to_path_buf())] {
        let options = DaemonOptions { binary, ..DaemonOptions::default() }.extra_pem(&ca.cert_path);
        let daemon = Arc::new(Daemon::start(options).await);
        let anchor = daemon.target("anchor", "trust");
        call_publish(&daemon, "anchor", &anchor, &[]).await;
        daemons.push(daemon);
    }
    println!(
        "\n== state dir on {state_dir}: this build vs {}, {OPERATIONS} volumes each in {VS_ROUNDS} alternating rounds (ms)",
        baseline.display()
    );
    println!("{:<18} {:<11} {:>9} {:>9} {:>11} {:>11}", "", "", "pub p50", "pub p99", "unpub p50", "unpub p99");
    for (name, cold) in [("warm, sequential", false), ("cold, sequential", true)] {
        let mut runs = vec![(Vec::new(), Vec::new()); daemons.len()];
        for round in 0..VS_ROUNDS {
            for offset in 0..daemons.len() {
                let which = (round + offset) % daemons.len();
                let label = format!("vs {name} {which} {round}");
                let (publishes, unpublishes) =
                    publish_unpublish_cycles(&daemons[which], &label, OPERATIONS / VS_ROUNDS, cold, 1).await;
                runs[which].0.extend(publishes);
                runs[which].1.extend(unpublishes);
            }
        }
        for (build, (publishes, unpublishes)) in ["this build", "baseline"].iter().zip(&mut runs) {
            publishes.sort();
            unpublishes.sort();
            println!(
                "{name:<18} {build:<11} {:>9.3} {:>9.3} {:>11.3} {:>11.3}",
                ms(percentile(publishes, 50)),
                ms(percentile(publishes, 99)),
                ms(percentile(unpublishes, 50)),
                ms(percentile(unpublishes, 99)),
            );
        }
        let (ours, theirs) = (&runs[0], &runs[1]);
        println!(
            "{name:<18} this / baseline: pub p50 {:.2}x, pub p99 {:.2}x, unpub p50 {:.2}x",
            ratio(percentile(&ours.0, 50), percentile(&theirs.0, 50)),
            ratio(percentile(&ours.0, 99), percentile(&theirs.0, 99)),
            ratio(percentile(&ours.1, 50), percentile(&theirs.1, 50)),
        );
    }
    for daemon in &daemons {
        call_unpublish(daemon, "anchor", &daemon.target("anchor", "trust")).await;
    }
}

/// 1000 volumes of one spec, beside the same figures with one volume.
async fn scale(daemon: &Arc<Daemon>, idle_rss: u64) {
    let one_volume_bytes = used_bytes(&daemon.store_dir());
    let targets: Vec<PathBuf> = (0..SCALE_VOLUMES).map(|i| daemon.target(&format!("scale-{i}"), "trust")).collect();
    for (i, target) in targets.iter().enumerate() {
        call_publish(daemon, &format!("scale-{i}"), target, &[]).await;
    }
    let many_volumes_bytes = used_bytes(&daemon.store_dir());
    let peak_rss = peak_rss_kib(daemon.pid());
    println!("\n{SCALE_VOLUMES} volumes of one spec published (beside 1 volume)");
    println!(
        "  driver tmpfs used: {:.2} MiB (1 volume: {:.2} MiB, ratio {:.2}x)",
        mib(many_volumes_bytes),
        mib(one_volume_bytes),
        many_volumes_bytes as f64 / one_volume_bytes.max(1) as f64
    );
    println!(
        "  daemon peak RSS:   {:.2} MiB (1 volume: {:.2} MiB, ratio {:.2}x)",
        peak_rss as f64 / 1024.0,
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / idle_rss.max(1) as f64
    );
    for (i, target) in targets.iter().enumerate() {
        call_unpublish(daemon, &format!("scale-{i}"), target).await;
    }
}

/// `operations` volumes, one publish then unpublish each, `concurrency` volumes in flight;
/// returns each call's latency. Cold operations use a new namespace each (named after the
/// volume: `name` must be new), so each renders a new spec directory (and its unpublish
/// removes it again).
async fn publish_unpublish_cycles(
    daemon: &Arc<Daemon>,
    name: &str,
    operations: usize,
    cold: bool,
    concurrency: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let label: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
    let jobs: Vec<(String, PathBuf)> = (0..operations)
        .map(|i| {
            let volume = format!("{label}-{i}");
            let target = daemon.target(&volume, "trust");
            (volume, target)
        })
        .collect();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (volume, target) in jobs {
        let permit = Arc::clone(&semaphore).acquire_owned().await.expect("semaphore");
        let daemon = Arc::clone(daemon);
        tasks.spawn(async move {
            let namespace = if cold { volume.clone() } else { String::new() };
            let attributes = [("csi.storage.k8s.io/pod.namespace", namespace.as_str())];
            let started = Instant::now();
            call_publish(&daemon, &volume, &target, if cold { &attributes } else { &[] }).await;
            let published = started.elapsed();
            call_unpublish(&daemon, &volume, &target).await;
            drop(permit);
            (published, started.elapsed() - published)
        });
    }
    let mut publishes = Vec::with_capacity(operations);
    let mut unpublishes = Vec::with_capacity(operations);
    while let Some(latency) = tasks.join_next().await {
        let (publish, unpublish) = latency.expect("benchmark task");
        publishes.push(publish);
        unpublishes.push(unpublish);
    }
    (publishes, unpublishes)
}

async fn call_publish(daemon: &Daemon, volume: &str, target: &Path, attributes: &[(&str, &str)]) {
    daemon
        .node()
        .node_publish_volume(publish_request(volume, target, attributes))
        .await
        .unwrap_or_else(|status| panic!("publish {volume}: {status}\n{}", daemon.stderr()));
}

async fn call_unpublish(daemon: &Daemon, volume: &str, target: &Path) {
    daemon
        .node()
        .node_unpublish_volume(unpublish_request(volume, target))
        .await
        .unwrap_or_else(|status| panic!("unpublish {volume}: {status}\n{}", daemon.stderr()));
}

/// Both tools get the same certificates: the machine's CA set, through Debian's own tool
/// (with an empty hooks dir, so it builds no Java store — ours does, so this favours it).
/// With `baseline`, that build's `render` runs too, its runs alternating with ours.
fn render_against_update_ca_certificates(baseline: Option<&Path>) {
    println!("\nrender vs update-ca-certificates --fresh, median of {RENDER_RUNS} runs each");
    if which("update-ca-certificates").is_none() {
        println!("  skipped: update-ca-certificates is not installed (apt-get install ca-certificates)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let hooks = dir.path().join("no-hooks");
    std::fs::create_dir_all(&hooks).expect("hooks dir");
    let debian_out = dir.path().join("debian");
    let ours_out = dir.path().join("trustmount");
    let debian = median_run(RENDER_RUNS, || {
        let _ = std::fs::remove_dir_all(&debian_out);
        std::fs::create_dir_all(&debian_out).expect("out dir");
        let mut command = Command::new("update-ca-certificates");
        command.arg("--fresh").arg("--etccertsdir").arg(&debian_out).arg("--hooksdir").arg(&hooks);
        command
    });
    let roots = debian_out.join("ca-certificates.crt");
    let count = std::fs::read_to_string(&roots).map_or(0, |pem| pem.matches("BEGIN CERTIFICATE").count());
    let render = |binary: &Path| {
        let _ = std::fs::remove_dir_all(&ours_out);
        let mut command = Command::new(binary);
        command.arg("render").arg("--out").arg(&ours_out).arg("--system-roots").arg(&roots);
        command
    };
    let mut binaries = vec![PathBuf::from(BIN)];
    binaries.extend(baseline.map(Path::to_path_buf));
    let renders = median_runs(RENDER_RUNS, binaries.iter().map(|binary| || render(binary)).collect());
    let ours = renders[0];
    println!("  certificates:                        {count}");
    println!("  update-ca-certificates --fresh:      {:>9.2} ms (no hooks: no Java store)", ms(debian));
    println!("  trustmount render (incl. JKS store): {:>9.2} ms", ms(ours));
    println!("  ratio: trustmount is {:.0}x faster", debian.as_secs_f64() / ours.as_secs_f64());
    if let (Some(path), Some(theirs)) = (baseline, renders.get(1)) {
        println!("  baseline render ({}): {:>9.2} ms", path.display(), ms(*theirs));
        println!("  ratio this / baseline: {:.2}x", ratio(ours, *theirs));
    }
    if let Some(with_java) = debian_with_java_store(&hooks) {
        println!("  update-ca-certificates --fresh + its Java store step: {:>9.2} ms", ms(with_java));
        println!("  ratio, same outputs as trustmount: {:.0}x faster", with_java.as_secs_f64() / ours.as_secs_f64());
    }
}

/// Debian's whole `update-ca-certificates --fresh` with ca-certificates-java installed: the
/// PEM side, then the JKS store its `jks-keystore` hook has dpkg build (the same command the
/// package's trigger runs). That step writes the fixed path /etc/ssl/certs/java/cacerts, so it
/// runs with a tmpfs over /etc/ssl/certs — in this bench's private mount namespace only.
fn debian_with_java_store(hooks: &Path) -> Option<Duration> {
    const JAR: &str = "/usr/share/ca-certificates-java/ca-certificates-java.jar";
    if !Path::new(JAR).is_file() || which("java").is_none() {
        println!("  (Java store step skipped: ca-certificates-java or java is not installed)");
        return None;
    }
    let mounted = Command::new("mount").args(["-t", "tmpfs", "tmpfs", "/etc/ssl/certs"]).status();
    assert!(mounted.is_ok_and(|s| s.success()), "mount tmpfs over /etc/ssl/certs in the bench namespace");
    let script = format!(
        "[ \"$(stat -f -c %T /etc/ssl/certs)\" = tmpfs ] || {{ echo 'not on tmpfs: refusing' >&2; exit 1; }}
         rm -f /etc/ssl/certs/java/cacerts && mkdir -p /etc/ssl/certs/java \\
         && update-ca-certificates --fresh --hooksdir '{hooks}' \\
         && for pem in /etc/ssl/certs/*.pem; do echo \"+$pem\"; done \\
            | java -Xmx64m -jar {JAR} -storepass changeit",
        hooks = hooks.display()
    );
    let took = median_run(RENDER_RUNS, || {
        let mut command = Command::new("sh");
        command.args(["-c", &script]);
        command
    });
    let _ = Command::new("umount").arg("/etc/ssl/certs").status();
    Some(took)
}

fn median_run(runs: usize, command: impl FnMut() -> Command) -> Duration {
    median_runs(runs, vec![command])[0]
}

/// The median of `runs` runs of each command, run after run taking turns, so drift on the
/// machine hits them alike.
fn median_runs(runs: usize, mut commands: Vec<impl FnMut() -> Command>) -> Vec<Duration> {
    let mut times = vec![Vec::with_capacity(runs); commands.len()];
    for _ in 0..runs {
        for (command, times) in commands.iter_mut().zip(&mut times) {
            let mut command = command();
            command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
            let started = Instant::now();
            let status = command.status().expect("run command");
            times.push(started.elapsed());
            assert!(status.success(), "{command:?} failed");
        }
    }
    times
        .into_iter()
        .map(|mut times| {
            times.sort();
            times[times.len() / 2]
        })
        .collect()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

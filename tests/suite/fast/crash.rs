//! Crash safety and restarts. The real `trustmount serve` over its socket, with real mounts, each
//! test in its own private mount namespace: `kill -9` in the middle of publish and unpublish
//! storms (at several moments), a corrupt record, SIGTERM during a storm. Then every crash point
//! of publish, unpublish and refresh that a storm only hits by chance, made exactly with the
//! store's own API and a restart (`Store::open`).
//!
//! After each restart, without any retry, every volume must be fully published (mounted
//! read-only from the store, a published record, every file readable and equal to a reference
//! volume's) or cleanly absent (not mounted, no record, the target dir absent or empty).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::Code;
use trustmount::bundle::{Entry, Files};
use trustmount::clock::Clock;
use trustmount::domain::{PodInfo, VolumeSpec};
use trustmount::volume::{self, MountEntry, Publication, Store, StoreConfig};

use crate::in_private_mount_namespace;
use crate::support;
use crate::support::block_on;
use crate::support::certs::TestCa;
use crate::support::client::{publish_request, unpublish_request};
use crate::support::daemon::{Daemon, DaemonOptions};

const VOLUMES: usize = 100;
/// Distinct specs in a storm (namespaces), so some publishes render while others only mount.
const NAMESPACES: usize = 10;

/// Volume `i`: its namespace and whether it takes the system roots (two contents, so two
/// references).
fn attributes(i: usize) -> Vec<(String, String)> {
    vec![
        ("csi.storage.k8s.io/pod.namespace".to_owned(), format!("ns-{}", i % NAMESPACES)),
        ("systemRoots".to_owned(), if i.is_multiple_of(2) { "true" } else { "false" }.to_owned()),
    ]
}

fn volume_id(i: usize) -> String {
    format!("vol-{i}")
}

/// Every file a volume shows (its visible names, symlinks followed, directories walked), with
/// its bytes or why it could not be read.
fn contents(dir: &Path) -> BTreeMap<String, Result<Vec<u8>, String>> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Result<Vec<u8>, String>>) {
        let Ok(entries) = fs::read_dir(dir) else {
            out.insert(prefix.to_owned(), Err("cannot list".to_owned()));
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if prefix.is_empty() && name.starts_with("..") {
                continue; // generations: their names differ between volumes
            }
            let path = entry.path();
            let shown = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            match fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => walk(&path, &shown, out),
                Ok(_) => {
                    out.insert(shown, fs::read(&path).map_err(|e| e.to_string()));
                }
                Err(e) => {
                    out.insert(shown, Err(e.to_string()));
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, "", &mut out);
    out
}

/// The driver's state dir as the test reads it: what is on disk and mounted, not what the
/// driver says.
struct OnDisk {
    state_dir: PathBuf,
}

impl OnDisk {
    fn records_dir(&self) -> PathBuf {
        self.state_dir.join("volumes")
    }

    /// Every record file by target, as JSON (what is on disk, not what the driver thinks).
    fn records(&self) -> HashMap<PathBuf, serde_json::Value> {
        let mut out = HashMap::new();
        for entry in fs::read_dir(self.records_dir()).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                continue;
            }
            let mut json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("record {} does not parse: {e}", path.display()));
            // The state is the file name's: `<name>.pending` or `<name>.json`.
            let state = match path.extension().and_then(|e| e.to_str()) {
                Some("json") => "published",
                Some("pending") => "pending",
                other => panic!("a record file named {other:?}: {}", path.display()),
            };
            json["state"] = state.into();
            let target = PathBuf::from(json["target"].as_str().unwrap());
            out.insert(target, json);
        }
        out
    }

    fn record_files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.records_dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into())
            .collect();
        names.sort();
        names
    }

    /// The device of the driver's tmpfs.
    fn device(&self) -> String {
        let tmpfs = fs::canonicalize(self.state_dir.join("tmpfs")).unwrap();
        volume::mounts()
            .unwrap()
            .into_iter()
            .rev()
            .find(|m| m.mount_point == tmpfs && m.fs_type == "tmpfs")
            .unwrap_or_else(|| panic!("no tmpfs at {}", tmpfs.display()))
            .device
    }

    /// Every bind mount of a spec dir (or of anything below `specs/`), wherever it is.
    fn volume_mounts(&self) -> Vec<MountEntry> {
        let device = self.device();
        volume::mounts()
            .unwrap()
            .into_iter()
            .filter(|m| m.device == device && m.root.to_str().is_some_and(|root| root.starts_with("/specs/")))
            .collect()
    }

    /// The entries of the store (spec dirs by digest, and anything else).
    fn store_entries(&self) -> BTreeSet<String> {
        fs::read_dir(self.state_dir.join("store"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into())
            .collect()
    }
}

/// Checks, without changing anything, that every target is fully published or cleanly absent,
/// that nothing of ours exists beside them, and returns the published ones.
fn assert_published_or_absent(
    store: &OnDisk,
    targets: &[PathBuf],
    references: &[BTreeMap<String, Result<Vec<u8>, String>>; 2],
    context: &str,
) -> BTreeSet<usize> {
    let records = store.records();
    let mounts = store.volume_mounts();
    let mut published = BTreeSet::new();
    let mut digests = BTreeSet::new();
    for (i, target) in targets.iter().enumerate() {
        let at: Vec<&MountEntry> = mounts.iter().filter(|m| &m.mount_point == target).collect();
        let any_mount = support::fsutil::is_mount_point(target);
        match records.get(target) {
            Some(rec) => {
                assert_eq!(rec["state"], "published", "{context}: vol-{i} has a record that is not published: {rec}");
                assert_eq!(rec["volume_id"], volume_id(i).as_str(), "{context}: vol-{i}");
                assert_eq!(at.len(), 1, "{context}: vol-{i} is recorded but mounted {} times from the store", at.len());
                assert!(at[0].read_only, "{context}: vol-{i} is mounted read-write");
                assert!(!at[0].deleted(), "{context}: vol-{i} is mounted on a removed spec directory");
                let digest = rec["digest"].as_str().unwrap();
                assert_eq!(at[0].root, Path::new("/specs").join(digest), "{context}: vol-{i} shows another spec");
                let shown = contents(target);
                assert_eq!(shown, references[i % 2], "{context}: vol-{i} does not hold what its reference holds");
                digests.insert(digest.to_owned());
                published.insert(i);
            }
            None => {
                assert!(!any_mount, "{context}: vol-{i} is mounted without a record");
                let empty = fs::read_dir(target).map(|mut e| e.next().is_none()).unwrap_or(true);
                assert!(empty, "{context}: vol-{i} has no record but its target holds files");
            }
        }
    }
    assert_eq!(records.len(), published.len(), "{context}: records of other targets: {:?}", records.keys());
    assert_eq!(mounts.len(), published.len(), "{context}: mounts of the store elsewhere: {mounts:?}");
    assert!(!store.records_dir().join("corrupt").exists(), "{context}: a record was found corrupt");
    assert_eq!(
        store.store_entries(),
        digests,
        "{context}: the store holds spec dirs no volume uses, or half-made ones"
    );
    published
}

/// When a storm's daemon is killed.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// Once this many calls have answered OK.
    AfterOk(usize),
    /// This long after the first call went out.
    After(Duration),
}

/// What a storm's calls answered, by volume, and which had answered OK before the signal.
struct Storm {
    results: Vec<Result<(), tonic::Status>>,
    ok_before_signal: BTreeSet<usize>,
}

#[derive(Clone, Copy)]
enum Call {
    Publish,
    Unpublish,
}

/// `VOLUMES` calls at once; `signal` is sent to the daemon at `kill`.
async fn storm(
    daemon: &Daemon,
    targets: &[PathBuf],
    call: Call,
    kill: Kill,
    signal: nix::sys::signal::Signal,
) -> Storm {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, target) in targets.iter().enumerate() {
        let mut node = daemon.node();
        let target = target.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let result = match call {
                Call::Publish => {
                    let owned = attributes(i);
                    let extra: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    node.node_publish_volume(publish_request(&volume_id(i), &target, &extra)).await.map(|_| ())
                }
                Call::Unpublish => {
                    node.node_unpublish_volume(unpublish_request(&volume_id(i), &target)).await.map(|_| ())
                }
            };
            let _ = tx.send((i, result));
        });
    }
    drop(tx);
    let pid = nix::unistd::Pid::from_raw(daemon.pid() as i32);
    let mut results: Vec<Option<Result<(), tonic::Status>>> = (0..targets.len()).map(|_| None).collect();
    let mut ok_before_signal = BTreeSet::new();
    let mut signalled = false;
    let deadline = match kill {
        Kill::After(delay) => Some(tokio::time::Instant::now() + delay),
        Kill::AfterOk(_) => None,
    };
    let send = |signalled: &mut bool| {
        if !*signalled {
            nix::sys::signal::kill(pid, signal).unwrap();
            *signalled = true;
        }
    };
    loop {
        let received = match deadline {
            Some(at) if !signalled => tokio::select! {
                received = rx.recv() => received,
                () = tokio::time::sleep_until(at) => {
                    send(&mut signalled);
                    continue;
                }
            },
            _ => rx.recv().await,
        };
        let Some((i, result)) = received else { break };
        if result.is_ok() && !signalled {
            ok_before_signal.insert(i);
        }
        results[i] = Some(result);
        if let Kill::AfterOk(n) = kill
            && ok_before_signal.len() >= n
        {
            send(&mut signalled);
        }
    }
    // Every call answered before the signal: it goes now, so the round still tests a restart.
    send(&mut signalled);
    Storm { results: results.into_iter().map(|r| r.expect("every call answers")).collect(), ok_before_signal }
}

/// Publishes (or unpublishes) every volume, one call each, all at once; every call must succeed.
async fn all(daemon: &Daemon, targets: &[PathBuf], call: Call) {
    let mut tasks = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let mut node = daemon.node();
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            match call {
                Call::Publish => {
                    let owned = attributes(i);
                    let extra: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    node.node_publish_volume(publish_request(&volume_id(i), &target, &extra)).await.map(|_| ())
                }
                Call::Unpublish => {
                    node.node_unpublish_volume(unpublish_request(&volume_id(i), &target)).await.map(|_| ())
                }
            }
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        task.await.unwrap().unwrap_or_else(|s| panic!("vol-{i}: {s}"));
    }
}

/// The two contents (systemRoots true, false) as a volume shows them, read from reference
/// volumes of a namespace no storm uses, which are then unpublished.
async fn references(daemon: &Daemon) -> [BTreeMap<String, Result<Vec<u8>, String>>; 2] {
    let mut out = Vec::new();
    for system_roots in ["true", "false"] {
        let target = daemon.target(&format!("reference-{system_roots}"), "trust");
        let extra = [("csi.storage.k8s.io/pod.namespace", "reference"), ("systemRoots", system_roots)];
        daemon.node().node_publish_volume(publish_request("reference", &target, &extra)).await.unwrap();
        let shown = contents(&target);
        assert!(shown.contains_key("ca-certificates.crt") && shown.values().all(Result::is_ok), "{shown:?}");
        out.push(shown);
        daemon.node().node_unpublish_volume(unpublish_request("reference", &target)).await.unwrap();
    }
    out.try_into().unwrap()
}

/// After the checks of a restart: kubelet-style retries of every publish, then every unpublish,
/// and nothing of ours may be left.
async fn retry_then_clean_up(
    daemon: &Daemon,
    store: &OnDisk,
    targets: &[PathBuf],
    references: &[BTreeMap<String, Result<Vec<u8>, String>>; 2],
    context: &str,
) {
    all(daemon, targets, Call::Publish).await;
    let published = assert_published_or_absent(store, targets, references, &format!("{context}, after the retries"));
    assert_eq!(published.len(), targets.len(), "{context}: a retried publish left its volume unpublished");
    all(daemon, targets, Call::Unpublish).await;
    assert_clean(store, targets, context);
}

fn assert_clean(store: &OnDisk, targets: &[PathBuf], context: &str) {
    assert_eq!(store.volume_mounts(), Vec::new(), "{context}: mounts of the store left");
    assert!(targets.iter().all(|t| !t.exists()), "{context}: a target is left");
    assert_eq!(store.record_files(), Vec::<String>::new(), "{context}: records left");
    assert_eq!(store.store_entries(), BTreeSet::new(), "{context}: spec dirs left");
}

fn options(ca: &TestCa) -> DaemonOptions {
    DaemonOptions::default().extra_pem(&ca.cert_path)
}

#[test]
fn kill_9_during_a_publish_storm_leaves_every_volume_published_or_cleanly_absent() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let certs = tempfile::tempdir().unwrap();
        let ca = TestCa::new(certs.path(), "ca");
        let kills = [
            Kill::AfterOk(1),
            Kill::AfterOk(30),
            Kill::AfterOk(70),
            Kill::AfterOk(99),
            Kill::After(Duration::from_millis(300)),
            Kill::After(Duration::from_millis(800)),
        ];
        for kill in kills {
            let context = format!("kill -9 at {kill:?}");
            let mut first = Daemon::start(options(&ca)).await;
            let references = references(&first).await;
            let store = OnDisk { state_dir: first.state_dir.clone() };
            let targets: Vec<PathBuf> = (0..VOLUMES).map(|i| first.target(&format!("pod-{i}"), "trust")).collect();
            let storm = storm(&first, &targets, Call::Publish, kill, nix::sys::signal::Signal::SIGKILL).await;
            let status = first.stop();
            assert_eq!(status.to_string(), "signal: 9 (SIGKILL)", "{context}");

            let mut second = Daemon::start(options(&ca).restart_in(&first.root)).await;
            let published = assert_published_or_absent(&store, &targets, &references, &context);
            let lost: Vec<_> = storm.ok_before_signal.difference(&published).collect();
            assert!(lost.is_empty(), "{context}: publishes that answered OK are gone after the restart: {lost:?}");
            eprintln!(
                "{context}: {} answered OK before the kill, {} published after the restart, {} cleanly absent",
                storm.ok_before_signal.len(),
                published.len(),
                VOLUMES - published.len()
            );
            assert!(second.stderr().contains("volume store open"));
            retry_then_clean_up(&second, &store, &targets, &references, &context).await;
            assert!(second.stop().success(), "{context}");
        }
    });
}

#[test]
fn kill_9_during_an_unpublish_storm_leaves_every_volume_published_or_cleanly_absent() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let certs = tempfile::tempdir().unwrap();
        let ca = TestCa::new(certs.path(), "ca");
        for kill in [Kill::AfterOk(1), Kill::AfterOk(50), Kill::After(Duration::from_millis(30))] {
            let context = format!("kill -9 of an unpublish storm at {kill:?}");
            let mut first = Daemon::start(options(&ca)).await;
            let references = references(&first).await;
            let store = OnDisk { state_dir: first.state_dir.clone() };
            let targets: Vec<PathBuf> = (0..VOLUMES).map(|i| first.target(&format!("pod-{i}"), "trust")).collect();
            all(&first, &targets, Call::Publish).await;
            let storm = storm(&first, &targets, Call::Unpublish, kill, nix::sys::signal::Signal::SIGKILL).await;
            first.stop();

            let mut second = Daemon::start(options(&ca).restart_in(&first.root)).await;
            let published = assert_published_or_absent(&store, &targets, &references, &context);
            let back: Vec<_> = storm.ok_before_signal.intersection(&published).collect();
            assert!(back.is_empty(), "{context}: unpublishes that answered OK came back after the restart: {back:?}");
            eprintln!(
                "{context}: {} unpublished OK before the kill, {} still published after the restart",
                storm.ok_before_signal.len(),
                published.len()
            );
            all(&second, &targets, Call::Unpublish).await;
            assert_clean(&store, &targets, &context);
            assert!(second.stop().success(), "{context}");
        }
    });
}

#[test]
fn sigterm_during_a_publish_storm_answers_every_accepted_call_and_leaves_the_mounts() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let certs = tempfile::tempdir().unwrap();
        let ca = TestCa::new(certs.path(), "ca");
        let mut first = Daemon::start(options(&ca)).await;
        let references = references(&first).await;
        let store = OnDisk { state_dir: first.state_dir.clone() };
        let targets: Vec<PathBuf> = (0..VOLUMES).map(|i| first.target(&format!("pod-{i}"), "trust")).collect();
        let storm = storm(&first, &targets, Call::Publish, Kill::AfterOk(20), nix::sys::signal::Signal::SIGTERM).await;
        let status = first.stop();
        assert!(status.success(), "SIGTERM must exit 0, got {status}\n{}", first.stderr());
        assert!(first.stderr().contains("shutting down"), "{}", first.stderr());

        // Every call got an answer: OK, or refused because it came after the listener closed.
        let mut answered_ok = BTreeSet::new();
        for (i, result) in storm.results.iter().enumerate() {
            match result {
                Ok(()) => {
                    answered_ok.insert(i);
                }
                Err(status) => assert_eq!(status.code(), Code::Unavailable, "vol-{i}: {status}"),
            }
        }
        let in_flight_answered = answered_ok.len() - storm.ok_before_signal.len();
        eprintln!(
            "SIGTERM after {} OK: {} more answered OK after it, {} refused",
            storm.ok_before_signal.len(),
            in_flight_answered,
            VOLUMES - answered_ok.len()
        );
        assert!(in_flight_answered > 0, "no call in flight at SIGTERM got its answer");

        // The daemon is gone and the mounts stay, complete; refused publishes left nothing.
        let published = assert_published_or_absent(&store, &targets, &references, "after SIGTERM");
        assert_eq!(published, answered_ok, "published volumes are exactly those answered OK");

        let mut second = Daemon::start(options(&ca).restart_in(&first.root)).await;
        assert_eq!(
            assert_published_or_absent(&store, &targets, &references, "after the restart"),
            answered_ok,
            "the restart adopts every volume"
        );
        all(&second, &targets, Call::Unpublish).await;
        assert_clean(&store, &targets, "SIGTERM storm");
        assert!(second.stop().success());
    });
}

/// When a rotation's daemon is killed: once this many targets show the new bundle.
const ROTATION_KILLS: [usize; 3] = [1, VOLUMES / 2, VOLUMES - 1];

/// Replaces `path` the way an editor or a ConfigMap update does: a new file renamed over it.
fn replace_file(path: &Path, text: &str) {
    let staged = path.with_extension("new");
    fs::write(&staged, text).unwrap();
    fs::rename(&staged, path).unwrap();
}

#[test]
fn kill_9_during_a_rotation_leaves_every_volume_on_one_whole_bundle_and_the_restart_finishes_it() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let certs = tempfile::tempdir().unwrap();
        let (old, new) = (TestCa::new(certs.path(), "old"), TestCa::new(certs.path(), "new"));
        let trust = certs.path().join("org-ca.pem");
        for killed_after in ROTATION_KILLS {
            let context = format!("kill -9 once {killed_after} of {VOLUMES} volumes rotated");
            replace_file(&trust, &old.pem);
            let options = DaemonOptions::default().extra_pem(&trust);
            let mut first = Daemon::start(options.clone()).await;
            let before = references(&first).await;
            let store = OnDisk { state_dir: first.state_dir.clone() };
            let targets: Vec<PathBuf> = (0..VOLUMES).map(|i| first.target(&format!("pod-{i}"), "trust")).collect();
            all(&first, &targets, Call::Publish).await;

            // 20 specs (10 namespaces, with and without system roots) refresh in one pass.
            replace_file(&trust, &new.pem);
            let new_body = new.pem.lines().nth(1).unwrap().to_owned();
            let rotated = |target: &PathBuf| {
                fs::read_to_string(target.join("ca-certificates.crt")).is_ok_and(|bundle| bundle.contains(&new_body))
            };
            // Polled tightly: the pass over 20 specs takes tens of milliseconds.
            let arrived = support::poll_until(Duration::from_secs(20), Duration::from_millis(1), async || {
                if targets.iter().filter(|t| rotated(t)).count() >= killed_after { Ok(()) } else { Err(()) }
            })
            .await;
            assert!(arrived.is_ok(), "{context}: the rotation did not arrive");
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(first.pid() as i32), nix::sys::signal::Signal::SIGKILL)
                .unwrap();
            assert_eq!(first.stop().to_string(), "signal: 9 (SIGKILL)", "{context}");

            // Dead daemon: every volume is still published, and (checked below, once the new
            // bundle is known) shows one whole bundle, the old or the new.
            let shown: Vec<_> = targets.iter().map(|target| contents(target)).collect();
            let moved = targets.iter().filter(|t| rotated(t)).count();
            eprintln!("{context}: {moved} of {VOLUMES} showed the new bundle at the kill");
            assert_eq!(store.records().len(), VOLUMES, "{context}: records");
            let mounts = store.volume_mounts();
            assert_eq!(mounts.len(), VOLUMES, "{context}: mounts");
            assert!(mounts.iter().all(|m| m.read_only && !m.deleted()), "{context}: {mounts:?}");

            // The restart's catch-up pass brings every volume to the new bundle before it is
            // ready; the generations the crash left behind go after their grace.
            let mut second = Daemon::start(options.restart_in(&first.root)).await;
            let after = references(&second).await;
            for (i, target) in targets.iter().enumerate() {
                // Names only the other generation has may dangle (they go after the swap, or at
                // start-up): unreadable, never another version's content.
                let at_kill: &BTreeMap<String, Result<Vec<u8>, String>> =
                    &shown[i].iter().filter(|(_, file)| file.is_ok()).map(|(n, f)| (n.clone(), f.clone())).collect();
                let differs = |reference: &BTreeMap<String, Result<Vec<u8>, String>>| -> Vec<String> {
                    let names: BTreeSet<&String> = reference.keys().chain(at_kill.keys()).collect();
                    names.into_iter().filter(|n| reference.get(*n) != at_kill.get(*n)).take(5).cloned().collect()
                };
                assert!(
                    at_kill == &before[i % 2] || at_kill == &after[i % 2],
                    "{context}: vol-{i} showed neither the whole old nor the whole new bundle at the kill: \
                     differs from the old in {:?}, from the new in {:?}",
                    differs(&before[i % 2]),
                    differs(&after[i % 2])
                );
                assert_eq!(contents(target), after[i % 2], "{context}: vol-{i} after the restart");
            }
            for digest in store.store_entries() {
                let spec_dir = store.state_dir.join("store").join(&digest);
                support::eventually(
                    &format!("{context}: one generation in {digest}"),
                    Duration::from_secs(20),
                    async || {
                        fs::read_dir(&spec_dir)
                            .unwrap()
                            .flatten()
                            .filter(|e| e.file_name().to_string_lossy().starts_with("..") && e.file_name() != "..data")
                            .count()
                            == 1
                    },
                )
                .await;
            }
            all(&second, &targets, Call::Unpublish).await;
            assert_clean(&store, &targets, &context);
            assert!(second.stop().success());
        }
    });
}

#[test]
fn a_corrupt_record_is_moved_aside_and_does_not_stop_the_start() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let certs = tempfile::tempdir().unwrap();
        let ca = TestCa::new(certs.path(), "ca");
        let mut first = Daemon::start(options(&ca)).await;
        let references = references(&first).await;
        let store = OnDisk { state_dir: first.state_dir.clone() };
        // vol-0 and vol-1 share nothing (namespaces ns-0, ns-1); vol-10 shares vol-0's spec.
        let targets: Vec<PathBuf> = (0..VOLUMES).map(|i| first.target(&format!("pod-{i}"), "trust")).collect();
        for i in [0, 1, 10] {
            let owned = attributes(i);
            let extra: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            first.node().node_publish_volume(publish_request(&volume_id(i), &targets[i], &extra)).await.unwrap();
        }
        assert!(first.stop().success());

        let records = store.records();
        let file_of = |i: usize| -> PathBuf {
            let name = records[&targets[i]]["volume_id"].as_str().unwrap().to_owned();
            assert_eq!(name, volume_id(i));
            fs::read_dir(store.records_dir())
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .find(|p| fs::read_to_string(p).is_ok_and(|t| t.contains(&format!("\"{}\"", targets[i].display()))))
                .unwrap()
        };
        let (one, ten) = (file_of(1), file_of(10));
        let ten_bytes = fs::read(&ten).unwrap();
        fs::write(&one, b"{ not json").unwrap();
        fs::write(&ten, &ten_bytes[..ten_bytes.len() / 2]).unwrap();

        let mut second = Daemon::start(options(&ca).restart_in(&first.root)).await;
        let log = second.stderr();
        assert_eq!(log.matches("moved an unreadable record aside").count(), 2, "{log}");
        let corrupt: BTreeSet<Vec<u8>> = fs::read_dir(store.records_dir().join("corrupt"))
            .unwrap()
            .flatten()
            .map(|e| fs::read(e.path()).unwrap())
            .collect();
        assert_eq!(corrupt, BTreeSet::from([b"{ not json".to_vec(), ten_bytes[..ten_bytes.len() / 2].to_vec()]));
        assert!(!one.exists() && !ten.exists());
        // Their mounts had no readable record: unmounted, target dirs gone; vol-0 untouched.
        fs::remove_dir_all(store.records_dir().join("corrupt")).unwrap();
        let published = assert_published_or_absent(&store, &targets, &references, "after the corrupt records");
        assert_eq!(published, BTreeSet::from([0]));

        // The kubelet's next publishes mount them again; everything unpublishes.
        for i in [1, 10] {
            let owned = attributes(i);
            let extra: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            second.node().node_publish_volume(publish_request(&volume_id(i), &targets[i], &extra)).await.unwrap();
        }
        let published = assert_published_or_absent(&store, &targets, &references, "republished");
        assert_eq!(published, BTreeSet::from([0, 1, 10]));
        all(&second, &targets, Call::Unpublish).await;
        assert_clean(&store, &targets, "corrupt records");
        assert!(second.stop().success());
    });
}

// ---- every crash point, made exactly, with the store's API ----

const BUNDLE: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn files() -> Files {
    Files {
        entries: vec![
            ("ca-certificates.crt".into(), Entry::File(BUNDLE.to_vec())),
            ("cert.pem".into(), Entry::Symlink("ca-certificates.crt".into())),
            ("java/cacerts".into(), Entry::File(b"jks".to_vec())),
        ],
    }
}

fn run<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(future)
}

struct Env {
    state: tempfile::TempDir,
    kubelet: tempfile::TempDir,
    store: Store,
}

impl Env {
    fn new() -> Self {
        let state = tempfile::tempdir().unwrap();
        let kubelet = tempfile::tempdir().unwrap();
        let store = Store::open(Self::config(state.path(), kubelet.path()), Clock::system()).unwrap();
        Self { state, kubelet, store }
    }

    fn config(state: &Path, kubelet: &Path) -> StoreConfig {
        StoreConfig { state_dir: state.to_owned(), kubelet_dir: kubelet.to_owned(), tmpfs_size_bytes: 16 << 20 }
    }

    /// A driver restart: the store opened again on what is on disk and mounted.
    fn restart(&mut self) {
        self.store = Store::open(Self::config(self.state.path(), self.kubelet.path()), Clock::system()).unwrap();
    }

    fn view(&self) -> OnDisk {
        OnDisk { state_dir: fs::canonicalize(self.state.path()).unwrap() }
    }

    fn target(&self, uid: &str) -> PathBuf {
        let parent = fs::canonicalize(self.kubelet.path())
            .unwrap()
            .join("pods")
            .join(uid)
            .join("volumes/kubernetes.io~csi/trust");
        fs::create_dir_all(&parent).unwrap();
        parent.join("mount")
    }

    fn publish(&self, id: &str, target: &Path, namespace: &str) {
        let spec = VolumeSpec { namespace: namespace.to_owned(), ..VolumeSpec::default() };
        let publication = Publication {
            volume_id: id.to_owned(),
            target: target.to_owned(),
            readonly: true,
            pod: PodInfo {
                name: id.to_owned(),
                namespace: namespace.to_owned(),
                uid: id.to_owned(),
                service_account: "default".into(),
                ephemeral: true,
            },
            spec,
        };
        run(self.store.publish(publication, || Ok::<_, volume::Error>(files()))).unwrap();
    }

    fn record_path(&self, target: &Path) -> PathBuf {
        fs::read_dir(self.store.records_dir())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.is_file() && fs::read_to_string(p).unwrap().contains(&format!("\"{}\"", target.display())))
            .unwrap_or_else(|| panic!("no record of {}", target.display()))
    }

    /// Makes the record of `target` pending, as a crash before the publish finished leaves it.
    fn make_pending(&self, target: &Path) {
        let path = self.record_path(target);
        fs::rename(&path, path.with_extension("pending")).unwrap();
    }
}

fn spec_dir_name(namespace: &str) -> String {
    VolumeSpec { namespace: namespace.to_owned(), ..VolumeSpec::default() }.digest().to_string()
}

fn published_ok(env: &Env, target: &Path) {
    let view = env.view();
    let rec = &view.records()[target];
    assert_eq!(rec["state"], "published", "{}", target.display());
    let at: Vec<MountEntry> = view.volume_mounts().into_iter().filter(|m| m.mount_point == target).collect();
    assert_eq!(at.len(), 1, "{}", target.display());
    assert!(at[0].read_only && !at[0].deleted());
    assert_eq!(fs::read(target.join("cert.pem")).unwrap(), BUNDLE);
    assert_eq!(fs::read(target.join("java/cacerts")).unwrap(), b"jks");
}

fn absent(env: &Env, target: &Path) {
    assert!(!support::fsutil::is_mount_point(target), "{} is mounted", target.display());
    assert!(!target.exists(), "{} is left", target.display());
    assert!(!env.view().records().contains_key(target), "{} has a record", target.display());
}

#[test]
fn every_crash_point_of_a_publish_is_completed_or_rolled_back_at_start() {
    if !in_private_mount_namespace!() {
        return;
    }
    let mut env = Env::new();
    let t: Vec<PathBuf> = (0..7).map(|i| env.target(&format!("pod-{i}"))).collect();
    for (i, target) in t.iter().enumerate() {
        env.publish(&format!("vol-{i}"), target, if i < 6 { "shop" } else { "alone" });
    }
    // 0: the intent written, nothing else yet.
    env.make_pending(&t[0]);
    nix::mount::umount(&t[0]).unwrap();
    fs::remove_dir(&t[0]).unwrap();
    // 1: the target dir made, not mounted.
    env.make_pending(&t[1]);
    nix::mount::umount(&t[1]).unwrap();
    // 2: bound, not yet read-only.
    env.make_pending(&t[2]);
    let rw = nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REMOUNT;
    nix::mount::mount(None::<&str>, &t[2], None::<&str>, rw, None::<&str>).unwrap();
    assert!(!env.view().volume_mounts().iter().find(|m| m.mount_point == t[2]).unwrap().read_only);
    // 3: read-only, the record not yet marked published.
    env.make_pending(&t[3]);
    // 4: published, and its mount gone since (someone unmounted it).
    nix::mount::umount(&t[4]).unwrap();
    // 5: mounted without a record (the order before intent records; or an unpublish that had
    // removed the record).
    fs::remove_file(env.record_path(&t[5])).unwrap();
    // 6: published, and its spec dir removed under its mount (the reported bug's emptied spec
    // dir, here with a record): the mount shows nothing and cannot be repaired.
    let alone = env.view().state_dir.join("tmpfs/specs").join(spec_dir_name("alone"));
    fs::remove_dir_all(&alone).unwrap();
    assert!(env.view().volume_mounts().iter().any(|m| m.mount_point == t[6] && m.deleted()));

    env.restart();
    absent(&env, &t[0]);
    absent(&env, &t[1]);
    published_ok(&env, &t[2]);
    published_ok(&env, &t[3]);
    published_ok(&env, &t[4]);
    absent(&env, &t[5]);
    absent(&env, &t[6]);
    assert_eq!(env.view().store_entries(), BTreeSet::from([spec_dir_name("shop")]));
    assert_eq!(env.store.published_count(), 3);

    // Both kinds of absent publish again; everything unpublishes.
    for i in [0, 5, 6] {
        env.publish(&format!("vol-{i}"), &t[i], if i < 6 { "shop" } else { "alone" });
        published_ok(&env, &t[i]);
    }
    for (i, target) in t.iter().enumerate() {
        run(env.store.unpublish(&format!("vol-{i}"), target)).unwrap();
        absent(&env, target);
    }
    assert_eq!(env.view().volume_mounts(), Vec::new());
    assert_eq!(env.view().store_entries(), BTreeSet::new());
}

#[test]
fn an_interrupted_unpublish_finishes_at_start_and_a_mounted_spec_dir_is_never_removed() {
    if !in_private_mount_namespace!() {
        return;
    }
    let mut env = Env::new();
    let a = env.target("pod-a");
    let b = env.target("pod-b");
    let c = env.target("pod-c");
    env.publish("vol-a", &a, "shop");
    env.publish("vol-b", &b, "shop");
    env.publish("vol-c", &c, "other");
    // vol-a: the record removed, the crash before the unmount.
    fs::remove_file(env.record_path(&a)).unwrap();
    // vol-c: its record gone too, and its spec dir also bound somewhere the driver does not
    // manage (outside the kubelet dir): that mount keeps the spec dir.
    fs::remove_file(env.record_path(&c)).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let other = env.view().state_dir.join("tmpfs/specs").join(spec_dir_name("other"));
    nix::mount::mount(Some(&other), elsewhere.path(), None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
        .unwrap();
    // vol-e: its record gone too, and the kubelet binds a directory of it for a container's
    // `subPath` (outside the pod's `volumes/`): that bind is the kubelet's, and keeps the spec.
    let e = env.target("pod-e");
    env.publish("vol-e", &e, "sub");
    fs::remove_file(env.record_path(&e)).unwrap();
    let subpath = e.parent().unwrap().join("../../../volume-subpaths/trust/app/0");
    fs::create_dir_all(&subpath).unwrap();
    let java = fs::canonicalize(e.join("java")).unwrap();
    nix::mount::mount(Some(&java), &subpath, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>).unwrap();
    // A spec dir removal cut short: renamed away, half removed.
    let specs = env.view().state_dir.join("tmpfs/specs");
    fs::create_dir_all(specs.join(format!(".tmp-gone-{}-1-0/..2020_01_01_00_00_00.x", spec_dir_name("gone")))).unwrap();

    env.restart();
    absent(&env, &a);
    published_ok(&env, &b);
    absent(&env, &c);
    absent(&env, &e);
    assert_eq!(fs::read(elsewhere.path().join("cert.pem")).unwrap(), BUNDLE, "a mounted spec dir stays whole");
    assert_eq!(fs::read(subpath.join("cacerts")).unwrap(), b"jks", "a subPath bind stays, whole");
    assert_eq!(
        env.view().store_entries(),
        BTreeSet::from([spec_dir_name("shop"), spec_dir_name("other"), spec_dir_name("sub")])
    );
    // Nor while the driver runs: a volume of that spec comes and goes, the spec dir stays.
    let d = env.target("pod-d");
    env.publish("vol-d", &d, "other");
    published_ok(&env, &d);
    run(env.store.unpublish("vol-d", &d)).unwrap();
    absent(&env, &d);
    assert_eq!(fs::read(elsewhere.path().join("cert.pem")).unwrap(), BUNDLE, "a mounted spec dir stays whole");

    nix::mount::umount(elsewhere.path()).unwrap();
    nix::mount::umount(&subpath).unwrap();
    env.restart();
    assert_eq!(env.view().store_entries(), BTreeSet::from([spec_dir_name("shop")]), "unused once unmounted");
    run(env.store.unpublish("vol-b", &b)).unwrap();
    absent(&env, &b);
    assert_eq!(env.view().store_entries(), BTreeSet::new());
}

#[test]
fn an_interrupted_refresh_is_repaired_at_start() {
    if !in_private_mount_namespace!() {
        return;
    }
    let mut env = Env::new();
    let a = env.target("pod-a");
    env.publish("vol-a", &a, "shop");
    let spec_dir = env.view().state_dir.join("tmpfs/specs").join(spec_dir_name("shop"));
    let current = volume::current_generation(&spec_dir).unwrap();
    // A crash after the `..data` swap and before the visible links were all in line: one new
    // name not linked yet, one old name still there; the previous generation and a swap link
    // not removed yet.
    fs::remove_file(spec_dir.join("cert.pem")).unwrap();
    symlink("..data/retired.pem", spec_dir.join("retired.pem")).unwrap();
    fs::create_dir(spec_dir.join("..2020_01_01_00_00_00.old")).unwrap();
    symlink("..2020_01_01_00_00_00.old", spec_dir.join("..data_tmp")).unwrap();
    assert!(fs::read(a.join("cert.pem")).is_err());

    env.restart();
    published_ok(&env, &a);
    let mut names: Vec<String> =
        fs::read_dir(&spec_dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
    names.sort();
    let generation = current.file_name().unwrap().to_string_lossy().into_owned();
    let mut expected =
        vec!["..data".to_owned(), generation, "ca-certificates.crt".into(), "cert.pem".into(), "java".into()];
    expected.sort();
    assert_eq!(names, expected);
}

//! Upgrades and rollbacks between this driver and the driver at 02e7ca2, the last one that wrote
//! records without a format version: each real binary over its socket, on one state dir and one
//! kubelet dir, in one private mount namespace, so the mounts one leaves are those the other
//! finds. Nothing may be unmounted because a record is older or newer than the driver reading
//! it.
//!
//! The old driver is built by the test from `git archive 02e7ca2` into a cache dir keyed by the
//! commit (`$CARGO_TARGET_TMPDIR/driver-02e7ca2/`, or `$TRUSTMOUNT_OLD_DRIVER_CACHE`), once: a
//! cached binary is used as it is. `$TRUSTMOUNT_OLD_DRIVER` names a binary of that commit to use
//! instead of building one.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::in_private_mount_namespace;
use crate::support;
use crate::support::block_on;
use crate::support::client::{publish_request, stats_request, unpublish_request};
use crate::support::daemon::{Daemon, DaemonOptions};

const OLD_COMMIT: &str = "02e7ca2";

/// Local-sources volumes of every layout and Java store: (pod uid, attributes).
const VOLUMES: &[(&str, &[(&str, &str)])] = &[
    ("pod-debian", &[]),
    ("pod-rhel", &[("layout", "rhel"), ("javaTruststore", "pkcs12"), ("expired", "keep")]),
    ("pod-suse", &[("layout", "suse"), ("javaTruststore", "none")]),
    ("pod-debian-none", &[("javaTruststore", "none")]),
];

/// The driver at [`OLD_COMMIT`], built once (see the module doc).
fn old_driver() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build_old_driver).clone()
}

fn build_old_driver() -> PathBuf {
    if let Some(binary) = std::env::var_os("TRUSTMOUNT_OLD_DRIVER") {
        let binary = PathBuf::from(binary);
        assert!(binary.is_file(), "TRUSTMOUNT_OLD_DRIVER={} is not a file", binary.display());
        return binary;
    }
    let cache = std::env::var_os("TRUSTMOUNT_OLD_DRIVER_CACHE")
        .map_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("driver-{OLD_COMMIT}")), PathBuf::from);
    let target_dir = cache.join("target");
    let binary = target_dir.join("debug/trustmount");
    if binary.is_file() {
        return binary;
    }
    let source = cache.join("source");
    if !source.join("Cargo.toml").is_file() {
        fs::create_dir_all(&source).unwrap();
        // An archive, not a worktree: nothing to unregister when the cache is thrown away.
        let archive = cache.join("source.tar");
        let git = Command::new("git")
            .args(["-C", env!("CARGO_MANIFEST_DIR"), "archive", "--output"])
            .arg(&archive)
            .arg(OLD_COMMIT)
            .status()
            .expect("git runs");
        assert!(git.success(), "git archive {OLD_COMMIT} failed: is the history there (not a shallow clone)?");
        let tar = Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&source).status().expect("tar runs");
        assert!(tar.success(), "cannot unpack {}", archive.display());
        fs::remove_file(&archive).unwrap();
    }
    seed_from_this_build(&target_dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--locked", "--bin", "trustmount"])
        .current_dir(&source)
        .env("CARGO_TARGET_DIR", &target_dir)
        .status()
        .expect("cargo runs");
    assert!(built.success(), "cannot build the driver at {OLD_COMMIT} in {}", source.display());
    binary
}

/// Hard-links this build's compiled dependencies into the old driver's empty target dir: both
/// commits lock the same crates, so cargo finds them fresh and compiles only the old trustmount
/// (about a minute instead of every dependency again; on CI's empty cache that is most of the
/// cost). Cargo replaces the files it rebuilds rather than writing through the links.
fn seed_from_this_build(target_dir: &Path) {
    let ours = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target/tmp has a parent").join("debug");
    let theirs = target_dir.join("debug");
    if theirs.exists() || !ours.is_dir() {
        return;
    }
    fs::create_dir_all(&theirs).unwrap();
    for dir in ["deps", "build", ".fingerprint"] {
        let linked = Command::new("cp").arg("-al").arg(ours.join(dir)).arg(&theirs).status().expect("cp runs");
        assert!(linked.success(), "cannot link {} into {}", ours.join(dir).display(), theirs.display());
    }
}

fn old_options() -> DaemonOptions {
    DaemonOptions { binary: Some(old_driver()), ..DaemonOptions::default() }
}

/// Mount ids by mount point, from `/proc/self/mountinfo` (its first and fifth fields): the same
/// id after a restart is the same mount, not one made again.
fn mount_ids() -> HashMap<PathBuf, Vec<u64>> {
    let mut ids: HashMap<PathBuf, Vec<u64>> = HashMap::new();
    for line in fs::read_to_string("/proc/self/mountinfo").unwrap().lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        ids.entry(PathBuf::from(fields[4])).or_default().push(fields[0].parse().unwrap());
    }
    ids
}

/// Every file a volume shows (visible names, symlinks followed), with its bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("..") {
                continue; // generations and `..data`: names differ between renders
            }
            let shown = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let path = entry.path();
            if fs::metadata(&path).unwrap().is_dir() {
                walk(&path, &shown, out);
            } else {
                out.insert(shown, fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, "", &mut out);
    out
}

/// Record files by name, with their bytes.
fn records(daemon: &Daemon) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(daemon.state_dir.join("volumes"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).unwrap()))
        .collect()
}

fn format_of(record: &[u8]) -> Option<u64> {
    let json: serde_json::Value = serde_json::from_slice(record).unwrap();
    json.get("format").map(|f| f.as_u64().unwrap())
}

/// One published volume as the test saw it: its mount and what it showed.
struct Seen {
    volume_id: String,
    target: PathBuf,
    mount_ids: Vec<u64>,
    files: BTreeMap<String, Vec<u8>>,
}

async fn publish_all(daemon: &Daemon) -> Vec<Seen> {
    let mut seen = Vec::new();
    for (uid, attributes) in VOLUMES {
        let target = daemon.target(uid, "trust");
        let volume_id = format!("vol-{uid}");
        daemon.node().node_publish_volume(publish_request(&volume_id, &target, attributes)).await.unwrap();
        let files = contents(&target);
        assert!(!files.is_empty(), "{uid}: the volume shows nothing");
        seen.push(Seen { volume_id, target, mount_ids: Vec::new(), files });
    }
    let ids = mount_ids();
    for volume in &mut seen {
        volume.mount_ids = ids[&volume.target].clone();
        assert_eq!(volume.mount_ids.len(), 1, "{}: one mount", volume.target.display());
    }
    seen
}

/// Every volume still on the mount it had, showing what it showed, and healthy to `daemon`.
async fn assert_adopted(daemon: &Daemon, seen: &[Seen], context: &str) {
    let ids = mount_ids();
    for volume in seen {
        let target = volume.target.display();
        assert_eq!(ids.get(&volume.target), Some(&volume.mount_ids), "{context}: {target} is not on the same mount");
        assert_eq!(contents(&volume.target), volume.files, "{context}: {target} shows other files");
        let stats = daemon.node().node_get_volume_stats(stats_request(&volume.volume_id, &volume.target)).await;
        let condition = stats
            .unwrap_or_else(|e| panic!("{context}: NodeGetVolumeStats of {target}: {e}"))
            .into_inner()
            .volume_condition
            .expect("VOLUME_CONDITION is advertised");
        assert!(!condition.abnormal, "{context}: {target} is abnormal: {}", condition.message);
    }
    assert!(!daemon.state_dir.join("volumes/corrupt").exists(), "{context}: a record was found corrupt");
    let log = daemon.stderr();
    assert!(log.contains(&format!("adopted={}", seen.len())), "{context}: not every volume was adopted:\n{log}");
    assert!(log.contains("unmounted=0") && log.contains("dropped=0"), "{context}: something was unmounted:\n{log}");
}

async fn unpublish_all(daemon: &Daemon, seen: &[Seen]) {
    for volume in seen {
        daemon.node().node_unpublish_volume(unpublish_request(&volume.volume_id, &volume.target)).await.unwrap();
        assert!(!support::fsutil::is_mount_point(&volume.target), "{} is still mounted", volume.target.display());
    }
    assert!(records(daemon).is_empty(), "records left after every unpublish: {:?}", records(daemon).keys());
}

#[test]
fn volumes_published_by_the_driver_at_02e7ca2_are_adopted_without_an_unmount() {
    old_driver();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let mut old = Daemon::start(old_options()).await;
        let seen = publish_all(&old).await;
        let written = records(&old);
        assert_eq!(written.len(), VOLUMES.len());
        assert!(written.values().all(|r| format_of(r).is_none()), "02e7ca2 writes records without a format");
        assert!(old.stop().success());

        let mut new = Daemon::start(DaemonOptions::default().restart_in(&old.root)).await;
        assert_adopted(&new, &seen, "after the upgrade").await;
        // Adopted records are read as format 1 and left as they are (a rollback reads them too).
        assert_eq!(records(&new), written, "the upgrade rewrote records");
        assert_eq!(fs::read_to_string(new.state_dir.join("tmpfs/store-format")).unwrap(), "1\n");

        // A new publish is written in the new format, beside the old ones.
        let target = new.target("pod-new", "trust");
        new.node().node_publish_volume(publish_request("vol-new", &target, &[])).await.unwrap();
        let now = records(&new);
        let fresh: Vec<&Vec<u8>> =
            now.iter().filter(|(name, _)| !written.contains_key(*name)).map(|(_, r)| r).collect();
        assert_eq!(fresh.len(), 1);
        assert_eq!(format_of(fresh[0]), Some(2));
        new.node().node_unpublish_volume(unpublish_request("vol-new", &target)).await.unwrap();

        unpublish_all(&new, &seen).await;
        assert!(new.stop().success());
    });
}

/// Format 2 only adds keys to format 1, which 02e7ca2 ignores: a rollback adopts.
#[test]
fn volumes_published_by_this_driver_are_adopted_by_the_driver_at_02e7ca2_after_a_rollback() {
    old_driver();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let mut new = Daemon::start(DaemonOptions::default()).await;
        let seen = publish_all(&new).await;
        assert!(records(&new).values().all(|r| format_of(r) == Some(2)));
        assert!(new.stop().success());

        let mut old = Daemon::start(old_options().restart_in(&new.root)).await;
        assert_adopted(&old, &seen, "after the rollback").await;
        assert!(old.stop().success());

        // And forward again, on what the old driver left.
        let mut again = Daemon::start(DaemonOptions::default().restart_in(&new.root)).await;
        assert_adopted(&again, &seen, "after the upgrade again").await;
        unpublish_all(&again, &seen).await;
        assert!(again.stop().success());
    });
}

/// A downgrade below a future format: its records are not corrupt, and its mounts stay.
#[test]
fn a_record_of_a_newer_format_is_left_with_its_mount_and_an_unreadable_one_is_moved_aside() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let mut first = Daemon::start(DaemonOptions::default()).await;
        let seen = publish_all(&first).await;
        assert!(first.stop().success());
        let dir = first.state_dir.join("volumes");
        let mut names: Vec<String> = records(&first).into_keys().collect();
        names.sort();
        let (newer, broken) = (&names[0], &names[1]);
        let text = fs::read_to_string(dir.join(newer)).unwrap();
        let future = text.replacen("\"format\": 2", "\"format\": 4", 1).replacen("\"volume_id\"", "\"id\"", 1);
        fs::write(dir.join(newer), &future).unwrap();
        fs::write(dir.join(broken), b"{\"volume_id\": ").unwrap();
        let ids = mount_ids();

        let mut second = Daemon::start(DaemonOptions::default().restart_in(&first.root)).await;
        assert_eq!(fs::read_to_string(dir.join(newer)).unwrap(), future, "the newer record was changed");
        let aside: Vec<_> = fs::read_dir(dir.join("corrupt")).unwrap().flatten().collect();
        assert_eq!(aside.len(), 1, "exactly the unreadable record is moved aside");
        assert!(aside[0].file_name().to_string_lossy().starts_with(broken.as_str()));
        // Every mount stays: the newer record's, and (while a record this driver cannot read
        // may name it) the one whose record went aside.
        assert_eq!(mount_ids(), ids, "a mount changed");
        let log = second.stderr();
        assert!(log.contains("newer=1") && log.contains("corrupt=1") && log.contains("unmounted=0"), "{log}");
        assert!(log.contains("format 4"), "the warning names the format: {log}");
        for volume in &seen {
            assert_eq!(contents(&volume.target), volume.files, "{}", volume.target.display());
        }
        // The kubelet's calls at that target are refused, saying why, and change nothing.
        let json: serde_json::Value = serde_json::from_str(&future).unwrap();
        let target = PathBuf::from(json["target"].as_str().unwrap());
        let refused = second.node().node_publish_volume(publish_request("vol-x", &target, &[])).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
        assert!(refused.message().contains("newer trustmount"), "{}", refused.message());
        assert_eq!(mount_ids(), ids, "a refused publish changed a mount");
        assert!(second.stop().success());
    });
}

/// A store laid out by a newer driver is not adopted: the start fails, saying why, before
/// anything in it or mounted from it is touched.
#[test]
fn a_store_of_a_newer_format_stops_the_start_and_touches_nothing() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let mut first = Daemon::start(DaemonOptions::default()).await;
        let seen = publish_all(&first).await;
        assert!(first.stop().success());
        let marker = first.state_dir.join("tmpfs/store-format");
        assert_eq!(fs::read_to_string(&marker).unwrap(), "1\n");
        fs::write(&marker, "2\n").unwrap();
        let ids = mount_ids();
        let before = records(&first);

        let config = trustmount::volume::StoreConfig {
            state_dir: first.state_dir.clone(),
            kubelet_dir: first.kubelet_dir.clone(),
            tmpfs_size_bytes: 16 << 20,
        };
        let error = trustmount::volume::Store::open(config, trustmount::clock::Clock::system())
            .expect_err("a newer store is not adopted");
        let message = error.to_string();
        assert!(message.contains("store format 2") && message.contains("newer trustmount"), "{message}");
        assert_eq!(mount_ids(), ids, "a mount changed");
        assert_eq!(records(&first), before, "a record changed");
        assert_eq!(fs::read_to_string(&marker).unwrap(), "2\n");
        for volume in &seen {
            assert_eq!(contents(&volume.target), volume.files, "{}", volume.target.display());
        }
    });
}

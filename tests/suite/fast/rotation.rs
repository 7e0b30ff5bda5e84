//! Rotation: a changed `--extra-pem` reaches every published volume without a republish (one
//! `..data` swap in the shared spec directory), and a bad change never replaces good
//! certificates — the volumes keep the last good bundle and report themselves abnormal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::in_private_mount_namespace;
use crate::support;
use crate::support::block_on;
use crate::support::certs::{TestCa, bundle_ders_in_order as bundle_ders, pem_certificates};
use crate::support::client::{publish_request, stats_request};
use crate::support::daemon::{Daemon, DaemonOptions};

/// How long a file change may take to reach the volumes (watch + settle + render).
const PROPAGATION_LIMIT: Duration = Duration::from_secs(20);

/// Replaces a file the way an editor or config tool does: write beside it, rename over it.
fn replace_file(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn condition(daemon: &Daemon, volume: &str, target: &Path) -> (bool, String) {
    let stats = daemon.node().node_get_volume_stats(stats_request(volume, target)).await.unwrap();
    let condition = stats.into_inner().volume_condition.expect("VOLUME_CONDITION is advertised");
    (condition.abnormal, condition.message)
}

struct Setup {
    daemon: Daemon,
    source: PathBuf,
    first: TestCa,
    targets: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

/// A daemon whose only source is one CA file, and two published volumes of one spec.
async fn two_volumes_trusting_one_file() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let sources = dir.path().join("sources");
    std::fs::create_dir(&sources).unwrap();
    let first = TestCa::new(dir.path(), "first");
    let source = sources.join("org-ca.pem");
    std::fs::write(&source, &first.pem).unwrap();
    let daemon = Daemon::start(DaemonOptions::default().system_roots("none").extra_pem(&source)).await;
    let mut targets = Vec::new();
    for pod in ["pod-a", "pod-b"] {
        let target = daemon.target(pod, "trust");
        daemon.node().node_publish_volume(publish_request(pod, &target, &[])).await.unwrap();
        assert_eq!(bundle_ders(&target), vec![first.der.clone()]);
        targets.push(target);
    }
    Setup { daemon, source, first, targets, _dir: dir }
}

#[test]
fn a_changed_source_file_reaches_every_published_volume_without_republish() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let setup = two_volumes_trusting_one_file().await;
        let second = TestCa::new(setup._dir.path(), "second");
        replace_file(&setup.source, second.pem.as_bytes());

        for target in &setup.targets {
            support::eventually(
                &format!("{} holds only the second CA", target.display()),
                PROPAGATION_LIMIT,
                async || bundle_ders(target) == vec![second.der.clone()],
            )
            .await;
            // The hash link follows the new generation too.
            let hash = support::certs::openssl_subject_hash(&second.cert_path);
            let link = std::fs::read(target.join(format!("{hash}.0"))).unwrap();
            assert_eq!(pem_certificates(&link), vec![second.der.clone()]);
        }
        let (abnormal, message) = condition(&setup.daemon, "pod-a", &setup.targets[0]).await;
        assert!(!abnormal, "{message}");
    });
}

#[test]
fn a_bad_source_keeps_the_good_bundle_and_marks_the_volumes_abnormal_until_fixed() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let setup = two_volumes_trusting_one_file().await;
        let key = "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n-----END PRIVATE KEY-----\n";
        replace_file(&setup.source, key.as_bytes());

        let daemon = &setup.daemon;
        let message = support::poll_until(PROPAGATION_LIMIT, support::wait::POLL, async || {
            let (abnormal, message) = condition(daemon, "pod-b", &setup.targets[1]).await;
            if abnormal { Ok(message) } else { Err(message) }
        })
        .await
        .unwrap_or_else(|message| panic!("the volume never turned abnormal: {message}"));
        assert!(message.contains("could not be refreshed"), "{message}");
        assert!(message.contains("private key"), "the message should say what is wrong: {message}");
        for target in &setup.targets {
            assert_eq!(bundle_ders(target), vec![setup.first.der.clone()], "a bad source replaced good certificates");
        }

        // Fixing the file heals the volumes and brings the new certificate.
        let fixed = TestCa::new(setup._dir.path(), "fixed");
        replace_file(&setup.source, fixed.pem.as_bytes());
        for target in &setup.targets {
            support::eventually("the fixed CA reaches the volume", PROPAGATION_LIMIT, async || {
                bundle_ders(target) == vec![fixed.der.clone()]
            })
            .await;
        }
        let (abnormal, message) = condition(daemon, "pod-b", &setup.targets[1]).await;
        assert!(!abnormal, "still abnormal after the source was fixed: {message}");
    });
}

#[test]
fn a_configmap_style_symlink_swap_is_seen() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        // The kubelet updates a ConfigMap volume by writing a new timestamped directory and
        // renaming a `..data` symlink over the old one; the file path itself never changes.
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("configmap");
        let first = TestCa::new(dir.path(), "cm-first");
        let write_generation = |name: &str, pem: &str| {
            let generation = volume.join(name);
            std::fs::create_dir_all(&generation).unwrap();
            std::fs::write(generation.join("ca.pem"), pem).unwrap();
            std::os::unix::fs::symlink(name, volume.join("..data_tmp")).unwrap();
            std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
        };
        write_generation("..2026_01_01", &first.pem);
        std::os::unix::fs::symlink("..data/ca.pem", volume.join("ca.pem")).unwrap();

        let daemon =
            Daemon::start(DaemonOptions::default().system_roots("none").extra_pem(volume.join("ca.pem"))).await;
        let target = daemon.target("pod", "trust");
        daemon.node().node_publish_volume(publish_request("pod", &target, &[])).await.unwrap();
        assert_eq!(bundle_ders(&target), vec![first.der.clone()]);

        let second = TestCa::new(dir.path(), "cm-second");
        write_generation("..2026_01_02", &second.pem);
        support::eventually("the swapped ConfigMap reaches the volume", PROPAGATION_LIMIT, async || {
            bundle_ders(&target) == vec![second.der.clone()]
        })
        .await;
    });
}

#[test]
fn a_restarted_driver_adopts_its_volumes_and_catches_up_with_sources_changed_meanwhile() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let mut setup = two_volumes_trusting_one_file().await;
        let tmpfs_mounts = || support::fsutil::mount_points().iter().filter(|m| m.ends_with("state/store")).count();
        assert_eq!(tmpfs_mounts(), 1);
        setup.daemon.stop();

        // Changed while no driver was running: no watch could see it.
        let second = TestCa::new(setup._dir.path(), "while-down");
        replace_file(&setup.source, second.pem.as_bytes());
        let restarted = Daemon::start(
            DaemonOptions::default().system_roots("none").extra_pem(&setup.source).restart_in(&setup.daemon.root),
        )
        .await;

        assert_eq!(tmpfs_mounts(), 1, "the restarted driver mounted a second tmpfs instead of adopting its own");
        for target in &setup.targets {
            support::eventually("the restarted driver refreshes the adopted volume", PROPAGATION_LIMIT, async || {
                bundle_ders(target) == vec![second.der.clone()]
            })
            .await;
        }
        // Records survived: the restarted driver knows the volumes and unpublishes them.
        for (pod, target) in ["pod-a", "pod-b"].iter().zip(&setup.targets) {
            restarted.node().node_unpublish_volume(support::client::unpublish_request(pod, target)).await.unwrap();
            assert!(!target.exists(), "{} left behind", target.display());
        }
        assert_eq!(std::fs::read_dir(restarted.store_dir()).unwrap().count(), 0, "spec directory left behind");
        drop(restarted);
    });
}

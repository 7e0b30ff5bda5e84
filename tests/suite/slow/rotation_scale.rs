//! Rotation at scale against the real API server: 200 published volumes over four namespaces,
//! each namespace with its own ConfigMap of one name, rotated 50 times. After each rotation every
//! volume shows the new bundle, and readers that read every file of a volume in a loop the whole
//! time never see a file that is partial or a set of files from two versions. Old generations
//! are removed once swapped out.
//!
//! A reader pins a generation the way AtomicWriter's readers do: it resolves `..data` once and
//! reads every file under that generation. A generation removed under a reader is not a torn
//! read (the reader's next pass sees the new one); it is counted apart. Readers going through
//! the top-level names (`ca-certificates.crt -> ..data/ca-certificates.crt`) are checked per
//! file: each read is exactly one version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kube::api::Api;

use crate::in_private_mount_namespace;
use crate::support;
use crate::support::block_on;
use crate::support::certs::{TestCa, pem_certificates};
use crate::support::client::{publish_request, unpublish_request};
use crate::support::control_plane::ControlPlane;
use crate::support::objects::put_config_map;
use crate::support::world::World;

const NAMESPACES: usize = 4;
const VOLUMES_PER_NAMESPACE: usize = 50;
const ROTATIONS: usize = 50;
const READERS: usize = 4;
const CONFIG_MAP: &str = "corp-ca";
/// Bounds each wait for a rotation to reach every volume; never a timed assertion.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(60);

/// One version of the ConfigMap: two CAs, so a torn or mixed read can show one without the other.
struct Version {
    pem: String,
    ders: BTreeSet<Vec<u8>>,
}

fn versions(dir: &Path, count: usize) -> Vec<Version> {
    (0..count)
        .map(|v| {
            let first = TestCa::new(dir, &format!("rot-{v}-a"));
            let second = TestCa::new(dir, &format!("rot-{v}-b"));
            Version { pem: format!("{}{}", first.pem, second.pem), ders: [first.der, second.der].into() }
        })
        .collect()
}

/// Which version a set of certificates is, if it is exactly one.
fn version_of(versions: &[Version], ders: &BTreeSet<Vec<u8>>) -> Option<usize> {
    versions.iter().position(|v| v.ders == *ders)
}

/// Every regular file under `dir` (a generation), by path relative to it, following no symlink.
fn files_under(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                let path = entry.path();
                let bytes = std::fs::read(&path)?;
                files.insert(path.strip_prefix(dir).unwrap().to_path_buf(), bytes);
            }
        }
    }
    Ok(files)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

#[derive(Debug, PartialEq)]
enum Read {
    /// Every file of the generation belongs to this version.
    Consistent(usize),
    /// The generation went away under the reader (swapped out and removed).
    Retired,
}

/// Reads every file of the generation `..data` names now, and says which version they all are;
/// panics on a partial file or a mix in a generation that is still current.
fn read_pinned(target: &Path, versions: &[Version]) -> Read {
    let Ok(name) = std::fs::read_link(target.join("..data")) else {
        return Read::Retired;
    };
    let generation = target.join(&name);
    let judged = match files_under(&generation) {
        Ok(files) => judge(&files, versions),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!("{e}")),
        Err(e) => panic!("read {}: {e}", generation.display()),
    };
    match judged {
        Ok(seen) => Read::Consistent(seen),
        // Swapped out and being removed under the reader: not what a reader of the volume sees.
        Err(_) if std::fs::read_link(target.join("..data")).ok().as_ref() != Some(&name) => Read::Retired,
        Err(problem) => panic!("{}: {problem}", generation.display()),
    }
}

/// Which version every file of a generation is, or what is wrong with it.
fn judge(files: &BTreeMap<PathBuf, Vec<u8>>, versions: &[Version]) -> Result<usize, String> {
    let bundle = files.get(Path::new("ca-certificates.crt")).ok_or("no ca-certificates.crt")?;
    let seen = version_of(versions, &pem_certificates(bundle).into_iter().collect())
        .ok_or("ca-certificates.crt is no single version")?;
    let expected = &versions[seen].ders;
    let mut one_per_file = BTreeSet::new();
    for (path, bytes) in files {
        if path.starts_with("java") {
            // The JKS store holds each certificate's DER as it is.
            if !expected.iter().all(|der| contains(bytes, der)) {
                return Err(format!("{} lacks a CA of version {seen}", path.display()));
            }
            continue;
        }
        let certificates = pem_certificates(bytes);
        if certificates.is_empty() {
            return Err(format!("{} holds no certificate", path.display()));
        }
        for der in certificates {
            if !expected.contains(&der) {
                return Err(format!("{} holds a certificate of another version than {seen}", path.display()));
            }
            one_per_file.insert(der);
        }
    }
    if one_per_file != *expected {
        return Err(format!("the per-certificate files are not all of version {seen}"));
    }
    Ok(seen)
}

/// Reads the visible bundle (through the top-level symlink): each read is one whole version.
fn read_visible(target: &Path, versions: &[Version]) -> usize {
    let bytes = std::fs::read(target.join("ca-certificates.crt")).expect("the visible bundle is always there");
    version_of(versions, &pem_certificates(&bytes).into_iter().collect())
        .unwrap_or_else(|| panic!("{}: the visible bundle is no single version", target.display()))
}

fn generations_in(spec_dir: &Path) -> Vec<String> {
    std::fs::read_dir(spec_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("..") && name != "..data")
        .collect()
}

#[test]
fn two_hundred_volumes_follow_fifty_rotations_and_readers_never_see_a_torn_or_mixed_bundle() {
    let plane = ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        // The driver's own namespace; the volumes are in namespaces of their own.
        let World { admin, dir, daemon, .. } = World::start_on(plane, "rot-driver", &[]).await;
        let versions = Arc::new(versions(dir.path(), ROTATIONS + 1));

        let mut namespaces = Vec::new();
        for _ in 0..NAMESPACES {
            let namespace = plane.namespace("rot").await;
            put_config_map(&Api::namespaced(admin.clone(), &namespace), CONFIG_MAP, &versions[0].pem).await;
            namespaces.push(namespace);
        }

        let mut targets = Vec::new();
        for (n, namespace) in namespaces.iter().enumerate() {
            for v in 0..VOLUMES_PER_NAMESPACE {
                let uid = format!("0c1f4d6e-{n:04}-4000-8000-{v:012}");
                let target = daemon.target(&uid, "trust");
                let request = publish_request(
                    &format!("vol-{n}-{v}"),
                    &target,
                    &[
                        ("csi.storage.k8s.io/pod.namespace", namespace),
                        ("systemRoots", "false"),
                        ("configMaps", CONFIG_MAP),
                    ],
                );
                daemon.node().node_publish_volume(request).await.unwrap();
                targets.push(target);
            }
        }
        for target in &targets {
            assert_eq!(read_visible(target, &versions), 0);
        }

        // Readers: one per namespace's first volume, pinned and visible reads in turn.
        let stop = Arc::new(AtomicBool::new(false));
        let pinned_reads = Arc::new(AtomicUsize::new(0));
        let retired_reads = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let target = targets[r * VOLUMES_PER_NAMESPACE].clone();
                let (versions, stop) = (Arc::clone(&versions), Arc::clone(&stop));
                let (pinned_reads, retired_reads) = (Arc::clone(&pinned_reads), Arc::clone(&retired_reads));
                std::thread::spawn(move || {
                    let mut newest = 0;
                    while !stop.load(Ordering::Relaxed) {
                        match read_pinned(&target, &versions) {
                            Read::Consistent(seen) => {
                                assert!(
                                    seen >= newest,
                                    "{}: went back from version {newest} to {seen}",
                                    target.display()
                                );
                                newest = seen;
                                pinned_reads.fetch_add(1, Ordering::Relaxed);
                            }
                            Read::Retired => {
                                retired_reads.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        read_visible(&target, &versions);
                    }
                    newest
                })
            })
            .collect();

        for (rotation, version) in versions.iter().enumerate().skip(1) {
            for namespace in &namespaces {
                put_config_map(&Api::namespaced(admin.clone(), namespace), CONFIG_MAP, &version.pem).await;
            }
            // One limit for all targets; those reached are not read again.
            let mut reached = 0;
            let all_reached = support::poll_until(PROPAGATION_LIMIT, Duration::from_millis(20), async || {
                while reached < targets.len() && read_visible(&targets[reached], &versions) == rotation {
                    reached += 1;
                }
                if reached == targets.len() { Ok(()) } else { Err(targets[reached].display().to_string()) }
            })
            .await;
            if let Err(target) = all_reached {
                panic!("rotation {rotation} did not reach {target} within {PROPAGATION_LIMIT:?}");
            }
        }
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            assert_eq!(reader.join().expect("a reader saw a torn or mixed bundle"), ROTATIONS);
        }
        assert!(pinned_reads.load(Ordering::Relaxed) > 0, "the readers read something");
        eprintln!(
            "pinned reads: {}, generations retired under a reader: {}",
            pinned_reads.load(Ordering::Relaxed),
            retired_reads.load(Ordering::Relaxed)
        );

        // One spec per namespace, each with exactly the generation it shows: old ones are gone.
        let spec_dirs: BTreeSet<PathBuf> = std::fs::read_dir(daemon.store_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        assert_eq!(spec_dirs.len(), NAMESPACES, "{spec_dirs:?}");
        // Swapped-out generations go after a grace period (readers that resolved `..data` just
        // before a swap still find their files). One limit for all spec dirs.
        let mut clean = spec_dirs.iter().peekable();
        let all_clean = support::poll_until(PROPAGATION_LIMIT, Duration::from_millis(100), async || {
            while clean.next_if(|spec_dir| generations_in(spec_dir).len() == 1).is_some() {}
            clean.peek().map_or(Ok(()), |spec_dir| Err(spec_dir.display().to_string()))
        })
        .await;
        if let Err(spec_dir) = all_clean {
            panic!("{spec_dir}: old generations left");
        }

        for (i, target) in targets.iter().enumerate() {
            let (n, v) = (i / VOLUMES_PER_NAMESPACE, i % VOLUMES_PER_NAMESPACE);
            daemon.node().node_unpublish_volume(unpublish_request(&format!("vol-{n}-{v}"), target)).await.unwrap();
        }
        assert_eq!(std::fs::read_dir(daemon.store_dir()).unwrap().count(), 0, "every spec dir is removed");
    });
}

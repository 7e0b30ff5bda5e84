//! The volume store with real mounts. Every test that mounts runs inside its own private mount
//! namespace (see `support::ns`), so nothing it mounts can reach the host.

use std::fs;
use std::future::Future;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tempfile::TempDir;
use trustmount::bundle::{Entry, Files};
use trustmount::clock::Clock;
use trustmount::domain::{PodInfo, VolumeSpec};
use trustmount::volume::{self, Difference, Error, Publication, Store, StoreConfig, current_generation};
use trustmount::{node, sources};

use crate::in_private_mount_namespace;
use crate::support;

const BUNDLE: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

/// Bounds each wait for background work (a swapped-out generation's removal).
const HANG_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

fn run<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap().block_on(future)
}

struct Env {
    state: TempDir,
    kubelet: TempDir,
    store: Store,
}

impl Env {
    fn new() -> Self {
        Self::with_size(16 << 20)
    }

    fn with_size(tmpfs_size_bytes: u64) -> Self {
        Self::with(tmpfs_size_bytes, Clock::system())
    }

    fn with(tmpfs_size_bytes: u64, clock: Clock) -> Self {
        let state = tempfile::tempdir().unwrap();
        let kubelet = tempfile::tempdir().unwrap();
        let store = Store::open(config(state.path(), kubelet.path(), tmpfs_size_bytes), clock).unwrap();
        Self { state, kubelet, store }
    }

    fn reopen(&mut self) {
        self.reopen_with(Clock::system());
    }

    fn reopen_with(&mut self, clock: Clock) {
        let config = config(self.state.path(), self.kubelet.path(), 16 << 20);
        self.store = Store::open(config, clock).unwrap();
    }

    /// `<kubelet>/pods/<uid>/volumes/kubernetes.io~csi/<name>/mount`, with its parent made
    /// (as the kubelet does).
    fn target(&self, uid: &str) -> PathBuf {
        let parent = self.kubelet.path().join("pods").join(uid).join("volumes/kubernetes.io~csi/trust");
        fs::create_dir_all(&parent).unwrap();
        parent.join("mount")
    }

    fn records(&self) -> usize {
        fs::read_dir(self.store.records_dir()).unwrap().count()
    }
}

fn config(state: &Path, kubelet: &Path, tmpfs_size_bytes: u64) -> StoreConfig {
    StoreConfig { state_dir: state.to_owned(), kubelet_dir: kubelet.to_owned(), tmpfs_size_bytes }
}

fn spec(namespace: &str) -> VolumeSpec {
    VolumeSpec { namespace: namespace.to_owned(), ..VolumeSpec::default() }
}

fn publication(volume_id: &str, target: &Path, spec: VolumeSpec) -> Publication {
    Publication {
        volume_id: volume_id.to_owned(),
        target: target.to_owned(),
        readonly: true,
        pod: PodInfo {
            name: format!("pod-{volume_id}"),
            namespace: spec.namespace.clone(),
            uid: volume_id.to_owned(),
            service_account: "default".into(),
            ephemeral: true,
        },
        spec,
    }
}

fn files(bundle: &[u8]) -> Files {
    Files {
        entries: vec![
            ("ca-certificates.crt".into(), Entry::File(bundle.to_vec())),
            ("cert.pem".into(), Entry::Symlink("ca-certificates.crt".into())),
            ("java/cacerts".into(), Entry::File(b"jks".to_vec())),
        ],
    }
}

/// A render closure that counts its calls.
fn render(calls: &Arc<AtomicUsize>, bundle: &'static [u8]) -> impl FnOnce() -> Result<Files, Error> + Send + 'static {
    let calls = Arc::clone(calls);
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(files(bundle))
    }
}

fn mounts_at(path: &Path) -> Vec<String> {
    let Ok(path) = fs::canonicalize(path) else {
        return Vec::new();
    };
    volume::mounts().unwrap().into_iter().filter(|m| m.mount_point == path).map(|m| m.fs_type).collect()
}

fn is_mountpoint(path: &Path) -> bool {
    !mounts_at(path).is_empty()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn publish_mounts_a_read_only_volume() {
    if !in_private_mount_namespace!() {
        return;
    }
    let env = Env::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let target = env.target("pod-a");
    let spec = spec("shop");
    run(env.store.publish(publication("vol-a", &target, spec.clone()), render(&calls, BUNDLE))).unwrap();

    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(is_mountpoint(&target));
    assert_eq!(fs::read(target.join("ca-certificates.crt")).unwrap(), BUNDLE);
    assert_eq!(fs::read(target.join("cert.pem")).unwrap(), BUNDLE);
    assert_eq!(fs::read(target.join("java/cacerts")).unwrap(), b"jks");
    assert_eq!(mode(&target.join("ca-certificates.crt")), 0o444);
    assert_eq!(mode(&target.join("java")), 0o555);
    assert_eq!(mode(&target.join("..data")), 0o555);

    // Read-only for everyone, root included.
    let err = fs::write(target.join("new-file"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS), "{err}");
    let err = fs::OpenOptions::new().write(true).open(target.join("ca-certificates.crt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS), "{err}");
    let err = fs::remove_file(target.join("cert.pem")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS), "{err}");

    assert_eq!(env.records(), 1);
    assert_eq!(env.store.spec_dir_count().unwrap(), 1);
    assert_eq!(mounts_at(env.store.root()), ["tmpfs"]);

    let stats = run(env.store.stats("vol-a", &target)).unwrap();
    assert_eq!(stats.spec, spec);
    assert_eq!(stats.digest, spec.digest());
    assert_eq!(stats.used_bytes, BUNDLE.len() as u64 + 3);
    assert_eq!(stats.used_inodes, 4); // ca-certificates.crt, cert.pem, java, java/cacerts
    assert!(stats.total_bytes >= 16 << 20 && stats.available_bytes < stats.total_bytes);
    assert!(stats.total_inodes > 0 && stats.available_inodes < stats.total_inodes);
    assert!(matches!(run(env.store.stats("vol-other", &target)), Err(Error::NotPublished { .. })));
    assert!(matches!(run(env.store.stats("vol-a", &env.target("nope"))), Err(Error::NotPublished { .. })));
}

#[test]
fn records_are_stamped_with_the_store_clock() {
    if !in_private_mount_namespace!() {
        return;
    }
    const PUBLISHED: i64 = 1_800_000_000;
    const RESTARTED: i64 = 1_800_000_500;
    let mut env = Env::with(16 << 20, Clock::manual(PUBLISHED));
    let target = env.target("pod-a");
    run(env.store.publish(publication("vol-a", &target, spec("shop")), hashed_files(BUNDLE))).unwrap();
    let record = fs::read_dir(env.store.records_dir()).unwrap().next().unwrap().unwrap().path();
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    assert_eq!(json["published_at"], PUBLISHED, "{json}");

    // A record start-up cannot read is moved aside under the restart's time.
    fs::write(&record, b"{not json").unwrap();
    env.reopen_with(Clock::manual(RESTARTED));
    let corrupt = env.store.records_dir().join("corrupt");
    let aside: Vec<String> =
        fs::read_dir(&corrupt).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let expected = format!("{}.{RESTARTED}.0", record.file_name().unwrap().to_string_lossy());
    assert_eq!(aside, [expected]);
}

#[test]
fn republish_is_idempotent_and_warm_specs_are_not_rendered() {
    if !in_private_mount_namespace!() {
        return;
    }
    let env = Env::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let a = env.target("pod-a");
    let b = env.target("pod-b");
    run(env.store.publish(publication("vol-a", &a, spec("shop")), render(&calls, BUNDLE))).unwrap();
    let spec_dir = env.store.spec_dir(&spec("shop").digest());
    let generation = current_generation(&spec_dir).unwrap();

    run(env.store.publish(publication("vol-a", &a, spec("shop")), render(&calls, BUNDLE))).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(current_generation(&spec_dir).unwrap(), generation);
    assert_eq!(mounts_at(&a).len(), 1, "not mounted twice");

    // A second volume of the same spec shares the directory.
    run(env.store.publish(publication("vol-b", &b, spec("shop")), render(&calls, BUNDLE))).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(env.store.spec_dir_count().unwrap(), 1);
    assert_eq!(fs::read(b.join("ca-certificates.crt")).unwrap(), BUNDLE);
    assert_eq!(env.store.published_count(), 2);

    // Recorded but no longer mounted (someone unmounted it): publishing again mounts again.
    nix::mount::umount(&a).unwrap();
    assert!(!is_mountpoint(&a));
    run(env.store.publish(publication("vol-a", &a, spec("shop")), render(&calls, BUNDLE))).unwrap();
    assert!(is_mountpoint(&a));
    assert_eq!(fs::read(a.join("ca-certificates.crt")).unwrap(), BUNDLE);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(env.records(), 2);
}

#[test]
fn incompatible_publication_at_the_same_target_is_refused() {
    if !in_private_mount_namespace!() {
        return;
    }
    let env = Env::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let target = env.target("pod-a");
    run(env.store.publish(publication("vol-a", &target, spec("shop")), render(&calls, BUNDLE))).unwrap();

    let err = run(env.store.publish(publication("vol-a", &target, spec("other")), render(&calls, BUNDLE))).unwrap_err();
    match &err {
        Error::AlreadyPublished { existing_volume_id, differences, .. } => {
            assert_eq!(existing_volume_id, "vol-a");
            assert!(differences.contains(&Difference::Attributes), "{err}");
        }
        other => panic!("expected AlreadyPublished, got {other}"),
    }

    let mut writable = publication("vol-a", &target, spec("shop"));
    writable.readonly = false;
    let err = run(env.store.publish(writable, render(&calls, BUNDLE))).unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyPublished { differences, .. } if differences.contains(&Difference::Readonly { existing: true })),
        "{err}"
    );

    let err = run(env.store.publish(publication("vol-z", &target, spec("shop")), render(&calls, BUNDLE))).unwrap_err();
    assert!(matches!(err, Error::AlreadyPublished { .. }), "{err}");

    // Nothing of the refused publications was made; the original is intact.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(env.store.spec_dir_count().unwrap(), 1);
    assert_eq!(mounts_at(&target).len(), 1);
    assert_eq!(fs::read(target.join("ca-certificates.crt")).unwrap(), BUNDLE);
}

#[test]
fn unpublish_cleans_up_and_is_idempotent() {
    if !in_private_mount_namespace!() {
        return;
    }
    let env = Env::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let a = env.target("pod-a");
    let b = env.target("pod-b");
    let spec_dir = env.store.spec_dir(&spec("shop").digest());
    run(env.store.publish(publication("vol-a", &a, spec("shop")), render(&calls, BUNDLE))).unwrap();
    run(env.store.publish(publication("vol-b", &b, spec("shop")), render(&calls, BUNDLE))).unwrap();

    // Another volume's id at this target: left alone.
    run(env.store.unpublish("vol-b", &a)).unwrap();
    assert!(is_mountpoint(&a));

    run(env.store.unpublish("vol-a", &a)).unwrap();
    assert!(!a.exists());
    assert!(spec_dir.exists(), "still used by vol-b");
    assert_eq!(env.records(), 1);
    assert_eq!(fs::read(b.join("ca-certificates.crt")).unwrap(), BUNDLE);

    run(env.store.unpublish("vol-b", &b)).unwrap();
    assert!(!b.exists());
    assert!(!spec_dir.exists(), "removed with its last volume");
    assert_eq!(env.records(), 0);
    assert_eq!(env.store.published_count(), 0);

    // Twice, and unknown volumes: fine.
    run(env.store.unpublish("vol-b", &b)).unwrap();
    run(env.store.unpublish("vol-never", &env.target("pod-never"))).unwrap();

    // A lost record: the mount is still undone.
    let c = env.target("pod-c");
    run(env.store.publish(publication("vol-c", &c, spec("shop")), render(&calls, BUNDLE))).unwrap();
    for entry in fs::read_dir(env.store.records_dir()).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    run(env.store.unpublish("vol-c", &c)).unwrap();
    assert!(!is_mountpoint(&c));
    assert!(!c.exists());
}

#[test]
fn targets_outside_the_kubelet_dir_are_refused() {
    if !in_private_mount_namespace!() {
        return;
    }
    let env = Env::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let outside = tempfile::tempdir().unwrap();
    let pods = env.kubelet.path().join("pods");
    fs::create_dir_all(&pods).unwrap();
    symlink(outside.path(), pods.join("evil")).unwrap();
    fs::create_dir(outside.path().join("volumes")).unwrap();

    let dotdot = pods.join("..").join("..").join(outside.path().file_name().unwrap()).join("mount");
    let targets = [
        outside.path().join("mount"),
        dotdot,
        PathBuf::from("relative/mount"),
        pods.join("evil/mount"),
        pods.join("evil/volumes/mount"),
        env.kubelet.path().to_owned(),
        // Inside the kubelet dir but not a pod's: plugin sockets and registration live there.
        env.kubelet.path().join("plugins_registry/mount"),
        env.kubelet.path().join("plugins/csi.trustmount.io/mount"),
        pods.clone(),
    ];
    for target in &targets {
        let err =
            run(env.store.publish(publication("vol-x", target, spec("shop")), render(&calls, BUNDLE))).unwrap_err();
        assert!(matches!(err, Error::TargetOutsideKubeletDir { .. }), "{}: {err}", target.display());
        let err = run(env.store.unpublish("vol-x", target)).unwrap_err();
        assert!(matches!(err, Error::TargetOutsideKubeletDir { .. }), "{}: {err}", target.display());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(env.store.spec_dir_count().unwrap(), 0);
    assert_eq!(env.records(), 0);
    let mut made: Vec<_> = fs::read_dir(outside.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    made.sort();
    assert_eq!(made, ["volumes"]);
    assert_eq!(fs::read_dir(outside.path().join("volumes")).unwrap().count(), 0);

    // A symlink that stays inside is fine.
    let real = env.target("pod-real");
    symlink(real.parent().unwrap(), pods.join("alias")).unwrap();
    let via_alias = pods.join("alias/mount");
    run(env.store.publish(publication("vol-y", &via_alias, spec("shop")), render(&calls, BUNDLE))).unwrap();
    assert!(is_mountpoint(&real));
    run(env.store.unpublish("vol-y", &via_alias)).unwrap();
    assert!(!real.exists());
}

#[test]
fn failures_leave_nothing_behind() {
    if !in_private_mount_namespace!() {
        return;
    }
    let env = Env::new();
    let target = env.target("pod-a");

    let empty = || Err(node::Error::Sources(sources::Error::EmptyBundle));
    let err = run(env.store.publish(publication("vol-a", &target, spec("shop")), empty)).unwrap_err();
    assert!(matches!(err, node::Error::Sources(sources::Error::EmptyBundle)), "{err}");
    assert!(!target.exists());
    assert_eq!(env.records(), 0);
    assert_eq!(env.store.spec_dir_count().unwrap(), 0);

    // The mount fails (the target is a file): the rendered spec dir goes again.
    fs::write(&target, b"not a directory").unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let err = run(env.store.publish(publication("vol-a", &target, spec("shop")), render(&calls, BUNDLE))).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(env.records(), 0);
    assert_eq!(env.store.spec_dir_count().unwrap(), 0);
    assert_eq!(fs::read(&target).unwrap(), b"not a directory");
    fs::remove_file(&target).unwrap();

    // The parent is missing (not made by the kubelet): the target dir cannot be created.
    let orphan = env.kubelet.path().join("pods/gone/volumes/kubernetes.io~csi/trust/mount");
    let err = run(env.store.publish(publication("vol-o", &orphan, spec("shop")), render(&calls, BUNDLE))).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_eq!(env.store.spec_dir_count().unwrap(), 0);
    let leftovers: Vec<_> = fs::read_dir(env.store.root()).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_bundle_larger_than_the_store_is_refused_and_a_full_store_on_rotation_keeps_the_bundle() {
    if !in_private_mount_namespace!() {
        return;
    }
    let env = Env::with_size(64 << 10);
    let target = env.target("pod-a");
    let big = || Files { entries: vec![("ca-certificates.crt".into(), Entry::File(vec![b'x'; 1 << 20]))] };
    let err = run(env.store.publish(publication("vol-a", &target, spec("shop")), move || Ok(big()))).unwrap_err();
    match &err {
        Error::OverFillLimit { path, .. } => assert_eq!(path, env.store.root()),
        other => panic!("expected OverFillLimit, got {other}"),
    }
    assert!(!target.exists());
    assert_eq!(env.records(), 0);
    assert_eq!(fs::read_dir(env.store.root()).unwrap().count(), 0);

    // A rotation is never refused for the fill limit, only by the tmpfs itself.
    let calls = Arc::new(AtomicUsize::new(0));
    run(async {
        env.store.publish(publication("vol-a", &target, spec("shop")), render(&calls, BUNDLE)).await.unwrap();
        let err = env.store.refresh(spec("shop"), move || Ok(big())).await.unwrap_err();
        match &err {
            Error::StoreFull { path } => assert_eq!(path, env.store.root()),
            other => panic!("expected StoreFull, got {other}"),
        }
        assert_eq!(fs::read(target.join("ca-certificates.crt")).unwrap(), BUNDLE, "the bundle stays");
        assert_eq!(generations(&env.store.spec_dir(&spec("shop").digest())), 1, "nothing half-written left");
        env.store.unpublish("vol-a", &target).await.unwrap();
    });
}

fn generations(spec_dir: &Path) -> usize {
    fs::read_dir(spec_dir)
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("..") && name != "..data"
        })
        .count()
}

/// One file of `len` bytes of `byte`: a spec of its own content (its own blob).
fn sized(byte: u8, len: usize) -> impl FnOnce() -> Result<Files, Error> + Send + 'static {
    move || Ok(Files { entries: vec![("ca-certificates.crt".into(), Entry::File(vec![byte; len]))] })
}

/// A spec of `namespace`; `variant` 0..4 gives four distinct ones.
fn variant(namespace: &str, variant: u8) -> VolumeSpec {
    VolumeSpec { keep_expired: variant & 1 == 1, system_roots: variant & 2 == 2, ..spec(namespace) }
}

#[test]
fn new_specs_leave_the_rotation_reserve_free_so_every_published_spec_can_rotate_at_once() {
    if !in_private_mount_namespace!() {
        return;
    }
    const LEN: usize = 120 << 10;
    // 1 MiB of store: new specs may fill half of it, four of 120 KiB.
    let env = Env::with_size(1 << 20);
    let specs: Vec<VolumeSpec> = (0..5).map(|n| spec(&format!("team-{n}"))).collect();
    run(async {
        for (n, spec) in specs.iter().take(4).enumerate() {
            let target = env.target(&format!("pod-{n}"));
            env.store
                .publish(publication(&format!("vol-{n}"), &target, spec.clone()), sized(n as u8, LEN))
                .await
                .unwrap();
        }
        let fifth = env.target("pod-4");
        let err = env.store.publish(publication("vol-4", &fifth, specs[4].clone()), sized(4, LEN)).await.unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::OverFillLimit { .. }), "{message}");
        assert!(message.contains("the 512.0 KiB that new bundles may fill"), "{message}");
        assert!(message.contains("--store-rotation-reserve 50%"), "{message}");
        assert!(!fifth.exists(), "nothing mounted");
        assert_eq!(env.store.spec_dir_count().unwrap(), 4, "nothing written");

        // Every published spec gets content of its own at once, within the grace of the old.
        for (n, spec) in specs.iter().take(4).enumerate() {
            assert!(env.store.refresh(spec.clone(), sized(100 + n as u8, LEN)).await.unwrap(), "rotation {n}");
        }
        for n in 0..4 {
            let content = fs::read(env.target(&format!("pod-{n}")).join("ca-certificates.crt")).unwrap();
            assert_eq!(content, vec![100 + n as u8; LEN], "pod-{n} reads its new bundle");
        }
    });

    // The same without a reserve: the store fills with new specs, and their rotation fails.
    let env = Env::with_size(1 << 20);
    env.store.set_budgets(volume::Budgets { rotation_reserve_percent: 0, ..volume::Budgets::default() });
    run(async {
        for n in 0..8u8 {
            let target = env.target(&format!("pod-{n}"));
            let spec = spec(&format!("team-{n}"));
            env.store.publish(publication(&format!("vol-{n}"), &target, spec), sized(n, LEN)).await.unwrap();
        }
        let mut failed = 0;
        for n in 0..8u8 {
            if env.store.refresh(spec(&format!("team-{n}")), sized(100 + n, LEN)).await.is_err() {
                failed += 1;
            }
        }
        assert!(failed > 0, "without the reserve some rotation finds the store full");
    });
}

#[test]
fn a_namespace_over_its_store_budget_is_refused_and_a_rotation_that_outgrows_it_keeps_its_bundle() {
    if !in_private_mount_namespace!() {
        return;
    }
    const LEN: usize = 100 << 10;
    let mut env = Env::new();
    let budgets = volume::Budgets { namespace_bytes: 256 << 10, ..volume::Budgets::default() };
    env.store.set_budgets(budgets);
    let publish = |env: &Env, n: usize, spec: VolumeSpec, len: usize| {
        let target = env.target(&format!("pod-{n}"));
        let published = run(env.store.publish(publication(&format!("vol-{n}"), &target, spec), sized(n as u8, len)));
        (target, published)
    };
    let (first, published) = publish(&env, 0, variant("shop", 0), LEN);
    published.unwrap();
    publish(&env, 1, variant("shop", 1), LEN).1.unwrap();
    let (third, refused) = publish(&env, 2, variant("shop", 2), LEN);
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("namespace shop would take 300.0 KiB"), "{message}");
    assert!(message.contains("its budget of 256.0 KiB (--max-namespace-store-bytes)"), "{message}");
    assert!(!third.exists(), "nothing mounted");
    assert_eq!(env.store.spec_dir_count().unwrap(), 2, "nothing written");
    // Another namespace has a budget of its own.
    publish(&env, 3, variant("bank", 2), LEN).1.expect("bank is unaffected");
    publish(&env, 4, variant("shop", 0), LEN).1.expect("a spec shop uses already costs it nothing more");

    // Outgrowing the budget on a rotation: refused, the current bundle stays.
    let grown = run(env.store.refresh(variant("shop", 0), sized(9, 2 * LEN))).unwrap_err();
    assert!(matches!(grown, Error::OverNamespaceStore { .. }), "{grown}");
    assert_eq!(fs::read(first.join("ca-certificates.crt")).unwrap(), vec![0; LEN]);
    // A smaller bundle frees budget: the third spec fits now.
    assert!(run(env.store.refresh(variant("shop", 0), sized(9, LEN / 2))).unwrap());
    publish(&env, 2, variant("shop", 2), LEN).1.expect("room again within shop's budget");

    // After a restart the adopted specs are measured on disk and count from the start.
    env.reopen();
    env.store.set_budgets(budgets);
    let message = publish(&env, 5, variant("shop", 3), LEN).1.unwrap_err().to_string();
    // 52 KiB (50 in whole pages) + 3 × 100 KiB.
    assert!(message.contains("namespace shop would take 352.0 KiB"), "{message}");
}

#[test]
fn restart_adopts_the_tmpfs_and_the_records() {
    if !in_private_mount_namespace!() {
        return;
    }
    let mut env = Env::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let a = env.target("pod-a");
    run(env.store.publish(publication("vol-a", &a, spec("shop")), render(&calls, BUNDLE))).unwrap();
    let root = env.store.root().to_owned();

    // Garbage a crash could leave: a half-made spec dir, a spec dir no record uses, a stray
    // generation in a used one, a temporary record.
    let used = env.store.spec_dir(&spec("shop").digest());
    let unused = env.store.spec_dir(&spec("gone").digest());
    fs::create_dir(root.join(format!(".tmp-{}-abc", spec("gone").digest()))).unwrap();
    fs::create_dir_all(unused.join("..2020_01_01_00_00_00.x")).unwrap();
    fs::create_dir(used.join("..2020_01_01_00_00_00.half")).unwrap();
    fs::write(env.store.records_dir().join(".tmp-rec"), b"{").unwrap();

    env.reopen();
    assert_eq!(mounts_at(&root), ["tmpfs"], "tmpfs adopted, not mounted again");
    assert_eq!(env.store.published_count(), 1);
    assert_eq!(env.store.spec_dir_count().unwrap(), 1);
    assert!(!unused.exists());
    assert_eq!(fs::read_dir(&root).unwrap().count(), 1);
    assert!(!used.join("..2020_01_01_00_00_00.half").exists());
    assert_eq!(env.records(), 1);

    // Republishing is still a no-op; unpublishing still works.
    run(env.store.publish(publication("vol-a", &a, spec("shop")), render(&calls, BUNDLE))).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(fs::read(a.join("ca-certificates.crt")).unwrap(), BUNDLE);
    run(env.store.unpublish("vol-a", &a)).unwrap();
    assert!(!a.exists());
    assert!(!used.exists());
    assert_eq!(env.records(), 0);
}

#[test]
fn concurrent_publishes_and_unpublishes() {
    if !in_private_mount_namespace!() {
        return;
    }
    let env = Env::new();
    let store = Arc::new(env.store.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let volumes: Vec<(String, PathBuf, VolumeSpec)> = (0..50)
        .map(|i| (format!("vol-{i}"), env.target(&format!("pod-{i}")), spec(&format!("ns-{}", i % 5))))
        .collect();

    run(async {
        let mut tasks = Vec::new();
        for (id, target, spec) in volumes.clone() {
            let store = Arc::clone(&store);
            let render = render(&calls, BUNDLE);
            tasks.push(tokio::spawn(async move { store.publish(publication(&id, &target, spec), render).await }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    });
    assert_eq!(calls.load(Ordering::SeqCst), 5, "each spec rendered once");
    assert_eq!(env.store.spec_dir_count().unwrap(), 5);
    assert_eq!(env.store.published_count(), 50);
    assert_eq!(env.records(), 50);
    for (_, target, _) in &volumes {
        assert_eq!(mounts_at(target).len(), 1);
        assert_eq!(fs::read(target.join("ca-certificates.crt")).unwrap(), BUNDLE);
    }

    run(async {
        let mut tasks = Vec::new();
        for (id, target, _) in volumes.clone() {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move { store.unpublish(&id, &target).await }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    });
    assert_eq!(env.store.spec_dir_count().unwrap(), 0);
    assert_eq!(env.store.published_count(), 0);
    assert_eq!(env.records(), 0);
    assert!(volumes.iter().all(|(_, target, _)| !target.exists()));
    assert_eq!(fs::read_dir(env.store.root()).unwrap().count(), 0);
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

#[test]
fn statx_and_mountinfo_agree_on_mountpoints() {
    if !in_private_mount_namespace!() {
        return;
    }
    let env = Env::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let target = env.target("pod-a");
    run(env.store.publish(publication("vol-a", &target, spec("shop")), render(&calls, BUNDLE))).unwrap();
    let alias = env.kubelet.path().join("alias");
    symlink(&target, &alias).unwrap();
    let plain = target.parent().unwrap().to_owned();
    let missing = plain.join("missing");

    // The kernel on this machine must report STATX_ATTR_MOUNT_ROOT, or the O(1) path is
    // never taken and this test compares the fallback with itself.
    assert_eq!(volume::is_mount_root(&target).unwrap(), Some(true));
    for (path, expected) in [
        (target.as_path(), true),
        (alias.as_path(), true), // a symlink is judged by what it points at
        (env.store.root(), true),
        (target.join("java").as_path(), false), // inside a mount, not its root
        (plain.as_path(), false),
        (missing.as_path(), false),
    ] {
        let by_statx = volume::is_mount_root(path).unwrap();
        let by_mountinfo = volume::is_mountpoint_by_mountinfo(path).unwrap();
        assert_eq!(by_statx, Some(expected), "statx: {}", path.display());
        assert_eq!(by_mountinfo, expected, "mountinfo: {}", path.display());
        assert_eq!(volume::is_mountpoint(path).unwrap(), expected);
        assert_eq!(is_mountpoint(path), expected, "test helper: {}", path.display());
    }

    run(env.store.unpublish("vol-a", &target)).unwrap();
    assert_eq!(volume::is_mount_root(&target).unwrap(), Some(false));
    assert!(!volume::is_mountpoint_by_mountinfo(&target).unwrap());
}

#[test]
fn modes_are_exact_whatever_the_umask() {
    if !in_private_mount_namespace!() {
        return;
    }
    // This process runs this test alone (see support::ns), so the process-wide umask is ours.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let env = Env::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let target = env.target("pod-a");
    run(env.store.publish(publication("vol-a", &target, spec("shop")), render(&calls, BUNDLE))).unwrap();
    assert_eq!(mode(&target.join("ca-certificates.crt")), 0o444);
    assert_eq!(mode(&target.join("java/cacerts")), 0o444);
    assert_eq!(mode(&target.join("java")), 0o555);
    assert_eq!(mode(&target.join("..data")), 0o555);
    assert_eq!(mode(&target), 0o555);
}

#[test]
fn publishes_and_unpublishes_of_one_spec_interleave_safely() {
    if !in_private_mount_namespace!() {
        return;
    }
    // Few volumes, many rounds: the spec's user count often drops to zero mid-race.
    const VOLUMES: usize = 6;
    const ROUNDS: usize = 100;
    let env = Env::new();
    let store = Arc::new(env.store.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let spec_dir = env.store.spec_dir(&spec("shop").digest());
    let volumes: Vec<(String, PathBuf)> =
        (0..VOLUMES).map(|i| (format!("vol-{i}"), env.target(&format!("pod-{i}")))).collect();

    // Every volume publishes and unpublishes the same spec ROUNDS times, all at once, so the
    // spec's last user keeps leaving while others arrive; odd volumes end published.
    let (failures, ended_published) = run(async {
        let mut tasks = Vec::new();
        for (i, (id, target)) in volumes.iter().cloned().enumerate() {
            let store = Arc::clone(&store);
            let calls = Arc::clone(&calls);
            tasks.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                for round in 0..ROUNDS {
                    let published =
                        store.publish(publication(&id, &target, spec("shop")), render(&calls, BUNDLE)).await;
                    if let Err(e) = published {
                        failures.push(format!("publish {id} round {round}: {e}"));
                    } else if fs::read(target.join("ca-certificates.crt")).ok().as_deref() != Some(BUNDLE) {
                        failures.push(format!("{id} round {round}: published but no bundle"));
                    }
                    let last = round + 1 == ROUNDS;
                    if !(last && i % 2 == 1)
                        && let Err(e) = store.unpublish(&id, &target).await
                    {
                        failures.push(format!("unpublish {id} round {round}: {e}"));
                    }
                }
                failures
            }));
        }
        let mut failures = Vec::new();
        for task in tasks {
            failures.extend(task.await.unwrap());
        }
        (failures, VOLUMES / 2)
    });
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(calls.load(Ordering::SeqCst) >= 1);
    assert_eq!(env.store.published_count(), ended_published);
    assert_eq!(env.records(), ended_published);
    assert!(spec_dir.exists(), "used by the volumes that ended published");
    for (i, (_, target)) in volumes.iter().enumerate() {
        if i % 2 == 1 {
            assert_eq!(mounts_at(target).len(), 1, "{}", target.display());
            assert_eq!(fs::read(target.join("ca-certificates.crt")).unwrap(), BUNDLE);
        } else {
            assert!(!target.exists(), "{}", target.display());
        }
    }

    // The last users leave at once, while a newcomer arrives: the dir goes only if the newcomer
    // is not using it, and whoever is published still sees the files.
    let newcomer = env.target("pod-new");
    run(async {
        let mut tasks = Vec::new();
        for (i, (id, target)) in volumes.iter().cloned().enumerate() {
            if i % 2 == 1 {
                let store = Arc::clone(&store);
                tasks.push(tokio::spawn(async move { store.unpublish(&id, &target).await }));
            }
        }
        let store = Arc::clone(&store);
        let target = newcomer.clone();
        let render = render(&calls, BUNDLE);
        tasks.push(tokio::spawn(
            async move { store.publish(publication("vol-new", &target, spec("shop")), render).await },
        ));
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    });
    assert_eq!(env.store.published_count(), 1);
    assert!(spec_dir.exists());
    assert_eq!(fs::read(newcomer.join("ca-certificates.crt")).unwrap(), BUNDLE);
    run(env.store.unpublish("vol-new", &newcomer)).unwrap();
    assert!(!spec_dir.exists(), "removed with its last volume");
    assert_eq!(env.records(), 0);
    assert_eq!(fs::read_dir(env.store.root()).unwrap().count(), 0);
}

/// The content-addressed blobs every spec directory hard-links.
fn blob_dir(env: &Env) -> PathBuf {
    fs::canonicalize(env.state.path()).unwrap().join("tmpfs/blobs")
}

fn blob_names(env: &Env) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(blob_dir(env)).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// What a Debian layout looks like in miniature: a bundle, a hash link, a nested file.
fn hashed_files(bundle: &'static [u8]) -> impl FnOnce() -> Result<Files, Error> + Send + 'static {
    move || {
        Ok(Files {
            entries: vec![
                ("ca-certificates.crt".into(), Entry::File(bundle.to_vec())),
                ("1234abcd.0".into(), Entry::Symlink("ca-certificates.crt".into())),
                ("java/cacerts".into(), Entry::File(b"jks".to_vec())),
            ],
        })
    }
}

fn ino(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).unwrap().ino()
}

fn nlink(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).unwrap().nlink()
}

#[test]
fn specs_with_the_same_content_share_inodes() {
    if !in_private_mount_namespace!() {
        return;
    }
    let env = Env::new();
    let (a, b) = (env.target("pod-a"), env.target("pod-b"));
    run(env.store.publish(publication("vol-a", &a, spec("team-a")), hashed_files(BUNDLE))).unwrap();
    run(env.store.publish(publication("vol-b", &b, spec("team-b")), hashed_files(BUNDLE))).unwrap();
    assert_eq!(env.store.spec_dir_count().unwrap(), 2, "two specs, two directories");

    let dir_a = env.store.spec_dir(&spec("team-a").digest());
    let dir_b = env.store.spec_dir(&spec("team-b").digest());
    let (gen_a, gen_b) = (current_generation(&dir_a).unwrap(), current_generation(&dir_b).unwrap());
    for name in ["ca-certificates.crt", "1234abcd.0", "java/cacerts"] {
        assert_eq!(ino(&gen_a.join(name)), ino(&gen_b.join(name)), "{name} is one inode in both generations");
    }
    // The visible `name -> ..data/name` links too; directories cannot be shared.
    assert_eq!(ino(&dir_a.join("ca-certificates.crt")), ino(&dir_b.join("ca-certificates.crt")));
    assert_eq!(ino(&dir_a.join("java")), ino(&dir_b.join("java")));
    assert_ne!(ino(&gen_a.join("java")), ino(&gen_b.join("java")));
    // Through the mounts, as a pod sees them.
    assert_eq!(ino(&a.join("..data/ca-certificates.crt")), ino(&b.join("..data/ca-certificates.crt")));
    assert!(fs::symlink_metadata(gen_a.join("1234abcd.0")).unwrap().file_type().is_symlink());
    assert_eq!(fs::read(b.join("1234abcd.0")).unwrap(), BUNDLE);
    assert_eq!(mode(&a.join("ca-certificates.crt")), 0o444);
    assert_eq!(mode(&b.join("java")), 0o555);
    assert_eq!(mode(&b), 0o555);
    // Blob + two generations.
    assert_eq!(nlink(&gen_a.join("ca-certificates.crt")), 3);
    // Three files or symlinks in a generation, three visible links: six blobs for both specs.
    assert_eq!(blob_names(&env).len(), 6, "{:?}", blob_names(&env));
}

#[test]
fn a_blob_goes_once_no_generation_links_it() {
    if !in_private_mount_namespace!() {
        return;
    }
    let env = Env::new();
    let (a, b) = (env.target("pod-a"), env.target("pod-b"));
    run(env.store.publish(publication("vol-a", &a, spec("team-a")), hashed_files(BUNDLE))).unwrap();
    run(env.store.publish(publication("vol-b", &b, spec("team-b")), hashed_files(BUNDLE))).unwrap();
    let shared = blob_names(&env);

    run(env.store.unpublish("vol-a", &a)).unwrap();
    assert_eq!(blob_names(&env), shared, "team-b still links every blob");
    assert_eq!(fs::read(b.join("ca-certificates.crt")).unwrap(), BUNDLE);

    run(env.store.unpublish("vol-b", &b)).unwrap();
    assert_eq!(blob_names(&env), Vec::<String>::new(), "collected with the last spec dir");
    assert_eq!(fs::read_dir(env.store.root()).unwrap().count(), 0);
}

#[test]
fn a_new_generation_of_one_spec_leaves_the_other_spec_intact() {
    if !in_private_mount_namespace!() {
        return;
    }
    const ROTATED: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n";
    let env = Env::new();
    let (a, b) = (env.target("pod-a"), env.target("pod-b"));
    // One runtime throughout: a swapped-out generation is removed by a task after its grace.
    run(async {
        env.store.publish(publication("vol-a", &a, spec("team-a")), hashed_files(BUNDLE)).await.unwrap();
        env.store.publish(publication("vol-b", &b, spec("team-b")), hashed_files(BUNDLE)).await.unwrap();
        let dir_b = env.store.spec_dir(&spec("team-b").digest());
        let old_blob = ino(&current_generation(&dir_b).unwrap().join("ca-certificates.crt"));
        let blobs_before = blob_names(&env).len();

        assert!(env.store.refresh(spec("team-a"), hashed_files(ROTATED)).await.unwrap());
        assert_eq!(fs::read(a.join("ca-certificates.crt")).unwrap(), ROTATED);
        assert_eq!(fs::read(a.join("1234abcd.0")).unwrap(), ROTATED);
        // team-b still reads the old content, through the very same inode.
        assert_eq!(fs::read(b.join("ca-certificates.crt")).unwrap(), BUNDLE);
        assert_eq!(fs::read(b.join("1234abcd.0")).unwrap(), BUNDLE);
        assert_eq!(fs::read(b.join("java/cacerts")).unwrap(), b"jks");
        assert_eq!(ino(&b.join("..data/ca-certificates.crt")), old_blob);
        assert_eq!(
            nlink(&b.join("..data/ca-certificates.crt")),
            3,
            "blob, team-b, and team-a's swapped-out generation"
        );
        let old_generation_gone = async || nlink(&b.join("..data/ca-certificates.crt")) == 2;
        support::eventually("team-a's old generation goes after its grace", HANG_LIMIT, old_generation_gone).await;
        // Only the new bundle is a new blob; the rest is still shared.
        assert_eq!(blob_names(&env).len(), blobs_before + 1);

        // Rotated too: the old bundle has no link left and goes.
        assert!(env.store.refresh(spec("team-b"), hashed_files(ROTATED)).await.unwrap());
        support::eventually("the old bundle's blob is collected", HANG_LIMIT, async || {
            blob_names(&env).len() == blobs_before
        })
        .await;
        let dir_a = env.store.spec_dir(&spec("team-a").digest());
        let new_a = current_generation(&dir_a).unwrap().join("ca-certificates.crt");
        assert_eq!(ino(&new_a), ino(&current_generation(&dir_b).unwrap().join("ca-certificates.crt")));
    });
}

#[test]
fn blob_leftovers_of_a_crash_are_cleaned_at_open() {
    if !in_private_mount_namespace!() {
        return;
    }
    let mut env = Env::new();
    let a = env.target("pod-a");
    run(env.store.publish(publication("vol-a", &a, spec("team-a")), hashed_files(BUNDLE))).unwrap();
    let used = blob_names(&env);

    // A writer killed mid-blob, and a blob whose last generation went before it was collected.
    let blobs = blob_dir(&env);
    fs::write(blobs.join(".tmp-3"), b"half a certif").unwrap();
    fs::write(blobs.join(format!("f-{}", "0".repeat(64))), b"orphan").unwrap();
    symlink("nowhere", blobs.join(format!("l-{}", "1".repeat(64)))).unwrap();
    // And a spec directory whose record was lost: it goes at open, and its own blobs with it.
    let gone = env.target("pod-gone");
    run(env.store.publish(publication("vol-gone", &gone, spec("gone")), hashed_files(b"gone"))).unwrap();
    for entry in fs::read_dir(env.store.records_dir()).unwrap() {
        let path = entry.unwrap().path();
        if fs::read_to_string(&path).unwrap().contains("vol-gone") {
            fs::remove_file(path).unwrap();
        }
    }
    nix::mount::umount(&gone).unwrap();
    assert_eq!(blob_names(&env).len(), used.len() + 3 + 1, "3 leftovers, the blob of its own bundle");

    env.reopen();
    assert!(!env.store.spec_dir(&spec("gone").digest()).exists());
    assert_eq!(blob_names(&env), used);
    assert_eq!(fs::read(a.join("ca-certificates.crt")).unwrap(), BUNDLE);
    // Writing still finds, or rewrites, every blob.
    let b = env.target("pod-b");
    run(env.store.publish(publication("vol-b", &b, spec("team-b")), hashed_files(BUNDLE))).unwrap();
    assert_eq!(blob_names(&env), used);
    assert_eq!(ino(&a.join("..data/ca-certificates.crt")), ino(&b.join("..data/ca-certificates.crt")));
}

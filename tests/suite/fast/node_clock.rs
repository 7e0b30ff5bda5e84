//! The use cases with a test clock (`Clock::manual`): health and expiry are judged at the
//! clock's time, so a certificate's last days and its expiry are checked by moving the clock,
//! not by waiting. The node publishes into a real store, inside a private mount namespace.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use trustmount::clock::Clock;
use trustmount::domain::{PodInfo, SourceKind, VolumeSpec};
use trustmount::events::PodEvents;
use trustmount::metrics::Metrics;
use trustmount::node::{Health, Node, Rotation, Trigger};
use trustmount::sources::{self, Sources, SystemRoots};
use trustmount::volume::{Publication, Store, StoreConfig};

use crate::in_private_mount_namespace;
use crate::support::block_on;
use crate::support::certs::{TestCa, bundle_ders};

const DAY: Duration = Duration::from_secs(86_400);

#[test]
fn health_and_expiry_follow_the_node_clock() {
    if !in_private_mount_namespace!() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The test clock starts at the real now; the CA is valid for 365 days from it.
    let start = Clock::system().unix_seconds();
    let clock = Clock::manual(start);
    let at = |days: i64| OffsetDateTime::from_unix_timestamp(start).unwrap() + time::Duration::days(days);
    let corp = TestCa::with_validity(dir.path(), "Corp Root", at(-1), at(365));
    let sources = Arc::new(
        Sources::load(sources::Config {
            system_roots: SystemRoots::Embedded,
            extra_pem: vec![corp.cert_path.clone()],
            max_source_size: sources::DEFAULT_MAX_SOURCE_SIZE,
        })
        .unwrap(),
    );
    let kubelet = dir.path().join("kubelet");
    let config =
        StoreConfig { state_dir: dir.path().join("state"), kubelet_dir: kubelet.clone(), tmpfs_size_bytes: 16 << 20 };
    let store = Store::open(config, clock.clone()).unwrap();
    let rotation = Rotation::new(Arc::clone(&sources), store.clone(), Metrics::new(), PodEvents::off(), clock.clone());
    let node = Node::new(sources, store, Arc::clone(&rotation), clock.clone());

    let target = kubelet.join("pods/uid-1/volumes/kubernetes.io~csi/trust/mount");
    fs::create_dir_all(target.parent().unwrap()).unwrap();
    let spec = VolumeSpec { namespace: "shop".into(), ..VolumeSpec::default() };
    let pod = PodInfo {
        name: "web".into(),
        namespace: "shop".into(),
        uid: "uid-1".into(),
        service_account: "default".into(),
        ephemeral: true,
    };
    let publication = Publication { volume_id: "vol-1".into(), target: target.clone(), readonly: true, pod, spec };
    let health = |node: &Node| block_on(node.stats("vol-1", &target)).unwrap().health;
    let refresh = || {
        let trigger = Trigger::change(SourceKind::File, "the test clock", clock.instant());
        block_on(rotation.refresh_where(trigger, |_| true));
    };

    block_on(node.publish(publication, None)).unwrap();
    assert!(matches!(health(&node), Health::Current), "{}", health(&node));
    assert!(bundle_ders(&target).contains(&corp.der), "the CA is in the bundle");

    // Five days before its notAfter: the volume reports it, naming its source.
    clock.advance(360 * DAY);
    let expiring = health(&node);
    assert!(matches!(expiring, Health::Expiring { .. }), "{expiring}");
    let message = expiring.to_string();
    assert!(message.contains("Corp Root") && message.contains("in 5 days"), "{message}");
    refresh();
    assert!(bundle_ders(&target).contains(&corp.der), "still valid at the clock's time: kept");

    // Past it: a refresh at the clock's time leaves it out, and health says it expired.
    clock.advance(10 * DAY);
    refresh();
    assert!(!bundle_ders(&target).contains(&corp.der), "expired at the clock's time: dropped");
    let expired = health(&node).to_string();
    assert!(expired.contains("expired at"), "{expired}");
    assert!(Path::new(&target).join("ca-certificates.crt").exists());
}

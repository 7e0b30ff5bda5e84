//! Kubernetes Events on pods, read back from the real API server: a bad update of a ConfigMap
//! records a Warning on each pod whose volume uses it (and on no other pod), a new message joins
//! the same event's series instead of adding an event, and the fix records a Normal event. A
//! spec failing again and again on 20 pods is told once per pod and message, within the
//! namespace's limit. The
//! driver writes them with its own identity, bound to the ClusterRole deploy/kubernetes/rbac.yaml ships.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};

use crate::in_private_mount_namespace;
use crate::support;
use crate::support::block_on;
use crate::support::certs::TestCa;
use crate::support::client::publish_request;
use crate::support::control_plane::ControlPlane;
use crate::support::objects::{put, put_config_map};
use crate::support::world::{Setup, World};

const NODE_ID: &str = "node-events";
/// Bounds each wait for an event to appear; never a timed assertion.
const LIMIT: Duration = Duration::from_secs(30);

/// A real Pod object (it stays Pending: nothing schedules it), so events regard a pod that
/// exists, by its UID, as the kubelet's publish would name it.
async fn create_pod(admin: &kube::Client, namespace: &str, name: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    if accounts.get_opt("default").await.unwrap().is_none() {
        // No controller-manager runs here to make it.
        let mut account = ServiceAccount::default();
        account.metadata.name = Some("default".into());
        accounts.create(&PostParams::default(), &account).await.unwrap();
    }
    let mut pod = Pod::default();
    pod.metadata.name = Some(name.into());
    pod.spec = Some(PodSpec {
        containers: vec![Container {
            name: "app".into(),
            image: Some("registry.invalid/app".into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    let created = Api::<Pod>::namespaced(admin.clone(), namespace).create(&PostParams::default(), &pod).await.unwrap();
    created.metadata.uid.expect("the API server gives a pod its UID")
}

async fn events_about(admin: &kube::Client, namespace: &str, uid: &str) -> Vec<Event> {
    let events = Api::<Event>::namespaced(admin.clone(), namespace).list(&ListParams::default()).await.unwrap();
    events
        .items
        .into_iter()
        .filter(|event| event.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid))
        .collect()
}

fn with_reason<'e>(events: &'e [Event], reason: &str) -> Vec<&'e Event> {
    events.iter().filter(|event| event.reason.as_deref() == Some(reason)).collect()
}

#[test]
fn a_bad_update_records_a_warning_on_the_pods_that_use_it_and_the_fix_a_normal_event() {
    let plane = ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let setup = Setup { node_id: Some(NODE_ID.into()), ..Setup::default() };
        let World { admin, namespace, dir, daemon, .. } = World::start_with(plane, "events", &[], setup).await;

        let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &namespace);
        let good = TestCa::new(dir.path(), "good");
        put_config_map(&config_maps, "changing", &good.pem).await;
        put_config_map(&config_maps, "steady", &good.pem).await;
        let mut uids = Vec::new();
        for (pod, config_map) in [("web-0", "changing"), ("web-1", "steady")] {
            let uid = create_pod(&admin, &namespace, pod).await;
            let target = daemon.target(&uid, "trust");
            let request = publish_request(
                pod,
                &target,
                &[
                    ("csi.storage.k8s.io/pod.name", pod),
                    ("csi.storage.k8s.io/pod.namespace", &namespace),
                    ("systemRoots", "false"),
                    ("configMaps", config_map),
                ],
            );
            daemon.node().node_publish_volume(request).await.unwrap();
            uids.push(uid);
        }
        let (affected, unaffected) = (&uids[0], &uids[1]);

        // A private key in the ConfigMap: the volume keeps its bundle, its pod hears why.
        let bad = format!("{}{}", good.pem, good.key.serialize_pem());
        put_config_map(&config_maps, "changing", &bad).await;
        support::eventually("a Warning on the affected pod", LIMIT, async || {
            !with_reason(&events_about(&admin, &namespace, affected).await, "TrustBundleRefreshFailed").is_empty()
        })
        .await;
        let events = events_about(&admin, &namespace, affected).await;
        let warnings = with_reason(&events, "TrustBundleRefreshFailed");
        let warning = warnings[0];
        assert_eq!(warning.type_.as_deref(), Some("Warning"));
        assert_eq!(warning.reporting_controller.as_deref(), Some("trustmount"));
        assert_eq!(warning.reporting_instance.as_deref(), Some(NODE_ID));
        let regarding = warning.regarding.as_ref().unwrap();
        assert_eq!(
            (regarding.kind.as_deref(), regarding.name.as_deref(), regarding.namespace.as_deref()),
            (Some("Pod"), Some("web-0"), Some(namespace.as_str()))
        );
        let note = warning.note.as_deref().unwrap_or_default();
        assert!(note.contains("private key") && note.contains("changing"), "{note}");

        // Another bad update with another message (the key is PEM block 0 now): news, so it is
        // sent, and joins the same event's series (a series of two, not a second event).
        let worse = format!("{}{}", good.key.serialize_pem(), good.pem);
        put_config_map(&config_maps, "changing", &worse).await;
        support::eventually("the repeat joins the event's series", LIMIT, async || {
            let events = events_about(&admin, &namespace, affected).await;
            with_reason(&events, "TrustBundleRefreshFailed")
                .iter()
                .any(|event| event.series.as_ref().is_some_and(|series| series.count >= 2))
        })
        .await;
        let events = events_about(&admin, &namespace, affected).await;
        assert_eq!(with_reason(&events, "TrustBundleRefreshFailed").len(), 1, "a repeat is not a new event");

        // Fixed: a Normal event says the bundle is current again.
        let fixed = TestCa::new(dir.path(), "fixed");
        put_config_map(&config_maps, "changing", &fixed.pem).await;
        support::eventually("a Normal event on the affected pod", LIMIT, async || {
            !with_reason(&events_about(&admin, &namespace, affected).await, "TrustBundleRefreshed").is_empty()
        })
        .await;
        let events = events_about(&admin, &namespace, affected).await;
        assert_eq!(with_reason(&events, "TrustBundleRefreshed")[0].type_.as_deref(), Some("Normal"));

        // The pod of the other ConfigMap heard nothing.
        assert!(
            events_about(&admin, &namespace, unaffected).await.is_empty(),
            "only the pods of that source get events"
        );
    });
}

/// How many refreshes of a spec the driver has seen fail, from its log.
fn refresh_failures(daemon: &support::daemon::Daemon) -> usize {
    daemon.stderr().matches("refresh failed; keeping the current bundle").count()
}

/// What the API server was asked to record: an event's series counts each occurrence.
fn occurrences(events: &[&Event]) -> i32 {
    events.iter().map(|event| event.series.as_ref().map_or(1, |series| series.count)).sum()
}

#[test]
fn a_spec_failing_again_and_again_on_many_pods_is_told_once_per_pod_and_message_within_the_limits() {
    const PODS: usize = 20;
    let plane = ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let setup = Setup { node_id: Some(NODE_ID.into()), ..Setup::default() };
        let World { admin, namespace, dir, daemon, .. } = World::start_with(plane, "events-flood", &[], setup).await;

        let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &namespace);
        let good = TestCa::new(dir.path(), "good");
        put_config_map(&config_maps, "shared", &good.pem).await;
        let mut uids = Vec::new();
        for i in 0..PODS {
            let pod = format!("web-{i}");
            let uid = create_pod(&admin, &namespace, &pod).await;
            let target = daemon.target(&uid, "trust");
            let request = publish_request(
                &pod,
                &target,
                &[
                    ("csi.storage.k8s.io/pod.name", &pod),
                    ("csi.storage.k8s.io/pod.namespace", &namespace),
                    ("systemRoots", "false"),
                    ("configMaps", "shared"),
                ],
            );
            daemon.node().node_publish_volume(request).await.unwrap();
            uids.push(uid);
        }

        // Five bad updates, two messages: the key after the certificate (PEM block 1), then
        // before it (block 0). Between them a second key gets a new certificate, as a tenant
        // patching a ConfigMap in a loop would: each is a refresh that fails again with the same
        // message. Each is seen by the driver before the next is made.
        let key = good.key.serialize_pem();
        let (after, before_cert) = (format!("{}{key}", good.pem), format!("{key}{}", good.pem));
        let extras: Vec<TestCa> = (0..3).map(|i| TestCa::new(dir.path(), &format!("extra-{i}"))).collect();
        let bad = [
            (&after, None),
            (&after, Some(&extras[0].pem)),
            (&after, Some(&extras[1].pem)),
            (&before_cert, Some(&extras[1].pem)),
            (&before_cert, Some(&extras[2].pem)),
        ];
        let distinct_messages = 2;
        let seen = refresh_failures(&daemon);
        for (i, (ca, extra)) in bad.iter().enumerate() {
            let mut data = std::collections::BTreeMap::from([("ca.crt".to_owned(), ca.to_string())]);
            if let Some(extra) = extra {
                data.insert("extra.crt".to_owned(), extra.to_string());
            }
            put(&config_maps, "shared", ConfigMap { data: Some(data), ..ConfigMap::default() }).await;
            support::eventually(&format!("the driver sees bad update {i}"), LIMIT, async || {
                refresh_failures(&daemon) > seen + i
            })
            .await;
        }
        let fixed = TestCa::new(dir.path(), "fixed");
        put_config_map(&config_maps, "shared", &fixed.pem).await;
        let all = async || {
            Api::<Event>::namespaced(admin.clone(), &namespace).list(&ListParams::default()).await.unwrap().items
        };
        support::eventually("a Normal event on every pod", LIMIT, async || {
            with_reason(&all().await, "TrustBundleRefreshed").len() == PODS
        })
        .await;

        let events = all().await;
        for uid in &uids {
            let about: Vec<Event> = events
                .iter()
                .filter(|event| event.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid.as_str()))
                .cloned()
                .collect();
            let warnings = with_reason(&about, "TrustBundleRefreshFailed");
            assert_eq!(warnings.len(), 1, "one Warning on pod {uid}");
            assert!(
                occurrences(&warnings) <= distinct_messages,
                "pod {uid} was told at most once per message: {warnings:?}"
            );
            assert!(warnings[0].note.as_deref().unwrap_or_default().contains("private key"));
            assert_eq!(with_reason(&about, "TrustBundleRefreshed").len(), 1, "one Normal on pod {uid}");
        }
        let warnings = occurrences(&with_reason(&events, "TrustBundleRefreshFailed"));
        let recoveries = occurrences(&with_reason(&events, "TrustBundleRefreshed"));
        let pods = PODS as i32;
        let updates = bad.len() as i32 + 1;
        eprintln!(
            "events: {} objects, {warnings} Warning and {recoveries} Normal occurrences for {PODS} pods × {updates} updates ({} before dedup and limits)",
            events.len(),
            updates * pods
        );
        assert!(warnings <= pods * distinct_messages, "{warnings} Warnings");
        // 20 pods use the namespace's whole burst on the first message: the second reaches
        // only the few pods its refill allows.
        assert!(warnings < pods * distinct_messages, "the namespace's limit held back some of the second message");
        assert_eq!(recoveries, pods);
    });
}

//! One namespace attacks the node's shared driver while another keeps working, against the
//! real API server: namespace A names more ConfigMaps than its watch budget, more distinct
//! specs than its spec budget, patches a heavy ConfigMap in a loop and forges pod info; namespace
//! B publishes, unpublishes and rotates its CA all the while. A gets the clear refusals, B gets
//! no failure at all, and the driver never restarts. Then hoarding namespaces fill their store
//! budgets and the store, and B's rotation still fits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tonic::Code;
use trustmount::proto::csi::v1::ProbeRequest;

use crate::in_private_mount_namespace;
use crate::support;
use crate::support::block_on;
use crate::support::certs::{TestCa, bundle_ders, ders, pem_certificates};
use crate::support::client::{code_of, message_of, publish_request, unpublish_request};
use crate::support::control_plane::ControlPlane;
use crate::support::world::{PROPAGATION_LIMIT, World};

const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
/// Small budgets, so each attack crosses its own in a few publishes.
const SPECS: usize = 6;
const WATCHES: usize = 20;
/// Certificates in each version of A's heavy ConfigMap (under the per-source limit).
const HEAVY_CERTIFICATES: usize = 300;

#[test]
fn one_namespace_attacking_the_driver_gets_clear_refusals_and_another_namespace_no_failure() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let (specs, watches) = (SPECS.to_string(), WATCHES.to_string());
        let args = ["--max-namespace-specs", specs.as_str(), "--max-namespace-watches", watches.as_str()];
        let world = World::start_on(ControlPlane::shared(), "victim", &args).await;
        let attacker = world.plane.namespace("attacker").await;
        let pid = world.daemon.pid();
        let in_attacker = |extra: &[(&'static str, String)]| {
            let mut attributes = vec![(POD_NAMESPACE, attacker.clone())];
            attributes.extend(extra.iter().cloned());
            attributes
        };
        let publish_in_attacker = async |pod: &str, extra: &[(&'static str, String)]| {
            let attributes = in_attacker(extra);
            let attributes: Vec<(&str, &str)> = attributes.iter().map(|(k, v)| (*k, v.as_str())).collect();
            world.publish(pod, &attributes).await
        };

        // B's CA, published before the attack.
        let first = TestCa::new(world.dir.path(), "victim-1");
        world.put_config_map("corp-ca", &[("ca.crt", &first.pem)], &[]).await;
        let (steady, result) = world.publish("b-steady", &[("configMaps", "corp-ca")]).await;
        result.unwrap();
        assert_eq!(bundle_ders(&steady), ders(&[&first]));

        // A's heavy ConfigMap: two versions of many certificates, swapped in a loop below, so
        // every patch is a full parse.
        let heavy: Vec<String> = (0..2)
            .map(|version| {
                (0..HEAVY_CERTIFICATES)
                    .map(|i| TestCa::new(world.dir.path(), &format!("heavy-{version}-{i}")).pem)
                    .collect()
            })
            .collect();
        let attacker_maps =
            kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(world.admin.clone(), &attacker);
        let put_heavy = async |version: usize| {
            let map = k8s_openapi::api::core::v1::ConfigMap {
                data: Some([("ca.crt".to_owned(), heavy[version].clone())].into()),
                ..Default::default()
            };
            support::objects::put(&attacker_maps, "heavy", map).await;
        };
        put_heavy(0).await;
        let (heavy_target, result) = publish_in_attacker("a-heavy", &[("configMaps", "heavy".into())]).await;
        result.unwrap_or_else(|status| panic!("A's heavy volume: {}", status.message()));
        assert_eq!(bundle_ders(&heavy_target).len(), HEAVY_CERTIFICATES);

        // The patch loop runs while B works.
        let stop = Arc::new(AtomicBool::new(false));
        let patches = {
            let stop = Arc::clone(&stop);
            async move {
                let mut count = 0;
                while !stop.load(Ordering::Relaxed) {
                    put_heavy((count + 1) % 2).await;
                    count += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                count
            }
        };

        let attacks_and_victim = async {
            // Attack: names past the watch budget (optional, so absent objects are fine; the
            // heavy one gives the bundle content). The heavy volume holds one watch; 16 more fit,
            // 32 more do not.
            let names = |volume: usize| {
                let absent = (0..16).map(|i| format!("absent-{volume}-{i}"));
                std::iter::once("heavy".to_owned()).chain(absent).collect::<Vec<_>>().join(",")
            };
            let (_, result) =
                publish_in_attacker("a-names-1", &[("configMaps", names(1)), ("optional", "true".into())]).await;
            result.unwrap_or_else(|status| panic!("within the watch budget: {}", status.message()));
            let (target, result) =
                publish_in_attacker("a-names-2", &[("configMaps", names(2)), ("optional", "true".into())]).await;
            assert_eq!(code_of(&result), Code::ResourceExhausted, "{result:?}");
            let message = message_of(&result);
            assert!(message.contains(&format!("namespace {attacker} would hold 33 ConfigMap watches")), "{message}");
            assert!(message.contains("--max-namespace-watches"), "{message}");
            assert!(!target.exists());

            // Attack: distinct specs past the spec budget (two used: heavy and names-1).
            let mut refused = 0;
            for (i, layout) in ["debian", "rhel", "suse"].iter().enumerate() {
                for expired in ["drop", "keep"] {
                    let pod = format!("a-spec-{i}-{expired}");
                    let extra = [
                        ("configMaps", "heavy".to_owned()),
                        ("layout", (*layout).to_owned()),
                        ("expired", expired.to_owned()),
                    ];
                    let (target, result) = publish_in_attacker(&pod, &extra).await;
                    if let Err(status) = result {
                        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                        let message = status.message();
                        assert!(message.contains(&format!("namespace {attacker} use {SPECS} distinct")), "{message}");
                        assert!(message.contains("--max-namespace-specs"), "{message}");
                        assert!(!target.exists());
                        refused += 1;
                    }
                }
            }
            // Six variants, one of them (debian, drop) the heavy volume's own spec: five new for
            // the room of four the budget has left.
            assert_eq!(refused, 5 - (SPECS - 2), "all but the budget's room refused");

            // Attack: forged pod info, B's namespace claimed without a pod UID.
            let target = world.daemon.target("a-forged", "trust");
            let mut forged = publish_request("a-forged", &target, &[(POD_NAMESPACE, world.namespace.as_str())]);
            forged.volume_context.insert("configMaps".into(), "corp-ca".into());
            forged.volume_context.remove("csi.storage.k8s.io/pod.uid");
            let result = world.daemon.node().node_publish_volume(forged).await.map(|_| ());
            assert!(result.is_err(), "forged pod info must be refused");
            assert!(!target.exists(), "nothing of B's reaches A");

            // B, all the while: cold and warm publishes and unpublishes, of two specs.
            let mut failures = Vec::new();
            for round in 0..10 {
                for (pod, extra) in [("b-cycle-debian", "debian"), ("b-cycle-rhel", "rhel")] {
                    let pod = format!("{pod}-{round}");
                    let (target, result) = world.publish(&pod, &[("configMaps", "corp-ca"), ("layout", extra)]).await;
                    if let Err(status) = result {
                        failures.push(format!("publish {pod}: {}", status.message()));
                        continue;
                    }
                    if let Err(status) =
                        world.daemon.node().node_unpublish_volume(unpublish_request(&pod, &target)).await
                    {
                        failures.push(format!("unpublish {pod}: {}", status.message()));
                    }
                }
            }
            // ...and a rotation of B's CA reaches B's volume.
            let second = TestCa::new(world.dir.path(), "victim-2");
            world.put_config_map("corp-ca", &[("ca.crt", &second.pem)], &[]).await;
            support::eventually("B's rotation reaches its volume", PROPAGATION_LIMIT, async || {
                bundle_ders(&steady) == ders(&[&second])
            })
            .await;
            let probe = world.daemon.identity().probe(ProbeRequest {}).await.expect("Probe answers");
            assert_eq!(probe.into_inner().ready, Some(true));
            stop.store(true, Ordering::Relaxed);
            failures
        };
        let (failures, patched) = tokio::join!(attacks_and_victim, patches);
        assert!(failures.is_empty(), "namespace B failed {} times:\n{}", failures.len(), failures.join("\n"));
        assert!(patched >= 2, "the heavy ConfigMap was patched {patched} times");

        // A's heavy volume followed the patches (it is A's, and A's own content is fine).
        support::eventually("A's heavy volume holds a whole version", PROPAGATION_LIMIT, async || {
            bundle_ders(&heavy_target).len() == HEAVY_CERTIFICATES
        })
        .await;
        assert_eq!(world.daemon.pid(), pid);
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "the driver never restarted");
        assert!(!world.daemon.stderr().contains("panicked"), "no panic");
    });
}

/// Certificates in each hoarding namespace's ConfigMap: about half a MiB of store per spec.
const HOARD_CERTIFICATES: usize = 100;

/// A store of 8 MiB, half of it the rotation reserve, and 1 MiB per namespace: hoarding
/// namespaces, each with content of its own, fill what new specs may take; namespace B's new
/// spec still fits while only one hoards, and B's rotation always does. A hoarder whose content
/// grows past its budget keeps its last good bundle, and its volume says why.
#[test]
fn hoarding_namespaces_fill_their_budgets_and_the_store_but_never_the_rotation_reserve() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let args = ["--store-size", "8Mi", "--max-namespace-store-bytes", "1Mi"];
        let world = World::start_on(ControlPlane::shared(), "victim", &args).await;
        let first = TestCa::new(world.dir.path(), "victim-1");
        world.put_config_map("corp-ca", &[("ca.crt", &first.pem)], &[]).await;
        let mut b_volumes = Vec::new();
        for layout in ["debian", "rhel"] {
            let (target, result) =
                world.publish(&format!("b-{layout}"), &[("configMaps", "corp-ca"), ("layout", layout)]).await;
            result.unwrap_or_else(|status| panic!("B's {layout} volume: {}", status.message()));
            b_volumes.push((layout, target));
        }

        let bulk = |name: &str, count: usize| -> String {
            (0..count).map(|i| TestCa::new(world.dir.path(), &format!("{name}-{i}")).pem).collect()
        };
        let put_bulk = async |namespace: &str, pem: String| {
            let maps = kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(world.admin.clone(), namespace);
            let map = k8s_openapi::api::core::v1::ConfigMap {
                data: Some([("ca.crt".to_owned(), pem)].into()),
                ..Default::default()
            };
            support::objects::put(&maps, "bulk", map).await;
        };
        // One hoarding namespace publishes distinct specs of its ConfigMap until refused:
        // (published pods and their targets, the refusal's message).
        let hoard = async |namespace: &str| -> (Vec<(String, std::path::PathBuf)>, String) {
            let mut published = Vec::new();
            for layout in ["debian", "rhel", "suse"] {
                for expired in ["drop", "keep"] {
                    let pod = format!("{namespace}-{layout}-{expired}");
                    let attributes =
                        [(POD_NAMESPACE, namespace), ("configMaps", "bulk"), ("layout", layout), ("expired", expired)];
                    let (target, result) = world.publish(&pod, &attributes).await;
                    match result {
                        Ok(()) => published.push((pod, target)),
                        Err(status) => {
                            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                            assert!(!target.exists(), "nothing mounted when refused");
                            return (published, status.message().to_owned());
                        }
                    }
                }
            }
            panic!("{namespace}: six specs of {HOARD_CERTIFICATES} certificates fit in 1 MiB");
        };

        // The first hoarder crosses its own budget; the store is far from its fill limit.
        let hoarder = world.plane.namespace("hoarder").await;
        put_bulk(&hoarder, bulk("hoard-0", HOARD_CERTIFICATES)).await;
        let (hoarded, message) = hoard(&hoarder).await;
        assert!(!hoarded.is_empty(), "some of the hoarder's specs fit its budget");
        assert!(message.contains(&format!("namespace {hoarder} would take")), "{message}");
        assert!(message.contains("--max-namespace-store-bytes"), "{message}");
        let (b_suse, result) = world.publish("b-suse", &[("configMaps", "corp-ca"), ("layout", "suse")]).await;
        result.unwrap_or_else(|status| panic!("B's new spec beside one hoarder: {}", status.message()));
        b_volumes.push(("suse", b_suse));

        // More hoarders, each with content of its own, until new specs reach the fill limit.
        let mut reserve_refusal = None;
        for n in 1..8 {
            let namespace = world.plane.namespace("hoarder").await;
            put_bulk(&namespace, bulk(&format!("hoard-{n}"), HOARD_CERTIFICATES)).await;
            let (_, message) = hoard(&namespace).await;
            if message.contains("--store-rotation-reserve") {
                reserve_refusal = Some(message);
                break;
            }
            assert!(message.contains("--max-namespace-store-bytes"), "{message}");
        }
        let message = reserve_refusal.expect("seven hoarders of 1 MiB reach the 4 MiB new specs may fill");
        assert!(message.contains("that new bundles may fill"), "{message}");
        // B's existing spec still publishes warm, and B's rotation reaches every volume.
        let (_, result) = world.publish("b-debian-2", &[("configMaps", "corp-ca"), ("layout", "debian")]).await;
        result.unwrap_or_else(|status| panic!("B's warm publish on a filled store: {}", status.message()));
        let second = TestCa::new(world.dir.path(), "victim-2");
        world.put_config_map("corp-ca", &[("ca.crt", &second.pem)], &[]).await;
        support::eventually("B's rotation reaches all its volumes", PROPAGATION_LIMIT, async || {
            b_volumes.iter().all(|(layout, target)| layout_ders(target, layout) == ders(&[&second]))
        })
        .await;

        // The first hoarder's content doubles: over its budget, its volumes keep their bundle
        // and say why.
        put_bulk(&hoarder, bulk("hoard-grown", 2 * HOARD_CERTIFICATES)).await;
        let (pod, target) = &hoarded[0];
        support::eventually("the outgrown volume reports its budget", PROPAGATION_LIMIT, async || {
            let (abnormal, message) = world.condition(pod, target).await;
            abnormal && message.contains("--max-namespace-store-bytes")
        })
        .await;
        assert_eq!(bundle_ders(target).len(), HOARD_CERTIFICATES, "the last good bundle stays");
        assert!(!world.daemon.stderr().contains("panicked"), "no panic");
    });
}

/// The certificates of the bundle file of a volume of `layout`.
fn layout_ders(target: &std::path::Path, layout: &str) -> std::collections::BTreeSet<Vec<u8>> {
    let file = match layout {
        "rhel" => "pem/tls-ca-bundle.pem",
        "suse" => "ca-bundle.pem",
        _ => "ca-certificates.crt",
    };
    pem_certificates(&std::fs::read(target.join(file)).unwrap_or_default()).into_iter().collect()
}

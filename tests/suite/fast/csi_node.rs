//! The CSI Identity and Node services of the real `trustmount serve`, over its unix socket,
//! with real mounts (each test in its own private mount namespace).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tonic::Code;
use trustmount::proto::csi::v1::{
    GetPluginCapabilitiesRequest, GetPluginInfoRequest, NodeExpandVolumeRequest, NodeGetCapabilitiesRequest,
    NodeGetInfoRequest, NodePublishVolumeRequest, NodeStageVolumeRequest, NodeUnstageVolumeRequest, ProbeRequest,
    node_service_capability, plugin_capability, volume_capability, volume_usage,
};

use crate::in_private_mount_namespace;
use crate::support;
use crate::support::block_on;
use crate::support::certs::{TestCa, openssl_subject_hash, pem_certificates};
use crate::support::client::{code_of, mount_capability, publish_request, stats_request, unpublish_request};
use crate::support::daemon::{Daemon, DaemonOptions};
use crate::support::fsutil::{is_mount_point, walk};
use crate::support::world::LocalWorld;

#[test]
fn identity_reports_the_driver_name_version_no_controller_and_readiness() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let daemon = Daemon::start(DaemonOptions::default()).await;
        let mut identity = daemon.identity();
        let info = identity.get_plugin_info(GetPluginInfoRequest {}).await.unwrap().into_inner();
        assert_eq!(info.name, "csi.trustmount.io");
        assert_eq!(info.vendor_version, "0.1.0");

        let caps = identity.get_plugin_capabilities(GetPluginCapabilitiesRequest {}).await.unwrap().into_inner();
        let controller = plugin_capability::service::Type::ControllerService as i32;
        assert!(
            !caps
                .capabilities
                .iter()
                .any(|c| matches!(c.r#type, Some(plugin_capability::Type::Service(s)) if s.r#type == controller)),
            "a node-only driver must not advertise CONTROLLER_SERVICE: {caps:?}"
        );

        let probe = identity.probe(ProbeRequest {}).await.unwrap().into_inner();
        assert_eq!(probe.ready, Some(true));
    });
}

#[test]
fn driver_name_flag_renames_the_plugin_and_a_bare_socket_path_is_accepted() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let opts = DaemonOptions {
            driver_name: Some("trust.example.com".to_string()),
            endpoint_with_scheme: false,
            ..DaemonOptions::default()
        };
        let daemon = Daemon::start(opts).await;
        let info = daemon.identity().get_plugin_info(GetPluginInfoRequest {}).await.unwrap().into_inner();
        assert_eq!(info.name, "trust.example.com");
    });
}

#[test]
fn node_reports_its_id_and_exactly_volume_stats_and_condition_capabilities() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let opts = DaemonOptions { node_id: "worker-7.example".to_string(), ..DaemonOptions::default() };
        let daemon = Daemon::start(opts).await;
        let mut node = daemon.node();
        let info = node.node_get_info(NodeGetInfoRequest {}).await.unwrap().into_inner();
        assert_eq!(info.node_id, "worker-7.example");

        let caps = node.node_get_capabilities(NodeGetCapabilitiesRequest {}).await.unwrap().into_inner();
        let mut rpcs: Vec<i32> = caps
            .capabilities
            .iter()
            .map(|c| match c.r#type {
                Some(node_service_capability::Type::Rpc(rpc)) => rpc.r#type,
                None => panic!("capability without a type: {caps:?}"),
            })
            .collect();
        rpcs.sort();
        use node_service_capability::rpc::Type;
        assert_eq!(rpcs, vec![Type::GetVolumeStats as i32, Type::VolumeCondition as i32]);
    });
}

#[test]
fn stage_unstage_and_expand_are_unimplemented() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let daemon = Daemon::start(DaemonOptions::default()).await;
        let mut node = daemon.node();
        let staging = daemon.kubelet_dir.join("plugins/kubernetes.io/csi/csi.trustmount.io/stage");
        let stage = node
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: "v".into(),
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(mount_capability()),
                ..Default::default()
            })
            .await;
        assert_eq!(code_of(&stage), Code::Unimplemented, "{stage:?}");
        let unstage = node
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: "v".into(),
                staging_target_path: staging.display().to_string(),
            })
            .await;
        assert_eq!(code_of(&unstage), Code::Unimplemented, "{unstage:?}");
        let expand = node
            .node_expand_volume(NodeExpandVolumeRequest {
                volume_id: "v".into(),
                volume_path: daemon.target("pod", "vol").display().to_string(),
                ..Default::default()
            })
            .await;
        assert_eq!(code_of(&expand), Code::Unimplemented, "{expand:?}");
    });
}

#[test]
fn published_volume_holds_the_extra_ca_read_only_and_unpublish_removes_it() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let LocalWorld { dir: _certs, ca, daemon } = LocalWorld::start().await;
        let mut node = daemon.node();
        let target = daemon.target("pod-a", "trust");

        node.node_publish_volume(publish_request("vol-a", &target, &[])).await.unwrap();
        assert!(is_mount_point(&target), "{} is not a mount point after publish", target.display());

        // The merged bundle and its aliases all contain the test CA (text between blocks is allowed).
        for name in ["ca-certificates.crt", "cert.pem", "ca-bundle.crt"] {
            let bytes = std::fs::read(target.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"));
            let ders = pem_certificates(&bytes);
            assert!(ders.contains(&ca.der), "{name} does not contain the test CA ({} certificates)", ders.len());
            assert!(ders.len() > 1, "{name} should also hold the embedded system roots");
        }
        // A per-certificate file and the OpenSSL hash link for the CA.
        let per_cert: Vec<PathBuf> = std::fs::read_dir(&target)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "pem") && p.file_name().unwrap() != "cert.pem")
            .filter(|p| pem_certificates(&std::fs::read(p).unwrap()) == vec![ca.der.clone()])
            .collect();
        assert_eq!(per_cert.len(), 1, "expected exactly one per-certificate .pem for the test CA: {per_cert:?}");
        let hash = openssl_subject_hash(&ca.cert_path);
        let link = target.join(format!("{hash}.0"));
        assert_eq!(pem_certificates(&std::fs::read(&link).unwrap()), vec![ca.der.clone()], "{}", link.display());

        // Java trust stores: JKS magic 0xFEEDFEED.
        for store in ["java/cacerts", "adoptium/cacerts"] {
            let bytes = std::fs::read(target.join(store)).unwrap_or_else(|e| panic!("read {store}: {e}"));
            assert!(bytes.starts_with(&[0xfe, 0xed, 0xfe, 0xed]), "{store} is not a JKS store");
        }

        // Modes: files 0444, directories 0555 (symlinks are not checked; their targets are).
        for rel in walk(&target) {
            let path = target.join(&rel);
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                assert_eq!(mode, 0o555, "directory {} has mode {mode:o}", rel.display());
            } else if meta.is_file() {
                assert_eq!(mode, 0o444, "file {} has mode {mode:o}", rel.display());
            }
        }
        let root_mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;

        // Read-only as a mount, not just by permissions: we are root, so only EROFS can stop us.
        for attempt in [target.join("new-file"), target.join("ca-certificates.crt")] {
            let err = std::fs::write(&attempt, b"x").expect_err("writing into the volume must fail");
            assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS), "{}: {err}", attempt.display());
        }

        node.node_unpublish_volume(unpublish_request("vol-a", &target)).await.unwrap();
        assert!(!is_mount_point(&target), "target still mounted after unpublish");
        assert!(!target.exists(), "target {} still exists after unpublish", target.display());
        assert!(target.parent().unwrap().exists(), "the kubelet's volume directory must be left alone");
        // Checked last so everything above is exercised even if this fails.
        assert_eq!(root_mode, 0o555, "the volume root (a directory) has mode {root_mode:o}");
    });
}

#[test]
fn publishing_twice_is_idempotent_and_unpublishing_twice_is_ok() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let LocalWorld { dir: _certs, ca, daemon } = LocalWorld::start().await;
        let mut node = daemon.node();
        let target = daemon.target("pod-b", "trust");
        let request = publish_request("vol-b", &target, &[("systemRoots", "true")]);

        node.node_publish_volume(request.clone()).await.unwrap();
        node.node_publish_volume(request.clone()).await.expect("an identical re-publish is OK");
        let mounts = support::fsutil::mount_points().iter().filter(|m| **m == target).count();
        assert_eq!(mounts, 1, "an identical re-publish must not stack a second mount");
        let bundle = std::fs::read(target.join("ca-certificates.crt")).unwrap();
        assert!(pem_certificates(&bundle).contains(&ca.der));

        node.node_unpublish_volume(unpublish_request("vol-b", &target)).await.unwrap();
        node.node_unpublish_volume(unpublish_request("vol-b", &target)).await.expect("a second unpublish is OK");
        assert!(!target.exists());

        // Never published at all: also OK.
        let never = daemon.target("pod-never", "trust");
        node.node_unpublish_volume(unpublish_request("vol-never", &never)).await.expect("unknown volume is OK");
        assert!(!never.exists());
    });
}

#[test]
fn a_namespace_over_its_spec_budget_is_refused_naming_it_and_another_namespace_is_not() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path(), "ca");
        let mut options = DaemonOptions::default().extra_pem(&ca.cert_path);
        options.extra_args = vec!["--max-namespace-specs".into(), "2".into()];
        let daemon = Daemon::start(options).await;
        let mut node = daemon.node();
        let in_namespace = |pod: &str, namespace: &str, layout: &str| {
            let target = daemon.target(pod, "trust");
            let mut request = publish_request(pod, &target, &[("layout", layout)]);
            request.volume_context.insert("csi.storage.k8s.io/pod.namespace".into(), namespace.into());
            (target, request)
        };
        for (pod, layout) in [("pod-1", "debian"), ("pod-2", "rhel"), ("pod-3", "debian")] {
            let (_, request) = in_namespace(pod, "shop", layout);
            node.node_publish_volume(request).await.unwrap_or_else(|status| panic!("{pod}: {}", status.message()));
        }
        // A third distinct spec of namespace shop: over its budget of two.
        let (target, request) = in_namespace("pod-4", "shop", "suse");
        let status = node.node_publish_volume(request).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("namespace shop use 2 distinct volume specs"), "{}", status.message());
        assert!(status.message().contains("--max-namespace-specs"), "{}", status.message());
        assert!(!target.exists(), "nothing mounted");
        // Another namespace, the same attributes: its own budget.
        let (target, request) = in_namespace("pod-5", "bank", "suse");
        node.node_publish_volume(request).await.expect("another namespace is unaffected");
        assert!(std::fs::read_dir(&target).unwrap().next().is_some(), "published");
        for pod in ["pod-1", "pod-2", "pod-3", "pod-5"] {
            node.node_unpublish_volume(unpublish_request(pod, &daemon.target(pod, "trust"))).await.unwrap();
        }
    });
}

type Mutation = Box<dyn Fn(&mut NodePublishVolumeRequest)>;

struct Case {
    name: &'static str,
    mutate: Mutation,
    expected: Code,
    /// A word the error message must contain.
    message_contains: Option<&'static str>,
}

fn case(name: &'static str, expected: Code, mutate: impl Fn(&mut NodePublishVolumeRequest) + 'static) -> Case {
    Case { name, mutate: Box::new(mutate), expected, message_contains: None }
}

fn mount_of(req: &mut NodePublishVolumeRequest) -> &mut volume_capability::MountVolume {
    match req.volume_capability.as_mut().and_then(|c| c.access_type.as_mut()) {
        Some(volume_capability::AccessType::Mount(m)) => m,
        _ => panic!("base request has a mount capability"),
    }
}

#[test]
fn bad_publish_requests_get_the_csi_status_codes() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        // No --extra-pem: `systemRoots: "false"` then leaves an empty bundle.
        let daemon = Daemon::start(DaemonOptions::default().system_roots("embedded")).await;
        let mut node = daemon.node();
        let outside = tempfile::tempdir().unwrap();
        let outside_dir = outside.path().to_path_buf();
        std::fs::create_dir_all(outside_dir.join("vol")).unwrap();

        // An existing publication for the AlreadyExists cases.
        let existing = daemon.target("pod-existing", "trust");
        node.node_publish_volume(publish_request("vol-existing", &existing, &[])).await.unwrap();

        // A symlink inside the kubelet dir that points outside it.
        let sym_parent = daemon.kubelet_dir.join("pods/pod-sym/volumes/kubernetes.io~csi");
        std::fs::create_dir_all(&sym_parent).unwrap();
        std::os::unix::fs::symlink(outside_dir.join("vol"), sym_parent.join("trust")).unwrap();
        let sym_target = sym_parent.join("trust/mount");
        // A `..` path that leaves the kubelet dir.
        let dotdot_target = daemon
            .kubelet_dir
            .join("pods/pod-dd/volumes/kubernetes.io~csi/trust/../../../../..")
            .join(outside_dir.strip_prefix("/").unwrap())
            .join("vol/mount");
        std::fs::create_dir_all(daemon.kubelet_dir.join("pods/pod-dd/volumes/kubernetes.io~csi/trust")).unwrap();

        let existing_s = existing.display().to_string();
        let outside_s = outside_dir.join("vol/mount").display().to_string();
        let sym_s = sym_target.display().to_string();
        let dotdot_s = dotdot_target.display().to_string();
        let e1 = existing_s.clone();
        let e2 = existing_s.clone();
        let e3 = existing_s.clone();

        let mut cases: Vec<Case> = vec![
            case("missing volume_id", Code::InvalidArgument, |r| r.volume_id.clear()),
            case("missing target_path", Code::InvalidArgument, |r| r.target_path.clear()),
            case("missing volume_capability", Code::InvalidArgument, |r| r.volume_capability = None),
            case("block access type", Code::InvalidArgument, |r| {
                r.volume_capability.as_mut().unwrap().access_type =
                    Some(volume_capability::AccessType::Block(volume_capability::BlockVolume {}))
            }),
            case("missing access mode", Code::InvalidArgument, |r| {
                r.volume_capability.as_mut().unwrap().access_mode = None
            }),
            case("UNKNOWN access mode", Code::InvalidArgument, |r| {
                r.volume_capability.as_mut().unwrap().access_mode =
                    Some(volume_capability::AccessMode { mode: volume_capability::access_mode::Mode::Unknown as i32 })
            }),
            Case {
                message_contains: Some("systemroots"),
                ..case("unknown attribute (typo systemroots)", Code::InvalidArgument, |r| {
                    r.volume_context.insert("systemroots".into(), "false".into());
                })
            },
            Case {
                message_contains: Some("systemRoots"),
                ..case("systemRoots is not a boolean", Code::InvalidArgument, |r| {
                    r.volume_context.insert("systemRoots".into(), "maybe".into());
                })
            },
            case("ephemeral is not a boolean", Code::InvalidArgument, |r| {
                r.volume_context.insert("csi.storage.k8s.io/ephemeral".into(), "sometimes".into());
            }),
            case("relative target path", Code::InvalidArgument, |r| {
                r.target_path = "pods/p/volumes/kubernetes.io~csi/trust/mount".into()
            }),
            case("target outside the kubelet dir", Code::InvalidArgument, move |r| r.target_path = outside_s.clone()),
            case("target leaving the kubelet dir via ..", Code::InvalidArgument, move |r| {
                r.target_path = dotdot_s.clone()
            }),
            case("target leaving the kubelet dir via a symlink", Code::InvalidArgument, move |r| {
                r.target_path = sym_s.clone()
            }),
            case("fs_type ext4", Code::InvalidArgument, |r| mount_of(r).fs_type = "ext4".into()),
            case("non-empty mount_flags", Code::InvalidArgument, |r| mount_of(r).mount_flags = vec!["noexec".into()]),
            case("same target, different attributes", Code::AlreadyExists, move |r| {
                r.target_path = e1.clone();
                // As the kubelet would send it: the UID of the pod whose directory it is.
                let uid = support::client::pod_uid_of(Path::new(&r.target_path));
                r.volume_context.insert("csi.storage.k8s.io/pod.uid".into(), uid);
                r.volume_id = "vol-existing".into();
                r.volume_context.insert("systemRoots".into(), "false".into());
            }),
            case("same target, different volume_id", Code::AlreadyExists, move |r| {
                r.target_path = e2.clone();
                // As the kubelet would send it: the UID of the pod whose directory it is.
                let uid = support::client::pod_uid_of(Path::new(&r.target_path));
                r.volume_context.insert("csi.storage.k8s.io/pod.uid".into(), uid);
                r.volume_id = "vol-other".into();
            }),
            case("same target, different readonly", Code::AlreadyExists, move |r| {
                r.target_path = e3.clone();
                // As the kubelet would send it: the UID of the pod whose directory it is.
                let uid = support::client::pod_uid_of(Path::new(&r.target_path));
                r.volume_context.insert("csi.storage.k8s.io/pod.uid".into(), uid);
                r.volume_id = "vol-existing".into();
                r.readonly = false;
            }),
            case("systemRoots false with no extra CA (empty bundle)", Code::FailedPrecondition, |r| {
                r.volume_context.insert("systemRoots".into(), "false".into());
            }),
            // Controls: the base request and its accepted variants succeed.
            case("valid request (control)", Code::Ok, |_| {}),
            case("fs_type tmpfs (control)", Code::Ok, |r| mount_of(r).fs_type = "tmpfs".into()),
            case("explicit systemRoots true (control)", Code::Ok, |r| {
                r.volume_context.insert("systemRoots".into(), "true".into());
            }),
            case("unknown kubelet key is ignored (control)", Code::Ok, |r| {
                r.volume_context.insert("csi.storage.k8s.io/serviceAccount.tokens".into(), "{}".into());
            }),
        ];
        assert!(cases.iter().filter(|c| c.expected != Code::Ok).count() >= 15);

        let mut failures = Vec::new();
        for (i, case) in cases.drain(..).enumerate() {
            let fresh = daemon.target(&format!("pod-case-{i}"), "trust");
            let mut request = publish_request(&format!("vol-case-{i}"), &fresh, &[]);
            (case.mutate)(&mut request);
            let result = node.node_publish_volume(request.clone()).await;
            let got = code_of(&result);
            if got != case.expected {
                failures.push(format!(
                    "{}: expected {:?}, got {:?} ({:?})",
                    case.name,
                    case.expected,
                    got,
                    result.err().map(|s| s.message().to_string())
                ));
                continue;
            }
            if let (Some(word), Err(status)) = (case.message_contains, &result)
                && !status.message().contains(word)
            {
                failures.push(format!("{}: message {:?} does not name {word:?}", case.name, status.message()));
            }
            if case.expected == Code::Ok {
                assert!(is_mount_point(&fresh), "{}: accepted but not mounted", case.name);
                node.node_unpublish_volume(unpublish_request(&request.volume_id, &fresh)).await.unwrap();
            } else if request.target_path == fresh.display().to_string() {
                assert!(!is_mount_point(&fresh), "{}: refused but left a mount at the target", case.name);
            }
        }
        // Refused escapes created nothing outside the kubelet dir.
        assert!(
            !outside_dir.join("vol/mount").exists(),
            "a refused publish created {}",
            outside_dir.join("vol/mount").display()
        );
        assert!(walk(&outside_dir) == vec![PathBuf::from("vol")], "outside dir changed: {:?}", walk(&outside_dir));
        // The existing publication survived the conflicting attempts.
        assert!(is_mount_point(&existing));
        assert!(!pem_certificates(&std::fs::read(existing.join("ca-certificates.crt")).unwrap()).is_empty());
        assert!(failures.is_empty(), "{} of the cases failed:\n{}", failures.len(), failures.join("\n"));
    });
}

#[test]
fn bad_unpublish_and_stats_requests_are_invalid_arguments() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let daemon = Daemon::start(DaemonOptions::default()).await;
        let mut node = daemon.node();
        let target = daemon.target("pod-u", "trust");
        let no_id = node.node_unpublish_volume(unpublish_request("", &target)).await;
        assert_eq!(code_of(&no_id), Code::InvalidArgument, "{no_id:?}");
        let no_target = node.node_unpublish_volume(unpublish_request("vol-u", Path::new(""))).await;
        assert_eq!(code_of(&no_target), Code::InvalidArgument, "{no_target:?}");
        let no_id = node.node_get_volume_stats(stats_request("", &target)).await;
        assert_eq!(code_of(&no_id), Code::InvalidArgument, "{no_id:?}");
        let no_path = node.node_get_volume_stats(stats_request("vol-u", Path::new(""))).await;
        assert_eq!(code_of(&no_path), Code::InvalidArgument, "{no_path:?}");
    });
}

#[test]
fn a_target_outside_the_kubelet_dir_is_refused_and_nothing_is_created_there() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let LocalWorld { dir: _certs, ca: _ca, daemon } = LocalWorld::start().await;
        let outside = tempfile::tempdir().unwrap();
        let parent = outside.path().join("pods/p/volumes/kubernetes.io~csi/trust");
        std::fs::create_dir_all(&parent).unwrap();
        let target = parent.join("mount");
        let result = daemon.node().node_publish_volume(publish_request("vol-out", &target, &[])).await;
        assert_eq!(code_of(&result), Code::InvalidArgument, "{result:?}");
        assert!(!target.exists(), "the refused publish created {}", target.display());
        assert!(!support::fsutil::mount_points().iter().any(|m| m.starts_with(outside.path())));
    });
}

#[test]
fn fifty_concurrent_publishes_all_succeed_and_unpublishing_them_empties_the_store() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let LocalWorld { dir: _certs, ca, daemon } = LocalWorld::start().await;
        const N: usize = 50;
        // Ten distinct specs (namespace × systemRoots), five volumes each.
        let spec_attrs = |i: usize| -> Vec<(String, String)> {
            vec![
                ("csi.storage.k8s.io/pod.namespace".to_string(), format!("ns-{}", i % 5)),
                ("systemRoots".to_string(), if i.is_multiple_of(2) { "true" } else { "false" }.to_string()),
            ]
        };
        let mut digests = std::collections::BTreeSet::new();
        for i in 0..N {
            let a: std::collections::HashMap<String, String> = spec_attrs(i).into_iter().collect();
            digests.insert(trustmount::sources::cluster::parse_attributes(&a).unwrap().0.digest().to_string());
        }
        assert_eq!(digests.len(), 10);

        let targets: Vec<PathBuf> = (0..N).map(|i| daemon.target(&format!("pod-{i}"), "trust")).collect();
        let mut tasks = Vec::new();
        for (i, target) in targets.iter().enumerate() {
            let mut node = daemon.node();
            let owned = spec_attrs(i);
            let target = target.clone();
            tasks.push(tokio::spawn(async move {
                let extra: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                node.node_publish_volume(publish_request(&format!("vol-{i}"), &target, &extra)).await
            }));
        }
        for (i, task) in tasks.into_iter().enumerate() {
            task.await.unwrap().unwrap_or_else(|s| panic!("publish vol-{i} failed: {s}"));
        }
        for (i, target) in targets.iter().enumerate() {
            assert!(is_mount_point(target), "vol-{i} not mounted");
            let ders = pem_certificates(&std::fs::read(target.join("ca-certificates.crt")).unwrap());
            assert!(ders.contains(&ca.der), "vol-{i} lacks the test CA");
            if i % 2 == 1 {
                assert_eq!(ders, vec![ca.der.clone()], "vol-{i} (systemRoots false) must hold only the extra CA");
            } else {
                assert!(ders.len() > 1, "vol-{i} (systemRoots true) must hold the system roots too");
            }
        }
        let store = daemon.store_dir();
        let named_by_digest = |paths: &[PathBuf]| -> Vec<PathBuf> {
            paths
                .iter()
                .filter(|p| p.components().any(|c| digests.contains(c.as_os_str().to_str().unwrap_or(""))))
                .cloned()
                .collect()
        };
        let before = named_by_digest(&walk(&store));
        assert!(
            !before.is_empty(),
            "expected spec directories named by digest in {}: {:?}",
            store.display(),
            walk(&store)
        );

        let mut tasks = Vec::new();
        for (i, target) in targets.iter().enumerate() {
            let mut node = daemon.node();
            let target = target.clone();
            tasks.push(tokio::spawn(async move {
                node.node_unpublish_volume(unpublish_request(&format!("vol-{i}"), &target)).await
            }));
        }
        for (i, task) in tasks.into_iter().enumerate() {
            task.await.unwrap().unwrap_or_else(|s| panic!("unpublish vol-{i} failed: {s}"));
        }
        for target in &targets {
            assert!(!target.exists() && !is_mount_point(target), "{} survived unpublish", target.display());
        }
        let after = named_by_digest(&walk(&store));
        assert!(after.is_empty(), "spec directories left in the store after every volume was unpublished: {after:?}");
        assert!(is_mount_point(&store), "the driver's tmpfs should still be mounted at {}", store.display());
    });
}

#[test]
fn volume_stats_report_usage_and_a_normal_condition_and_not_found_for_unknown_volumes() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let LocalWorld { dir: _certs, ca: _ca, daemon } = LocalWorld::start().await;
        let mut node = daemon.node();
        let target = daemon.target("pod-s", "trust");
        node.node_publish_volume(publish_request("vol-s", &target, &[])).await.unwrap();

        let stats = node.node_get_volume_stats(stats_request("vol-s", &target)).await.unwrap().into_inner();
        let bytes = stats.usage.iter().find(|u| u.unit == volume_usage::Unit::Bytes as i32).expect("BYTES usage");
        let inodes = stats.usage.iter().find(|u| u.unit == volume_usage::Unit::Inodes as i32).expect("INODES usage");
        assert!(bytes.used > 0 && bytes.total >= bytes.used, "{bytes:?}");
        assert!(inodes.used > 0 && inodes.total >= inodes.used, "{inodes:?}");
        let condition = stats.volume_condition.expect("volume_condition");
        assert!(!condition.abnormal, "healthy volume reported abnormal: {}", condition.message);

        let wrong_id = node.node_get_volume_stats(stats_request("vol-other", &target)).await;
        assert_eq!(code_of(&wrong_id), Code::NotFound, "{wrong_id:?}");
        let unpublished = daemon.target("pod-s2", "trust");
        let wrong_path = node.node_get_volume_stats(stats_request("vol-s", &unpublished)).await;
        assert_eq!(code_of(&wrong_path), Code::NotFound, "{wrong_path:?}");

        node.node_unpublish_volume(unpublish_request("vol-s", &target)).await.unwrap();
        let gone = node.node_get_volume_stats(stats_request("vol-s", &target)).await;
        assert_eq!(code_of(&gone), Code::NotFound, "{gone:?}");
    });
}

/// csi-sanity "should fail when volume is not found" and "should fail when volume does not exist
/// on the specified path": the volume is looked up before its path is judged.
#[test]
fn volume_stats_for_an_unknown_volume_or_path_are_not_found_even_when_the_path_is_relative() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let daemon = Daemon::start(DaemonOptions::default()).await;
        let mut node = daemon.node();
        let unknown = node.node_get_volume_stats(stats_request("some-vol-id", Path::new("some/path"))).await;
        assert_eq!(code_of(&unknown), Code::NotFound, "{unknown:?}");

        let target = daemon.target("pod-n", "trust");
        node.node_publish_volume(publish_request("vol-n", &target, &[])).await.unwrap();
        for path in ["/not/a/path", "some/path", "../etc"] {
            let elsewhere = node.node_get_volume_stats(stats_request("vol-n", Path::new(path))).await;
            assert_eq!(code_of(&elsewhere), Code::NotFound, "{path}: {elsewhere:?}");
        }
        node.node_unpublish_volume(unpublish_request("vol-n", &target)).await.unwrap();
    });
}

async fn assert_condition_names(ca: &TestCa, daemon: &Daemon, attributes: &[(&str, &str)]) {
    let mut node = daemon.node();
    let target = daemon.target("pod-c", "trust");
    node.node_publish_volume(publish_request("vol-c", &target, attributes)).await.unwrap();
    let stats = node.node_get_volume_stats(stats_request("vol-c", &target)).await.unwrap().into_inner();
    let condition = stats.volume_condition.expect("volume_condition");
    assert!(condition.abnormal, "a volume whose extra CA {} expires soon or expired must be abnormal", ca.common_name);
    assert!(
        condition.message.contains(&ca.common_name),
        "condition message should name the certificate {:?}: {:?}",
        ca.common_name,
        condition.message
    );
}

#[test]
fn volume_condition_is_abnormal_when_an_extra_ca_expires_within_seven_days() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let certs = tempfile::tempdir().unwrap();
        let healthy = TestCa::new(certs.path(), "healthy");
        let soon = TestCa::expiring_in_days(certs.path(), "soon", 3);
        let daemon =
            Daemon::start(DaemonOptions::default().extra_pem(&healthy.cert_path).extra_pem(&soon.cert_path)).await;
        assert_condition_names(&soon, &daemon, &[]).await;
    });
}

#[test]
fn volume_condition_is_abnormal_when_a_kept_extra_ca_has_expired() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let certs = tempfile::tempdir().unwrap();
        let expired = TestCa::expired(certs.path(), "expired");
        let daemon = Daemon::start(DaemonOptions::default().extra_pem(&expired.cert_path)).await;
        // Only a volume that keeps expired certificates holds it; by default it is dropped.
        assert_condition_names(&expired, &daemon, &[("expired", "keep")]).await;
    });
}

#[test]
fn volume_condition_is_abnormal_when_an_extra_ca_expired_even_though_volumes_leave_it_out() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let certs = tempfile::tempdir().unwrap();
        let expired = TestCa::expired(certs.path(), "expired");
        let daemon = Daemon::start(DaemonOptions::default().extra_pem(&expired.cert_path)).await;
        let mut node = daemon.node();
        let target = daemon.target("pod-d", "trust");
        node.node_publish_volume(publish_request("vol-d", &target, &[])).await.unwrap();
        let bundle = std::fs::read_to_string(target.join("ca-certificates.crt")).unwrap();
        assert!(!bundle.contains(&expired.common_name), "the expired CA was published");
        // Its clients just lost trust in it: the operator must hear about it.
        let stats = node.node_get_volume_stats(stats_request("vol-d", &target)).await.unwrap().into_inner();
        let condition = stats.volume_condition.expect("volume_condition");
        assert!(condition.abnormal, "an expired extra CA left the volume normal");
        assert!(condition.message.contains(&expired.common_name), "{}", condition.message);
    });
}

#[test]
fn daemon_exits_cleanly_on_sigterm() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let mut daemon = Daemon::start(DaemonOptions::default()).await;
        let status = daemon.stop();
        assert!(status.success(), "trustmount serve exited with {status} on SIGTERM\n{}", daemon.stderr());
    });
}

#[test]
fn a_stale_socket_left_by_a_killed_driver_is_replaced() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        // A socket file nobody listens on: what a SIGKILLed driver leaves behind.
        let root = tempfile::tempdir().unwrap();
        drop(std::os::unix::net::UnixListener::bind(root.path().join("csi.sock")).unwrap());
        assert!(std::os::unix::net::UnixStream::connect(root.path().join("csi.sock")).is_err());
        let daemon = Daemon::start(DaemonOptions::default().restart_in(root.path())).await;
        let info = daemon.identity().get_plugin_info(GetPluginInfoRequest {}).await.unwrap().into_inner();
        assert_eq!(info.name, "csi.trustmount.io");
    });
}

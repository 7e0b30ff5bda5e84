//! The socket for source kinds, proven with a kind the driver never had, written here through
//! the traits alone: Namespaces whose annotation `trustmount.test/ca` holds a CA, named by the
//! volume attribute `annotatedNamespaces`. Against the real API server, it is parsed into a
//! spec beside the shipped kinds, digested, held and synced, selected, and its watch's changes
//! reach the specs that name it, and no others.

use std::collections::HashMap;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use trustmount::bundle::{KindName, ObjectOrigin, Provenance, Scope, Strictness, parse_source_of};
use trustmount::domain::{self, KindAttributes, ListAttributes, POD_NAMESPACE, Reference, VolumeSpec};
use trustmount::sources::cluster::kind::{Context, Kind, Registration, Selected, Want};
use trustmount::sources::cluster::watch_loop::{self, Objects, Synced, Watched, Writer};
use trustmount::sources::cluster::{self, Change, Clients, Cluster, Defaults, Error, ObjectChange};

use crate::support::certs::TestCa;
use crate::support::control_plane::ControlPlane;
use crate::support::world::PROPAGATION_LIMIT;

const KIND: KindName = KindName { tag: "annotatednamespace", title: "AnnotatedNamespace" };
const ATTRIBUTE: &str = "annotatedNamespaces";
const ANNOTATION: &str = "trustmount.test/ca";

const REGISTRATION: Registration = Registration {
    attributes: &ListAttributes {
        kind: KIND,
        attributes: &[ATTRIBUTE],
        parse: |key, value| domain::parse_names(key, value, "a Namespace name", b""),
        namespaced: false,
        reads_as_pod: false,
    },
    watched: true,
    start: Annotated::start,
};

/// One watch of all Namespaces on the shared loop: each with its annotation's value.
#[derive(Debug)]
struct Annotated {
    state: watch::Receiver<Synced<Option<String>>>,
}

impl Annotated {
    fn start(context: &Context) -> Box<dyn Kind> {
        let (sender, state) = watch::channel(None);
        let writer = Writer { state: sender, changes: context.changes.clone(), last_error: Default::default() };
        let stream =
            watcher(Api::<Namespace>::all(context.driver.clone()), watcher::Config::default()).default_backoff();
        tokio::spawn(watch_loop::run(NamespaceWatch, stream, writer));
        Box::new(Self { state })
    }
}

struct NamespaceWatch;

impl Watched for NamespaceWatch {
    type Object = Namespace;
    type Item = Option<String>;

    const WHAT: &'static str = "Namespace";

    fn parse(&mut self, object: Namespace) -> Option<(String, Option<String>)> {
        let ca = object.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION).cloned());
        Some((object.metadata.name?, ca))
    }

    fn changes(&self, before: &Objects<Option<String>>, after: &Objects<Option<String>>) -> Vec<Change> {
        let changed = watch_loop::differing(before, after).into_iter();
        changed.map(|name| Change::Object(ObjectChange::cluster_scoped(KIND, name))).collect()
    }
}

impl Kind for Annotated {
    fn name(&self) -> KindName {
        KIND
    }

    fn synced<'a>(&'a self, _: &'a Want) -> BoxFuture<'a, ()> {
        let mut state = self.state.clone();
        Box::pin(async move {
            let _ = state.wait_for(Option::is_some).await;
        })
    }

    fn pending(&self, _: &Want) -> Vec<(String, Option<String>)> {
        if self.state.borrow().is_some() { Vec::new() } else { vec![("Namespaces".to_owned(), None)] }
    }

    fn select(&self, want: &Want, selected: &mut Selected) -> Result<(), Error> {
        let namespaces = self.state.borrow().clone().ok_or_else(|| Error::NotSynced {
            what: "Namespaces".to_owned(),
            waited: std::time::Duration::ZERO,
            last_error: None,
        })?;
        for (object, _) in want.objects() {
            let Some(Some(pem)) = namespaces.get(&object.name) else {
                if want.optional {
                    continue;
                }
                return Err(Error::Missing { kind: KIND.title, object: object.name });
            };
            let origin = ObjectOrigin { kind: KIND, scope: Scope::Cluster, name: object.name.clone(), key: None };
            let parsed =
                parse_source_of(&Provenance::Object(origin), pem.as_bytes(), Strictness::Strict).map_err(|source| {
                    Error::Content {
                        kind: KIND.title,
                        object: object.name,
                        key: ANNOTATION.to_owned(),
                        source: Box::new(source),
                    }
                })?;
            selected.certificates.extend(parsed.certificates);
        }
        Ok(())
    }

    fn affects(&self, change: &ObjectChange, want: &Want) -> bool {
        change.touches(want)
    }

    fn open_watches(&self) -> usize {
        1
    }
}

fn attributes(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

async fn annotate(namespaces: &Api<Namespace>, name: &str, pem: &str) {
    let patch = serde_json::json!({ "metadata": { "annotations": { ANNOTATION: pem } } });
    namespaces.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate the namespace");
}

#[tokio::test]
async fn a_kind_written_in_a_test_plugs_into_the_socket() {
    let plane = ControlPlane::shared();
    let admin = plane.admin_client().await;
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (TestCa::new(dir.path(), "first"), TestCa::new(dir.path(), "second"));
    let (named, other) = (plane.namespace("annotated").await, plane.namespace("annotated-other").await);
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    annotate(&namespaces, &named, &first.pem).await;

    // The spec: the throwaway kind's attribute beside a shipped kind's, both accepted; the spec
    // digests in the one form for any kind, and another volume naming another namespace differs.
    let kinds: Vec<&'static dyn KindAttributes> =
        cluster::attributes().into_iter().chain([REGISTRATION.attributes]).collect();
    let parse = |pairs: &[(&str, &str)]| VolumeSpec::from_attributes(&attributes(pairs), &kinds);
    let (spec, _) = parse(&[(POD_NAMESPACE, "shop"), (ATTRIBUTE, &named), ("configMaps", "corp-ca")]).unwrap();
    assert_eq!(spec.cluster.of(KIND.tag), [Reference::object(&named, None)]);
    let (elsewhere, _) = parse(&[(POD_NAMESPACE, "shop"), (ATTRIBUTE, &other)]).unwrap();
    assert_ne!(spec.digest(), elsewhere.digest());
    let unknown = cluster::parse_attributes(&attributes(&[(ATTRIBUTE, &named)])).unwrap_err();
    assert!(unknown.to_string().contains(ATTRIBUTE), "{unknown}");
    let (spec, _) = parse(&[(POD_NAMESPACE, "shop"), (ATTRIBUTE, &named)]).unwrap();

    // The cluster, with the throwaway kind registered after the shipped ones.
    let registrations: Vec<Registration> = cluster::KINDS.iter().copied().chain([REGISTRATION]).collect();
    let clients = Clients::single(admin.clone(), admin.clone());
    let (cluster, mut changes) =
        Cluster::with_kinds(clients, Defaults::default(), "csi.trustmount.test", Default::default(), &registrations);
    assert!(Cluster::open_watches(Some(&cluster)).contains(&(KIND.tag, 1)));
    let hold = cluster.hold(&spec).await.expect("held and synced");
    let ders = |selected: Selected| selected.certificates.into_iter().map(|c| c.der.to_vec()).collect::<Vec<_>>();
    assert_eq!(ders(cluster.certificates(&spec, None).unwrap()), std::slice::from_ref(&first.der));
    let selected = cluster.certificates(&spec, None).unwrap();
    assert_eq!(selected.certificates[0].source.to_string(), format!("{}:{named}", KIND.tag), "typed provenance");

    // A change of the named namespace reaches this spec, and not the one naming another.
    annotate(&namespaces, &named, &second.pem).await;
    let change = tokio::time::timeout(PROPAGATION_LIMIT, async {
        loop {
            let change = changes.recv().await.expect("the kind's watch runs");
            if matches!(&change, Change::Object(c) if c.kind.tag == KIND.tag && c.object.name == named) {
                return change;
            }
        }
    })
    .await
    .expect("the annotation's change arrives");
    assert!(cluster.affects(&change, &spec));
    assert!(!cluster.affects(&change, &elsewhere));
    assert_eq!(ders(cluster.certificates(&spec, None).unwrap()), std::slice::from_ref(&second.der));
    assert_eq!(change.object().map(|(kind, _)| kind.as_str()), Some(KIND.tag), "its tag labels the rotation");

    // A namespace without the annotation is missing unless the volume says optional.
    let (missing, _) = parse(&[(POD_NAMESPACE, "shop"), (ATTRIBUTE, &other)]).unwrap();
    let error = cluster.certificates(&missing, None).unwrap_err();
    assert!(matches!(error, Error::Missing { kind: "AnnotatedNamespace", .. }), "{error}");
    let (optional, _) = parse(&[(POD_NAMESPACE, "shop"), (ATTRIBUTE, &other), ("optional", "true")]).unwrap();
    assert!(cluster.certificates(&optional, None).unwrap().certificates.is_empty());
    drop(hold);
}

//! The YAML the docs ship is real: every object under `deploy/examples/` and `docs/recipes/` is
//! accepted by the real API server (server-side dry-run apply, strict field validation), with
//! the upstream CustomResourceDefinitions of the custom resources they use installed first
//! (tests/support/crds.rs).

//!
//! Every trustmount volume in them (a `csi` volume of driver `csi.trustmount.io`) has attributes
//! the driver's own parser accepts, is read-only in every container that mounts it, and every
//! path an environment variable points into it (`REQUESTS_CA_BUNDLE=/etc/ssl/certs/…`) is a
//! file the volume holds in its layout (as `trustmount render` writes it).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};
use serde_json::Value;

use crate::support;
use crate::support::control_plane::ControlPlane;
use crate::support::{crds, deploy};

/// The CSI driver name the volumes name (deploy's CSIDriver).
const DRIVER: &str = "csi.trustmount.io";
/// The directories whose YAML the docs ship.
const SHIPPED: &[&str] = &["deploy/examples", "docs/recipes"];

/// Server-side applies `object` with strict field validation, as a dry run or not, in
/// `namespace` when its kind is namespaced and it names none. The API server's answer (its error
/// on a typo or an unknown field).
async fn apply(
    client: &kube::Client,
    object: &DynamicObject,
    namespace: &str,
    dry_run: bool,
) -> Result<DynamicObject, kube::Error> {
    let types = object.types.clone().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(&types).expect("apiVersion and kind");
    let (resource, capabilities) = pinned_kind(client, &gvk).await?;
    let name = object.metadata.name.clone().expect("metadata.name");
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => {
            Api::namespaced_with(client.clone(), object.metadata.namespace.as_deref().unwrap_or(namespace), &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let mut params = PatchParams::apply("trustmount-docs-tests").force().validation_strict();
    params.dry_run = dry_run;
    api.patch(&name, &params, &Patch::Apply(object)).await
}

/// An object from YAML text.
fn object(yaml: &str) -> DynamicObject {
    serde_yaml::from_str(yaml).expect("a Kubernetes object")
}

#[tokio::test]
async fn a_pinned_upstream_crd_installs_and_its_schema_is_enforced() {
    let plane = ControlPlane::shared();
    let admin = plane.admin_client().await;
    let namespace = plane.namespace("docs-crds").await;

    let installed = crds::install(&admin, &["servicemonitors.monitoring.coreos.com"]).await;
    assert_eq!(installed.len(), 1);
    assert_eq!(installed[0].spec.names.kind, "ServiceMonitor");
    assert_eq!(
        crds::serving("monitoring.coreos.com", "ServiceMonitor").as_deref(),
        Some("servicemonitors.monitoring.coreos.com")
    );

    let good = object(
        "apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: trustmount}
spec:
  selector: {matchLabels: {app.kubernetes.io/name: trustmount}}
  endpoints: [{port: metrics, interval: 30s}]
",
    );
    let accepted = apply(&admin, &good, &namespace, true).await.expect("a valid ServiceMonitor is accepted");
    assert_eq!(accepted.metadata.namespace.as_deref(), Some(namespace.as_str()));

    let typo = object(
        "apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: trustmount}
spec:
  selector: {matchLabels: {app.kubernetes.io/name: trustmount}}
  endpoint: [{port: metrics}]
",
    );
    let rejected = apply(&admin, &typo, &namespace, true).await.expect_err("an unknown field is rejected");
    assert!(rejected.to_string().contains("endpoint"), "rejected for another reason: {rejected}");

    let wrong_type = object(
        "apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: trustmount}
spec:
  selector: {matchLabels: {app.kubernetes.io/name: trustmount}}
  endpoints: metrics
",
    );
    apply(&admin, &wrong_type, &namespace, true).await.expect_err("a field of the wrong type is rejected");
}

/// Every `.yaml` file under [`SHIPPED`], sorted.
fn shipped_yaml() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in SHIPPED {
        let dir = root.join(dir);
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|extension| extension == "yaml" || extension == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// `path` relative to the repository, for messages.
fn shown(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(path).display().to_string()
}

/// Namespace `name` with its `default` ServiceAccount (this control plane runs no controller
/// manager to make one, and the ServiceAccount admission plugin refuses pods without theirs).
async fn ensure_namespace(admin: &kube::Client, name: &str) {
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(name.to_string());
    ignore_conflict(Api::<Namespace>::all(admin.clone()).create(&PostParams::default(), &namespace).await, name);
    let mut account = ServiceAccount::default();
    account.metadata.name = Some("default".into());
    ignore_conflict(
        Api::<ServiceAccount>::namespaced(admin.clone(), name).create(&PostParams::default(), &account).await,
        name,
    );
}

fn ignore_conflict<T>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("create {what}: {e}"),
    }
}

/// A namespace name for one file's objects: `docs-<file stem>`, as DNS labels allow.
fn namespace_prefix(path: &Path) -> String {
    let stem = path.file_stem().unwrap().to_string_lossy().to_lowercase();
    let stem: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(30).collect();
    format!("docs-{}", stem.trim_matches('-'))
}

#[tokio::test]
async fn every_example_and_recipe_object_is_accepted_by_the_api_server() {
    let plane = ControlPlane::shared();
    let admin = plane.admin_client().await;

    let files: Vec<(PathBuf, Vec<DynamicObject>)> =
        shipped_yaml().into_iter().map(|path| (path.clone(), deploy::objects(&path))).collect();
    assert!(
        files.len() >= 13,
        "the examples and recipes are missing: {:?}",
        files.iter().map(|(path, _)| shown(path)).collect::<Vec<_>>()
    );
    for (path, objects) in &files {
        assert!(!objects.is_empty(), "{} holds no Kubernetes object", shown(path));
    }

    // The custom resources' definitions, from the pinned upstream releases.
    let mut definitions = BTreeSet::new();
    for (path, objects) in &files {
        for object in objects {
            let types = object.types.as_ref().expect("apiVersion and kind");
            let gvk = GroupVersionKind::try_from(types).expect("apiVersion and kind");
            if gvk.group.contains('.') && !gvk.group.ends_with(".k8s.io") {
                let name = crds::serving(&gvk.group, &gvk.kind).unwrap_or_else(|| {
                    panic!(
                        "{}: {} {} is no built-in kind and no CRD pinned in tests/k8s/crds serves it",
                        shown(path),
                        types.api_version,
                        types.kind
                    )
                });
                definitions.insert(name);
            }
        }
    }
    let definitions: Vec<&str> = definitions.iter().map(String::as_str).collect();
    crds::install(&admin, &definitions).await;

    // Namespaces the files name themselves (the driver's own, a product's).
    let named: BTreeSet<String> = files
        .iter()
        .flat_map(|(_, objects)| objects.iter().filter_map(|object| object.metadata.namespace.clone()))
        .collect();
    for name in &named {
        ensure_namespace(&admin, name).await;
    }

    let mut refused = Vec::new();
    let mut accepted = 0;
    for (path, objects) in &files {
        // Each file's namespaced objects without a namespace go to a namespace of the file's own.
        let namespace = plane.namespace(&namespace_prefix(path)).await;
        ensure_namespace(&admin, &namespace).await;
        // ServiceAccounts for real: the admission plugin looks up a pod's account, and a dry
        // run creates nothing.
        for object in objects.iter().filter(|object| object.types.as_ref().is_some_and(|t| t.kind == "ServiceAccount"))
        {
            if let Err(e) = apply(&admin, object, &namespace, false).await {
                refused.push(format!("{}: ServiceAccount {:?}: {e}", shown(path), object.metadata.name));
            }
        }
        for object in objects {
            let kind = &object.types.as_ref().expect("kind").kind;
            let name = object.metadata.name.as_deref().unwrap_or("?");
            match apply(&admin, object, &namespace, true).await {
                Ok(_) => accepted += 1,
                Err(e) => refused.push(format!("{}: {kind} {name}: {e}", shown(path))),
            }
        }
    }
    assert!(refused.is_empty(), "the API server refused:\n{}", refused.join("\n"));
    assert!(accepted >= files.len());
}

/// Every pod spec in `value` (a Pod's `spec`, a workload's `template.spec`, a pod spec inside
/// a custom resource): each JSON object with a `containers` list.
fn pod_specs<'a>(value: &'a Value, found: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            if map.get("containers").is_some_and(Value::is_array) {
                found.push(value);
            }
            map.values().for_each(|child| pod_specs(child, found));
        }
        Value::Array(items) => items.iter().for_each(|child| pod_specs(child, found)),
        _ => {}
    }
}

/// The files `trustmount render` writes for these attributes (its `--layout` and
/// `--java-truststore` take what the volume attributes take), as paths relative to the volume.
fn rendered(layout: &str, java: &str) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("volume");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_trustmount"))
        .args(["render", "--system-roots", "embedded", "--layout", layout, "--java-truststore", java, "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run trustmount render");
    assert!(status.success(), "trustmount render --layout {layout} --java-truststore {java} failed");
    let mut files = BTreeSet::new();
    let mut stack = vec![out.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // Symlinks count as what they resolve to (ca-bundle.crt -> ca-certificates.crt).
            if path.is_dir() {
                stack.push(path.clone());
            }
            files.insert(path.strip_prefix(&out).unwrap().display().to_string());
        }
    }
    files
}

/// Paths an environment variable's value names: the whole value, or a `-D…=PATH` of
/// `JAVA_TOOL_OPTIONS`.
fn named_paths(value: &str) -> Vec<&str> {
    value
        .split_whitespace()
        .map(|word| word.split_once('=').map_or(word, |(_, path)| path))
        .filter(|path| path.starts_with('/'))
        .collect()
}

/// Checks the trustmount volumes of every pod spec in a Kubernetes object: their attributes
/// parse, `csi.readOnly` is set, every container mounts them read-only, and each path an
/// environment variable names inside one is a file of its layout.
#[derive(Default)]
struct Checker {
    problems: Vec<String>,
    volumes: usize,
    paths_checked: usize,
    renders: HashMap<(String, String), BTreeSet<String>>,
}

impl Checker {
    fn check(&mut self, name: &str, value: &Value) {
        let mut specs = Vec::new();
        pod_specs(value, &mut specs);
        for spec in specs {
            let containers: Vec<&Value> = ["initContainers", "containers", "ephemeralContainers"]
                .iter()
                .filter_map(|key| spec.get(*key).and_then(Value::as_array))
                .flatten()
                .collect();
            for volume in spec.get("volumes").and_then(Value::as_array).into_iter().flatten() {
                let Some(csi) = volume.get("csi").filter(|csi| csi["driver"] == DRIVER) else { continue };
                self.volumes += 1;
                let volume_name = volume["name"].as_str().unwrap_or_default();
                self.check_volume(name, volume_name, csi, &containers);
            }
        }
    }

    fn check_volume(&mut self, name: &str, volume_name: &str, csi: &Value, containers: &[&Value]) {
        let attributes: HashMap<String, String> = csi
            .get("volumeAttributes")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(key, value)| (key.clone(), value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string())))
            .collect();
        if let Err(e) = trustmount::sources::cluster::parse_attributes(&attributes) {
            self.problems.push(format!("{name}: volume {volume_name}: the driver refuses its attributes: {e}"));
        }
        if csi.get("readOnly") != Some(&Value::Bool(true)) {
            self.problems.push(format!("{name}: volume {volume_name}: csi.readOnly is not true"));
        }
        let layout = attributes.get("layout").map_or("debian", String::as_str).to_string();
        let java = attributes.get("javaTruststore").map_or("jks", String::as_str).to_string();
        let mut mounted = false;
        for container in containers {
            let container_name = container["name"].as_str().unwrap_or_default();
            let mounts: Vec<&Value> = container
                .get("volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|mount| mount["name"] == volume_name)
                .collect();
            for mount in &mounts {
                mounted = true;
                if mount.get("readOnly") != Some(&Value::Bool(true)) {
                    self.problems.push(format!(
                        "{name}: container {container_name} mounts {volume_name} without readOnly: true"
                    ));
                }
            }
            let mount_paths: Vec<&str> = mounts.iter().filter_map(|mount| mount["mountPath"].as_str()).collect();
            for env in container.get("env").and_then(Value::as_array).into_iter().flatten() {
                let Some(value) = env.get("value").and_then(Value::as_str) else { continue };
                for named in named_paths(value) {
                    for mount_path in &mount_paths {
                        let Ok(relative) = Path::new(named).strip_prefix(mount_path) else { continue };
                        let files = self
                            .renders
                            .entry((layout.clone(), java.clone()))
                            .or_insert_with(|| rendered(&layout, &java));
                        self.paths_checked += 1;
                        if !files.contains(&relative.display().to_string()) {
                            self.problems.push(format!(
                                "{name}: container {container_name}: {}={named}, but a volume of layout {layout} mounted at {mount_path} has no {}",
                                env["name"].as_str().unwrap_or_default(),
                                relative.display()
                            ));
                        }
                    }
                }
            }
        }
        if !mounted {
            self.problems.push(format!("{name}: volume {volume_name} is mounted by no container"));
        }
    }
}

#[test]
fn every_trustmount_volume_parses_is_mounted_read_only_and_its_paths_exist() {
    let mut checker = Checker::default();
    for path in shipped_yaml() {
        for object in deploy::objects(&path) {
            let name = format!(
                "{} {} {}",
                shown(&path),
                object.types.as_ref().unwrap().kind,
                object.metadata.name.as_deref().unwrap_or("?")
            );
            checker.check(&name, &serde_json::to_value(&object).unwrap());
        }
    }
    assert!(checker.problems.is_empty(), "{}", checker.problems.join("\n"));
    assert!(checker.volumes >= 12, "only {} trustmount volumes found in the examples and recipes", checker.volumes);
    assert!(checker.paths_checked >= 3, "only {} environment paths into a volume checked", checker.paths_checked);
}

/// `docs/recipes/<name>` in this repository.
fn recipe(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/recipes").join(name)
}

/// Applies (for real) the admission policies and bindings of a recipe file, and the objects it
/// names a namespace for; returns how many policies it holds.
async fn install_policies(admin: &kube::Client, file: &Path) -> usize {
    let objects = deploy::objects(file);
    for namespace in objects.iter().filter_map(|object| object.metadata.namespace.clone()).collect::<BTreeSet<_>>() {
        ensure_namespace(admin, &namespace).await;
    }
    let mut policies = 0;
    for object in &objects {
        let kind = object.types.as_ref().expect("kind").kind.as_str();
        if matches!(kind, "MutatingAdmissionPolicy" | "MutatingAdmissionPolicyBinding" | "ConfigMap") {
            apply(admin, object, "default", false)
                .await
                .unwrap_or_else(|e| panic!("apply {kind} from {}: {e}", shown(file)));
            policies += usize::from(kind == "MutatingAdmissionPolicy");
        }
    }
    policies
}

/// The API server's answer to a dry-run create of `pod` in `namespace`, once the admission
/// policies (learnt from an informer) have changed it as `changed` says; panics if they never do.
async fn admitted(admin: &kube::Client, namespace: &str, pod: &Value, changed: impl Fn(&Value) -> bool) -> Value {
    let pods: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        namespace,
        &kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
    );
    let object: DynamicObject = serde_json::from_value(pod.clone()).unwrap();
    let params = PostParams { dry_run: true, ..Default::default() };
    let mut last = String::new();
    let mut answer = None;
    support::eventually(
        "the admission policy changes the pod",
        std::time::Duration::from_secs(60),
        async || match pods.create(&params, &object).await {
            Ok(created) => {
                let value = serde_json::to_value(&created).unwrap();
                let done = changed(&value);
                answer = Some(value);
                done
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        },
    )
    .await;
    answer.unwrap_or_else(|| panic!("the API server refused the pod: {last}"))
}

fn has_trust_volume(pod: &Value) -> bool {
    pod["spec"]["volumes"]
        .as_array()
        .is_some_and(|volumes| volumes.iter().any(|volume| volume["csi"]["driver"] == DRIVER))
}

#[tokio::test]
async fn the_openfaas_policy_gives_function_pods_the_volume_and_leaves_other_pods_alone() {
    let plane = ControlPlane::shared();
    let admin = plane.admin_client().await;
    assert_eq!(install_policies(&admin, &recipe("openfaas.yaml")).await, 1);

    // A function's pod as faas-netes makes it: the faas_function label, no volume of ours.
    let function = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "echo-5f7d8c9b6-abcde", "labels": {"faas_function": "echo", "app": "echo"}},
        "spec": {"containers": [{"name": "echo", "image": "ghcr.io/openfaas/alpine:latest",
            "env": [{"name": "fprocess", "value": "cat"}]}]}
    });
    let pod = admitted(&admin, "openfaas-fn", &function, has_trust_volume).await;
    let mut checker = Checker::default();
    checker.check("the admitted function pod", &pod["spec"]);
    assert!(checker.problems.is_empty(), "{}", checker.problems.join("\n"));
    assert_eq!(checker.volumes, 1);
    assert_eq!(
        checker.paths_checked, 3,
        "REQUESTS_CA_BUNDLE, AWS_CA_BUNDLE and NODE_EXTRA_CA_CERTS point into the volume"
    );
    let env: Vec<&str> =
        pod["spec"]["containers"][0]["env"].as_array().unwrap().iter().filter_map(|env| env["name"].as_str()).collect();
    assert!(env.contains(&"fprocess"), "the function's own variables stay: {env:?}");

    // The policy's informer has it now: a pod that is no function is not changed.
    let mut other = function.clone();
    other["metadata"]["labels"] = serde_json::json!({"app": "gateway"});
    let pod = admitted(&admin, "openfaas-fn", &other, |_| true).await;
    assert!(!has_trust_volume(&pod), "a pod without faas_function got the volume");
}

#[tokio::test]
async fn the_kserve_policy_supplies_the_volume_the_storage_initializer_mounts() {
    let plane = ControlPlane::shared();
    let admin = plane.admin_client().await;
    assert_eq!(install_policies(&admin, &recipe("kserve.yaml")).await, 1);
    let namespace = plane.namespace("docs-kserve-models").await;
    ensure_namespace(&admin, &namespace).await;
    let mut labelled = Namespace::default();
    labelled.metadata.labels = Some([("trustmount.io/kserve".to_string(), "enabled".to_string())].into());
    Api::<Namespace>::all(admin.clone())
        .patch(&namespace, &PatchParams::apply("trustmount-docs-tests"), &Patch::Apply(&labelled))
        .await
        .unwrap();

    // The predictor pod as KServe's webhook leaves it with the ClusterStorageContainer of
    // kserve.md: the storage-initializer mounts trustmount-ca, which only the policy supplies
    // (without it the API server refuses the pod: the mount names no volume).
    let predictor = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "sklearn-iris-predictor-abc", "labels": {"serving.kserve.io/inferenceservice": "sklearn-iris"}},
        "spec": {
            "initContainers": [{"name": "storage-initializer", "image": "kserve/storage-initializer:v0.16.0",
                "args": ["s3://models/sklearn/iris", "/mnt/models"],
                "env": [{"name": "AWS_CA_BUNDLE", "value": "/etc/ssl/certs/ca-certificates.crt"}],
                "volumeMounts": [{"name": "kserve-provision-location", "mountPath": "/mnt/models"},
                                 {"name": "trustmount-ca", "mountPath": "/etc/ssl/certs", "readOnly": true}]}],
            "containers": [{"name": "kserve-container", "image": "kserve/sklearnserver:v0.16.0",
                "volumeMounts": [{"name": "kserve-provision-location", "mountPath": "/mnt/models", "readOnly": true}]}],
            "volumes": [{"name": "kserve-provision-location", "emptyDir": {}}]
        }
    });
    let pod = admitted(&admin, &namespace, &predictor, has_trust_volume).await;
    let mut checker = Checker::default();
    checker.check("the admitted predictor pod", &pod["spec"]);
    assert!(checker.problems.is_empty(), "{}", checker.problems.join("\n"));
    assert_eq!((checker.volumes, checker.paths_checked), (1, 1));

    // In a namespace the binding does not select, the same pod is refused: the volume is missing.
    let unlabelled = plane.namespace("docs-kserve-other").await;
    ensure_namespace(&admin, &unlabelled).await;
    let pods: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        &unlabelled,
        &kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
    );
    let refused = pods
        .create(&PostParams { dry_run: true, ..Default::default() }, &serde_json::from_value(predictor).unwrap())
        .await
        .expect_err("a pod mounting a volume it lacks is refused");
    assert!(refused.to_string().contains("trustmount-ca"), "refused for another reason: {refused}");
}

/// The YAML blocks (```yaml … ```) of a Markdown file.
fn yaml_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        let fence = line.trim_start();
        match current.as_mut() {
            None if fence.starts_with("```yaml") => current = Some(Vec::new()),
            Some(block) if fence.starts_with("```") => {
                blocks.push(block.join("\n"));
                current = None;
            }
            Some(block) => block.push(line),
            None => {}
        }
    }
    blocks
}

/// Every trustmount volume anywhere in `value` (pod specs, chart values), with the mounts that
/// name it anywhere in it: `(volume name, its csi object, the mounts)`.
fn volumes_anywhere(value: &Value) -> Vec<(String, Value, Vec<Value>)> {
    fn walk<'a>(value: &'a Value, volumes: &mut Vec<&'a Value>, mounts: &mut Vec<&'a Value>) {
        match value {
            Value::Object(map) => {
                if map.get("csi").is_some_and(|csi| csi["driver"] == DRIVER) {
                    volumes.push(value);
                }
                if map.contains_key("mountPath") && map.contains_key("name") {
                    mounts.push(value);
                }
                map.values().for_each(|child| walk(child, volumes, mounts));
            }
            Value::Array(items) => items.iter().for_each(|child| walk(child, volumes, mounts)),
            _ => {}
        }
    }
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    walk(value, &mut volumes, &mut mounts);
    volumes
        .into_iter()
        .map(|volume| {
            let name = volume["name"].as_str().unwrap_or_default().to_string();
            let named =
                mounts.iter().filter(|mount| mount["name"] == name.as_str()).map(|mount| (*mount).clone()).collect();
            (name, volume["csi"].clone(), named)
        })
        .collect()
}

#[test]
fn every_trustmount_volume_in_the_readme_and_recipe_pages_parses_and_is_mounted_read_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    pages.extend(
        std::fs::read_dir(root.join("docs/recipes"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "md")),
    );
    // A set: a volume given twice (a YAML alias, two pod templates) is reported once.
    let mut problems = BTreeSet::new();
    let mut volumes = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for (index, block) in yaml_blocks(&text).iter().enumerate() {
            let place = format!("{} yaml block {}", shown(page), index + 1);
            let value: Value = match serde_yaml::from_str::<serde_yaml::Value>(block) {
                Ok(yaml) => serde_json::to_value(yaml).unwrap(),
                Err(e) => {
                    problems.insert(format!("{place}: not YAML: {e}"));
                    continue;
                }
            };
            for (name, csi, mounts) in volumes_anywhere(&value) {
                volumes += 1;
                let attributes: HashMap<String, String> = csi
                    .get("volumeAttributes")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(key, value)| {
                        (key.clone(), value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string()))
                    })
                    .collect();
                if let Err(e) = trustmount::sources::cluster::parse_attributes(&attributes) {
                    problems.insert(format!("{place}: volume {name}: the driver refuses its attributes: {e}"));
                }
                if csi.get("readOnly") != Some(&Value::Bool(true)) {
                    problems.insert(format!("{place}: volume {name}: csi.readOnly is not true"));
                }
                for mount in mounts.iter().filter(|mount| mount.get("readOnly") != Some(&Value::Bool(true))) {
                    problems
                        .insert(format!("{place}: mount of {name} at {} without readOnly: true", mount["mountPath"]));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.into_iter().collect::<Vec<_>>().join("\n"));
    // The README's snippet, KServe's InferenceService, ClearML's values (2), Velero's, the
    // vendor chart's.
    assert!(volumes >= 6, "only {volumes} trustmount volumes in the pages' YAML");
}

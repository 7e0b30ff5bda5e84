//! CustomResourceDefinitions of other projects (prometheus-operator's ServiceMonitor, Velero's
//! BackupStorageLocation, …), installed into the test API server from the upstream release's own
//! YAML, so a manifest that uses them is validated against the real schema.
//!
//! `tests/k8s/crds` pins each one: `name module version path-in-module`. The module comes
//! through the Go module proxy (the one source of upstream files these tests have) with
//! `go mod download -json MODULE@VERSION`, which prints the directory holding the module's files
//! and caches them in GOMODCACHE. Definitions are server-side applied (idempotent: tests sharing
//! a control plane may each install the same one) and waited for until Established and
//! discoverable.
//!
//! ```ignore
//! support::crds::install(&admin, &["servicemonitors.monitoring.coreos.com"]).await;
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde::Deserialize as _;

/// Bounds a hang while the API server establishes a definition (no timed assertion).
const ESTABLISH_LIMIT: Duration = Duration::from_secs(60);

/// One line of `tests/k8s/crds`.
#[derive(Clone, Debug)]
pub struct Pinned {
    /// The definition's `metadata.name` (`<plural>.<group>`).
    pub name: String,
    pub module: String,
    pub version: String,
    /// The YAML file's path inside the module.
    pub path: String,
}

/// `tests/k8s/crds` in this repository.
pub fn list_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/k8s/crds")
}

/// Every pinned definition, in the list file's order.
pub fn pinned() -> Vec<Pinned> {
    let list = list_file();
    let text = std::fs::read_to_string(&list).unwrap_or_else(|e| panic!("read {}: {e}", list.display()));
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| match line.split_whitespace().collect::<Vec<_>>()[..] {
            [name, module, version, path] => {
                Pinned { name: name.into(), module: module.into(), version: version.into(), path: path.into() }
            }
            _ => panic!("{}: not `name module version path-in-module`: {line}", list.display()),
        })
        .collect()
}

/// The pin of definition `name`, or a panic saying where to add it.
pub fn pin(name: &str) -> Pinned {
    pinned()
        .into_iter()
        .find(|pin| pin.name == name)
        .unwrap_or_else(|| panic!("{name} is not pinned in {}: add a line for it", list_file().display()))
}

/// The directory holding `module@version`'s files, downloaded through the Go module proxy on
/// first use (once per run of the test binary; the go command's cache serves later runs).
pub fn module_dir(module: &str, version: &str) -> PathBuf {
    static DIRS: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let key = format!("{module}@{version}");
    let mut dirs = DIRS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(dir) = dirs.get_or_insert_with(HashMap::new).get(&key) {
        return dir.clone();
    }
    let go = super::tools::which("go");
    // Outside any module, so no go.mod around it decides anything.
    let output = Command::new(&go)
        .args(["mod", "download", "-json", &key])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap_or_else(|e| super::tools::spawn_failed(go.as_os_str(), e));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("go mod download -json {key}: no JSON ({e}): {}", String::from_utf8_lossy(&output.stderr))
    });
    if let Some(error) = answer.get("Error").and_then(|error| error.as_str()) {
        panic!("go mod download {key}: {error}");
    }
    let dir = PathBuf::from(answer["Dir"].as_str().unwrap_or_else(|| panic!("go mod download {key}: no Dir")));
    assert!(output.status.success() && dir.is_dir(), "go mod download {key} failed: {answer}");
    dirs.get_or_insert_with(HashMap::new).insert(key, dir.clone());
    dir
}

/// Definition `name` as its pinned upstream file has it.
pub fn definition(name: &str) -> CustomResourceDefinition {
    let pin = pin(name);
    let file = module_dir(&pin.module, &pin.version).join(&pin.path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde_yaml::Value::deserialize(document).expect("YAML document"))
        .filter(|value| !value.is_null())
        .map(|value| {
            serde_yaml::from_value::<CustomResourceDefinition>(value)
                .unwrap_or_else(|e| panic!("{}: not a CustomResourceDefinition: {e}", file.display()))
        })
        .find(|definition| definition.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{} ({}@{}) holds no definition named {name}", pin.path, pin.module, pin.version))
}

/// The pinned definition that serves `kind` in API group `group`, if one does.
pub fn serving(group: &str, kind: &str) -> Option<String> {
    pinned().into_iter().map(|pin| definition(&pin.name)).find_map(|definition| {
        (definition.spec.group == group && definition.spec.names.kind == kind)
            .then(|| definition.metadata.name.clone().expect("a pinned definition has a name"))
    })
}

/// Installs the pinned definitions `names` and waits until each is Established and the API
/// server's discovery lists every version it serves. Returns them as the API server has them.
pub async fn install(client: &kube::Client, names: &[&str]) -> Vec<CustomResourceDefinition> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("trustmount-tests").force();
    let mut installed = Vec::new();
    for name in names {
        let mut definition = definition(name);
        definition.status = None;
        api.patch(name, &params, &Patch::Apply(&definition))
            .await
            .unwrap_or_else(|e| panic!("apply CustomResourceDefinition {name}: {e}"));
        installed.push(definition);
    }
    let mut established = Vec::new();
    for definition in installed {
        let name = definition.metadata.name.clone().expect("name");
        super::eventually(&format!("CustomResourceDefinition {name} Established"), ESTABLISH_LIMIT, async || {
            api.get(&name)
                .await
                .ok()
                .and_then(|current| current.status)
                .and_then(|status| status.conditions)
                .is_some_and(|conditions| {
                    conditions.iter().any(|condition| condition.type_ == "Established" && condition.status == "True")
                })
        })
        .await;
        for version in definition.spec.versions.iter().filter(|version| version.served) {
            let gvk = GroupVersionKind::gvk(&definition.spec.group, &version.name, &definition.spec.names.kind);
            super::eventually(&format!("{gvk:?} discoverable"), ESTABLISH_LIMIT, async || {
                kube::discovery::pinned_kind(client, &gvk).await.is_ok()
            })
            .await;
        }
        established.push(api.get(&name).await.unwrap_or_else(|e| panic!("get CustomResourceDefinition {name}: {e}")));
    }
    established
}

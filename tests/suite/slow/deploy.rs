//! What ships to install the driver, proven with the tools people install it with (helm and
//! kubectl, pinned and built from source by tests/k8s/build) against the real API server, and
//! with the driver's own argument parser:
//! - `helm lint` passes with the default values and with `ci/all-on-values.yaml` (every option
//!   on), and the values schema refuses a misspelt key;
//! - every object the chart renders (default and all-on) and every plain manifest is accepted by
//!   `kubectl apply --dry-run=server` with strict field validation (a typo fails, shown here);
//! - `helm install` creates every rendered object, `helm uninstall` removes them;
//! - every flag and environment variable the DaemonSets give the driver is one its parser
//!   accepts (a made-up flag fails, shown here), and the chart's values reach every place that
//!   names them (kubelet directory, driver name, state dir, extra PEM files, metrics port);
//! - the values reach the FlowSchema and PriorityLevelConfiguration (API Priority and Fairness)
//!   they set, and `flowControl.enabled=false` leaves both out;
//! - the chart with default values renders exactly the plain manifests, Helm's bookkeeping
//!   labels aside (and with `extraPem.configMap`, the plain manifests with the `org-ca`
//!   component), and grants exactly their RBAC (which tests/suite/slow/rbac.rs proves is enough).
//!
//! Cluster-scoped names of these tests: the dry runs create nothing; the Namespace `trustmount`
//! is created (for the plain manifests' dry run); `helm install` uses releases `tm-install`
//! (driver name `install.trustmount.test`) and `tm-all-on` (`trust.example.com`), which no
//! other test creates. prometheus-operator's ServiceMonitor CRD is installed (tests/k8s/crds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::{Scope, pinned_kind};
use serde_json::{Value, json};
use trustmount::args::{Cli, Command};

use crate::support;
use crate::support::control_plane::ControlPlane;
use crate::support::deploy::{self, chart, documents, run_tool};
use crate::support::output::{assert_success, text};

/// The labels the chart adds that the plain manifests do not carry: Helm's bookkeeping. Every
/// other label, annotation and field must be equal.
const HELM_ONLY_LABELS: [&str; 2] = ["helm.sh/chart", "app.kubernetes.io/managed-by"];

/// Environment variables the driver reads that are no clap argument.
const ENV_NOT_FROM_THE_PARSER: [&str; 1] = ["RUST_LOG"];

fn all_on_values() -> PathBuf {
    chart().join("ci/all-on-values.yaml")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `helm template RELEASE deploy/helm/trustmount --namespace NAMESPACE EXTRA…`, parsed.
fn helm_template(release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", release, path_str(&chart), "--namespace", namespace];
    args.extend_from_slice(extra);
    let out = run_tool("helm", None, &args);
    assert_success(&format!("helm {}", args.join(" ")), &out);
    documents(&text(&out.stdout))
}

/// The two renders every check runs on: default values, and every option on.
fn renders(namespace: &str) -> [(&'static str, Vec<Value>); 2] {
    let all_on = all_on_values();
    [
        ("default values", helm_template("trustmount", namespace, &[])),
        ("ci/all-on-values.yaml", helm_template("trustmount", namespace, &["--values", path_str(&all_on)])),
    ]
}

/// `kind/namespace/name`: an object's identity.
fn key(object: &Value) -> String {
    let metadata = &object["metadata"];
    format!(
        "{}/{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        metadata["namespace"].as_str().unwrap_or(""),
        metadata["name"].as_str().unwrap_or("?")
    )
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|object| object["kind"] == kind).collect()
}

fn one_of_kind<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    match of_kind(objects, kind).as_slice() {
        [one] => one,
        other => panic!("expected one {kind}, found {}", other.len()),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().map(|item| item.as_str().expect("a string").to_owned()).collect())
        .unwrap_or_default()
}

fn container<'a>(daemonset: &'a Value, name: &str) -> &'a Value {
    daemonset["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|containers| containers.iter().find(|container| container["name"] == name))
        .unwrap_or_else(|| panic!("{}: no container {name}", key(daemonset)))
}

fn volume<'a>(daemonset: &'a Value, name: &str) -> &'a Value {
    daemonset["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .and_then(|volumes| volumes.iter().find(|volume| volume["name"] == name))
        .unwrap_or_else(|| panic!("{}: no volume {name}", key(daemonset)))
}

fn mount_path<'a>(container: &'a Value, volume: &str) -> &'a str {
    container["volumeMounts"]
        .as_array()
        .and_then(|mounts| mounts.iter().find(|mount| mount["name"] == volume))
        .and_then(|mount| mount["mountPath"].as_str())
        .unwrap_or_else(|| panic!("container {}: no mount of {volume}", container["name"]))
}

/// `kubectl apply --dry-run=server` (strict field validation, kubectl's default, spelled out)
/// of a file or, with `-k`, a kustomization.
fn dry_run(plane: &ControlPlane, what: &[&str]) -> std::process::Output {
    let mut args = vec!["apply", "--dry-run=server", "--validate=strict"];
    args.extend_from_slice(what);
    run_tool("kubectl", Some(plane), &args)
}

fn write_documents(dir: &Path, name: &str, objects: &[&Value]) -> PathBuf {
    let path = dir.join(name);
    let text: String =
        objects.iter().map(|object| format!("---\n{}", serde_yaml::to_string(object).expect("YAML"))).collect();
    std::fs::write(&path, text).expect("write rendered objects");
    path
}

#[test]
fn helm_lint_passes_with_default_and_all_on_values_and_the_schema_refuses_a_misspelt_key() {
    let chart = chart();
    let all_on = all_on_values();
    for extra in [&[][..], &["--values", path_str(&all_on)][..]] {
        let mut args = vec!["lint", "--strict", path_str(&chart)];
        args.extend_from_slice(extra);
        assert_success(&format!("helm {}", args.join(" ")), &run_tool("helm", None, &args));
    }
    let misspelt =
        run_tool("helm", None, &["lint", "--strict", path_str(&chart), "--set", "metrics.serviceMonitor.enable=true"]);
    assert!(!misspelt.status.success(), "helm lint accepted a misspelt value key:\n{}", text(&misspelt.stdout));
    let said = format!("{}{}", text(&misspelt.stdout), text(&misspelt.stderr));
    assert!(said.contains("enable"), "helm lint's complaint does not name the key:\n{said}");
}

#[tokio::test]
async fn every_rendered_object_and_every_plain_manifest_passes_the_api_servers_strict_dry_run() {
    let plane = ControlPlane::shared();
    let namespace = plane.namespace("dry-run").await;
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    // The ServiceMonitor is validated against prometheus-operator's own CRD (tests/k8s/crds).
    support::crds::install(&plane.admin_client().await, &["servicemonitors.monitoring.coreos.com"]).await;
    for (values, objects) in renders(&namespace) {
        let served: Vec<&Value> = objects.iter().collect();
        let file = write_documents(dir.path(), "rendered.yaml", &served);
        let out = dry_run(plane, &["--filename", path_str(&file)]);
        assert_success(&format!("kubectl apply --dry-run=server of the chart with {values}"), &out);
        let accepted = text(&out.stdout).lines().filter(|line| line.contains("(server dry run)")).count();
        assert_eq!(
            accepted,
            served.len(),
            "not every object of the chart with {values} was checked:\n{}",
            text(&out.stdout)
        );
        checked += accepted;
    }
    assert!(checked >= 12, "only {checked} objects rendered");

    // The plain manifests create their own Namespace; the objects in it can only be checked
    // once it exists.
    deploy::apply(&plane.admin_client().await, &deploy::manifest("namespace.yaml")).await;
    let kustomization = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let out = dry_run(plane, &["--kustomize", path_str(&kustomization)]);
    assert_success("kubectl apply -k deploy/kubernetes --dry-run=server", &out);
    let accepted = text(&out.stdout).lines().filter(|line| line.contains("(server dry run)")).count();
    let files: usize = deploy::kustomization().iter().map(|file| deploy::objects(file).len()).sum();
    assert_eq!(accepted, files, "not every plain manifest was checked:\n{}", text(&out.stdout));
    let with_org_ca = kustomize_with_org_ca();
    let file = write_documents(dir.path(), "org-ca.yaml", &with_org_ca.iter().collect::<Vec<_>>());
    let out = dry_run(plane, &["--filename", path_str(&file)]);
    assert_success("kubectl apply --dry-run=server of deploy/kubernetes with the org-ca component", &out);

    // And the check can fail: one misspelt field in the shipped DaemonSet is refused.
    let shipped = std::fs::read_to_string(deploy::manifest("daemonset.yaml")).unwrap();
    let typo = shipped.replacen("terminationGracePeriodSeconds:", "terminationGracePeriodSecond:", 1);
    assert_ne!(typo, shipped);
    let file = dir.path().join("typo.yaml");
    std::fs::write(&file, typo).unwrap();
    let out = dry_run(plane, &["--filename", path_str(&file)]);
    assert!(!out.status.success(), "a misspelt field passed the dry run:\n{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("terminationGracePeriodSecond"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn helm_install_creates_every_rendered_object_and_helm_uninstall_removes_them() {
    let plane = ControlPlane::shared();
    let admin = plane.admin_client().await;
    support::crds::install(&admin, &["servicemonitors.monitoring.coreos.com"]).await;
    let all_on = all_on_values();
    // Release names (the ClusterRole's and binding's) and driver names (the CSIDriver's) that
    // no other test creates.
    let set_driver = "driverName=install.trustmount.test";
    for (release, values) in [("tm-install", ["--set", set_driver]), ("tm-all-on", ["--values", path_str(&all_on)])] {
        let namespace = plane.namespace(release).await;
        install_and_uninstall(plane, &admin, release, &namespace, &values).await;
    }
}

async fn install_and_uninstall(
    plane: &ControlPlane,
    admin: &kube::Client,
    release: &str,
    namespace: &str,
    values: &[&str],
) {
    let expected = helm_template(release, namespace, values);
    assert!(expected.len() >= 5, "{} objects rendered", expected.len());
    let chart = chart();
    let mut install = vec!["install", release, path_str(&chart), "--namespace", namespace];
    install.extend_from_slice(values);
    assert_success(&format!("helm {}", install.join(" ")), &run_tool("helm", Some(plane), &install));

    let mut apis = Vec::new();
    for object in &expected {
        let gvk = GroupVersionKind::try_from(&serde_json::from_value::<kube::core::TypeMeta>(object.clone()).unwrap())
            .expect("apiVersion and kind");
        let (resource, capabilities) =
            pinned_kind(admin, &gvk).await.unwrap_or_else(|e| panic!("discover {gvk:?}: {e}"));
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Namespaced => Api::namespaced_with(admin.clone(), namespace, &resource),
            Scope::Cluster => Api::all_with(admin.clone(), &resource),
        };
        let name = object["metadata"]["name"].as_str().expect("a name").to_owned();
        let created = api.get(&name).await.unwrap_or_else(|e| panic!("{} was not created: {e}", key(object)));
        let annotations = created.metadata.annotations.unwrap_or_default();
        assert_eq!(annotations.get("meta.helm.sh/release-name").map(String::as_str), Some(release), "{}", key(object));
        let labels = created.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get("app.kubernetes.io/instance").map(String::as_str), Some(release), "{}", key(object));
        apis.push((key(object), api, name));
    }
    let rendered: Vec<&str> = one_of_kind(&expected, "DaemonSet")["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|container| container["name"].as_str().unwrap())
        .collect();
    let created: Api<k8s_openapi::api::apps::v1::DaemonSet> = Api::namespaced(admin.clone(), namespace);
    let created = created.get(release).await.unwrap().spec.template.spec.unwrap().containers;
    let created: Vec<&str> = created.iter().map(|container| container.name.as_str()).collect();
    assert_eq!(created, rendered, "{release}: the installed DaemonSet's containers");

    assert_success("helm uninstall", &run_tool("helm", Some(plane), &["uninstall", release, "--namespace", namespace]));
    for (what, api, name) in &apis {
        support::eventually(&format!("{what} is removed"), std::time::Duration::from_secs(60), async || {
            matches!(api.get_opt(name).await, Ok(None))
        })
        .await;
    }
}

/// Runs the driver's own parser on what `container` starts it with: its args, and each env var
/// as the flag that reads it (fieldRef values as the kubelet would fill them in). Fails on an
/// env var no argument reads, unless it is one the driver reads otherwise.
fn parse_driver_command(container: &Value, namespace: &str) -> Result<Cli, String> {
    if container.get("command").is_some() {
        return Err("sets `command`: the image's entrypoint is the binary, and the args are its arguments".into());
    }
    let command = Cli::command();
    let serve = command.find_subcommand("serve").expect("a serve subcommand");
    let mut argv = vec!["trustmount".to_owned()];
    argv.extend(strings(&container["args"]));
    for env in container["env"].as_array().into_iter().flatten() {
        let name = env["name"].as_str().expect("env name");
        if ENV_NOT_FROM_THE_PARSER.contains(&name) {
            continue;
        }
        let arg = serve
            .get_arguments()
            .chain(command.get_arguments())
            .find(|arg| arg.get_env().is_some_and(|env| env == name))
            .ok_or_else(|| format!("env {name}: no argument of `trustmount serve` reads it"))?;
        let value = match (&env["value"], env["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
            (Value::String(value), None) => value.clone(),
            (Value::Null, Some("spec.nodeName")) => "node-1".to_owned(),
            (Value::Null, Some("metadata.namespace")) => namespace.to_owned(),
            _ => return Err(format!("env {name}: neither a value nor a fieldRef this test knows: {env}")),
        };
        argv.push(format!("--{}={value}", arg.get_long().expect("a long flag")));
    }
    Cli::try_parse_from(&argv).map_err(|error| format!("{argv:?}: {error}"))
}

fn serve_args(cli: Cli) -> trustmount::args::ServeArgs {
    match cli.command {
        Command::Serve(args) => args,
        _ => panic!("the DaemonSet does not run `trustmount serve`"),
    }
}

#[test]
fn every_flag_and_env_var_the_daemonsets_give_the_driver_is_one_its_parser_accepts() {
    let plain = deploy::objects(&deploy::manifest("daemonset.yaml"));
    let plain: Vec<Value> = plain.iter().map(|object| serde_json::to_value(object).unwrap()).collect();
    let mut daemonsets = vec![("deploy/kubernetes".to_owned(), plain)];
    daemonsets.extend(renders("trustmount").map(|(values, objects)| (format!("the chart with {values}"), objects)));
    for (what, objects) in &daemonsets {
        let driver = container(one_of_kind(objects, "DaemonSet"), "trustmount");
        if let Err(error) = parse_driver_command(driver, "trustmount") {
            panic!("{what}: the driver refuses its command line: {error}");
        }
        // The check can fail: the same command line with one made-up flag is refused.
        let mut made_up = driver.clone();
        made_up["args"].as_array_mut().unwrap().push(json!("--no-such-flag=1"));
        assert!(parse_driver_command(&made_up, "trustmount").is_err(), "{what}: a made-up flag was accepted");
        let mut made_up = driver.clone();
        made_up["env"].as_array_mut().unwrap().push(json!({"name": "TRUSTMOUNT_NO_SUCH_VARIABLE", "value": "1"}));
        assert!(parse_driver_command(&made_up, "trustmount").is_err(), "{what}: a made-up env var was accepted");
    }
}

/// The chart's values as `values` sets them reach every place that names them, in `objects`.
fn assert_values_flow(what: &str, values: &serde_yaml::Value, objects: &[Value], namespace: &str) {
    let value = |path: &str| path.split('.').fold(values, |node, part| &node[part]).clone();
    let string = |path: &str| value(path).as_str().unwrap_or_else(|| panic!("{what}: {path} is not set")).to_owned();
    let (kubelet_dir, driver_name, state_dir) = (string("kubeletDir"), string("driverName"), string("stateDir"));

    let daemonset = one_of_kind(objects, "DaemonSet");
    let driver = container(daemonset, "trustmount");
    let args = serve_args(parse_driver_command(driver, namespace).unwrap_or_else(|e| panic!("{what}: {e}")));
    assert_eq!(args.driver_name, driver_name, "{what}: --driver-name");
    assert_eq!(args.kubelet_dir, Path::new(&kubelet_dir), "{what}: --kubelet-dir");
    assert_eq!(args.state_dir, Path::new(&state_dir), "{what}: --state-dir");
    assert_eq!(args.node_id, "node-1", "{what}: --node-id from NODE_NAME");
    assert_eq!(args.namespace.as_deref(), Some(namespace), "{what}: --namespace from POD_NAMESPACE");

    // The driver name: the CSIDriver, the one CSIDriver the ClusterRole lets it read, the plugin
    // directory whose socket the kubelet is told about.
    assert_eq!(one_of_kind(objects, "CSIDriver")["metadata"]["name"], driver_name.as_str(), "{what}: CSIDriver");
    let rules = one_of_kind(objects, "ClusterRole")["rules"].as_array().unwrap().clone();
    let csidrivers =
        rules.iter().find(|rule| strings(&rule["resources"]) == ["csidrivers"]).expect("a csidrivers rule");
    assert_eq!(
        strings(&csidrivers["resourceNames"]),
        std::slice::from_ref(&driver_name),
        "{what}: the ClusterRole's CSIDriver"
    );
    let plugin_dir = format!("{kubelet_dir}/plugins/{driver_name}");
    assert_eq!(volume(daemonset, "plugin-dir")["hostPath"]["path"], plugin_dir.as_str(), "{what}: plugin dir");
    assert_eq!(mount_path(driver, "plugin-dir"), "/csi");
    assert_eq!(args.endpoint.path(), Path::new("/csi/csi.sock"), "{what}: --endpoint, in the plugin dir");
    let registry = format!("{kubelet_dir}/plugins_registry");
    let enabled = |path: &str| value(path).as_bool().unwrap_or_else(|| panic!("{what}: {path} is not a bool"));
    let names: Vec<String> = daemonset["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|container| container["name"].as_str().unwrap().to_owned())
        .collect();
    let mut expected = vec!["trustmount"];

    // Registration: the driver's own by default, at the path the kubelet's plugin watcher reads
    // (mounted where --kubelet-dir puts it), announcing the CSI socket's host path; or the
    // upstream sidecar, with the driver's turned off.
    if enabled("registrar.enabled") {
        expected.push("node-driver-registrar");
        assert_eq!(args.registration.resolve(&args.kubelet_dir, &args.driver_name), None, "{what}: two registrations");
        let registrar = container(daemonset, "node-driver-registrar");
        let registrar_args = strings(&registrar["args"]);
        assert!(
            registrar_args.contains(&format!("--kubelet-registration-path={plugin_dir}/csi.sock")),
            "{what}: the registrar's --kubelet-registration-path: {registrar_args:?}"
        );
        assert!(registrar_args.contains(&"--csi-address=/csi/csi.sock".to_owned()), "{what}: {registrar_args:?}");
        assert_eq!(mount_path(registrar, "plugin-dir"), "/csi", "{what}: the registrar's plugin dir");
        assert_eq!(mount_path(registrar, "registration-dir"), "/registration", "{what}: the registrar's registry");
    } else {
        let (socket, endpoint) =
            args.registration.resolve(&args.kubelet_dir, &args.driver_name).expect("the driver registers itself");
        assert_eq!(socket, Path::new(&registry).join(format!("{driver_name}-reg.sock")), "{what}: registration socket");
        assert_eq!(mount_path(driver, "registration-dir"), registry, "{what}: the driver's plugins_registry mount");
        assert_eq!(endpoint, Path::new(&plugin_dir).join("csi.sock"), "{what}: the endpoint told the kubelet");
    }

    // Liveness: /healthz on the `healthz` port the probes name, from the driver or the sidecar.
    let ports = driver["ports"].as_array().unwrap();
    let healthz = ports.iter().find(|p| p["name"] == "healthz").expect("a healthz port")["containerPort"].clone();
    for probe in ["startupProbe", "livenessProbe"] {
        assert_eq!(driver[probe]["httpGet"]["path"], "/healthz", "{what}: {probe}");
        assert_eq!(driver[probe]["httpGet"]["port"], "healthz", "{what}: {probe}");
    }
    if enabled("livenessProbe.enabled") {
        expected.push("liveness-probe");
        assert_eq!(args.health_addr, None, "{what}: the sidecar has the healthz port");
        let sidecar = container(daemonset, "liveness-probe");
        let sidecar_args = strings(&sidecar["args"]);
        assert!(sidecar_args.contains(&format!("--http-endpoint=:{healthz}")), "{what}: {sidecar_args:?}");
        assert!(sidecar_args.contains(&"--csi-address=/csi/csi.sock".to_owned()), "{what}: {sidecar_args:?}");
        assert_eq!(mount_path(sidecar, "plugin-dir"), "/csi", "{what}: the livenessprobe's plugin dir");
    } else {
        assert_eq!(
            args.health_addr.map(|addr| serde_json::json!(addr.port())),
            Some(healthz),
            "{what}: --health-addr is the healthz port"
        );
    }
    assert_eq!(names, expected, "{what}: the DaemonSet's containers");

    // The kubelet directory: the registration and pods hostPaths; pods mounted where the host
    // has them, because the kubelet hands the driver host paths.
    assert_eq!(
        volume(daemonset, "registration-dir")["hostPath"]["path"],
        format!("{kubelet_dir}/plugins_registry").as_str()
    );
    let pods = format!("{kubelet_dir}/pods");
    assert_eq!(volume(daemonset, "pods-dir")["hostPath"]["path"], pods.as_str(), "{what}: pods hostPath");
    assert_eq!(mount_path(driver, "pods-dir"), pods, "{what}: pods mount");
    assert_eq!(volume(daemonset, "state-dir")["hostPath"]["path"], state_dir.as_str(), "{what}: state hostPath");
    assert_eq!(mount_path(driver, "state-dir"), state_dir, "{what}: state mount");

    // The store size, the defaults, the log format.
    let size = string("storeSize");
    let mebibytes: u64 = size.strip_suffix("Mi").expect("storeSize in Mi").parse().unwrap();
    assert_eq!(args.store_size, mebibytes << 20, "{what}: --store-size");
    let reserve = value("storeRotationReserve").as_u64().expect("storeRotationReserve");
    assert_eq!(u64::from(args.limits.store_rotation_reserve), reserve, "{what}: --store-rotation-reserve");
    let files = value("limits.namespaceStoreFiles").as_u64().expect("limits.namespaceStoreFiles");
    assert_eq!(args.limits.max_namespace_store_files, files, "{what}: --max-namespace-store-files");
    let list = |path: &str| -> Vec<String> {
        value(path)
            .as_sequence()
            .map(|items| items.iter().map(|item| item.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    assert_eq!(args.defaults.cluster_trust_bundles, list("defaults.clusterTrustBundles"), "{what}");
    assert_eq!(args.defaults.signer_names, list("defaults.signerNames"), "{what}");
    assert_eq!(args.defaults.config_maps, list("defaults.configMaps"), "{what}");
    assert_eq!(args.defaults.label_selector.unwrap_or_default(), string("defaults.labelSelector"), "{what}");

    // The extra PEM files: each is a key of the ConfigMap mounted where the flags point.
    let config_map = string("extraPem.configMap");
    if config_map.is_empty() {
        assert!(args.extra_pem.is_empty(), "{what}: --extra-pem without a ConfigMap");
    } else {
        assert_eq!(volume(daemonset, "extra-pem")["configMap"]["name"], config_map.as_str(), "{what}");
        let dir = mount_path(driver, "extra-pem");
        let expected: Vec<PathBuf> = list("extraPem.keys").iter().map(|key| Path::new(dir).join(key)).collect();
        assert_eq!(args.extra_pem, expected, "{what}: --extra-pem");
    }

    // Metrics: the port the driver listens on is the container's `metrics` port, which the
    // Service (with the ServiceMonitor) targets, selecting the DaemonSet's pods.
    // Not exposed, it listens on 127.0.0.1 only, with no container port, Service or policy.
    let port = value("metrics.port").as_u64().expect("metrics.port");
    let expose = enabled("metrics.expose");
    let addr = args.metrics_addr.unwrap_or_else(|| panic!("{what}: --metrics-addr"));
    assert_eq!(u64::from(addr.port()), port, "{what}: --metrics-addr");
    assert_eq!(addr.ip().is_loopback(), !expose, "{what}: --metrics-addr {addr}");
    let ports = driver["ports"].as_array().unwrap();
    let has_port = ports.iter().any(|p| p["name"] == "metrics" && p["containerPort"] == port);
    assert_eq!(has_port, expose, "{what}: {ports:?}");
    let policies = of_kind(objects, "NetworkPolicy");
    assert_eq!(policies.len(), usize::from(expose && enabled("metrics.networkPolicy.enabled")), "{what}");
    for policy in policies {
        let scrapers = serde_json::to_value(value("metrics.networkPolicy.from")).unwrap();
        assert_eq!(policy["spec"]["ingress"][0]["from"], scrapers, "{what}: the scrapers");
        assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"].as_u64(), Some(port), "{what}");
    }
    for service in of_kind(objects, "Service") {
        let selector = service["spec"]["selector"].as_object().unwrap();
        let pod_labels = daemonset["spec"]["template"]["metadata"]["labels"].as_object().unwrap();
        assert!(
            selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "{what}: the Service selects no driver pod"
        );
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics", "{what}: the Service's target port");
    }

    // API Priority and Fairness: the FlowSchema sends the DaemonSet's ServiceAccount, in the
    // release namespace, to the PriorityLevelConfiguration, with the values' numbers.
    let (schemas, levels) = (of_kind(objects, "FlowSchema"), of_kind(objects, "PriorityLevelConfiguration"));
    if !enabled("flowControl.enabled") {
        assert!(schemas.is_empty() && levels.is_empty(), "{what}: flow control is off");
        return;
    }
    let (schema, level) = (one_of_kind(objects, "FlowSchema"), one_of_kind(objects, "PriorityLevelConfiguration"));
    let number = |path: &str| json!(value(path).as_u64().unwrap_or_else(|| panic!("{what}: {path} is not a number")));
    assert_eq!(schema["spec"]["priorityLevelConfiguration"]["name"], level["metadata"]["name"], "{what}");
    assert_eq!(schema["spec"]["matchingPrecedence"], number("flowControl.matchingPrecedence"), "{what}");
    assert_eq!(schema["spec"]["distinguisherMethod"]["type"], "ByNamespace", "{what}");
    let account = &daemonset["spec"]["template"]["spec"]["serviceAccountName"];
    let rules = schema["spec"]["rules"].as_array().expect("rules");
    for rule in rules {
        assert_eq!(
            rule["subjects"],
            json!([{"kind": "ServiceAccount", "serviceAccount": {"name": account, "namespace": namespace}}]),
            "{what}: the FlowSchema's subject is the driver's ServiceAccount"
        );
    }
    let limited = &level["spec"]["limited"];
    assert_eq!(level["spec"]["type"], "Limited", "{what}");
    for field in ["nominalConcurrencyShares", "lendablePercent", "borrowingLimitPercent"] {
        assert_eq!(limited[field], number(&format!("flowControl.{field}")), "{what}: {field}");
    }
    assert_eq!(limited["limitResponse"]["type"], "Queue", "{what}");
    for field in ["queues", "handSize", "queueLengthLimit"] {
        let queuing = &limited["limitResponse"]["queuing"];
        assert_eq!(queuing[field], number(&format!("flowControl.{field}")), "{what}: {field}");
    }
}

#[test]
fn the_charts_values_reach_every_place_that_names_them() {
    let read =
        |path: PathBuf| -> serde_yaml::Value { serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap() };
    let [(_, default), (_, all_on)] = renders("trustmount");
    assert_values_flow("default values", &read(chart().join("values.yaml")), &default, "trustmount");
    let all_on_values = read(all_on_values());
    assert_values_flow("ci/all-on-values.yaml", &all_on_values, &all_on, "trustmount");
    assert_eq!(of_kind(&all_on, "ServiceMonitor").len(), 1, "all-on renders a ServiceMonitor");
    assert!(of_kind(&default, "Service").is_empty() && of_kind(&default, "ServiceMonitor").is_empty());
    // flowControl.enabled=false renders the same objects but the FlowSchema and its level.
    let mut values = read(chart().join("values.yaml"));
    values["flowControl"]["enabled"] = false.into();
    let off = helm_template("trustmount", "trustmount", &["--set", "flowControl.enabled=false"]);
    assert_values_flow("flowControl.enabled=false", &values, &off, "trustmount");
    let flow_control = ["FlowSchema", "PriorityLevelConfiguration"];
    let expected: Vec<String> =
        default.iter().filter(|object| !flow_control.iter().any(|kind| object["kind"] == *kind)).map(key).collect();
    assert_eq!(off.iter().map(key).collect::<Vec<_>>(), expected);
    assert_eq!(expected.len() + 2, default.len(), "the defaults render a FlowSchema and its level");
}

/// `object` without Helm's bookkeeping labels.
fn without_helm_labels(mut object: Value) -> Value {
    if let Some(labels) = object["metadata"]["labels"].as_object_mut() {
        for label in HELM_ONLY_LABELS {
            labels.remove(label);
        }
    }
    object
}

/// `kubectl kustomize DIR`, parsed.
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = run_tool("kubectl", None, &["kustomize", path_str(dir)]);
    assert_success(&format!("kubectl kustomize {}", dir.display()), &out);
    documents(&text(&out.stdout))
}

/// A kustomization of the user's own (in a temp dir) of the plain manifests with the
/// `deploy/kubernetes/org-ca` component, as its comment says to write one: kustomize refuses it
/// nested in the base, and takes only relative paths.
fn kustomize_with_org_ca() -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let up = "../".repeat(dir.path().components().count() - 1);
    let base = format!(
        "{up}{}",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes").display().to_string().trim_start_matches('/')
    );
    let kustomization = format!("resources: [{base}]\ncomponents: [{base}/org-ca]\n");
    std::fs::write(dir.path().join("kustomization.yaml"), kustomization).unwrap();
    kustomize(dir.path())
}

/// The plain manifests' objects equal the chart's, but for the Namespace (the one object
/// `helm install --create-namespace` makes instead) and Helm's bookkeeping labels.
fn assert_same_objects(what: &str, plain: Vec<Value>, chart: Vec<Value>) {
    let plain: BTreeMap<String, Value> =
        plain.into_iter().filter(|object| object["kind"] != "Namespace").map(|o| (key(&o), o)).collect();
    let chart: BTreeMap<String, Value> = chart.into_iter().map(|o| (key(&o), without_helm_labels(o))).collect();
    assert_eq!(plain.keys().collect::<Vec<_>>(), chart.keys().collect::<Vec<_>>(), "{what}: the same objects");
    for (name, object) in &plain {
        assert_eq!(
            object,
            &chart[name],
            "{what}: {name} differs:\n--- kustomize\n{}\n--- chart\n{}",
            serde_yaml::to_string(object).unwrap(),
            serde_yaml::to_string(&chart[name]).unwrap()
        );
    }
}

#[test]
fn the_chart_with_default_values_renders_exactly_the_plain_manifests() {
    let plain = kustomize(&Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes"));
    assert_same_objects("default values", plain, helm_template("trustmount", "trustmount", &[]));
}

#[test]
fn the_org_ca_component_is_the_charts_extra_pem_option() {
    let chart = helm_template("trustmount", "trustmount", &["--set", "extraPem.configMap=trustmount-org-ca"]);
    let plain = kustomize_with_org_ca();
    // And the driver accepts what the component adds.
    let driver = container(one_of_kind(&plain, "DaemonSet"), "trustmount");
    let args = serve_args(parse_driver_command(driver, "trustmount").unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(args.extra_pem, [Path::new("/etc/trustmount/extra-pem/ca.pem")]);
    assert_same_objects("extraPem.configMap=trustmount-org-ca", plain, chart);
}

#[test]
fn the_chart_grants_exactly_the_rbac_of_the_plain_manifests() {
    let plain = deploy::objects(&deploy::manifest("rbac.yaml"));
    let plain: Vec<Value> = plain.iter().map(|object| serde_json::to_value(object).unwrap()).collect();
    let plain_rules = one_of_kind(&plain, "ClusterRole")["rules"].clone();
    for (values, objects) in renders("rbac-check") {
        let rbac: Vec<&Value> = objects
            .iter()
            .filter(|object| object["apiVersion"].as_str().is_some_and(|v| v.starts_with("rbac.authorization.k8s.io/")))
            .collect();
        let kinds: Vec<&str> = rbac.iter().map(|object| object["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["ClusterRole", "ClusterRoleBinding"], "{values}: the chart's RBAC objects");
        // The rules, with the one CSIDriver name the plain manifests name replaced by the
        // chart's driver name.
        let driver = one_of_kind(&objects, "CSIDriver")["metadata"]["name"].as_str().unwrap();
        let mut expected: Value =
            serde_json::from_str(&plain_rules.to_string().replace("\"csi.trustmount.io\"", &format!("{driver:?}")))
                .unwrap();
        // rbac.configMapNames narrows the ConfigMap rule to those names (tests/suite/slow/rbac.rs).
        let all_on: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(all_on_values()).unwrap()).unwrap();
        if values != "default values" {
            let names = serde_json::to_value(&all_on["rbac"]["configMapNames"]).unwrap();
            expected[0].as_object_mut().unwrap().insert("resourceNames".into(), names);
            let rule = expected[0].as_object().unwrap().clone();
            let ordered: serde_json::Map<String, Value> = ["apiGroups", "resourceNames", "resources", "verbs"]
                .iter()
                .map(|key| ((*key).to_owned(), rule[*key].clone()))
                .collect();
            expected[0] = Value::Object(ordered);
        }
        let role = one_of_kind(&objects, "ClusterRole");
        assert_eq!(role["rules"], expected, "{values}: the ClusterRole's rules");
        let binding = one_of_kind(&objects, "ClusterRoleBinding");
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]})
        );
        let account = one_of_kind(&objects, "DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"].clone();
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": account, "namespace": "rbac-check"}]),
            "{values}"
        );
    }
}

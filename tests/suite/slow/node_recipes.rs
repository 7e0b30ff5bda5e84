//! The recipes of `docs/recipes/` whose product runs as a plain pod, on a real node: each pod
//! spec is the shipped YAML's (its trustmount volume, mounts, env and securityContext), with
//! the test image in place of the product's and the product's client as the command (git for
//! git-sync, a static Go program for goofys, boto3 and requests for the ClearML task pod). The
//! client must trust a TLS server on the node whose CA is only in the recipe's source object,
//! and the same pod without the volume must fail verification. And an image whose
//! /etc/ssl/certs is RHEL's symlink: where a mount there lands.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use super::node::{
    Served, driver_and_test_images, exit_code, install_chart, object, pod_with_volume, termination_message,
};
use crate::in_node_namespaces;
use crate::support::block_on;
use crate::support::certs::TestCa;
use crate::support::images;
use crate::support::node::Node;

const DRIVER: &str = "csi.trustmount.io";

/// A recipe's pod: its name here, the recipe's file, object and container, the client's
/// command, and the recipe's variables whose values are replaced.
struct Case {
    name: &'static str,
    file: &'static str,
    object: &'static str,
    container: &'static str,
    command: String,
    env: Vec<(&'static str, String)>,
}

/// The documents of `docs/recipes/<file>` (or another path of the repository), as JSON.
fn documents(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    crate::support::deploy::documents(&text)
}

/// A pod of the recipe `file`'s object `object` (a Deployment's template or a Pod) with only its
/// container `container`: the test image, `command` under bash, never restarted, and without
/// the trustmount volume (and its mounts) unless `with_volume`. `env` replaces values of
/// variables the recipe sets (a server's URL for the recipe's). Returns the pod and its
/// container's mounts of the trustmount volume as the recipe has them, to check against.
fn recipe_pod(
    file: &str,
    object: &str,
    container: &str,
    name: &str,
    command: &str,
    env: &[(&str, &str)],
    with_volume: bool,
) -> Pod {
    let document = documents(file)
        .into_iter()
        .find(|document| document["metadata"]["name"] == object)
        .unwrap_or_else(|| panic!("{file} has no object {object}"));
    let mut spec = match document["kind"].as_str() {
        Some("Pod") => document["spec"].clone(),
        _ => document["spec"]["template"]["spec"].clone(),
    };
    let containers = spec["containers"].as_array().unwrap();
    let mut main = containers
        .iter()
        .find(|c| c["name"] == container)
        .unwrap_or_else(|| panic!("{file}: no container {container}"))
        .clone();
    let trust: Vec<String> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|volume| volume["csi"]["driver"] == DRIVER)
        .map(|volume| volume["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(trust.len(), 1, "{file}: one trustmount volume");
    let mounts_trust = main["volumeMounts"].as_array().unwrap().iter().any(|mount| mount["name"] == trust[0].as_str());
    assert!(mounts_trust, "{file}: container {container} mounts the trustmount volume");
    main["image"] = images::DEBIAN_TEST.into();
    main["imagePullPolicy"] = "Never".into();
    main["command"] = json!(["/bin/bash", "-c", command]);
    main.as_object_mut().unwrap().remove("args");
    main["terminationMessagePolicy"] = "FallbackToLogsOnError".into();
    for (variable, value) in env {
        let entry = main["env"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|entry| entry["name"] == *variable)
            .unwrap_or_else(|| panic!("{file}: {container} sets no {variable}"));
        entry["value"] = (*value).into();
    }
    if !with_volume {
        main["volumeMounts"].as_array_mut().unwrap().retain(|mount| mount["name"] != trust[0].as_str());
        spec["volumes"].as_array_mut().unwrap().retain(|volume| volume["name"] != trust[0].as_str());
    }
    spec["containers"] = json!([main]);
    spec["restartPolicy"] = "Never".into();
    object_pod(name, spec)
}

fn object_pod(name: &str, spec: Value) -> Pod {
    object(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}))
}

/// The pod's only container's name.
fn container_of(pod: &Pod) -> String {
    pod.spec.as_ref().unwrap().containers[0].name.clone()
}

#[test]
fn recipes_run_on_the_node_and_their_clients_trust_the_recipes_sources_and_a_symlinked_etc_ssl_certs() {
    let mut images = driver_and_test_images();
    images.push(images::debian_test_pki());
    if !in_node_namespaces!() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The Go client in a hostPath the goofys pod mounts (the node shares this mount namespace).
    let go_dir = dir.path().join("go");
    std::fs::create_dir(&go_dir).unwrap();
    let go_client = crate::support::programs::build_fetch_go(&go_dir);
    let node = Node::start(&images);
    // The chart's extraPem: a CA no server here uses, so that only the recipes' sources can
    // make a server trusted.
    let org = TestCa::new(dir.path(), "Org CA");
    let corp = Served::new(dir.path(), "Corp");
    block_on(async {
        let admin = node.plane.admin_client().await;
        let driver = install_chart(&node, &org, &[]).await;
        let driver_log = || node.container_log(&driver, "trustmount");
        let namespace = node.namespace("recipes").await;

        // The source objects the recipes name, with the Corp CA.
        let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(admin.clone(), &namespace);
        let corp_ca = json!({"metadata": {"name": "corp-ca"}, "data": {"ca.crt": corp.ca.pem}});
        config_maps.create(&PostParams::default(), &object(corp_ca)).await.unwrap();
        let bundles: Api<k8s_openapi::api::certificates::v1::ClusterTrustBundle> = Api::all(admin.clone());
        let bundle = json!({"metadata": {"name": "corp-root-ca"}, "spec": {"trustBundle": corp.ca.pem}});
        bundles.create(&PostParams::default(), &object(bundle)).await.unwrap();
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(admin.clone(), &namespace);
        let credentials = json!({"metadata": {"name": "bucket-credentials"},
            "stringData": {"access-key": "test", "secret-key": "test"}});
        secrets.create(&PostParams::default(), &object(credentials)).await.unwrap();

        let url = corp.url();
        let repo = format!("{url}web/docs-site.git");
        // git over HTTPS (libcurl): `git ls-remote` of a server that is no Git server fails
        // either way; what it fails on tells whether TLS verification passed.
        let git = "git ls-remote \"$GITSYNC_REPO\" 2>&1; echo \"git exited $?\"";
        let goofys = format!("/opt/recipes/fetch {url}");
        // botocore over TLS with AWS_CA_BUNDLE: any answer of the server (an error of S3's
        // protocol: the server is no S3) means the TLS handshake verified.
        let boto3 = format!(
            "python3 - <<'EOF'\n\
             import boto3, botocore.exceptions, botocore.parsers\n\
             s3 = boto3.client('s3', endpoint_url='{url}', region_name='us-east-1',\n\
             \x20   aws_access_key_id='test', aws_secret_access_key='test')\n\
             try:\n\
             \x20   s3.list_buckets()\n\
             except (botocore.exceptions.ClientError, botocore.parsers.ResponseParserError) as error:\n\
             \x20   print('answered:', type(error).__name__)\n\
             else:\n\
             \x20   print('answered')\n\
             EOF"
        );
        let requests = format!("python3 -c 'import requests; print(\"status:\", requests.get(\"{url}\").status_code)'");
        let task = ("docs/recipes/clearml-agent.yaml", "clearml-id-4f1c2a9e0b7d4e53", "clearml-id-4f1c2a9e0b7d4e53");
        let case = |name, (file, object, container), command: String, env: Vec<(&'static str, String)>| Case {
            name,
            file,
            object,
            container,
            command,
            env,
        };
        let cases = [
            case(
                "git-sync",
                ("docs/recipes/git-sync.yaml", "docs-site", "git-sync"),
                git.into(),
                vec![("GITSYNC_REPO", repo)],
            ),
            case("goofys", ("docs/recipes/goofys.yaml", "bucket-reader", "goofys"), goofys, vec![]),
            case("boto3", task, boto3, vec![]),
            case("requests", task, requests, vec![]),
        ];
        let pods: Api<Pod> = Api::namespaced(admin.clone(), &namespace);
        for Case { name, file, object: recipe_object, container, command, env } in &cases {
            let env: Vec<(&str, &str)> = env.iter().map(|(variable, value)| (*variable, value.as_str())).collect();
            for with_volume in [true, false] {
                let pod_name = if with_volume { name.to_string() } else { format!("{name}-without-volume") };
                let mut pod = recipe_pod(file, recipe_object, container, &pod_name, command, &env, with_volume);
                if *name == "goofys" {
                    let mut value = serde_json::to_value(&pod).unwrap();
                    value["spec"]["volumes"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"name": "go-client", "hostPath": {"path": go_dir, "type": "Directory"}}));
                    value["spec"]["containers"][0]["volumeMounts"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"name": "go-client", "mountPath": "/opt/recipes", "readOnly": true}));
                    pod = serde_json::from_value(value).unwrap();
                }
                pods.create(&PostParams::default(), &pod).await.unwrap();
            }
        }
        assert!(go_client.is_file());

        // RHEL's layout: /etc/ssl/certs is the symlink ../pki/tls/certs. runc resolves a mount
        // target's symlinks inside the container's root, so the volume mounted at
        // /etc/ssl/certs lands on /etc/pki/tls/certs, and /etc/ssl/certs stays the symlink:
        // both paths read the bundle.
        let pki_command = format!(
            "echo \"link: $(readlink /etc/ssl/certs)\"; \
             awk '{{print \"mount:\", $5}}' /proc/self/mountinfo | grep -E ' /etc/(ssl|pki)'; \
             test -s /etc/pki/tls/certs/ca-certificates.crt && echo 'bundle at /etc/pki/tls/certs'; \
             curl --silent --show-error --fail --max-time 10 --cacert /etc/pki/tls/certs/ca-certificates.crt \
             {url} >/dev/null && echo 'fetched through /etc/pki/tls/certs'; \
             curl --silent --show-error --fail --max-time 10 {url} >/dev/null && echo 'fetched through /etc/ssl/certs'"
        );
        let mut pki =
            serde_json::to_value(pod_with_volume("pki", &pki_command, json!({"configMaps": "corp-ca"}))).unwrap();
        pki["spec"]["containers"][0]["image"] = images::DEBIAN_TEST_PKI.into();
        pods.create(&PostParams::default(), &serde_json::from_value(pki).unwrap()).await.unwrap();

        let mut failures = Vec::new();
        let mut outputs = Vec::new();
        for Case { name, .. } in &cases {
            for pod_name in [name.to_string(), format!("{name}-without-volume")] {
                let done = node.finished_pod(&namespace, &pod_name, Duration::from_secs(180)).await;
                let output = node.container_output(&done, &container_of(&done));
                outputs.push(format!("{pod_name} ({:?}):\n{output}{}", exit_code(&done), termination_message(&done)));
                let with = !pod_name.ends_with("-without-volume");
                let verified = match *name {
                    // Past TLS: git read the server's answer (not a Git server's).
                    "git-sync" => output.contains("not valid: is this a git repository?"),
                    "goofys" => output.contains("HTTP 200"),
                    "boto3" => output.contains("answered"),
                    "requests" => output.contains("status: 200"),
                    _ => unreachable!(),
                };
                let refused = match *name {
                    // GnuTLS's words: Debian's git uses libcurl-gnutls.
                    "git-sync" => output.contains("server certificate verification failed"),
                    "goofys" => output.contains("x509: certificate signed by unknown authority"),
                    // botocore's SSLError: the bundle AWS_CA_BUNDLE names is not there, or does not
                    // verify the server; requests refuses a missing bundle before connecting.
                    "boto3" => output.contains("SSL validation failed"),
                    "requests" => {
                        output.contains("CERTIFICATE_VERIFY_FAILED") || output.contains("TLS CA certificate bundle")
                    }
                    _ => unreachable!(),
                };
                if with && (!verified || refused) {
                    failures.push(format!("{pod_name}: the client did not trust the server through the volume"));
                }
                if !with && (verified || !refused) {
                    failures.push(format!("{pod_name}: without the volume the client did not fail verification"));
                }
            }
        }
        let done = node.finished_pod(&namespace, "pki", Duration::from_secs(180)).await;
        let output = node.container_output(&done, "main");
        outputs.push(format!("pki ({:?}):\n{output}{}", exit_code(&done), termination_message(&done)));
        let lines: Vec<&str> = output.lines().collect();
        for (line, what) in [
            ("link: ../pki/tls/certs", "/etc/ssl/certs is still the symlink in the container"),
            ("mount: /etc/pki/tls/certs", "the volume mounted at /etc/ssl/certs lands on /etc/pki/tls/certs"),
            ("bundle at /etc/pki/tls/certs", "the bundle is at /etc/pki/tls/certs"),
            ("fetched through /etc/pki/tls/certs", "curl trusts the Corp CA with the bundle at /etc/pki/tls/certs"),
            ("fetched through /etc/ssl/certs", "curl trusts the Corp CA through the symlink /etc/ssl/certs"),
        ] {
            if !lines.contains(&line) {
                failures.push(format!("pki: {what}: no line {line:?}"));
            }
        }
        if lines.contains(&"mount: /etc/ssl/certs") {
            failures.push("pki: a mount at /etc/ssl/certs itself (the symlink was replaced)".into());
        }
        assert!(failures.is_empty(), "{}\n\n{}\ndriver:\n{}", failures.join("\n"), outputs.join("\n"), driver_log());
        eprintln!("{}", outputs.join("\n"));
    });
}

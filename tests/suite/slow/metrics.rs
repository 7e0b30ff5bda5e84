//! Observability, as an operator sees it: the real daemon with `--metrics-addr 127.0.0.1:0`
//! (the bound port is read from its log), CSI calls over its real socket, `/metrics` scraped over
//! real HTTP and parsed strictly (a malformed exposition fails the test), and `--log-format json`
//! read back line by line. Local sources, and a ConfigMap on the real API server.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::in_private_mount_namespace;
use crate::support;
use crate::support::block_on;
use crate::support::certs::TestCa;
use crate::support::client::{publish_request, stats_request, unpublish_request};
use crate::support::control_plane::ControlPlane;
use crate::support::daemon::{Daemon, DaemonOptions};
use crate::support::deploy;
use crate::support::objects;

/// How long a file change may take to be counted (watch + settle + render).
const PROPAGATION_LIMIT: Duration = Duration::from_secs(20);
/// The daemon and the test read the clock a few seconds apart at most.
const CLOCK_TOLERANCE_SECONDS: f64 = 60.0;

const TOKENS_KEY: &str = "csi.storage.k8s.io/serviceAccount.tokens";

/// A daemon serving metrics on a free loopback port, trusting only `extra`.
async fn daemon_with_metrics(extra: &Path, more_args: &[&str]) -> (Daemon, SocketAddr) {
    let mut options = DaemonOptions::default().system_roots("none").extra_pem(extra);
    options.extra_args = ["--metrics-addr", "127.0.0.1:0"].iter().chain(more_args).map(|s| s.to_string()).collect();
    let daemon = Daemon::start(options).await;
    let addr = metrics_addr(&daemon.stderr())
        .unwrap_or_else(|| panic!("the daemon logged no metrics address\n{}", daemon.stderr()));
    (daemon, addr)
}

/// The address from the daemon's "serving metrics" line, text or JSON.
fn metrics_addr(log: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|line| line.contains("serving metrics"))?;
    let start =
        ["metrics.addr=", "\"metrics.addr\":\""].iter().find_map(|key| line.find(key).map(|i| i + key.len()))?;
    let addr: String = line[start..].chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
    addr.parse().ok()
}

/// GET /metrics over a fresh TCP connection, checked as HTTP/1.1: 200, the Prometheus text
/// content type, a body as long as its Content-Length. Returns the parsed exposition.
async fn scrape(addr: SocketAddr) -> exposition::Exposition {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: trustmount\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read the response");
    let response = String::from_utf8(response).expect("a UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("headers end with an empty line");
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("HTTP/1.1 200 OK"), "{head}");
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    assert_eq!(headers.get("content-type").map(String::as_str), Some("text/plain; version=0.0.4; charset=utf-8"));
    assert_eq!(headers.get("content-length").and_then(|l| l.parse().ok()), Some(body.len()), "{head}");
    exposition::parse(body).unwrap_or_else(|error| panic!("malformed exposition: {error}\n{body}"))
}

/// Scrapes until `check` holds; panics with the last scrape otherwise.
async fn scrape_until(
    addr: SocketAddr,
    what: &str,
    check: impl Fn(&exposition::Exposition) -> bool,
) -> exposition::Exposition {
    support::poll_until(PROPAGATION_LIMIT, support::wait::POLL, async || {
        let scraped = scrape(addr).await;
        if check(&scraped) { Ok(scraped) } else { Err(scraped) }
    })
    .await
    .unwrap_or_else(|scraped| panic!("not within {PROPAGATION_LIMIT:?}: {what}\n{}", scraped.text))
}

fn replace_file(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn calls(scraped: &exposition::Exposition, method: &str, code: &str) -> f64 {
    let labels = [("method", method), ("grpc_code", code)];
    let count = scraped.value("trustmount_csi_requests_total", &labels).unwrap_or(0.0);
    // Each call is in the counter and in the histogram, alike.
    assert_eq!(scraped.value("trustmount_csi_request_duration_seconds_count", &labels).unwrap_or(0.0), count);
    count
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A directory with one CA file that expires in 20 days.
fn one_ca(name: &str) -> (tempfile::TempDir, PathBuf, TestCa) {
    let dir = tempfile::tempdir().unwrap();
    let sources = dir.path().join("sources");
    std::fs::create_dir(&sources).unwrap();
    let ca = TestCa::expiring_in_days(dir.path(), name, 20);
    let file = sources.join("org-ca.pem");
    std::fs::write(&file, &ca.pem).unwrap();
    (dir, file, ca)
}

#[test]
fn publish_and_unpublish_move_the_counters_and_gauges() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let (_dir, file, ca) = one_ca("metrics");
        let (daemon, addr) = daemon_with_metrics(&file, &[]).await;

        let before = scrape(addr).await;
        assert_eq!(before.value("trustmount_volumes_published", &[]), Some(0.0), "{}", before.text);
        assert_eq!(before.value("trustmount_volume_specs", &[]), Some(0.0));
        assert_eq!(calls(&before, "NodePublishVolume", "OK"), 0.0);
        assert_eq!(before.value("trustmount_earliest_certificate_expiry_seconds", &[]), None, "no bundle is published");

        let target = daemon.target("pod-a", "trust");
        daemon.node().node_publish_volume(publish_request("vol-a", &target, &[])).await.unwrap();
        let refused = daemon
            .node()
            .node_publish_volume(publish_request(
                "vol-b",
                &daemon.target("pod-b", "trust"),
                &[("noSuchAttribute", "x")],
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        daemon.node().node_get_volume_stats(stats_request("vol-a", &target)).await.unwrap();

        let published = scrape(addr).await;
        assert_eq!(calls(&published, "NodePublishVolume", "OK"), 1.0, "{}", published.text);
        assert_eq!(calls(&published, "NodePublishVolume", "INVALID_ARGUMENT"), 1.0);
        assert_eq!(calls(&published, "NodeGetVolumeStats", "OK"), 1.0);
        assert_eq!(published.value("trustmount_volumes_published", &[]), Some(1.0));
        assert_eq!(published.value("trustmount_volume_specs", &[]), Some(1.0));
        let used = published.value("trustmount_tmpfs_used_bytes", &[]).expect("tmpfs usage");
        assert!(used > 0.0, "a published bundle takes room in the tmpfs");
        assert!(published.value("trustmount_tmpfs_size_bytes", &[]).is_some_and(|size| size >= used));
        // The one rendered bundle holds the one CA.
        assert_eq!(published.value("trustmount_bundle_certificates_count", &[]), Some(1.0));
        assert_eq!(published.value("trustmount_bundle_certificates_sum", &[]), Some(1.0));
        // Standalone, with one source file: one inotify watch, no cluster watch.
        assert_eq!(published.value("trustmount_watches_open", &[("kind", "file")]), Some(1.0));
        assert_eq!(published.value("trustmount_watches_open", &[("kind", "configmap")]), Some(0.0));

        let not_after = ca.params.not_after.unix_timestamp() as f64;
        let expiry = published.value("trustmount_earliest_certificate_expiry_seconds", &[]).expect("an expiry gauge");
        let expected = not_after - unix_now();
        assert!(
            (expiry - expected).abs() <= CLOCK_TOLERANCE_SECONDS,
            "expiry gauge {expiry} s, the CA expires in {expected} s"
        );

        daemon.node().node_unpublish_volume(unpublish_request("vol-a", &target)).await.unwrap();
        let unpublished = scrape(addr).await;
        assert_eq!(calls(&unpublished, "NodeUnpublishVolume", "OK"), 1.0, "{}", unpublished.text);
        assert_eq!(unpublished.value("trustmount_volumes_published", &[]), Some(0.0));
        assert_eq!(unpublished.value("trustmount_volume_specs", &[]), Some(0.0));
        assert_eq!(unpublished.value("trustmount_earliest_certificate_expiry_seconds", &[]), None);
    });
}

#[test]
fn a_changed_extra_pem_counts_a_rotation_and_a_bad_one_a_failure() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let (dir, file, _) = one_ca("before");
        let (daemon, addr) = daemon_with_metrics(&file, &["--log-format", "json"]).await;
        for pod in ["pod-a", "pod-b"] {
            daemon.node().node_publish_volume(publish_request(pod, &daemon.target(pod, "trust"), &[])).await.unwrap();
        }
        let file_kind = [("kind", "file")];
        assert_eq!(scrape(addr).await.value("trustmount_rotations_total", &file_kind), None, "nothing rotated yet");

        let second = TestCa::new(dir.path(), "after");
        replace_file(&file, second.pem.as_bytes());
        let rotated = scrape_until(addr, "a rotation of kind file", |s| {
            s.value("trustmount_rotations_total", &file_kind).is_some()
        })
        .await;
        // Two volumes of one spec: one spec directory swapped, once.
        assert_eq!(rotated.value("trustmount_rotations_total", &file_kind), Some(1.0), "{}", rotated.text);
        assert_eq!(rotated.value("trustmount_rotation_duration_seconds_count", &file_kind), Some(1.0));
        assert_eq!(rotated.value("trustmount_rotation_failures_total", &file_kind), None);
        // The expiry follows the new CA (a year out, no longer 20 days).
        let expiry = rotated.value("trustmount_earliest_certificate_expiry_seconds", &[]).unwrap();
        let expected = second.params.not_after.unix_timestamp() as f64 - unix_now();
        assert!((expiry - expected).abs() <= CLOCK_TOLERANCE_SECONDS, "{expiry} vs {expected}");

        let lines = json_lines(&daemon.stderr());
        let rotation = lines
            .iter()
            .find(|line| line["message"] == "rotation")
            .unwrap_or_else(|| panic!("no rotation line\n{}", daemon.stderr()));
        assert_eq!(rotation["source.kind"], "file", "{rotation}");
        assert_eq!(rotation["specs"], 1, "{rotation}");
        assert_eq!(rotation["volumes"], 2, "{rotation}");
        assert!(rotation["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{rotation}");
        assert!(rotation["source"].as_str().is_some_and(|s| s.contains("--extra-pem")), "{rotation}");

        replace_file(&file, b"-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n-----END PRIVATE KEY-----\n");
        let failed = scrape_until(addr, "a rotation failure of kind file", |s| {
            s.value("trustmount_rotation_failures_total", &file_kind).is_some()
        })
        .await;
        assert_eq!(failed.value("trustmount_rotation_failures_total", &file_kind), Some(1.0));
        assert_eq!(failed.value("trustmount_rotations_total", &file_kind), Some(1.0), "a failure is no rotation");
    });
}

#[test]
fn json_logs_give_each_call_one_line_with_its_pod_code_and_duration_and_never_the_token() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let (_dir, file, _) = one_ca("json");
        let (daemon, _) = daemon_with_metrics(&file, &["--log-format", "json"]).await;
        let token = "eyJhbGciOiJSUzI1NiJ9.secret-token-for-the-test";
        let token_json = format!(r#"{{"":{{"token":"{token}","expirationTimestamp":"2026-12-01T12:00:00Z"}}}}"#);

        // A publish carrying the token both ways the kubelet sends it.
        let target = daemon.target("4f1b0c3e-0000-4000-8000-00000000000a", "trust");
        let mut request = publish_request("vol-json", &target, &[]);
        request.secrets.insert(TOKENS_KEY.into(), token_json.clone());
        request.volume_context.insert(TOKENS_KEY.into(), token_json.clone());
        daemon.node().node_publish_volume(request).await.unwrap();
        // One that reads the token (it names a Secret) and then fails: a standalone driver.
        let refused_target = daemon.target("4f1b0c3e-0000-4000-8000-00000000000b", "trust");
        let mut refused = publish_request("vol-refused", &refused_target, &[("secrets", "corp-ca")]);
        refused.secrets.insert(TOKENS_KEY.into(), token_json);
        let status = daemon.node().node_publish_volume(refused).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        daemon.node().node_unpublish_volume(unpublish_request("vol-json", &target)).await.unwrap();

        let log = daemon.stderr();
        assert!(!log.contains(token), "the token reached the log:\n{log}");
        assert!(!log.contains(TOKENS_KEY), "the token's key (so the volume context or secrets) reached the log");
        let lines = json_lines(&log);
        let answered = |method: &str, volume: &str| -> Vec<&serde_json::Value> {
            lines
                .iter()
                .filter(|line| line["span"]["name"] == method && line["span"]["volume.id"] == volume)
                .filter(|line| line["message"].as_str().is_some_and(|m| m.starts_with("answered")))
                .collect()
        };

        let publish = answered("NodePublishVolume", "vol-json");
        assert_eq!(publish.len(), 1, "one line per call: {publish:?}");
        let publish = publish[0];
        assert_eq!(publish["level"], "INFO");
        assert_eq!(publish["grpc.code"], "OK", "{publish}");
        assert!(publish["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{publish}");
        assert_eq!(publish["span"]["pod.namespace"], "default", "{publish}");
        assert_eq!(publish["span"]["pod.name"], "web-0", "{publish}");
        assert_eq!(publish["span"]["pod.uid"], "4f1b0c3e-0000-4000-8000-00000000000a", "{publish}");
        assert_eq!(publish["span"]["target"], target.to_str().unwrap(), "{publish}");

        let refused = answered("NodePublishVolume", "vol-refused");
        assert_eq!(refused.len(), 1, "one line per call: {refused:?}");
        assert_eq!(refused[0]["level"], "WARN");
        assert_eq!(refused[0]["grpc.code"], "FAILED_PRECONDITION", "{}", refused[0]);
        assert!(refused[0]["error"].as_str().is_some_and(|e| e.contains("standalone")), "{}", refused[0]);
        assert_eq!(refused[0]["span"]["pod.uid"], "4f1b0c3e-0000-4000-8000-00000000000b");

        let unpublish = answered("NodeUnpublishVolume", "vol-json");
        assert_eq!(unpublish.len(), 1, "one line per call: {unpublish:?}");
        assert_eq!(unpublish[0]["grpc.code"], "OK");
        // The kubelet's target path names the pod.
        assert_eq!(unpublish[0]["span"]["pod.uid"], "4f1b0c3e-0000-4000-8000-00000000000a");
    });
}

#[test]
fn a_config_map_sets_the_expiry_opens_a_watch_and_its_change_counts_a_rotation() {
    ControlPlane::shared();
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let plane = ControlPlane::shared();
        let admin = plane.admin_client().await;
        objects::ensure_shipped_csidriver(&admin).await;
        let namespace = plane.namespace("metrics").await;
        let (dir, extra_file, extra) = one_ca("extra");
        let identity = deploy::driver_identity(plane, &admin, &namespace, dir.path()).await;
        let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &namespace);
        let put = async |ca: &TestCa| objects::put_config_map(&config_maps, "corp-ca", &ca.pem).await;
        // Sooner than the extra CA's 20 days: the ConfigMap's certificate sets the gauge.
        let soon = TestCa::expiring_in_days(dir.path(), "soon", 5);
        put(&soon).await;
        let kubeconfig = identity.kubeconfig.display().to_string();
        let (daemon, addr) = daemon_with_metrics(&extra_file, &["--kubeconfig", &kubeconfig]).await;

        let attributes = [("csi.storage.k8s.io/pod.namespace", namespace.as_str()), ("configMaps", "corp-ca")];
        let target = daemon.target("pod-cm", "trust");
        daemon.node().node_publish_volume(publish_request("vol-cm", &target, &attributes)).await.unwrap();
        let published = scrape(addr).await;
        assert_eq!(
            published.value("trustmount_watches_open", &[("kind", "configmap")]),
            Some(1.0),
            "{}",
            published.text
        );
        let expiry = published.value("trustmount_earliest_certificate_expiry_seconds", &[]).unwrap();
        let expected = soon.params.not_after.unix_timestamp() as f64 - unix_now();
        assert!((expiry - expected).abs() <= CLOCK_TOLERANCE_SECONDS, "{expiry} vs the ConfigMap CA's {expected}");
        assert_eq!(
            published.value("trustmount_bundle_certificates_sum", &[]),
            Some(2.0),
            "the extra CA and the ConfigMap's"
        );

        put(&TestCa::new(dir.path(), "renewed")).await;
        let kind = [("kind", "configmap")];
        let rotated = scrape_until(addr, "a rotation of kind configmap", |s| {
            s.value("trustmount_rotations_total", &kind).is_some()
        })
        .await;
        assert_eq!(rotated.value("trustmount_rotations_total", &kind), Some(1.0), "{}", rotated.text);
        assert_eq!(rotated.value("trustmount_rotation_duration_seconds_count", &kind), Some(1.0));
        // Renewed for a year: now the extra CA's 20 days are the earliest.
        let expiry = rotated.value("trustmount_earliest_certificate_expiry_seconds", &[]).unwrap();
        let expected = extra.params.not_after.unix_timestamp() as f64 - unix_now();
        assert!((expiry - expected).abs() <= CLOCK_TOLERANCE_SECONDS, "{expiry} vs the extra CA's {expected}");

        daemon.node().node_unpublish_volume(unpublish_request("vol-cm", &target)).await.unwrap();
        let unpublished = scrape(addr).await;
        assert_eq!(
            unpublished.value("trustmount_watches_open", &[("kind", "configmap")]),
            Some(0.0),
            "the last volume naming it gave up its watch"
        );
    });
}

/// Every line of a `--log-format json` log, each one parsed (a line that is not JSON fails).
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect()
}

#[test]
fn idle_connections_beyond_the_bound_are_closed_and_scrapes_work_again_once_they_go() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let (_dir, file, _ca) = one_ca("bounded");
        let (_daemon, addr) = daemon_with_metrics(&file, &[]).await;
        // A tenant's pod holding connections open (sending nothing) gets at most 16 of them.
        let mut held = Vec::new();
        for _ in 0..16 {
            held.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut extra = tokio::net::TcpStream::connect(addr).await.expect("the kernel accepts it");
        let _ = extra.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), extra.read_to_end(&mut answer)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the 17th connection is closed unanswered: {read:?} {:?}",
            String::from_utf8_lossy(&answer)
        );
        drop(held);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let scraped = scrape(addr).await;
        assert!(!scraped.samples.is_empty(), "a whole exposition again");
    });
}

#[test]
fn a_bad_metrics_address_or_log_format_exits_64_naming_it() {
    for (flag, value) in
        [("--metrics-addr", "localhost"), ("--metrics-addr", "0.0.0.0:99999"), ("--log-format", "yaml")]
    {
        let output = std::process::Command::new(support::daemon::BIN)
            .args(["serve", "--node-id", "n", "--state-dir", "/nonexistent/trustmount-state", flag, value])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains(value), "{flag} {value}: {stderr}");
    }
}

#[test]
fn a_metrics_address_in_use_stops_the_daemon_saying_so() {
    if !in_private_mount_namespace!() {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let root = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(support::daemon::BIN)
        .args(["serve", "--node-id", "n", "--system-roots", "none", "--metrics-addr", &addr])
        .arg("--endpoint")
        .arg(root.path().join("csi.sock"))
        .arg("--kubelet-dir")
        .arg(root.path().join("kubelet"))
        .arg("--state-dir")
        .arg(root.path().join("state"))
        .args(["--extra-pem", support::certs::TestCa::new(root.path(), "ca").cert_path.to_str().unwrap()])
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen for metrics on {addr}")), "{stderr}");
    assert!(!root.path().join("csi.sock").exists(), "no CSI socket without the metrics the operator asked for");
}

#[test]
fn the_exposition_parser_refuses_what_prometheus_would() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    assert!(exposition::parse(good).is_ok());
    for bad in [
        "a_total 1\n",                                                                             // no TYPE
        "# TYPE a_total counter\na_total{x=1} 2\n",                                                // unquoted label
        "# TYPE a_total counter\na_total two\n",                                                   // not a number
        "# TYPE a_total counter\na_total 1",                                                       // no final newline
        "# TYPE a_total counter\na_total 1\na_total 2\n",                                          // duplicate series
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n", // not cumulative
        "# TYPE a_total counter\na_total 1\n# EOF\n", // OpenMetrics, not 0.0.4
    ] {
        assert!(exposition::parse(bad).is_err(), "accepted: {bad:?}");
    }
}

/// A strict reader of the Prometheus text format 0.0.4 (what `/metrics` says it serves), after
/// `expfmt`'s text parser: comments are HELP or TYPE lines, every sample belongs to a TYPE'd
/// family, labels are quoted and escaped, values are floats, no series repeats, and histogram
/// buckets are cumulative up to a `+Inf` bucket equal to `_count`.
mod exposition {
    use super::*;

    pub struct Exposition {
        pub text: String,
        pub samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
    }

    impl Exposition {
        /// The value of the series `name` with exactly `labels`.
        pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
            let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            self.samples.get(&(name.to_owned(), labels)).copied()
        }
    }

    fn is_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn parse_value(text: &str) -> Result<f64, String> {
        match text {
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            _ => text.parse().map_err(|_| format!("{text:?} is not a number")),
        }
    }

    /// `{k="v",…}` → the labels, and what follows the closing brace.
    fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
        let mut labels = BTreeMap::new();
        let mut rest = text.strip_prefix('{').ok_or("labels start with {")?;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                return Ok((labels, after));
            }
            let (name, after) = rest.split_once("=\"").ok_or_else(|| format!("label without =\"…\": {rest:?}"))?;
            if !is_name(name) || name.contains(':') {
                return Err(format!("bad label name {name:?}"));
            }
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            };
            if labels.insert(name.to_owned(), value).is_some() {
                return Err(format!("label {name} repeated"));
            }
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }

    pub fn parse(text: &str) -> Result<Exposition, String> {
        if !text.ends_with('\n') {
            return Err("the exposition must end with a newline".into());
        }
        let mut types: HashMap<String, String> = HashMap::new();
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix("# ") {
                let mut parts = comment.splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("HELP"), Some(name), Some(_)) if is_name(name) => {}
                    (Some("TYPE"), Some(name), Some(kind))
                        if is_name(name) && ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) =>
                    {
                        if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                            return Err(format!("TYPE of {name} given twice"));
                        }
                    }
                    _ => return Err(format!("not a HELP or TYPE line: {line:?}")),
                }
                continue;
            }
            let name_end = line.find(['{', ' ']).ok_or_else(|| format!("no value: {line:?}"))?;
            let name = &line[..name_end];
            if !is_name(name) {
                return Err(format!("bad metric name {name:?}"));
            }
            let (labels, rest) = if line[name_end..].starts_with('{') {
                parse_labels(&line[name_end..])?
            } else {
                (BTreeMap::new(), &line[name_end..])
            };
            let mut fields =
                rest.strip_prefix(' ').ok_or_else(|| format!("no space before the value: {line:?}"))?.split(' ');
            let value = parse_value(fields.next().unwrap_or_default())?;
            if let Some(timestamp) = fields.next() {
                timestamp.parse::<i64>().map_err(|_| format!("bad timestamp in {line:?}"))?;
            }
            if fields.next().is_some() {
                return Err(format!("trailing text: {line:?}"));
            }
            let family_type = types.get(name).cloned().or_else(|| {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .and_then(|base| types.get(base).filter(|kind| *kind == "histogram" || *kind == "summary").cloned())
            });
            let Some(family_type) = family_type else { return Err(format!("{name} has no TYPE line before it")) };
            if family_type == "counter" && !name.ends_with("_total") {
                return Err(format!("counter {name} does not end in _total"));
            }
            if samples.insert((name.to_owned(), labels), value).is_some() {
                return Err(format!("series repeated: {line:?}"));
            }
        }
        check_histograms(&types, &samples)?;
        Ok(Exposition { text: text.to_owned(), samples })
    }

    type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

    fn check_histograms(types: &HashMap<String, String>, samples: &Samples) -> Result<(), String> {
        for (family, _) in types.iter().filter(|(_, kind)| *kind == "histogram") {
            let bucket_name = format!("{family}_bucket");
            // Buckets per series (labels without `le`), in `le` order.
            let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
            for ((name, labels), value) in samples {
                if *name != bucket_name {
                    continue;
                }
                let mut labels = labels.clone();
                let le = parse_value(&labels.remove("le").ok_or_else(|| format!("{name} without le"))?)?;
                series.entry(labels).or_default().push((le, *value));
            }
            for (labels, mut buckets) in series {
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                    return Err(format!("{family}{labels:?} buckets are not cumulative: {buckets:?}"));
                }
                let Some(&(le, infinite)) = buckets.last().filter(|(le, _)| le.is_infinite()) else {
                    return Err(format!("{family}{labels:?} has no +Inf bucket"));
                };
                debug_assert!(le.is_infinite());
                let count = samples.get(&(format!("{family}_count"), labels.clone()));
                if count != Some(&infinite) {
                    return Err(format!("{family}{labels:?}: _count {count:?} is not the +Inf bucket {infinite}"));
                }
                if !samples.contains_key(&(format!("{family}_sum"), labels.clone())) {
                    return Err(format!("{family}{labels:?} has no _sum"));
                }
            }
        }
        Ok(())
    }
}

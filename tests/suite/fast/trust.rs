//! Trust end to end: a CA and a server certificate made here, a TLS server on 127.0.0.1, a
//! volume published by the real daemon with `--extra-pem ca.pem`, and real TLS clients that fail
//! without the volume and succeed with it.
//!
//! The debian matrix mounts the volume over `/etc/ssl/certs` in a nested mount namespace and runs
//! each client with a clean environment (plus the variable its row names): curl, openssl,
//! gnutls-cli, Debian's Python (urllib and python3-requests), Go, Java, Ruby, PHP and Node. The
//! rhel/suse matrix points clients at the files inside the published volume. One daemon and one
//! TLS server serve every row of a matrix; each row's result is collected and a failing matrix
//! lists every failing client with its output.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::in_private_mount_namespace;
use crate::support;
use crate::support::block_on;
use crate::support::certs::{TestCa, TestLeaf};
use crate::support::client::{publish_request, unpublish_request};
use crate::support::daemon::{Daemon, DaemonOptions};
use crate::support::fsutil::run;
use crate::support::tls::TlsServer;

/// What a client run needs; dropped in reverse: server, daemon (unmounts), tempdir.
struct Fixture {
    server: TlsServer,
    daemon: Daemon,
    leaf: TestLeaf,
    ca: TestCa,
    certs: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    // The clients of the matrices: a missing one must fail with its install command, not look
    // like a client that does not trust the volume.
    support::tools::require(&["curl", "openssl", "gnutls-cli", "java", "javac", "go", "ruby", "php", "node"]);
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new(certs.path(), "ca");
    let leaf = ca.issue_server(certs.path(), "server");
    let server = TlsServer::start(&leaf.cert_path, &leaf.key_path);
    let daemon = Daemon::start(DaemonOptions::default().extra_pem(&ca.cert_path).system_roots("embedded")).await;
    Fixture { server, daemon, leaf, ca, certs }
}

impl Fixture {
    /// Publishes volume `volume_id` with `attributes`; returns its target path.
    async fn publish(&self, volume_id: &str, attributes: &[(&str, &str)]) -> PathBuf {
        let target = self.daemon.target(&format!("pod-{volume_id}"), "trust");
        self.daemon.node().node_publish_volume(publish_request(volume_id, &target, attributes)).await.unwrap();
        target
    }

    async fn unpublish(&self, volume_id: &str, target: &Path) {
        self.daemon.node().node_unpublish_volume(unpublish_request(volume_id, target)).await.unwrap();
    }
}

const CLEAN_ENV: [&str; 4] = ["env", "-i", "PATH=/usr/bin:/bin", "HOME=/tmp"];

/// One row of a client matrix.
struct Client {
    name: &'static str,
    command: Vec<String>,
    /// `NAME=value` pairs added to the clean environment.
    env: Vec<String>,
    /// Without the volume the client must fail with one of these in its output (a certificate
    /// verification error, not "command not found"); empty: any failure will do.
    failure_words: &'static [&'static str],
    /// With the volume the client must succeed and print this.
    success_word: String,
}

fn client(name: &'static str, command: &[&str], failure_words: &'static [&'static str], success_word: &str) -> Client {
    Client {
        name,
        command: command.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        failure_words,
        success_word: success_word.to_string(),
    }
}

impl Client {
    fn env(mut self, pair: &str) -> Self {
        self.env.push(pair.to_string());
        self
    }
}

/// Runs `client` in a clean environment in a nested mount namespace: with `volume`, the
/// volume is bind-mounted over `/etc/ssl/certs` there first (plus over the JDK's trust store
/// if that does not live under `/etc/ssl/certs`). The test's own namespace is unaffected.
fn run_client(volume: Option<&Path>, client: &Client) -> (bool, String) {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private"]);
    if let Some(target) = volume {
        let java_store = jdk_trust_store()
            .filter(|p| !p.starts_with("/etc/ssl/certs/"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        cmd.args([
            "sh",
            "-c",
            r#"mount --bind "$1" /etc/ssl/certs && { [ -z "$2" ] || mount --bind "$1/java/cacerts" "$2"; } && shift 2 && exec "$@""#,
            "sh",
        ])
        .arg(target)
        .arg(java_store);
    }
    cmd.args(CLEAN_ENV).args(&client.env).args(&client.command);
    let (ok, stdout, stderr) = run(&mut cmd);
    (ok, format!("--- stdout\n{}\n--- stderr\n{}", stdout.trim_end(), stderr.trim_end()))
}

/// The without/with check of one row: `without` must fail (with a verification error),
/// `with` must succeed and print the row's success word. `Err` tells what went wrong.
fn check_client(
    client: &Client,
    without: impl Fn(&Client) -> (bool, String),
    with: impl Fn(&Client) -> (bool, String),
) -> Result<(), String> {
    let (ok, output) = without(client);
    let trusted = ok && output.contains(&client.success_word);
    if trusted {
        return Err(format!("trusted the test CA without the volume — the row proves nothing\n{output}"));
    }
    if !client.failure_words.is_empty() && !client.failure_words.iter().any(|w| output.contains(w)) {
        return Err(format!(
            "failed without the volume, but not with a certificate verification error (one of {:?})\n{output}",
            client.failure_words
        ));
    }
    let (ok, output) = with(client);
    if !ok {
        return Err(format!("failed with the volume\n{output}"));
    }
    if !output.contains(&client.success_word) {
        return Err(format!("succeeded with the volume, but its output lacks {:?}\n{output}", client.success_word));
    }
    Ok(())
}

/// Runs every row, prints a pass/fail line per client, and panics listing every failure.
fn assert_matrix(title: &str, rows: &[Client], check: impl Fn(&Client) -> Result<(), String>) {
    let mut summary = String::new();
    let mut failures = String::new();
    for row in rows {
        let env = if row.env.is_empty() { String::new() } else { format!(" [{}]", row.env.join(" ")) };
        match check(row) {
            Ok(()) => writeln!(summary, "  pass  {}{env}", row.name).unwrap(),
            Err(why) => {
                writeln!(summary, "  FAIL  {}{env}", row.name).unwrap();
                writeln!(failures, "\n=== {}{env}: {why}\n$ {}", row.name, row.command.join(" ")).unwrap();
            }
        }
    }
    eprintln!("{title}\n{summary}");
    assert!(failures.is_empty(), "{title}: some clients failed\n{summary}{failures}");
}

/// The JDK's `lib/security/cacerts`, resolved through symlinks.
fn jdk_trust_store() -> Option<PathBuf> {
    let java = std::fs::canonicalize("/usr/bin/java").ok()?;
    std::fs::canonicalize(java.parent()?.join("../lib/security/cacerts")).ok()
}

/// Debian's interpreter, whose OpenSSL looks in /usr/lib/ssl (→ /etc/ssl/certs) and whose
/// requests is python3-requests (certifi patched to /etc/ssl/certs/ca-certificates.crt); a pyenv
/// build on PATH, or a pip-installed requests with its own certifi, would look elsewhere.
fn debian_python() -> &'static str {
    let python = "/usr/bin/python3";
    let (ok, stdout, stderr) = run(Command::new(python).args([
        "-c",
        "import ssl, requests, requests.certs; p = ssl.get_default_verify_paths(); \
         print(p.openssl_cafile); print(p.openssl_capath); print(requests.__file__); print(requests.certs.where())",
    ]));
    assert!(
        ok,
        "{python} cannot report its OpenSSL paths and python3-requests (apt-get install python3-requests): {stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.len() == 4 && lines[..2].iter().all(|l| l.starts_with("/usr/lib/ssl/")),
        "{python}'s OpenSSL does not use /usr/lib/ssl: {stdout}"
    );
    assert!(
        lines[2].starts_with("/usr/lib/python3/dist-packages/"),
        "{python} imports requests not from Debian's python3-requests: {stdout}"
    );
    assert_eq!(
        lines[3], "/etc/ssl/certs/ca-certificates.crt",
        "{python}'s requests does not use the system bundle: {stdout}"
    );
    python
}

const FETCH_NODE: &str = r#"
require('https').get(process.argv[1], { timeout: 30000 }, (r) => {
  console.log('HTTP', r.statusCode);
  r.resume();
  r.on('end', () => process.exit(r.statusCode === 200 ? 0 : 1));
}).on('error', (e) => { console.error(e.code, e.message); process.exit(1); });
"#;

const FETCH_RUBY: &str = r#"
require "net/http"
r = Net::HTTP.get_response(URI(ARGV[0]))
puts "HTTP #{r.code}"
exit(r.code == "200")
"#;

const FETCH_PHP: &str = r#"
$body = file_get_contents($argv[1]);
if ($body === false) { fwrite(STDERR, error_get_last()["message"] . "\n"); exit(1); }
echo "HTTP ", explode(" ", $http_response_header[0])[1], "\n";
"#;

const FETCH_PYTHON_URLLIB: &str =
    "import sys, urllib.request; r = urllib.request.urlopen(sys.argv[1], timeout=30); print('HTTP', r.status)";

const FETCH_PYTHON_REQUESTS: &str =
    "import sys, requests; r = requests.get(sys.argv[1], timeout=30); print('HTTP', r.status_code)";

/// Programs compiled once per test run: `Fetch.class` (javac) and a Go binary.
struct Programs {
    java_classpath: String,
    go_binary: String,
}

fn build_programs(dir: &Path) -> Programs {
    let java_dir = dir.join("java");
    std::fs::create_dir_all(&java_dir).unwrap();
    let source = java_dir.join("Fetch.java");
    std::fs::write(&source, support::programs::FETCH_JAVA).unwrap();
    let (ok, stdout, stderr) = run(Command::new("javac").arg("-d").arg(&java_dir).arg(&source));
    assert!(ok, "javac Fetch.java failed\n{stdout}{stderr}");

    let binary = support::programs::build_fetch_go(&dir.join("go"));

    Programs { java_classpath: java_dir.to_str().unwrap().to_string(), go_binary: binary.to_str().unwrap().to_string() }
}

const OPENSSL_FAILS: &[&str] = &["unable to get local issuer certificate", "verify error", "certificate verify failed"];
const PYTHON_FAILS: &[&str] = &["CERTIFICATE_VERIFY_FAILED"];
const JAVA_FAILS: &[&str] = &["PKIX path building failed", "unable to find valid certification path"];
const NODE_FAILS: &[&str] = &["UNABLE_TO_VERIFY_LEAF_SIGNATURE", "UNABLE_TO_GET_ISSUER_CERT_LOCALLY"];

/// The clients that must trust the debian layout mounted at `/etc/ssl/certs`.
fn debian_clients(fx: &Fixture, programs: &Programs) -> Vec<Client> {
    let url = fx.server.url();
    let port = fx.server.port.to_string();
    let connect = format!("127.0.0.1:{port}");
    let leaf = fx.leaf.cert_path.to_str().unwrap();
    let python = debian_python();
    vec![
        client(
            "curl",
            &["curl", "-sS", "--max-time", "30", &url],
            &["SSL certificate problem", "certificate verify failed"],
            // openssl s_server -www answers with an HTML page listing the session.
            "s_server",
        ),
        // stdin is /dev/null (run() sets it), so s_client closes after the handshake.
        client(
            "openssl s_client",
            &[
                "openssl",
                "s_client",
                "-connect",
                &connect,
                "-servername",
                "localhost",
                "-verify_hostname",
                "localhost",
                "-verify_return_error",
                "-brief",
            ],
            OPENSSL_FAILS,
            "Verification: OK",
        ),
        // Only the directory's hash links: no CAfile, no CA store URI.
        client(
            "openssl verify -CApath /etc/ssl/certs",
            &["openssl", "verify", "-no-CAfile", "-no-CAstore", "-CApath", "/etc/ssl/certs", leaf],
            OPENSSL_FAILS,
            ": OK",
        ),
        // GnuTLS reads the bundle file only; stdin is /dev/null, so it closes after the handshake.
        client(
            "gnutls-cli",
            &["gnutls-cli", "--port", &port, "localhost"],
            &["The certificate issuer is unknown", "Verification failed"],
            "Handshake was completed",
        ),
        client("python urllib", &[python, "-c", FETCH_PYTHON_URLLIB, &url], PYTHON_FAILS, "HTTP 200"),
        client("python requests (Debian)", &[python, "-c", FETCH_PYTHON_REQUESTS, &url], PYTHON_FAILS, "HTTP 200"),
        client(
            "go net/http",
            &[&programs.go_binary, &url],
            &["x509: certificate signed by unknown authority"],
            "HTTP 200",
        ),
        client("java", &["java", "-cp", &programs.java_classpath, "Fetch", &url], JAVA_FAILS, "HTTP 200"),
        client("ruby net/http", &["ruby", "-e", FETCH_RUBY, &url], &["certificate verify failed"], "HTTP 200"),
        client("php file_get_contents", &["php", "-r", FETCH_PHP, &url], &["certificate verify failed"], "HTTP 200"),
        client("node --use-openssl-ca", &["node", "--use-openssl-ca", "-e", FETCH_NODE, &url], NODE_FAILS, "HTTP 200"),
        client("node", &["node", "-e", FETCH_NODE, &url], NODE_FAILS, "HTTP 200")
            .env("NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt"),
    ]
}

#[test]
fn every_client_trusts_the_debian_layout_at_etc_ssl_certs_and_only_with_the_volume() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let fx = fixture().await;
        let target = fx.publish("vol-debian", &[]).await;
        let store = jdk_trust_store().expect("the JDK at /usr/bin/java has a lib/security/cacerts");
        if !store.starts_with("/etc/ssl/certs/") {
            eprintln!(
                "note: the JDK's trust store {} is not Debian's; the volume's java/cacerts is mounted over it",
                store.display()
            );
        }
        let programs = build_programs(fx.certs.path());
        let rows = debian_clients(&fx, &programs);
        assert_matrix("debian layout over /etc/ssl/certs", &rows, |row| {
            check_client(row, |c| run_client(None, c), |c| run_client(Some(&target), c))
        });
        fx.unpublish("vol-debian", &target).await;
    });
}

#[test]
fn openssl_hash_links_in_the_volume_verify_the_server_certificate() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let fx = fixture().await;
        let target = fx.publish("vol-trust", &[]).await;
        let empty = tempfile::tempdir().unwrap();
        let verify = |capath: &Path| {
            run(Command::new("openssl")
                .args(["verify", "-no-CAfile", "-no-CAstore", "-CApath"])
                .arg(capath)
                .arg(&fx.leaf.cert_path))
        };
        let (ok, stdout, stderr) = verify(empty.path());
        assert!(!ok, "control: the server certificate verified against an empty CApath\n{stdout}{stderr}");
        let (ok, stdout, stderr) = verify(&target);
        assert!(ok && stdout.contains(": OK"), "openssl verify -CApath <volume> failed\n{stdout}{stderr}");

        let _ = &fx.ca;
        fx.unpublish("vol-trust", &target).await;
    });
}

/// Where a layout keeps its files, relative to the volume root.
struct LayoutPaths {
    layout: &'static str,
    bundle: &'static str,
    hash_dir: &'static str,
    java: &'static str,
}

const RHEL: LayoutPaths = LayoutPaths {
    layout: "rhel",
    bundle: "pem/tls-ca-bundle.pem",
    hash_dir: "pem/directory-hash",
    java: "java/cacerts",
};
const SUSE: LayoutPaths =
    LayoutPaths { layout: "suse", bundle: "ca-bundle.pem", hash_dir: "pem", java: "java-cacerts" };

/// A stand-in for an image's own store in `paths`' layout, built from this machine's Debian
/// store (which lacks the test CA): the "without the volume" control.
fn host_store_in_layout(dir: &Path, paths: &LayoutPaths) -> PathBuf {
    let root = dir.join(format!("host-{}", paths.layout));
    for (relative, host) in [
        (paths.bundle, "/etc/ssl/certs/ca-certificates.crt"),
        (paths.hash_dir, "/etc/ssl/certs"),
        (paths.java, "/etc/ssl/certs/java/cacerts"),
    ] {
        let link = root.join(relative);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(host, &link).unwrap();
    }
    root
}

/// Rows for a layout's files, with `{root}` standing for the volume root.
fn layout_clients(fx: &Fixture, paths: &LayoutPaths) -> Vec<Client> {
    let url = fx.server.url();
    let leaf = fx.leaf.cert_path.to_str().unwrap();
    let bundle = format!("{{root}}/{}", paths.bundle);
    let hash_dir = format!("{{root}}/{}", paths.hash_dir);
    let java = format!("{{root}}/{}", paths.java);
    vec![
        client(
            "openssl verify -CAfile <bundle>",
            &["openssl", "verify", "-no-CApath", "-no-CAstore", "-CAfile", &bundle, leaf],
            OPENSSL_FAILS,
            ": OK",
        ),
        client(
            "openssl verify -CApath <hash dir>",
            &["openssl", "verify", "-no-CAfile", "-no-CAstore", "-CApath", &hash_dir, leaf],
            OPENSSL_FAILS,
            ": OK",
        ),
        client(
            "curl --cacert <bundle>",
            &["curl", "-sS", "--max-time", "30", "--cacert", &bundle, &url],
            &["SSL certificate problem", "certificate verify failed"],
            "s_server",
        ),
        client(
            "curl --capath <hash dir>",
            &["curl", "-sS", "--max-time", "30", "--capath", &hash_dir, &url],
            &["SSL certificate problem", "certificate verify failed"],
            "s_server",
        ),
        // No -storepass: the JVM loads its default truststore with a null password too.
        // Without the volume keytool lists the host's store, which lacks the test CA.
        client("keytool -list <java store>", &["keytool", "-list", "-v", "-keystore", &java], &[], &fx.ca.common_name),
    ]
}

fn with_root(client: &Client, root: &Path) -> Client {
    let root = root.to_str().unwrap();
    Client {
        name: client.name,
        command: client.command.iter().map(|a| a.replace("{root}", root)).collect(),
        env: client.env.clone(),
        failure_words: client.failure_words,
        success_word: client.success_word.clone(),
    }
}

fn run_plain(client: &Client) -> (bool, String) {
    let (ok, stdout, stderr) =
        run(Command::new(CLEAN_ENV[0]).args(&CLEAN_ENV[1..]).args(&client.env).args(&client.command));
    (ok, format!("--- stdout\n{}\n--- stderr\n{}", stdout.trim_end(), stderr.trim_end()))
}

#[test]
fn clients_trust_the_files_of_the_rhel_and_suse_layouts_and_only_with_the_volume() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let fx = fixture().await;
        for paths in [RHEL, SUSE] {
            let volume_id = format!("vol-{}", paths.layout);
            let target = fx.publish(&volume_id, &[("layout", paths.layout)]).await;
            let control = host_store_in_layout(fx.certs.path(), &paths);
            let rows = layout_clients(&fx, &paths);
            assert_matrix(&format!("{} layout, files inside the volume", paths.layout), &rows, |row| {
                check_client(row, |c| run_plain(&with_root(c, &control)), |c| run_plain(&with_root(c, &target)))
            });
            fx.unpublish(&volume_id, &target).await;
        }
    });
}

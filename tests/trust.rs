//! Trust end to end: a CA and a server certificate made here, a TLS server on 127.0.0.1, a
//! volume published by the real daemon with `--extra-pem ca.pem`, and real TLS clients
//! (curl, openssl, Debian's Python, Java) that fail without the volume and succeed with it
//! mounted over `/etc/ssl/certs` in a nested mount namespace.
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::block_on;
use support::certs::{TestCa, TestLeaf};
use support::client::{publish_request, unpublish_request};
use support::daemon::{Daemon, DaemonOptions};
use support::fsutil::run;
use support::tls::TlsServer;

/// What a client run needs; dropped in reverse: server, daemon (unmounts), tempdir.
struct Fixture {
    server: TlsServer,
    target: PathBuf,
    daemon: Daemon,
    leaf: TestLeaf,
    ca: TestCa,
    certs: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new(certs.path(), "ca");
    let leaf = ca.issue_server(certs.path(), "server");
    let server = TlsServer::start(&leaf.cert_path, &leaf.key_path);
    let daemon = Daemon::start(DaemonOptions::default().extra_pem(&ca.cert_path).system_roots("embedded")).await;
    let target = daemon.target("pod-trust", "trust");
    daemon.node().node_publish_volume(publish_request("vol-trust", &target, &[])).await.unwrap();
    Fixture { server, target, daemon, leaf, ca, certs }
}

const CLEAN_ENV: [&str; 4] = ["env", "-i", "PATH=/usr/bin:/bin", "HOME=/tmp"];

/// Runs `client` in a clean environment in a nested mount namespace: with `volume`, the
/// volume is bind-mounted over `/etc/ssl/certs` there first (plus over the JDK's trust store
/// if that does not live under `/etc/ssl/certs`). The test's own namespace is unaffected.
fn run_client(volume: Option<&Path>, client: &[&str]) -> (bool, String) {
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
    cmd.args(CLEAN_ENV).args(client);
    let (ok, stdout, stderr) = run(&mut cmd);
    (ok, format!("--- stdout\n{stdout}\n--- stderr\n{stderr}"))
}

/// Asserts the client fails without the volume (with a verification error, one of
/// `failure_words`) and succeeds with it (its output containing `success_word`).
fn assert_trusts_only_with_volume(fx: &Fixture, name: &str, client: &[&str], failure_words: &[&str], success_word: &str) {
    let (ok, output) = run_client(None, client);
    assert!(!ok, "{name} trusted the test CA without the volume — the test proves nothing\n{output}");
    assert!(
        failure_words.iter().any(|w| output.contains(w)),
        "{name} failed without the volume, but not with a certificate verification error ({failure_words:?})\n{output}"
    );
    let (ok, output) = run_client(Some(&fx.target), client);
    assert!(ok, "{name} failed with the volume over /etc/ssl/certs\n{output}");
    assert!(output.contains(success_word), "{name} output lacks {success_word:?}\n{output}");
}

/// The JDK's `lib/security/cacerts`, resolved through symlinks.
fn jdk_trust_store() -> Option<PathBuf> {
    let java = std::fs::canonicalize("/usr/bin/java").ok()?;
    std::fs::canonicalize(java.parent()?.join("../lib/security/cacerts")).ok()
}

#[test]
fn curl_trusts_the_test_ca_only_with_the_volume() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let fx = fixture().await;
        let url = fx.server.url();
        assert_trusts_only_with_volume(
            &fx,
            "curl",
            &["curl", "-sS", "--max-time", "30", &url],
            &["SSL certificate problem", "certificate verify failed"],
            // openssl s_server -www answers with an HTML page listing the session.
            "s_server",
        );
    });
}

#[test]
fn openssl_s_client_verifies_the_server_only_with_the_volume() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let fx = fixture().await;
        let connect = format!("127.0.0.1:{}", fx.server.port);
        // stdin is /dev/null (run() sets it), so s_client closes after the handshake.
        assert_trusts_only_with_volume(
            &fx,
            "openssl s_client",
            &[
                "openssl", "s_client", "-connect", &connect, "-servername", "localhost", "-verify_hostname", "localhost",
                "-verify_return_error", "-brief",
            ],
            &["verify error", "unable to get local issuer certificate", "certificate verify failed"],
            "Verification: OK",
        );
    });
}

/// Debian's interpreter, whose OpenSSL looks in /usr/lib/ssl (→ /etc/ssl/certs); a pyenv
/// build on PATH may look elsewhere.
fn debian_python() -> &'static str {
    let python = "/usr/bin/python3";
    let (ok, stdout, stderr) =
        run(Command::new(python).args(["-c", "import ssl; p = ssl.get_default_verify_paths(); print(p.openssl_cafile); print(p.openssl_capath)"]));
    assert!(ok, "{python} cannot report its OpenSSL paths: {stderr}");
    assert!(
        stdout.lines().all(|l| l.starts_with("/usr/lib/ssl/")),
        "{python}'s OpenSSL does not use /usr/lib/ssl: {stdout}"
    );
    python
}

#[test]
fn debian_python_urllib_trusts_the_test_ca_only_with_the_volume() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let fx = fixture().await;
        let url = fx.server.url();
        let python = debian_python();
        assert_trusts_only_with_volume(
            &fx,
            "python urllib",
            &[
                python,
                "-c",
                "import sys, urllib.request; r = urllib.request.urlopen(sys.argv[1], timeout=30); print('HTTP', r.status)",
                &url,
            ],
            &["CERTIFICATE_VERIFY_FAILED"],
            "HTTP 200",
        );
    });
}

const FETCH_JAVA: &str = r#"
import java.net.URL;
import javax.net.ssl.HttpsURLConnection;

public class Fetch {
    public static void main(String[] args) throws Exception {
        HttpsURLConnection c = (HttpsURLConnection) new URL(args[0]).openConnection();
        c.setConnectTimeout(30000);
        c.setReadTimeout(30000);
        int code = c.getResponseCode();
        System.out.println("HTTP " + code);
        System.exit(code == 200 ? 0 : 1);
    }
}
"#;

#[test]
fn java_trusts_the_test_ca_only_with_the_volume() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let fx = fixture().await;
        let store = jdk_trust_store().expect("the JDK at /usr/bin/java has a lib/security/cacerts");
        if !store.starts_with("/etc/ssl/certs/") {
            eprintln!("note: the JDK's trust store {} is not Debian's; the volume's java/cacerts is mounted over it", store.display());
        }
        let source = fx.certs.path().join("Fetch.java");
        std::fs::write(&source, FETCH_JAVA).unwrap();
        let url = fx.server.url();
        assert_trusts_only_with_volume(
            &fx,
            "java",
            &["java", source.to_str().unwrap(), &url],
            &["PKIX path building failed", "unable to find valid certification path"],
            "HTTP 200",
        );
    });
}

#[test]
fn openssl_hash_links_in_the_volume_verify_the_server_certificate() {
    if !in_private_mount_namespace!() {
        return;
    }
    block_on(async {
        let fx = fixture().await;
        let empty = tempfile::tempdir().unwrap();
        let verify = |capath: &Path| {
            run(Command::new("openssl")
                .args(["verify", "-no-CAfile", "-no-CAstore", "-CApath"])
                .arg(capath)
                .arg(&fx.leaf.cert_path))
        };
        let (ok, stdout, stderr) = verify(empty.path());
        assert!(!ok, "control: the server certificate verified against an empty CApath\n{stdout}{stderr}");
        let (ok, stdout, stderr) = verify(&fx.target);
        assert!(ok && stdout.contains(": OK"), "openssl verify -CApath <volume> failed\n{stdout}{stderr}");

        let _ = &fx.ca;
        fx.daemon.node().node_unpublish_volume(unpublish_request("vol-trust", &fx.target)).await.unwrap();
    });
}

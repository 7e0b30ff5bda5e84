//! The images a real node runs (`tests/k8s/images/build`, `support::images`), imported and run
//! by the machine's containerd as the node imports them (`ctr -n k8s.io images import`), with no
//! Kubernetes: the pause image is one static program that stops cleanly on SIGTERM and SIGINT
//! as PID 1; the Debian test images have openssl, curl, python3 with requests (and a JRE) and
//! trust no server until a CA is mounted at `/etc/ssl/certs`.
//!
//! containerd runs as in `image.rs`: its own root, state and socket, in a private mount
//! namespace, without its CRI plugin (`ctr` drives it directly, so the CRI-only
//! `restrict_oom_score_adj` does not arise), with the overlayfs snapshotter the node uses.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::certs::TestCa;
use crate::support::containerd::Containerd;
use crate::support::images::{self, Image};
use crate::support::output::{assert_success, text};
use crate::support::tls::TlsServer;

/// The namespace the kubelet's CRI uses: what the node's tests will find the images in.
const NAMESPACE: &str = "k8s.io";

fn program(name: &str) -> Command {
    let mut command = Command::new(support::tools::which(name));
    command.stdin(Stdio::null());
    command
}

impl Containerd {
    /// `ctr` against this containerd, in the CRI's namespace.
    fn in_cri(&self) -> Command {
        let mut command = self.command();
        command.args(["--namespace", NAMESPACE]);
        command
    }

    fn cri_ctr(&self, args: &[&str]) -> Output {
        self.in_cri().args(args).output().unwrap()
    }

    /// Imports `image` as the node does and checks it is listed under its reference.
    fn import(&self, image: &Image) {
        let imported = self.cri_ctr(&["images", "import", image.archive.to_str().unwrap()]);
        assert_success(&format!("ctr images import {}\n{}", image.archive.display(), self.log()), &imported);
        let listed = self.cri_ctr(&["images", "list", "--quiet"]);
        assert_success("ctr images list", &listed);
        let names = text(&listed.stdout);
        assert!(
            names.lines().any(|name| name == image.reference),
            "{} not imported; listed:\n{names}",
            image.reference
        );
    }

    /// `ctr run --rm` of `reference` with `args` (the image's own command when empty): the
    /// task's exit status and its output.
    fn run(&self, reference: &str, id: &str, options: &[&str], args: &[&str]) -> Output {
        self.in_cri().args(["run", "--rm"]).args(options).args([reference, id]).args(args).output().unwrap()
    }

    /// The status `ctr task ls` gives the task `id` (RUNNING, STOPPED), if it is listed.
    fn task_status(&self, id: &str) -> Option<String> {
        let listed = self.cri_ctr(&["task", "ls"]);
        text(&listed.stdout)
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&id))
            .and_then(|fields| fields.get(2).map(|status| (*status).to_owned()))
    }
}

/// Waits for `child` to exit; panics if it has not after `limit` (a bound on a hang).
fn wait_with_limit(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(support::wait::POLL);
    }
}

/// Starts the pause image as a foreground `ctr run`, waits until its task runs, sends `signal`
/// and returns how `ctr run` (which exits with the task's status) ended.
fn pause_stopped_by(containerd: &Containerd, id: &str, signal: &str) -> std::process::ExitStatus {
    let mut run = containerd
        .in_cri()
        .args(["run", "--rm", images::PAUSE, id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = support::poll_until_blocking(Duration::from_secs(60), support::wait::POLL, || {
        if let Some(status) = run.try_wait().unwrap() {
            panic!("the pause container ended before any signal ({status}):\n{}", containerd.log());
        }
        if containerd.task_status(id).as_deref() == Some("RUNNING") { Ok(()) } else { Err(()) }
    });
    assert!(running.is_ok(), "the pause task never ran:\n{}", containerd.log());
    // Still running a moment later: it sleeps, it does not exit by itself.
    std::thread::sleep(Duration::from_millis(300));
    assert!(run.try_wait().unwrap().is_none(), "the pause container exited without a signal");
    assert_eq!(containerd.task_status(id).as_deref(), Some("RUNNING"));
    assert_success(&format!("ctr task kill {signal}"), &containerd.cri_ctr(&["task", "kill", "--signal", signal, id]));
    wait_with_limit(&mut run, Duration::from_secs(30), &format!("the pause container after {signal}"))
}

#[test]
fn the_pause_image_imports_runs_as_pid_1_and_exits_0_on_sigterm_and_sigint() {
    let pause = images::pause();
    assert_eq!(pause.reference, images::PAUSE);
    let containerd = Containerd::start();
    containerd.import(pause);

    // The image is the program alone, and the program runs in a root with nothing else.
    let version = containerd.run(images::PAUSE, "pause-version", &[], &["/pause", "-v"]);
    assert_success(&format!("/pause -v\n{}", containerd.log()), &version);
    assert_eq!(text(&version.stdout).trim(), "trustmount test pause");
    let shell = containerd.run(images::PAUSE, "pause-no-shell", &[], &["/bin/sh", "-c", "true"]);
    assert!(!shell.status.success(), "the pause image has a shell: {}", text(&shell.stdout));

    // As PID 1 the kernel delivers only the signals it handles: exit 0 means its handler ran.
    let status = pause_stopped_by(&containerd, "pause-sigterm", "SIGTERM");
    assert!(status.success(), "pause after SIGTERM: {status}");
    let status = pause_stopped_by(&containerd, "pause-sigint", "SIGINT");
    assert!(status.success(), "pause after SIGINT: {status}");
    assert_eq!(containerd.task_status("pause-sigterm"), None, "the stopped task is still listed");
}

/// A TLS server on the host signed by a test CA, and a directory laid out as Debian's
/// `/etc/ssl/certs` holding only that CA (the bundle, the hash link, `java/cacerts` as JKS).
struct Trusted {
    _dir: tempfile::TempDir,
    server: TlsServer,
    url: String,
    /// The `--mount` option that puts the CA directory at `/etc/ssl/certs`, read-only.
    mount: String,
}

impl Trusted {
    fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path(), name);
        let leaf = ca.issue_server(dir.path(), &format!("{name}-server"));
        let server = TlsServer::start(&leaf.cert_path, &leaf.key_path);
        let url = format!("https://127.0.0.1:{}/", server.port);
        let certs = dir.path().join("certs");
        std::fs::create_dir_all(certs.join("java")).unwrap();
        std::fs::write(certs.join("ca-certificates.crt"), &ca.pem).unwrap();
        let hash = support::certs::openssl_subject_hash(&ca.cert_path);
        std::fs::write(certs.join(format!("{hash}.0")), &ca.pem).unwrap();
        let jks = certs.join("java/cacerts");
        let keytool = program("keytool")
            .args(["-importcert", "-noprompt", "-storetype", "JKS", "-storepass", "changeit", "-alias", name])
            .arg("-keystore")
            .arg(&jks)
            .arg("-file")
            .arg(&ca.cert_path)
            .output()
            .unwrap();
        assert_success("keytool -importcert", &keytool);
        let mount = format!("type=bind,src={},dst=/etc/ssl/certs,options=rbind:ro", certs.display());
        Self { _dir: dir, server, url, mount }
    }

    /// `ctr run` options: the host's network, and the CA at `/etc/ssl/certs` when `with_ca`.
    fn options(&self, with_ca: bool) -> Vec<&str> {
        let mut options = vec!["--net-host"];
        if with_ca {
            options.extend(["--mount", self.mount.as_str()]);
        }
        options
    }
}

/// Runs `args` in the Debian test image and returns (exit code, stdout, stderr).
fn in_debian(containerd: &Containerd, id: &str, options: &[&str], args: &[&str]) -> (i32, String, String) {
    in_image(containerd, images::DEBIAN_TEST, id, options, args)
}

fn in_image(containerd: &Containerd, image: &str, id: &str, options: &[&str], args: &[&str]) -> (i32, String, String) {
    let out = containerd.run(image, id, options, args);
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_debian_test_image_has_openssl_curl_python3_and_trusts_no_ca_until_one_is_mounted() {
    let debian = images::debian_test();
    assert_eq!(debian.reference, images::DEBIAN_TEST);
    let containerd = Containerd::start();
    containerd.import(debian);

    let (code, openssl, err) = in_debian(&containerd, "debian-openssl", &[], &["openssl", "version"]);
    assert_eq!(code, 0, "openssl version: {openssl}{err}\n{}", containerd.log());
    assert!(openssl.starts_with("OpenSSL 3."), "openssl version: {openssl}");
    let (code, curl, err) = in_debian(&containerd, "debian-curl", &[], &["curl", "--version"]);
    assert_eq!(code, 0, "curl --version: {curl}{err}");
    assert!(curl.starts_with("curl ") && curl.contains("OpenSSL/3."), "curl --version: {curl}");
    let (code, python, err) = in_debian(
        &containerd,
        "debian-python",
        &[],
        &["python3", "-c", "import ssl, sys; print(sys.version_info[0], ssl.OPENSSL_VERSION)"],
    );
    assert_eq!(code, 0, "python3: {python}{err}");
    assert!(python.starts_with("3 OpenSSL 3."), "python3: {python}");

    // No CA of its own: no package, nothing in /etc/ssl/certs, no bundle anywhere OpenSSL looks.
    let (code, out, err) = in_debian(
        &containerd,
        "debian-no-ca",
        &[],
        &[
            "/bin/sh",
            "-c",
            "if dpkg-query -W -f '${Status}' ca-certificates 2>/dev/null | grep -q 'install ok installed'; then echo installed; fi; \
             ls -A /etc/ssl/certs; for f in /usr/lib/ssl/cert.pem /etc/ssl/cert.pem; do [ -e $f ] && echo $f; done; \
             find / -xdev -name '*.crt' -path '*ssl*' 2>/dev/null; true",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "", "the test image has a CA store or the ca-certificates package");

    // A server on the host, signed by a test CA, fetched over the host's network: refused with
    // nothing mounted; trusted once the CA is mounted where Debian keeps its store.
    let tls = Trusted::new("node-images");
    let url = tls.url.as_str();
    let untrusted = tls.options(false);
    let (code, _, err) =
        in_debian(&containerd, "debian-curl-untrusted", &untrusted, &["curl", "-sS", "-o", "/dev/null", url]);
    // 77: the CA file is missing (Debian's curl names /etc/ssl/certs/ca-certificates.crt); 60:
    // the chain does not verify. Either way not a connection error (7) or a success.
    assert!(code == 77 || code == 60, "curl without a CA exited {code}: {err}");
    let urllib = format!("import urllib.request; print(urllib.request.urlopen('{url}').status)");
    let (code, _, err) = in_debian(&containerd, "debian-python-untrusted", &untrusted, &["python3", "-c", &urllib]);
    assert_ne!(code, 0, "python3 fetched {url} with no CA");
    assert!(err.contains("CERTIFICATE_VERIFY_FAILED"), "python3 failed otherwise: {err}");
    // Debian's certifi is the system bundle's path, which is absent.
    let requests = format!("import requests; print(requests.get('{url}').status_code)");
    let (code, _, err) = in_debian(&containerd, "debian-requests-untrusted", &untrusted, &["python3", "-c", &requests]);
    assert_ne!(code, 0, "requests fetched {url} with no CA");
    assert!(
        err.contains("ca-certificates.crt") || err.contains("CERTIFICATE_VERIFY_FAILED"),
        "requests failed otherwise: {err}"
    );

    let trusted = tls.options(true);
    let (code, body, err) = in_debian(&containerd, "debian-curl-trusted", &trusted, &["curl", "-sS", url]);
    assert_eq!(code, 0, "curl with the CA mounted: {err}");
    assert!(!body.is_empty(), "curl read nothing from {url}");
    let (code, out, err) = in_debian(&containerd, "debian-python-trusted", &trusted, &["python3", "-c", &urllib]);
    assert_eq!((code, out.trim()), (0, "200"), "python3 with the CA mounted: {err}");
    let (code, out, err) = in_debian(&containerd, "debian-requests-trusted", &trusted, &["python3", "-c", &requests]);
    assert_eq!((code, out.trim()), (0, "200"), "requests with the CA mounted: {err}");
    let s_client = format!("openssl s_client -connect 127.0.0.1:{} -verify_return_error </dev/null", tls.server.port);
    let (code, out, err) = in_debian(&containerd, "debian-openssl-trusted", &trusted, &["/bin/sh", "-c", &s_client]);
    assert_eq!(code, 0, "openssl s_client with the CA mounted: {out}{err}");
    assert!(out.contains("Verify return code: 0 (ok)"), "openssl s_client: {out}");
}

#[test]
fn the_debian_jre_image_runs_java_and_trusts_only_a_mounted_keystore() {
    let jre = images::debian_test_jre();
    assert_eq!(jre.reference, images::DEBIAN_TEST_JRE);
    let containerd = Containerd::start();
    containerd.import(jre);
    let image = images::DEBIAN_TEST_JRE;

    let (code, out, err) = in_image(&containerd, image, "jre-version", &[], &["java", "-version"]);
    assert_eq!(code, 0, "java -version: {out}{err}\n{}", containerd.log());
    assert!(err.contains("openjdk version \"17."), "java -version: {err}");
    let (code, out, _) = in_image(
        &containerd,
        image,
        "jre-no-ca",
        &[],
        &["/bin/sh", "-c", "ls -A /etc/ssl/certs; command -v javac; true"],
    );
    assert_eq!((code, out.trim()), (0, ""), "the JRE image has a CA store or a compiler");

    // Fetch.class, compiled here (the image has no javac), run from a mounted directory.
    let classes = tempfile::tempdir().unwrap();
    let source = classes.path().join("Fetch.java");
    std::fs::write(&source, support::programs::FETCH_JAVA).unwrap();
    let javac = program("javac").args(["--release", "17", "-d"]).arg(classes.path()).arg(&source).output().unwrap();
    assert_success("javac Fetch.java", &javac);
    let classes_mount = format!("type=bind,src={},dst=/fetch,options=rbind:ro", classes.path().display());
    let tls = Trusted::new("node-images-jre");
    let fetch = ["java", "-cp", "/fetch", "Fetch", tls.url.as_str()];

    let mut untrusted = tls.options(false);
    untrusted.extend(["--mount", classes_mount.as_str()]);
    let (code, out, err) = in_image(&containerd, image, "jre-untrusted", &untrusted, &fetch);
    assert_ne!(code, 0, "java fetched {} with no truststore: {out}", tls.url);
    assert!(err.contains("trustAnchors") || err.contains("PKIX"), "java failed otherwise: {err}");

    let mut trusted = tls.options(true);
    trusted.extend(["--mount", classes_mount.as_str()]);
    let (code, out, err) = in_image(&containerd, image, "jre-trusted", &trusted, &fetch);
    assert_eq!((code, out.trim()), (0, "HTTP 200"), "java with java/cacerts mounted: {err}");
}

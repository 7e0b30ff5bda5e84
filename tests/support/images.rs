//! The container images a real node runs in the tests, built by `tests/k8s/images/build` (no
//! registry, no Docker engine) and cached in `~/.cache/trustmount/images/` keyed by their
//! inputs: the pod sandbox ([`pause`]), a Debian test image with curl, openssl, python3 and
//! requests and no CA of its own ([`debian_test`]), and the same with a headless JRE
//! ([`debian_test_jre`]), and [`debian_test`] with RHEL's `/etc/ssl/certs` symlink
//! ([`debian_test_pki`]). A test imports an archive with
//! `ctr -n k8s.io images import <archive>` and names the image by its `reference`
//! (`imagePullPolicy: Never` in a pod spec; the pause image as containerd's `sandbox_image`).
//!
//! Each image is built (or found in the cache) once per run of the test binary, on first use;
//! the build script holds a lock on the cache, so test binaries running at once (or a test
//! re-executed in a namespace) build it once too. A first build of a Debian image takes minutes
//! on 2 cores (debootstrap: README, "Developing"); the pause image about a second.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The sandbox image's name: containerd 1.6's default `sandbox_image`, so Debian's containerd
/// uses it with no setting (another containerd: set `sandbox_image` to it).
pub const PAUSE: &str = "registry.k8s.io/pause:3.6";
/// The Debian test image's name.
pub const DEBIAN_TEST: &str = "trustmount.test/debian-test:1";
/// The Debian test image with a JRE.
pub const DEBIAN_TEST_JRE: &str = "trustmount.test/debian-test-jre:1";
/// The Debian test image with /etc/ssl/certs a symlink to /etc/pki/tls/certs.
pub const DEBIAN_TEST_PKI: &str = "trustmount.test/debian-test-pki:1";
/// The driver's image as `deploy/image/build` names it, the chart's default image.
pub const DRIVER: &str = concat!("ghcr.io/trustmount/trustmount:", env!("CARGO_PKG_VERSION"));

/// A built image: its OCI archive (also a docker-save archive) and the name it imports as.
pub struct Image {
    pub archive: PathBuf,
    pub reference: &'static str,
}

/// The pod sandbox image: one static program, `/pause`, that sleeps until SIGINT or SIGTERM
/// and exits 0 (`/pause -v` prints `trustmount test pause`).
pub fn pause() -> &'static Image {
    static BUILT: OnceLock<Result<Image, String>> = OnceLock::new();
    get(&BUILT, "pause", PAUSE)
}

/// Debian 12 minbase with curl, openssl, python3, python3-requests (whose certifi reads
/// `/etc/ssl/certs/ca-certificates.crt`), git and python3-boto3, no ca-certificates and an empty `/etc/ssl/certs`: it
/// verifies no server unless a volume gives it roots. Command `/bin/bash`.
pub fn debian_test() -> &'static Image {
    static BUILT: OnceLock<Result<Image, String>> = OnceLock::new();
    get(&BUILT, "debian-test", DEBIAN_TEST)
}

/// [`debian_test`] with OpenJDK 17's headless JRE (`java`, no `javac`), whose default
/// truststore `/etc/ssl/certs/java/cacerts` is absent until a volume gives it.
pub fn debian_test_jre() -> &'static Image {
    static BUILT: OnceLock<Result<Image, String>> = OnceLock::new();
    get(&BUILT, "debian-test-jre", DEBIAN_TEST_JRE)
}

/// [`debian_test`] laid out as RHEL and Fedora are: `/etc/ssl/certs` is the symlink
/// `../pki/tls/certs` to an empty `/etc/pki/tls/certs`. Built from [`debian_test`]'s archive.
pub fn debian_test_pki() -> &'static Image {
    static BUILT: OnceLock<Result<Image, String>> = OnceLock::new();
    get(&BUILT, "debian-test-pki", DEBIAN_TEST_PKI)
}

/// The driver's own image, built from this checkout by `deploy/image/build` (a release build
/// of its own target, then the assembly) into the test target's temp directory, once per run
/// of the test binary. A test re-executed in its namespaces uses the archive its outer run
/// built just before.
pub fn driver() -> &'static Image {
    static BUILT: OnceLock<Result<Image, String>> = OnceLock::new();
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image/node-driver");
    let archive = out_dir.join(concat!("trustmount-", env!("CARGO_PKG_VERSION"), ".oci.tar"));
    BUILT
        .get_or_init(|| {
            if !(super::ns::is_inner_run() && archive.is_file()) {
                deploy_image_build(&out_dir)?;
            }
            Ok(Image { archive, reference: DRIVER })
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `deploy/image/build OUT_DIR` as a person runs it and returns the manifest digest it
/// prints. Without what `cargo test` exports to tests (the cargo home and target directory
/// stay): ring's build script watches CARGO_MANIFEST_DIR, and a change rebuilds the binary (to
/// the same bytes).
pub fn deploy_image_build(out_dir: &Path) -> Result<String, String> {
    std::fs::create_dir_all(out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
    let mut command = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/image/build"));
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|name| {
            name == "CARGO" || (name.starts_with("CARGO_") && !["CARGO_HOME", "CARGO_TARGET_DIR"].contains(&name))
        }) {
            command.env_remove(name);
        }
    }
    let built =
        command.arg(out_dir).stdin(Stdio::null()).output().map_err(|e| format!("run deploy/image/build: {e}"))?;
    if !built.status.success() {
        return Err(format!("deploy/image/build failed ({})\n{}", built.status, super::output::text(&built.stderr)));
    }
    Ok(super::output::text(&built.stdout).trim().to_owned())
}

fn get(cell: &'static OnceLock<Result<Image, String>>, image: &str, reference: &'static str) -> &'static Image {
    // A failed build is reported to every test that wants the image, not retried by each.
    cell.get_or_init(|| build(image, reference)).as_ref().unwrap_or_else(|e| panic!("{e}"))
}

fn build(image: &str, reference: &'static str) -> Result<Image, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/k8s/images/build");
    let out = Command::new(&script)
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {}: {e}", script.display()))?;
    let stderr = super::output::text(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "tests/k8s/images/build {image} failed ({}); `tests/run` installs what it needs:\n{stderr}",
            out.status
        ));
    }
    if !stderr.is_empty() {
        eprint!("{stderr}");
    }
    let printed = super::output::text(&out.stdout);
    let archive = PathBuf::from(printed.lines().last().unwrap_or_default().trim());
    if !archive.is_absolute() || !archive.is_file() {
        return Err(format!("tests/k8s/images/build {image} printed no archive: {printed:?}\n{stderr}"));
    }
    Ok(Image { archive, reference })
}

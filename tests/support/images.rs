//! The container images a real node runs in the tests, built by `tests/k8s/images/build` (no
//! registry, no Docker engine) and cached in `~/.cache/trustmount/images/` keyed by their
//! inputs: the pod sandbox ([`pause`]) and a Debian test image with curl, openssl and python3 and
//! no CA of its own ([`debian_test`]). A test imports an archive with
//! `ctr -n k8s.io images import <archive>` and names the image by its `reference`
//! (`imagePullPolicy: Never` in a pod spec; the pause image as containerd's `sandbox_image`).
//!
//! Each image is built (or found in the cache) once per run of the test binary, on first use;
//! the build script holds a lock on the cache, so test binaries running at once (or a test
//! re-executed in a namespace) build it once too. A first build of the Debian image takes about
//! three minutes on 2 cores (debootstrap); the pause image about a second.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The sandbox image's name: containerd 1.6's default `sandbox_image`, so Debian's containerd
/// uses it with no setting (another containerd: set `sandbox_image` to it).
pub const PAUSE: &str = "registry.k8s.io/pause:3.6";
/// The Debian test image's name.
pub const DEBIAN_TEST: &str = "trustmount.test/debian-test:1";

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

/// Debian 12 minbase with curl, openssl and python3, no ca-certificates and an empty
/// `/etc/ssl/certs`: it verifies no server unless a volume gives it roots. Command `/bin/bash`.
pub fn debian_test() -> &'static Image {
    static BUILT: OnceLock<Result<Image, String>> = OnceLock::new();
    get(&BUILT, "debian-test", DEBIAN_TEST)
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

//! Private mount namespaces for tests that mount.
//!
//! A test that mounts calls [`in_private_mount_namespace!`] first. The outer run re-executes
//! the same test binary, filtered to exactly that test, under `unshare --mount --propagation
//! private`, waits for it, and asserts that it passed; the inner run (marked by an environment
//! variable) does the real work. Every mount the inner run makes dies with its namespace, so
//! nothing can leak to the host even when a test fails half-way.

use std::process::Command;

const INNER_MARKER: &str = "TRUSTMOUNT_TEST_IN_MOUNT_NS";

/// Returns `true` in the inner run (go on with the test), `false` in the outer run (whose
/// job — running and checking the inner one — is then done).
#[macro_export]
macro_rules! in_private_mount_namespace {
    () => {{ $crate::support::ns::reexec_in_namespaces($crate::this_test_name!(), &["--mount"]) }};
}

/// The calling test's name as libtest filters it (`slow::node::the_test`).
#[macro_export]
macro_rules! this_test_name {
    () => {{
        fn marker() {}
        let full = std::any::type_name_of_val(&marker);
        // `#[tokio::test]` bodies are closures: `…::test_fn::{{closure}}::marker`.
        let test_fn = full.strip_suffix("::marker").expect("type name ends with ::marker");
        let test_fn = test_fn.trim_end_matches("::{{closure}}");
        // Test names as libtest sees them leave out the crate name.
        test_fn.split_once("::").map_or(test_fn, |(_, rest)| rest)
    }};
}

/// [`in_private_mount_namespace!`] with a private network namespace too, for a test that runs a
/// node (`node.rs`): its control plane, kubelet, containerd and pods have addresses of their own
/// and reach nothing outside.
#[macro_export]
macro_rules! in_node_namespaces {
    () => {{ $crate::support::ns::reexec_in_namespaces($crate::this_test_name!(), &["--mount", "--net"]) }};
}

/// Whether this process is the inner run of a re-executed test (inside its namespaces).
pub fn is_inner_run() -> bool {
    std::env::var_os(INNER_MARKER).is_some()
}

/// Re-executes `test_name` under `unshare` with `namespaces` (`--mount`, `--net`), mounts
/// private; true in the inner run.
pub fn reexec_in_namespaces(test_name: &str, namespaces: &[&str]) -> bool {
    if is_inner_run() {
        return true;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let mut command = Command::new("unshare");
    // The inner run uses the outer run's control plane (if it started one) instead of its own;
    // not from another network namespace, where its address is not reachable.
    if let Some(plane) = super::control_plane::ControlPlane::running().filter(|_| !namespaces.contains(&"--net")) {
        command.env(super::control_plane::ATTACH_ENV, &plane.dir);
    }
    let output = command
        .args(namespaces)
        .args(["--propagation", "private", "--"])
        .arg(exe)
        // `--include-ignored`: an ignored test run with `--ignored` is still found inside.
        .args([test_name, "--exact", "--include-ignored", "--nocapture", "--test-threads=1"])
        .env(INNER_MARKER, "1")
        .output()
        .unwrap_or_else(|e| super::tools::spawn_failed("unshare".as_ref(), e));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{test_name} failed inside its mount namespace ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    // What the inner run reported (figures a test prints): shown with --nocapture, like the
    // outer run's own output.
    eprint!("{stderr}");
    // Guard against a filter typo silently running nothing.
    assert!(stdout.contains("1 passed"), "{test_name} did not run inside its mount namespace\n{stdout}");
    false
}

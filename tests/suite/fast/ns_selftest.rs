//! The mount-namespace harness itself: a mount made inside is invisible outside.

use std::path::PathBuf;

use crate::in_private_mount_namespace;

#[test]
fn mount_inside_namespace_does_not_reach_the_host() {
    // A fixed path both runs share (each run's tempdir would differ).
    let mount_point = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ns-selftest");
    std::fs::create_dir_all(&mount_point).unwrap();
    let file = mount_point.join("written-inside");
    if in_private_mount_namespace!() {
        let status =
            std::process::Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&mount_point).status().unwrap();
        assert!(status.success());
        std::fs::write(&file, b"x").unwrap();
        assert!(file.exists());
        return;
    }
    assert!(!file.exists(), "the inner run's tmpfs leaked out of its namespace");
}

#[tokio::test]
async fn async_tests_find_themselves_inside_the_namespace() {
    if in_private_mount_namespace!() {
        // Reaching here in the inner run is the point: the outer run asserts "1 passed".
        tokio::task::yield_now().await;
    }
}

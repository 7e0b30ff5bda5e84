//! The mount-namespace harness itself: a mount made inside is invisible outside.
mod support;

use std::path::PathBuf;

#[test]
fn mount_inside_namespace_does_not_reach_the_host() {
    // A fixed path both runs share (each run's tempdir would differ).
    let mount_point = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ns-selftest");
    std::fs::create_dir_all(&mount_point).unwrap();
    let file = mount_point.join("written-inside");
    if in_private_mount_namespace!() {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&mount_point)
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::write(&file, b"x").unwrap();
        assert!(file.exists());
        return;
    }
    assert!(!file.exists(), "the inner run's tmpfs leaked out of its namespace");
}

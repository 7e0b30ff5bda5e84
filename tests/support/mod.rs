//! Shared test support. Each test binary includes it with `mod support;`.
#![allow(dead_code)]

pub mod certs;
pub mod client;
pub mod control_plane;
pub mod crds;
pub mod daemon;
pub mod deploy;
pub mod fsutil;
pub mod measure;
pub mod ns;
pub mod objects;
pub mod output;
pub mod programs;
pub mod tls;
pub mod tools;

/// Runs a future to completion on a fresh multi-threaded runtime. Tests that mount are plain
/// `#[test]` functions (so the namespace macro sees their exact name) and call this after
/// `in_private_mount_namespace!()`.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// Polls `check` until it holds, panicking with `what` after `limit`. The limit bounds a hang;
/// it is no timed assertion (speed is for the benches).
pub async fn eventually(what: &str, limit: std::time::Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

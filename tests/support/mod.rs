//! Shared test support. The one test binary (tests/suite/main.rs) includes it with `#[path]` and
//! uses all of it; each bench includes it the same way and uses a part (hence the allowance at
//! each bench's include site).

pub mod certs;
pub mod client;
pub mod containerd;
pub mod control_plane;
pub mod crds;
pub mod daemon;
pub mod deploy;
pub mod fsutil;
pub mod images;
// Only the benches measure (each its part).
#[allow(dead_code)]
pub mod measure;
pub mod node;
pub mod ns;
pub mod objects;
pub mod output;
pub mod programs;
pub mod tls;
pub mod tools;
pub mod wait;
pub mod world;

pub use wait::{eventually, eventually_blocking, poll_until, poll_until_blocking};

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

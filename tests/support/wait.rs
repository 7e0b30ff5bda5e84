//! Waiting for something to happen: the one polling loop of the suite, async and blocking.
//!
//! A limit bounds a hang; it is no timed assertion (speed is for the benches). `eventually`
//! panics with what was awaited; `poll_until` gives back the last attempt's reason, for a caller
//! that must clean up or add a log before it fails.

use std::time::{Duration, Instant};

/// How often a wait asks again, unless its caller says otherwise.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `check` until it holds, panicking with `what` after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let result = poll_until(limit, POLL, async || if check().await { Ok(()) } else { Err(()) }).await;
    assert!(result.is_ok(), "not within {limit:?}: {what}");
}

/// [`eventually`] for code outside a runtime.
pub fn eventually_blocking(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let result = poll_until_blocking(limit, POLL, || if check() { Ok(()) } else { Err(()) });
    assert!(result.is_ok(), "not within {limit:?}: {what}");
}

/// Polls `attempt` every `every` until it gives `Ok`, and returns that; after `limit`, returns
/// the last attempt's `Err` (why it was not there yet). An attempt may itself panic to fail
/// early (a process that exited will never answer).
pub async fn poll_until<T, E>(
    limit: Duration,
    every: Duration,
    mut attempt: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + limit;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(why) if Instant::now() >= deadline => return Err(why),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// [`poll_until`] for code outside a runtime.
pub fn poll_until_blocking<T, E>(
    limit: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + limit;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(why) if Instant::now() >= deadline => return Err(why),
            Err(_) => std::thread::sleep(every),
        }
    }
}

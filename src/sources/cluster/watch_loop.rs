//! The one watch-and-cache loop every watched kind runs, in the kube-rs manner: watch → parse →
//! store → diff → typed change. A kind says only what differs ([`Watched`]): how it reads one
//! object, and which [`Change`]s a new state means. What the loop keeps for every kind alike:
//!
//! - **Whole re-lists.** `Init`…`InitDone` is buffered and applied at once (what was not
//!   re-listed is gone), so a reader never sees a half-applied re-list.
//! - **The first list is no change.** No volume was rendered from this cache yet.
//! - **An equal state is not stored** and sends nothing.
//! - **The last error** of the watch, cleared by its next good event, for the publish that gives
//!   up waiting.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use kube::Resource as _;
use kube::runtime::watcher;
use tokio::sync::{mpsc, watch};

use super::{Change, LastError, api_error};
use crate::fair_rate::{FairRate, Rates};

/// The objects of one watch by name, as a kind keeps them.
pub type Objects<T> = BTreeMap<String, T>;

/// A cache's state: `None` until its first list completed.
pub type Synced<T> = Option<Arc<Objects<T>>>;

/// What a watched kind tells the loop.
pub trait Watched: Send + 'static {
    /// The API object watched.
    type Object: kube::Resource + Send + 'static;
    /// One object as the cache keeps it: parsed once, when the watch delivers it.
    type Item: Clone + PartialEq + Send + Sync + 'static;

    /// For log lines: `ConfigMap`.
    const WHAT: &'static str;

    /// One object's name and what the cache keeps of it; `None` skips it.
    fn parse(&mut self, object: Self::Object) -> Option<(String, Self::Item)>;

    /// The changes from `before` to `after` (two different synced states) that can change a
    /// bundle.
    fn changes(&self, before: &Objects<Self::Item>, after: &Objects<Self::Item>) -> Vec<Change>;
}

/// The names whose object differs between two states (appeared, vanished or changed), in
/// name order: what a watch of many objects diffs.
pub fn differing<'a, T: PartialEq>(before: &'a Objects<T>, after: &'a Objects<T>) -> Vec<&'a String> {
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names.into_iter().filter(|name| before.get(*name) != after.get(*name)).collect()
}

/// Where one watch writes.
pub struct Writer<T> {
    pub state: watch::Sender<Synced<T>>,
    pub changes: mpsc::UnboundedSender<Change>,
    pub last_error: LastError,
}

/// Parses that may run at once, across every watch: certificate parsing (signature checks
/// included) is CPU work a tenant controls, so it runs on the blocking pool, never on the
/// async workers that answer the kubelet, and at most this many at a time, so a burst of
/// heavy objects leaves cores for everything else.
const CONCURRENT_PARSES: usize = 2;
static PARSES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CONCURRENT_PARSES);

/// A turn to parse, shared by every watch and the Secrets a publish reads.
pub async fn parse_permit() -> Option<tokio::sync::SemaphorePermit<'static>> {
    PARSES.acquire().await.ok()
}

/// New watches (each a list, then a watch) per namespace: 20 a second after a burst of 64, one
/// volume naming as many sources as it may. A namespace starting hundreds waits at its own rate;
/// another namespace's first watch starts at once.
const STARTS_PER_NAMESPACE: (f64, f64) = (20.0 * 60.0, 64.0);
/// New watches of the whole driver: 50 a second after a burst of 200 (the kubelet's own client
/// is limited to 50 requests a second), so a node's restart does not list everything at once.
const STARTS_PER_DRIVER: (f64, f64) = (50.0 * 60.0, 200.0);

static STARTS: std::sync::LazyLock<std::sync::Mutex<FairRate>> = std::sync::LazyLock::new(|| {
    let rates = Rates {
        namespace_per_minute: STARTS_PER_NAMESPACE.0,
        namespace_burst: STARTS_PER_NAMESPACE.1,
        driver_per_minute: STARTS_PER_DRIVER.0,
        driver_burst: STARTS_PER_DRIVER.1,
    };
    std::sync::Mutex::new(FairRate::new(rates, std::time::Instant::now()))
});

/// Waits until a new watch of an object in `namespace` may start (client-side rate limits,
/// fair per namespace).
pub async fn start_permit(namespace: &str) {
    loop {
        let wait = {
            let mut starts = STARTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = std::time::Instant::now();
            if starts.admit(namespace, now).is_ok() {
                if starts.namespaces_remembered() > 1024 {
                    starts.forget_full(now);
                }
                return;
            }
            starts.wait(namespace, now)
        };
        tokio::time::sleep(wait.max(std::time::Duration::from_millis(1))).await;
    }
}

/// `kind.parse(object)` on the blocking pool, bounded by [`PARSES`]. `None` in `kind` after a
/// parse that panicked (the watch then ends, as a panic on the loop's own task would).
async fn parse_off_runtime<W: Watched>(kind: &mut Option<W>, object: W::Object) -> Option<(String, W::Item)> {
    let _permit = parse_permit().await?;
    let mut taken = kind.take()?;
    match tokio::task::spawn_blocking(move || {
        let parsed = taken.parse(object);
        (taken, parsed)
    })
    .await
    {
        Ok((returned, parsed)) => {
            *kind = Some(returned);
            parsed
        }
        Err(error) => {
            tracing::error!(%error, "parsing a {} failed; its watch ends", W::WHAT);
            None
        }
    }
}

/// The one writer of a cache, for the life of `stream` (a watcher with backoff: forever).
pub async fn run<W: Watched>(
    kind: W,
    stream: impl futures::Stream<Item = watcher::Result<watcher::Event<W::Object>>>,
    writer: Writer<W::Item>,
) {
    let Writer { state, changes, last_error } = writer;
    let mut kind = Some(kind);
    futures::pin_mut!(stream);
    let mut relisting: Option<Objects<W::Item>> = None;
    while let Some(event) = stream.next().await {
        if kind.is_none() {
            return;
        }
        if event.is_ok() {
            last_error.clear();
        }
        let current = state.borrow().clone();
        let next = match event {
            Ok(watcher::Event::Init) => {
                relisting = Some(Objects::new());
                continue;
            }
            Ok(watcher::Event::InitApply(object)) => {
                let parsed = parse_off_runtime(&mut kind, object).await;
                if let (Some(buffer), Some((name, item))) = (relisting.as_mut(), parsed) {
                    buffer.insert(name, item);
                }
                continue;
            }
            Ok(watcher::Event::InitDone) => relisting.take().unwrap_or_default(),
            Ok(watcher::Event::Apply(object)) => {
                let Some((name, item)) = parse_off_runtime(&mut kind, object).await else { continue };
                let mut next = current.as_deref().cloned().unwrap_or_default();
                next.insert(name, item);
                next
            }
            Ok(watcher::Event::Delete(object)) => {
                let Some(name) = object.meta().name.clone() else { continue };
                let mut next = current.as_deref().cloned().unwrap_or_default();
                next.remove(&name);
                next
            }
            Err(error) => {
                let error = api_error::describe_watch(&error);
                tracing::warn!(%error, "{} watch failed; retrying with backoff", W::WHAT);
                last_error.set(error);
                continue;
            }
        };
        let Some(watched) = kind.as_ref() else { return };
        let found = match current {
            // The first list: no volume was rendered from this cache yet.
            None => Vec::new(),
            Some(before) if *before == next => continue,
            Some(before) => watched.changes(&before, &next),
        };
        tracing::debug!(objects = next.len(), changes = found.len(), "{} cached", W::WHAT);
        state.send_replace(Some(Arc::new(next)));
        for change in found {
            let _ = changes.send(change);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Namespace;

    use super::*;

    /// A throwaway kind: each namespace with its `trustmount.test/ca` annotation, one change
    /// for any difference.
    struct Annotated;

    impl Watched for Annotated {
        type Object = Namespace;
        type Item = Option<String>;

        const WHAT: &'static str = "Namespace";

        fn parse(&mut self, object: Namespace) -> Option<(String, Option<String>)> {
            let ca = object.metadata.annotations.as_ref().and_then(|a| a.get("trustmount.test/ca").cloned());
            Some((object.metadata.name?, ca))
        }

        fn changes(&self, _: &Objects<Option<String>>, _: &Objects<Option<String>>) -> Vec<Change> {
            vec![Change::ClusterSourcesAllowed]
        }
    }

    fn namespace(name: &str, ca: &str) -> Namespace {
        let mut object = Namespace::default();
        object.metadata.name = Some(name.to_owned());
        object.metadata.annotations = Some([("trustmount.test/ca".to_owned(), ca.to_owned())].into());
        object
    }

    async fn replay(
        events: Vec<watcher::Result<watcher::Event<Namespace>>>,
    ) -> (Synced<Option<String>>, usize, LastError) {
        let (state, _) = watch::channel(None);
        let (changes, mut received) = mpsc::unbounded_channel();
        let last_error = LastError::default();
        let writer = Writer { state: state.clone(), changes, last_error: last_error.clone() };
        run(Annotated, futures::stream::iter(events), writer).await;
        let mut count = 0;
        while received.try_recv().is_ok() {
            count += 1;
        }
        (state.borrow().clone(), count, last_error)
    }

    #[tokio::test]
    async fn an_error_is_kept_until_the_next_good_event_and_nothing_is_synced_before_a_list() {
        let (state, changes, last_error) = replay(vec![Err(watcher::Error::NoResourceVersion)]).await;
        assert!(state.is_none() && changes == 0);
        assert!(last_error.get().is_some(), "the publish that gives up waiting says why");
        let (state, _, last_error) = replay(vec![
            Err(watcher::Error::NoResourceVersion),
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitDone),
        ])
        .await;
        assert!(last_error.get().is_none(), "cleared by the next good event");
        assert_eq!(state.as_deref(), Some(&Objects::new()), "an empty list is synced");
    }

    #[tokio::test]
    async fn a_half_done_relist_is_never_seen_and_only_a_different_state_is_a_change() {
        let (state, changes, _) = replay(vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(namespace("a", "one"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(namespace("a", "one"))),
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(namespace("b", "two"))),
        ])
        .await;
        assert_eq!(changes, 0, "the first list and an equal apply change nothing");
        let state = state.expect("synced");
        assert_eq!(state.keys().collect::<Vec<_>>(), ["a"], "the re-list never reached InitDone");
        let (_, changes, _) = replay(vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(namespace("a", "one"))),
            Ok(watcher::Event::Delete(namespace("a", "one"))),
        ])
        .await;
        assert_eq!(changes, 2, "one appeared, then vanished");
    }
}

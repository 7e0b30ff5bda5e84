//! Which connection a long-lived watch rides. Every watch of the driver multiplexes onto
//! HTTP/2 connections, as the kubelet's do, instead of a TCP + TLS connection each. A server
//! caps the streams one connection carries: kube-apiserver announces 100 unless
//! `--http2-max-streams-per-connection` says otherwise (k8s.io/apiserver, secure_serving.go).
//! Go's client dials again at that cap; hyper queues the request instead, and a watch queued
//! behind 100 open ones would never sync. So a connection takes at most
//! [`WATCHES_PER_CONNECTION`] watches, leaving streams for lists and one-off requests, and the
//! next watch opens another connection.

use std::sync::{Arc, Mutex, PoisonError};

/// Watches one connection carries: under kube-apiserver's default of 100 streams, with ten
/// left for the lists, discovery and Events in flight beside them.
pub const WATCHES_PER_CONNECTION: usize = 90;

/// Opens a client on a connection of its own (one more HTTP/2 connection when it is used).
pub type Open = Arc<dyn Fn() -> Result<kube::Client, String> + Send + Sync>;

/// Hands each watch a client whose connection has a stream for it.
#[derive(Clone)]
pub struct Connections {
    shared: Arc<Mutex<Vec<Arc<Connection>>>>,
    /// `None`: every watch stays on the first client (a test's, or one through a proxy).
    open: Option<Open>,
    per_connection: usize,
}

struct Connection {
    client: kube::Client,
    watches: std::sync::atomic::AtomicUsize,
}

/// One watch's place on a connection, given back when dropped (the watch's task ends).
pub struct Lease {
    connection: Arc<Connection>,
}

impl Connections {
    /// Watches start on `first` (the driver's own client, so its connection is shared too);
    /// `open` makes the next ones.
    pub fn new(first: kube::Client, open: Option<Open>) -> Self {
        Self::with_capacity(first, open, WATCHES_PER_CONNECTION)
    }

    fn with_capacity(first: kube::Client, open: Option<Open>, per_connection: usize) -> Self {
        let first = Arc::new(Connection { client: first, watches: 0.into() });
        Self { shared: Arc::new(Mutex::new(vec![first])), open, per_connection: per_connection.max(1) }
    }

    /// A place for one more watch: the first connection with a free stream, else a new one.
    /// Connections left without watches are dropped (hyper closes them once idle), except the
    /// first.
    pub fn lease(&self) -> Lease {
        use std::sync::atomic::Ordering::SeqCst;
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let mut index = 0;
        shared.retain(|connection| {
            index += 1;
            index == 1 || connection.watches.load(SeqCst) > 0
        });
        let free = shared.iter().find(|connection| connection.watches.load(SeqCst) < self.per_connection).cloned();
        let connection = match (free, &self.open) {
            (Some(connection), _) => connection,
            (None, Some(open)) => match open() {
                Ok(client) => {
                    let connection = Arc::new(Connection { client, watches: 0.into() });
                    shared.push(connection.clone());
                    tracing::debug!(connections = shared.len(), "one more API server connection for watches");
                    connection
                }
                Err(reason) => {
                    tracing::warn!(%reason, "no new API server connection; the watch shares a full one");
                    least_loaded(&shared)
                }
            },
            (None, None) => least_loaded(&shared),
        };
        connection.watches.fetch_add(1, SeqCst);
        Lease { connection }
    }

    /// Connections carrying watches now (the first counts always).
    pub fn count(&self) -> usize {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

fn least_loaded(shared: &[Arc<Connection>]) -> Arc<Connection> {
    use std::sync::atomic::Ordering::SeqCst;
    shared.iter().min_by_key(|connection| connection.watches.load(SeqCst)).cloned().expect("the first stays")
}

impl Lease {
    pub fn client(&self) -> kube::Client {
        self.connection.client.clone()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.connection.watches.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").field("count", &self.count()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    fn client() -> kube::Client {
        let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    #[tokio::test]
    async fn watches_fill_a_connection_before_the_next_opens_and_empty_ones_close() {
        let opened = Arc::new(AtomicUsize::new(0));
        let counter = opened.clone();
        let open: Open = Arc::new(move || {
            counter.fetch_add(1, SeqCst);
            Ok(client())
        });
        let connections = Connections::with_capacity(client(), Some(open), 2);
        let mut leases: Vec<Lease> = (0..5).map(|_| connections.lease()).collect();
        assert_eq!((connections.count(), opened.load(SeqCst)), (3, 2), "2 + 2 + 1 watches");

        // The second connection's two watches end: it closes at the next lease, which goes to
        // the first free place (the first connection had one freed too).
        leases.remove(0);
        leases.remove(1);
        leases.remove(1);
        let _again = connections.lease();
        assert_eq!(connections.count(), 2, "the emptied connection dropped, the third kept");
        assert_eq!(opened.load(SeqCst), 2, "a free place on the first: nothing opened");
    }

    #[tokio::test]
    async fn without_a_way_to_open_more_watches_share_the_least_loaded() {
        let connections = Connections::with_capacity(client(), None, 1);
        let _leases: Vec<Lease> = (0..3).map(|_| connections.lease()).collect();
        assert_eq!(connections.count(), 1);
        let failing: Open = Arc::new(|| Err("no TLS config".to_owned()));
        let connections = Connections::with_capacity(client(), Some(failing), 1);
        let _leases: Vec<Lease> = (0..3).map(|_| connections.lease()).collect();
        assert_eq!(connections.count(), 1, "a failed open shares instead of failing the watch");
    }
}

//! The driver's Kubernetes clients: which mode it runs in (a kubeconfig, in-cluster, or
//! standalone) and the clients that mode gives — the driver's own, and one without any
//! identity for the reads made as a pod.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::connections::{Connections, Open, WATCHES_PER_CONNECTION};
use super::{Error, Result};

/// Where the driver's cluster access comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Local sources only: `--standalone`, or no cluster configuration at all.
    Standalone { reason: &'static str },
    /// `--kubeconfig PATH` (or `KUBECONFIG`).
    Kubeconfig(PathBuf),
    /// The pod's ServiceAccount: `KUBERNETES_SERVICE_HOST` is set.
    InCluster,
}

impl Mode {
    /// `--standalone` wins; then a kubeconfig; then in-cluster config when running in a pod.
    pub fn choose(standalone: bool, kubeconfig: Option<PathBuf>, in_pod: bool) -> Self {
        match (standalone, kubeconfig) {
            (true, _) => Self::Standalone { reason: "--standalone" },
            (false, Some(path)) => Self::Kubeconfig(path),
            (false, None) if in_pod => Self::InCluster,
            (false, None) => Self::Standalone { reason: "no --kubeconfig and not running in a pod" },
        }
    }

    /// The clients this mode gives; `None` when standalone. Reads files only (no request).
    /// Every request they send says `trustmount/<version> (<node>)`, so an API server's audit
    /// log and API Priority and Fairness tell which driver, on which node, sent it.
    ///
    /// # Errors
    /// An unreadable or invalid kubeconfig, or in-cluster files missing.
    pub async fn client(&self, node: &str) -> Result<Option<Clients>> {
        let config = match self {
            Self::Standalone { .. } => return Ok(None),
            Self::Kubeconfig(path) => {
                let config_error =
                    |reason: String| Error::Config { origin: format!("kubeconfig {}", path.display()), reason };
                let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| config_error(e.to_string()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                    .await
                    .map_err(|e| config_error(e.to_string()))?
            }
            Self::InCluster => kube::Config::incluster().map_err(|e| Error::Config {
                origin: "the pod's in-cluster config".to_owned(),
                reason: e.to_string(),
            })?,
        };
        let mut config = config;
        config.headers.push((http::header::USER_AGENT, user_agent(node)));
        let config_error = |reason: String| Error::Config { origin: "the client configuration".to_owned(), reason };
        let as_pod = build(without_identity(&config)).map_err(config_error)?;
        let driver = build(config.clone()).map_err(config_error)?;
        // Through a proxy kube's own builder speaks HTTP/1: a connection per watch either way.
        let open: Option<Open> = config.proxy_url.is_none().then(|| Arc::new(move || build(config.clone())) as Open);
        let watches = Connections::new(driver.clone(), open);
        Ok(Some(Clients { driver, as_pod, watches }))
    }
}

/// The clients of a connected driver.
#[derive(Clone)]
pub struct Clients {
    /// The driver's own identity: ClusterTrustBundles, its CSIDriver, Events, discovery.
    pub driver: kube::Client,
    /// The same API server (URL, CA, TLS name, proxy, timeouts) with no identity at all: no
    /// token, token file, client certificate, exec plugin, basic auth, impersonation or extra
    /// headers. Each request adds the pod's own token; one without would be anonymous, never
    /// the driver.
    pub as_pod: kube::Client,
    /// The driver's identity for the many single-object watches: `driver`'s connection first,
    /// then more as each fills ([`Connections`]).
    pub watches: Connections,
}

impl Clients {
    /// Every request on `driver`'s own connections (a test's clients).
    pub fn single(driver: kube::Client, as_pod: kube::Client) -> Self {
        let watches = Connections::new(driver.clone(), None);
        Self { driver, as_pod, watches }
    }
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

/// kube's default client stack (base URI, retry, auth, extra headers, timeouts, rustls), on a
/// connector of our own for two reasons. TCP_NODELAY: kube 5 leaves Nagle's algorithm on, and a
/// new connection then held its first request ~40 ms for the API server's delayed ACK
/// (kube-rs/kube#2056; benches/cluster.rs, `first`). And ALPN `h2`: kube offers HTTP/1.1 only,
/// where every watch holds a TCP + TLS connection of its own (~55 KiB each); over HTTP/2 they
/// share one. A config with a proxy keeps kube's own builder, which knows proxies.
fn build(config: kube::Config) -> Result<kube::Client, String> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use kube::client::ConfigExt;

    if config.proxy_url.is_some() {
        return kube::Client::try_from(config).map_err(|e| e.to_string());
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let tls = config.rustls_client_config().map_err(|e| e.to_string())?;
    let mut https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = name.clone().try_into().map_err(|e| format!("tls-server-name {name:?}: {e}"))?;
        https = https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let https = https.enable_http1().enable_http2().wrap_connector(http);
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            // What client-go's transport does: a ping after 30 s of silence, the connection
            // closed (and every watch on it resumed elsewhere) when 15 s pass without an answer.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(15))
            // A watch whose reader waits (its object's parse queued) holds at most its stream's
            // window; the connection's fits every stream's, so a slow one never stalls the rest.
            .http2_initial_stream_window_size(STREAM_WINDOW)
            .http2_initial_connection_window_size(STREAM_WINDOW.saturating_mul(WATCHES_PER_CONNECTION as u32 + 10))
            .build(connector);
    let retry =
        config.default_retry.then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer().map_err(|e| e.to_string())?)
        .layer(config.extra_headers_layer().map_err(|e| e.to_string())?)
        .map_err(tower::BoxError::from)
        .service(client);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// One HTTP/2 stream's receive window: what a watch may have in flight unread.
const STREAM_WINDOW: u32 = 1 << 20;

/// `trustmount/<version> (<node>)`; a node name that cannot be a header value (never one
/// Kubernetes gives) is left out.
fn user_agent(node: &str) -> http::HeaderValue {
    let version = env!("CARGO_PKG_VERSION");
    http::HeaderValue::from_str(&format!("trustmount/{version} ({node})"))
        .unwrap_or_else(|_| http::HeaderValue::from_str(&format!("trustmount/{version}")).expect("ASCII"))
}

/// Keeps the User-Agent: it says which driver asks, not as whom.
fn without_identity(config: &kube::Config) -> kube::Config {
    let mut config = config.clone();
    config.auth_info = kube::config::AuthInfo::default();
    config.headers.retain(|(name, _)| *name == http::header::USER_AGENT);
    config
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Standalone { .. } => f.write_str("standalone"),
            Self::Kubeconfig(_) => f.write_str("kubeconfig"),
            Self::InCluster => f.write_str("in-cluster"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_for_pod_reads_keeps_the_server_and_drops_every_credential() {
        let mut config = kube::Config::new("https://api.example:6443".parse().unwrap());
        config.root_cert = Some(vec![b"ca".to_vec()]);
        config.tls_server_name = Some("api".to_owned());
        config.auth_info = kube::config::AuthInfo {
            token: Some("driver".to_owned().into()),
            token_file: Some("/var/run/secrets/token".to_owned()),
            client_certificate_data: Some("cert".to_owned()),
            client_key_data: Some("key".to_owned().into()),
            impersonate: Some("admin".to_owned()),
            ..Default::default()
        };
        config.headers = vec![
            (http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer driver")),
            (http::header::USER_AGENT, user_agent("node-1")),
        ];
        let as_pod = without_identity(&config);
        assert_eq!(as_pod.cluster_url, config.cluster_url);
        assert_eq!(as_pod.root_cert, config.root_cert);
        assert_eq!(as_pod.tls_server_name, config.tls_server_name);
        let none = serde_json::to_value(kube::config::AuthInfo::default()).unwrap();
        assert_eq!(serde_json::to_value(&as_pod.auth_info).unwrap(), none);
        assert_eq!(as_pod.headers, [(http::header::USER_AGENT, user_agent("node-1"))], "only the User-Agent");
        assert_eq!(user_agent("node-1"), format!("trustmount/{} (node-1)", env!("CARGO_PKG_VERSION")));
        assert_eq!(user_agent("bad\nnode"), format!("trustmount/{}", env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn standalone_wins_then_kubeconfig_then_in_cluster() {
        let path = PathBuf::from("/k");
        assert!(matches!(Mode::choose(true, Some(path.clone()), true), Mode::Standalone { .. }));
        assert_eq!(Mode::choose(false, Some(path.clone()), true), Mode::Kubeconfig(path));
        assert_eq!(Mode::choose(false, None, true), Mode::InCluster);
        assert!(matches!(Mode::choose(false, None, false), Mode::Standalone { .. }));
    }
}

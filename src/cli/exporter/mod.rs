//! The driver's HTTP endpoints: `/metrics` and `/healthz` ([`Health`]), HTTP/1.1 on a TCP
//! listener (hyper), one listener or one each. Metrics are the Prometheus text format
//! (version 0.0.4), each scrape rendered on a blocking thread (its gauges make syscalls). It
//! reads what `trustmount::metrics` recorded and, at each scrape, the store's and the sources'
//! gauges ([`state`]); it stands on the top floor beside `serve`, so that nothing below it
//! imports what it reads.

mod state;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::Instrument;

use trustmount::clock::Clock;
use trustmount::metrics::Metrics;
use trustmount::sources::Sources;
use trustmount::volume::Store;

use state::State;

use super::health::Health;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen for {what} on {addr}: {source}; give {flag} a free address")]
    Bind {
        what: &'static str,
        flag: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A client that opens a connection and sends nothing must not hold it forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one listener serves at once; more are closed on accept. Whoever can reach the
/// port (every pod, when metrics are exposed) must not hold the driver's file descriptors.
const MAX_CONNECTIONS: usize = 16;
/// Scrapes rendered at once (each walks the store and the sources); more answer 503.
const MAX_CONCURRENT_SCRAPES: usize = 2;
static SCRAPES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT_SCRAPES);

/// Everything a scrape shows: the recorded families and the store's and sources' gauges.
#[derive(Clone, Debug)]
pub struct Exporter {
    registry: Arc<Registry>,
}

impl Exporter {
    /// The exporter of `metrics`, with gauges read from `store` and `sources` at each scrape
    /// (certificate expiry judged at `clock`'s time).
    pub fn new(metrics: &Metrics, store: Store, sources: Arc<Sources>, clock: Clock) -> Self {
        let mut registry = metrics.registry();
        registry.register_collector(Box::new(State { store, sources, clock }));
        Self { registry: Arc::new(registry) }
    }

    /// The exposition text. Blocking (see the module doc).
    ///
    /// # Errors
    /// Only a formatting failure, which writing to a `String` does not produce.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// What one listener answers.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    /// `/metrics`.
    pub metrics: Option<Exporter>,
    /// `/healthz`.
    pub health: Option<Health>,
}

impl Routes {
    fn what(&self) -> (&'static str, &'static str) {
        match (&self.metrics, &self.health) {
            (Some(_), None) => ("metrics", "--metrics-addr (e.g. 0.0.0.0:9808)"),
            (None, Some(_)) => ("the health check", "--health-addr (e.g. 0.0.0.0:9809)"),
            _ => ("metrics and the health check", "--metrics-addr and --health-addr"),
        }
    }

    fn paths(&self) -> &'static str {
        match (&self.metrics, &self.health) {
            (Some(_), None) => "/metrics",
            (None, Some(_)) => "/healthz",
            _ => "/metrics and /healthz",
        }
    }
}

/// Listens on `addr` and serves `routes` until the runtime stops. Returns the bound address
/// (port 0 picks a free one) once listening; it is also logged.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(addr: SocketAddr, routes: Routes) -> Result<SocketAddr> {
    let (what, flag) = routes.what();
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Bind { what, flag, addr, source })?;
    let bound = listener.local_addr().map_err(|source| Error::Bind { what, flag, addr, source })?;
    if routes.metrics.is_some() {
        tracing::info!(metrics.addr = %bound, "serving metrics at /metrics");
    }
    if routes.health.is_some() {
        tracing::info!(health.addr = %bound, "serving the health check at /healthz");
    }
    tokio::spawn(accept(listener, routes).instrument(tracing::info_span!("http", http.addr = %bound)));
    Ok(bound)
}

async fn accept(listener: TcpListener, routes: Routes) {
    let connections = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // EMFILE and the like pass; the next scrape or probe tries again.
                tracing::warn!(%error, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = std::sync::Arc::clone(&connections).try_acquire_owned() else {
            tracing::debug!(max = MAX_CONNECTIONS, "HTTP connection refused: too many open");
            drop(stream);
            continue;
        };
        let routes = routes.clone();
        let service = hyper::service::service_fn(move |request| answer(request, routes.clone()));
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(
            async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "HTTP connection ended with an error");
                }
                drop(permit);
            }
            .in_current_span(),
        );
    }
}

async fn answer(request: Request<Incoming>, routes: Routes) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let route = match (path, &routes.metrics, &routes.health) {
        ("/metrics", Some(exporter), _) => Route::Metrics(exporter.clone()),
        ("/healthz", _, Some(health)) => Route::Health(health.clone()),
        _ => {
            return Ok(text_response(StatusCode::NOT_FOUND, format!("trustmount serves {} here\n", routes.paths())));
        }
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"));
    }
    Ok(match route {
        Route::Metrics(exporter) => metrics(exporter).await,
        Route::Health(health) => {
            let verdict = health.check().await;
            if !verdict.live {
                tracing::warn!(reason = %verdict.text.trim_end(), "health check failed");
            }
            let status = if verdict.live { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            text_response(status, verdict.text)
        }
    })
}

enum Route {
    Metrics(Exporter),
    Health(Health),
}

async fn metrics(exporter: Exporter) -> Response<Full<Bytes>> {
    let Ok(_scrape) = SCRAPES.try_acquire() else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "too many concurrent scrapes; retry\n");
    };
    let rendered = tokio::task::spawn_blocking(move || exporter.render()).await;
    match rendered {
        Ok(Ok(text)) => Response::builder()
            .header(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)
            .body(Full::new(Bytes::from(text)))
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot build the response\n")),
        Ok(Err(_)) | Err(_) => {
            tracing::warn!("a metrics scrape failed to render");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot render the metrics; see the driver log\n")
        }
    }
}

fn text_response(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

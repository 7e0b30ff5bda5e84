//! The `/metrics` endpoint: HTTP/1.1 on a TCP listener (hyper), the Prometheus text format
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

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen for metrics on {addr}: {source}; give --metrics-addr a free address, e.g. 0.0.0.0:9808")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A client that opens a connection and sends nothing must not hold it forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Listens on `addr` and serves `/metrics` until the runtime stops. Returns the bound address
/// (port 0 picks a free one) once listening; it is also logged.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(addr: SocketAddr, exporter: Exporter) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
    tracing::info!(metrics.addr = %bound, "serving metrics at /metrics");
    tokio::spawn(accept(listener, exporter).instrument(tracing::info_span!("metrics", metrics.addr = %bound)));
    Ok(bound)
}

async fn accept(listener: TcpListener, exporter: Exporter) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // EMFILE and the like pass; the next scrape tries again.
                tracing::warn!(%error, "cannot accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let exporter = exporter.clone();
        let service = hyper::service::service_fn(move |request| answer(request, exporter.clone()));
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(
            async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "metrics connection ended with an error");
                }
            }
            .in_current_span(),
        );
    }
}

async fn answer(request: Request<Incoming>, exporter: Exporter) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/metrics" {
        return Ok(plain(StatusCode::NOT_FOUND, "trustmount serves /metrics only\n"));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"));
    }
    let rendered = tokio::task::spawn_blocking(move || exporter.render()).await;
    Ok(match rendered {
        Ok(Ok(text)) => Response::builder()
            .header(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)
            .body(Full::new(Bytes::from(text)))
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot build the response\n")),
        Ok(Err(_)) | Err(_) => {
            tracing::warn!("a metrics scrape failed to render");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot render the metrics; see the driver log\n")
        }
    })
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

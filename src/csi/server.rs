//! The driver's sockets: the CSI socket and the kubelet's plugin registration socket, each bound
//! as a unix socket (replacing a stale one) and served until shutdown.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use futures::{FutureExt, TryStreamExt as _};
use http::header::{CONTENT_TYPE, HeaderValue};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tower_http::catch_panic::CatchPanicLayer;

use super::authority::LocalAuthority;
use super::{IdentityService, NodeService, RegistrationService};
use crate::proto::csi::v1::{identity_server::IdentityServer, node_server::NodeServer};
use crate::proto::pluginregistration::registration_server::RegistrationServer;

/// Where the CSI socket lives: `unix:///path/csi.sock` or a bare path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint(PathBuf);

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let path = value.strip_prefix("unix://").unwrap_or(value);
        if path.is_empty() || !Path::new(path).is_absolute() {
            return Err(format!("endpoint {value:?} must be unix:///absolute/path.sock or an absolute path"));
        }
        Ok(Self(PathBuf::from(path)))
    }
}

impl Endpoint {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// Serves Identity and Node on `endpoint`, and the kubelet's plugin registration on its own
/// socket if `registration` is given, until `shutdown` resolves. The registration socket appears
/// only once the CSI socket is listening (the kubelet dials the endpoint as soon as it has read
/// it), and both are removed when serving ends: a driver that is gone is deregistered, as
/// node-driver-registrar's removal of its socket on SIGTERM did.
///
/// # Errors
/// A socket cannot be created, or a server fails.
pub async fn serve(
    endpoint: &Endpoint,
    identity: IdentityService,
    node: NodeService,
    registration: Option<RegistrationService>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let shutdown = shutdown.shared();
    let (csi_listener, _csi_socket) = bind(endpoint.path())?;
    tracing::info!(endpoint = %endpoint.path().display(), "serving CSI");
    let csi = tonic::transport::Server::builder()
        .layer(CatchPanicLayer::custom(panic_response))
        .add_service(IdentityServer::new(identity))
        .add_service(NodeServer::new(node))
        .serve_with_incoming_shutdown(UnixListenerStream::new(csi_listener), shutdown.clone());
    let registering = match registration {
        None => futures::future::Either::Left(std::future::ready(Ok(()))),
        Some(registration) => {
            let (listener, socket) = bind(registration.socket())?;
            tracing::info!(socket = %registration.socket().display(), "serving the kubelet's plugin registration");
            // The kubelet's plugin watcher sends the socket's path as the authority (see
            // `authority`): read through LocalAuthority, or h2 refuses every call.
            let incoming = UnixListenerStream::new(listener).map_ok(LocalAuthority::new);
            let serving = tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(registration))
                .serve_with_incoming_shutdown(incoming, shutdown);
            // The socket goes as soon as this server ends (its calls are instant), not after the
            // CSI calls in flight: the kubelet stops sending new volumes to a driver leaving.
            futures::future::Either::Right(async move {
                let served = serving.await;
                drop(socket);
                served
            })
        }
    };
    let (csi, registering) = futures::future::join(csi, registering).await;
    csi.and(registering).map_err(std::io::Error::other)
}

/// Binds a unix socket at `path`, making its directory and replacing a stale socket; the
/// returned guard removes it when dropped, also when serving is cut short.
fn bind(path: &Path) -> std::io::Result<(UnixListener, SocketFile)> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // A socket left by a previous run (a crash, a SIGKILL) would make bind fail with EADDRINUSE.
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    let socket = SocketFile(path.to_owned());
    // Only root (the kubelet) may talk to the driver.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok((listener, socket))
}

/// A socket this process bound, removed when serving ends.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A panic in a handler becomes one INTERNAL status for that call (a gRPC "trailers-only"
/// response) instead of unwinding the connection task, which would fail every call the kubelet
/// has in flight on the connection. Blocking work already turns panics into `volume::Error::Task`.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> http::Response<String> {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_owned());
    tracing::error!(panic = %what, "a CSI handler panicked");
    let mut response = http::Response::new(String::new());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(tonic::Code::Internal as i32));
    headers.insert("grpc-message", HeaderValue::from_static("trustmount hit an internal error; see the driver log"));
    response
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{ServiceBuilder, ServiceExt};

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_instead_of_dropping_the_connection() {
        let service = ServiceBuilder::new().layer(CatchPanicLayer::custom(panic_response)).service_fn(
            |_request: http::Request<String>| async move {
                if true {
                    panic!("a bug");
                }
                Ok::<_, Infallible>(http::Response::new(String::new()))
            },
        );
        let response = service.oneshot(http::Request::new(String::new())).await.expect("a response, not an error");
        assert_eq!(response.status(), http::StatusCode::OK, "gRPC carries errors in grpc-status");
        let status = tonic::Status::from_header_map(response.headers()).expect("a grpc-status header");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().contains("driver log"), "{}", status.message());
    }

    #[test]
    fn endpoints_take_a_unix_url_or_an_absolute_path() {
        assert_eq!("unix:///csi/csi.sock".parse::<Endpoint>().unwrap().path(), Path::new("/csi/csi.sock"));
        assert_eq!("/csi/csi.sock".parse::<Endpoint>().unwrap().path(), Path::new("/csi/csi.sock"));
        assert!("csi.sock".parse::<Endpoint>().is_err());
        assert!("unix://".parse::<Endpoint>().is_err());
    }
}

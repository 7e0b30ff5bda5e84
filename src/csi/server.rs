//! The CSI socket: bind a unix socket (replacing a stale one) and serve until shutdown.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use super::{IdentityService, NodeService};
use crate::proto::csi::v1::{identity_server::IdentityServer, node_server::NodeServer};

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

/// Serves Identity and Node on `endpoint` until `shutdown` resolves.
///
/// # Errors
/// The socket cannot be created, or the server fails.
pub async fn serve(
    endpoint: &Endpoint,
    identity: IdentityService,
    node: NodeService,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let path = endpoint.path();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // A socket left by a previous run would make bind fail with EADDRINUSE.
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    // Only root (kubelet, node-driver-registrar) may talk to the driver.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    tracing::info!(endpoint = %path.display(), "serving CSI");
    tonic::transport::Server::builder()
        .add_service(IdentityServer::new(identity))
        .add_service(NodeServer::new(node))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(std::io::Error::other)?;
    let _ = std::fs::remove_file(path);
    Ok(())
}

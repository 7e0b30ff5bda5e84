//! CSI Identity: who we are, what we offer (no controller service), whether we are ready.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tonic::{Request, Response, Status};

use crate::proto::csi::v1 as pb;

#[derive(Debug, Clone)]
pub struct IdentityService {
    name: String,
    version: String,
    ready: Arc<AtomicBool>,
}

impl IdentityService {
    /// `ready` flips to true once the certificate sources are loaded.
    pub fn new(name: String, ready: Arc<AtomicBool>) -> Self {
        Self { name, version: env!("CARGO_PKG_VERSION").to_owned(), ready }
    }
}

#[tonic::async_trait]
impl pb::identity_server::Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<pb::GetPluginInfoRequest>,
    ) -> Result<Response<pb::GetPluginInfoResponse>, Status> {
        Ok(Response::new(pb::GetPluginInfoResponse {
            name: self.name.clone(),
            vendor_version: self.version.clone(),
            manifest: Default::default(),
        }))
    }

    /// A node-only plugin: no CONTROLLER_SERVICE, no topology constraints.
    async fn get_plugin_capabilities(
        &self,
        _request: Request<pb::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<pb::GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(pb::GetPluginCapabilitiesResponse { capabilities: vec![] }))
    }

    async fn probe(&self, _request: Request<pb::ProbeRequest>) -> Result<Response<pb::ProbeResponse>, Status> {
        Ok(Response::new(pb::ProbeResponse { ready: Some(self.ready.load(Ordering::Acquire)) }))
    }
}

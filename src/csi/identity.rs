//! CSI Identity: who we are, what we offer (no controller service), whether we are ready.

use tonic::{Request, Response, Status};

use crate::proto::csi::v1 as pb;
use crate::readiness::Readiness;

#[derive(Debug, Clone)]
pub struct IdentityService {
    name: String,
    version: String,
    readiness: Readiness,
}

impl IdentityService {
    /// Probe answers ready once every condition of `readiness` is met.
    pub fn new(name: String, readiness: Readiness) -> Self {
        Self { name, version: env!("CARGO_PKG_VERSION").to_owned(), readiness }
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

    /// CSI: "The plugin is still initializing, but is otherwise perfectly healthy. In this case
    /// a successful response SHALL be returned with a readiness value of `false`." Ready means a
    /// publish can succeed now ([`Readiness`]).
    async fn probe(&self, _request: Request<pb::ProbeRequest>) -> Result<Response<pb::ProbeResponse>, Status> {
        Ok(Response::new(pb::ProbeResponse { ready: Some(self.readiness.is_ready()) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::csi::v1::identity_server::Identity;
    use crate::readiness::Condition;

    async fn probe(identity: &IdentityService) -> Option<bool> {
        identity.probe(Request::new(pb::ProbeRequest {})).await.expect("probe answers").into_inner().ready
    }

    #[tokio::test]
    async fn probe_answers_not_ready_while_starting_and_ready_once_every_condition_is_met() {
        let readiness = Readiness::new(Condition::DAEMON);
        let identity = IdentityService::new("csi.trustmount.io".into(), readiness.clone());
        assert_eq!(probe(&identity).await, Some(false));
        readiness.mark(Condition::SourcesLoaded);
        readiness.mark(Condition::StoreOpen);
        readiness.mark(Condition::VolumesRefreshed);
        assert_eq!(probe(&identity).await, Some(false), "adopted volumes' caches not synced yet");
        readiness.mark(Condition::CachesSynced);
        assert_eq!(probe(&identity).await, Some(true));
    }
}

//! CSI Node: publish and unpublish trust-bundle volumes, report their health.

use std::sync::Arc;

use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use tracing::{Span, field::Empty, info, instrument, warn};

use super::locks::KeyedLocks;
use super::{Error, request};
use crate::proto::csi::v1 as pb;
use crate::rotation::Rotation;
use crate::sources::Sources;
use crate::volume::Store;

use pb::node_service_capability::rpc::Type as RpcType;

/// A certificate from a non-system source expiring within this window marks the volume abnormal,
/// early enough for someone to rotate it before clients start failing.
const EXPIRY_WARNING_SECONDS: i64 = 7 * 24 * 3600;

#[derive(Debug)]
pub struct NodeService {
    node_id: String,
    sources: Arc<Sources>,
    store: Store,
    rotation: Arc<Rotation>,
    /// Calls for one volume id are serialised; different volumes run in parallel.
    volume_locks: KeyedLocks,
}

impl NodeService {
    pub fn new(node_id: String, sources: Arc<Sources>, store: Store, rotation: Arc<Rotation>) -> Self {
        Self { node_id, sources, store, rotation, volume_locks: KeyedLocks::default() }
    }

    async fn publish(&self, request: pb::NodePublishVolumeRequest) -> Result<(), Error> {
        let publication = request::publication(request)?;
        let span = Span::current();
        span.record("pod.namespace", publication.pod.namespace.as_str());
        span.record("pod.name", publication.pod.name.as_str());
        span.record("target", tracing::field::display(publication.target.display()));
        let _guard = self.volume_locks.lock(&publication.volume_id).await;
        let generation = self.sources.generation();
        // Called by the store only when no directory for this spec exists yet.
        let render = Rotation::renderer(Arc::clone(&self.sources), publication.spec.clone());
        self.store.publish(publication, render).await?;
        // The sources changed while this publish ran: its render may predate the change, and the
        // rotation pass for that change may have run before this spec was live.
        if self.sources.generation() != generation {
            self.rotation.request_refresh();
        }
        Ok(())
    }

    async fn unpublish(&self, request: pb::NodeUnpublishVolumeRequest) -> Result<(), Error> {
        let (volume_id, target) = request::unpublication(request)?;
        Span::current().record("target", tracing::field::display(target.display()));
        let _guard = self.volume_locks.lock(&volume_id).await;
        self.store.unpublish(&volume_id, &target).await?;
        Ok(())
    }

    async fn stats(&self, request: pb::NodeGetVolumeStatsRequest) -> Result<pb::NodeGetVolumeStatsResponse, Error> {
        let (volume_id, path) = request::stats_query(request)?;
        let stats = self.store.stats(&volume_id, &path).await?;
        let usage = vec![
            usage(pb::volume_usage::Unit::Bytes, stats.total_bytes, stats.used_bytes, stats.available_bytes),
            usage(pb::volume_usage::Unit::Inodes, stats.total_inodes, stats.used_inodes, stats.available_inodes),
        ];
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let expiring = self
            .sources
            .catalog()
            .earliest_user_expiry(&stats.spec)
            .filter(|(_, not_after)| not_after - now <= EXPIRY_WARNING_SECONDS);
        let problem = self
            .rotation
            .problem(&stats.digest)
            .or_else(|| expiring.map(|(subject, not_after)| expiry_message(&subject, not_after, now)));
        let condition = pb::VolumeCondition {
            abnormal: problem.is_some(),
            message: problem.unwrap_or_else(|| "trust bundle is current".to_owned()),
        };
        Ok(pb::NodeGetVolumeStatsResponse { usage, volume_condition: Some(condition) })
    }
}

fn usage(unit: pb::volume_usage::Unit, total: u64, used: u64, available: u64) -> pb::VolumeUsage {
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    pb::VolumeUsage { available: clamp(available), total: clamp(total), used: clamp(used), unit: unit as i32 }
}

fn expiry_message(subject: &str, not_after: i64, now: i64) -> String {
    let when = OffsetDateTime::from_unix_timestamp(not_after)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| not_after.to_string());
    if not_after <= now {
        format!(
            "certificate {subject:?} expired at {when}; volumes leave it out unless the volume attribute expired is \"keep\"; replace it in its source"
        )
    } else {
        let days = (not_after - now) / 86_400;
        format!("certificate {subject:?} expires at {when} (in {days} days); rotate it in its source")
    }
}

/// Logs an error once, where it is handled, and turns it into a status.
fn reply<T>(result: Result<T, Error>, what: &'static str) -> Result<Response<T>, Status> {
    match result {
        Ok(value) => Ok(Response::new(value)),
        Err(error) => {
            let status = Status::from(error);
            warn!(grpc.status = ?status.code(), error = status.message(), "{what} failed");
            Err(status)
        }
    }
}

#[tonic::async_trait]
impl pb::node_server::Node for NodeService {
    /// CSI: "This operation MUST be idempotent. If the volume corresponding to the volume_id has
    /// already been published at the specified target_path, and is compatible with the specified
    /// volume_capability and readonly flag, the Plugin MUST reply 0 OK."
    #[instrument(name = "NodePublishVolume", skip_all, fields(volume.id = %request.get_ref().volume_id, pod.namespace = Empty, pod.name = Empty, target = Empty))]
    async fn node_publish_volume(
        &self,
        request: Request<pb::NodePublishVolumeRequest>,
    ) -> Result<Response<pb::NodePublishVolumeResponse>, Status> {
        let result = self.publish(request.into_inner()).await;
        if result.is_ok() {
            info!("published");
        }
        reply(result.map(|()| pb::NodePublishVolumeResponse {}), "publish")
    }

    /// CSI: "If the volume corresponding to the volume_id or the target_path is not found, the
    /// Plugin MUST reply 0 OK."
    #[instrument(name = "NodeUnpublishVolume", skip_all, fields(volume.id = %request.get_ref().volume_id, target = Empty))]
    async fn node_unpublish_volume(
        &self,
        request: Request<pb::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<pb::NodeUnpublishVolumeResponse>, Status> {
        let result = self.unpublish(request.into_inner()).await;
        if result.is_ok() {
            info!("unpublished");
        }
        reply(result.map(|()| pb::NodeUnpublishVolumeResponse {}), "unpublish")
    }

    #[instrument(name = "NodeGetVolumeStats", skip_all, fields(volume.id = %request.get_ref().volume_id))]
    async fn node_get_volume_stats(
        &self,
        request: Request<pb::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<pb::NodeGetVolumeStatsResponse>, Status> {
        reply(self.stats(request.into_inner()).await, "volume stats")
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<pb::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<pb::NodeGetCapabilitiesResponse>, Status> {
        let capabilities = [RpcType::GetVolumeStats, RpcType::VolumeCondition]
            .into_iter()
            .map(|rpc| pb::NodeServiceCapability {
                r#type: Some(pb::node_service_capability::Type::Rpc(pb::node_service_capability::Rpc {
                    r#type: rpc as i32,
                })),
            })
            .collect();
        Ok(Response::new(pb::NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        _request: Request<pb::NodeGetInfoRequest>,
    ) -> Result<Response<pb::NodeGetInfoResponse>, Status> {
        Ok(Response::new(pb::NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            // 0: no limit — a volume costs one bind mount, not a device.
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }

    async fn node_stage_volume(
        &self,
        _request: Request<pb::NodeStageVolumeRequest>,
    ) -> Result<Response<pb::NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented("trustmount does not advertise STAGE_UNSTAGE_VOLUME"))
    }

    async fn node_unstage_volume(
        &self,
        _request: Request<pb::NodeUnstageVolumeRequest>,
    ) -> Result<Response<pb::NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented("trustmount does not advertise STAGE_UNSTAGE_VOLUME"))
    }

    async fn node_expand_volume(
        &self,
        _request: Request<pb::NodeExpandVolumeRequest>,
    ) -> Result<Response<pb::NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("trust-bundle volumes cannot be expanded"))
    }
}

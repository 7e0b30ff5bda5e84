//! CSI Node: publish and unpublish trust-bundle volumes, report their health. Each volume call
//! ends with one log line (inside its span: volume id, pod, target) giving its gRPC code and
//! duration, and is counted in the metrics.

use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::{Span, debug, field::Empty, info, instrument, warn};

use super::{Error, request};
use crate::domain::{Limits, echo};
use crate::keyed_locks::KeyedLocks;
use crate::metrics::{CsiMethod, Metrics, code_name};
use crate::node::Node;
use crate::proto::csi::v1 as pb;

use pb::node_service_capability::rpc::Type as RpcType;

#[derive(Debug)]
pub struct NodeService {
    node_id: String,
    node: Node,
    /// Calls for one volume id are serialised; different volumes run in parallel.
    volume_locks: KeyedLocks<String, tokio::sync::Mutex<()>>,
    metrics: Metrics,
    limits: Limits,
}

impl NodeService {
    pub fn new(node_id: String, node: Node, metrics: Metrics, limits: Limits) -> Self {
        Self { node_id, node, volume_locks: KeyedLocks::default(), metrics, limits }
    }

    async fn publish(&self, request: pb::NodePublishVolumeRequest) -> Result<(), Error> {
        let span = Span::current();
        // Before validation, so a refused call's line says whose pod it was.
        for (field, value) in
            ["pod.namespace", "pod.name", "pod.uid"].into_iter().zip(request::pod_of(&request.volume_context))
        {
            if !value.is_empty() {
                span.record(field, echo::value(value));
            }
        }
        span.record("target", echo::value(&request.target_path));
        let (publication, token) = request::publication(request, &self.limits)?;
        let _guard = self.volume_locks.get(&publication.volume_id).lock_owned().await;
        Ok(self.node.publish(publication, token).await?)
    }

    async fn unpublish(&self, request: pb::NodeUnpublishVolumeRequest) -> Result<(), Error> {
        let (volume_id, target) = request::unpublication(request)?;
        let span = Span::current();
        span.record("target", tracing::field::display(target.display()));
        // Unpublish carries no volume context; the kubelet's target path names the pod.
        if let Some(uid) = request::pod_uid_of(&target) {
            span.record("pod.uid", uid);
        }
        let _guard = self.volume_locks.get(&volume_id).lock_owned().await;
        Ok(self.node.unpublish(&volume_id, &target).await?)
    }

    async fn stats(&self, request: pb::NodeGetVolumeStatsRequest) -> Result<pb::NodeGetVolumeStatsResponse, Error> {
        let (volume_id, path) = request::stats_query(request)?;
        let report = self.node.stats(&volume_id, &path).await?;
        let stats = &report.stats;
        let usage = vec![
            usage(pb::volume_usage::Unit::Bytes, stats.total_bytes, stats.used_bytes, stats.available_bytes),
            usage(pb::volume_usage::Unit::Inodes, stats.total_inodes, stats.used_inodes, stats.available_inodes),
        ];
        let condition =
            pb::VolumeCondition { abnormal: report.health.is_abnormal(), message: report.health.to_string() };
        Ok(pb::NodeGetVolumeStatsResponse { usage, volume_condition: Some(condition) })
    }
}

fn usage(unit: pb::volume_usage::Unit, total: u64, used: u64, available: u64) -> pb::VolumeUsage {
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    pb::VolumeUsage { available: clamp(available), total: clamp(total), used: clamp(used), unit: unit as i32 }
}

impl NodeService {
    /// The call's one line and its metrics; an error is logged here, where it is handled, and
    /// becomes a status. A stats call that succeeds logs at debug: the kubelet asks for every
    /// volume every minute.
    fn reply<T>(&self, method: CsiMethod, started: Instant, result: Result<T, Error>) -> Result<Response<T>, Status> {
        let elapsed = started.elapsed();
        let duration_ms = elapsed.as_micros() as f64 / 1000.0;
        let result = result.map_err(Status::from);
        let code = result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.csi_call(method, code, elapsed);
        let grpc_code = code_name(code);
        match result {
            Ok(value) => {
                if method == CsiMethod::Stats {
                    debug!(grpc.code = grpc_code, duration_ms, "answered");
                } else {
                    info!(grpc.code = grpc_code, duration_ms, "answered");
                }
                Ok(Response::new(value))
            }
            Err(status) => {
                warn!(grpc.code = grpc_code, duration_ms, error = status.message(), "answered with an error");
                Err(status)
            }
        }
    }
}

#[tonic::async_trait]
impl pb::node_server::Node for NodeService {
    /// CSI: "This operation MUST be idempotent. If the volume corresponding to the volume_id has
    /// already been published at the specified target_path, and is compatible with the specified
    /// volume_capability and readonly flag, the Plugin MUST reply 0 OK."
    #[instrument(name = "NodePublishVolume", skip_all, fields(volume.id = %request.get_ref().volume_id, pod.namespace = Empty, pod.name = Empty, pod.uid = Empty, target = Empty))]
    async fn node_publish_volume(
        &self,
        request: Request<pb::NodePublishVolumeRequest>,
    ) -> Result<Response<pb::NodePublishVolumeResponse>, Status> {
        let started = Instant::now();
        let result = self.publish(request.into_inner()).await.map(|()| pb::NodePublishVolumeResponse {});
        self.reply(CsiMethod::Publish, started, result)
    }

    /// CSI: "If the volume corresponding to the volume_id or the target_path is not found, the
    /// Plugin MUST reply 0 OK."
    #[instrument(name = "NodeUnpublishVolume", skip_all, fields(volume.id = %request.get_ref().volume_id, pod.uid = Empty, target = Empty))]
    async fn node_unpublish_volume(
        &self,
        request: Request<pb::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<pb::NodeUnpublishVolumeResponse>, Status> {
        let started = Instant::now();
        let result = self.unpublish(request.into_inner()).await.map(|()| pb::NodeUnpublishVolumeResponse {});
        self.reply(CsiMethod::Unpublish, started, result)
    }

    #[instrument(name = "NodeGetVolumeStats", skip_all, fields(volume.id = %request.get_ref().volume_id))]
    async fn node_get_volume_stats(
        &self,
        request: Request<pb::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<pb::NodeGetVolumeStatsResponse>, Status> {
        let started = Instant::now();
        let result = self.stats(request.into_inner()).await;
        self.reply(CsiMethod::Stats, started, result)
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

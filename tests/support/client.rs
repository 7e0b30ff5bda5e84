//! gRPC clients over the daemon's unix socket, and request builders shaped like the kubelet's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tonic::transport::{Channel, Endpoint};
use trustmount::proto::csi::v1::{
    NodeGetVolumeStatsRequest, NodePublishVolumeRequest, NodeUnpublishVolumeRequest, VolumeCapability,
    identity_client::IdentityClient,
    node_client::NodeClient,
    volume_capability::{AccessMode, AccessType, MountVolume, access_mode::Mode},
};

/// Connects a channel to a unix socket (the URI is a placeholder tonic requires).
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .expect("static URI")
        .connect_with_connector(tower::service_fn(move |_| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
}

/// Both CSI clients on one channel.
#[derive(Clone)]
pub struct Clients {
    pub identity: IdentityClient<Channel>,
    pub node: NodeClient<Channel>,
}

/// The volume capability the kubelet sends for a CSI ephemeral inline volume:
/// mount access, no fs type, no flags, SINGLE_NODE_WRITER.
pub fn mount_capability() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: Mode::SingleNodeWriter as i32 }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: String::new(),
            mount_flags: vec![],
            volume_mount_group: String::new(),
        })),
    }
}

pub fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The pod UID a kubelet target path names (`…/pods/<uid>/volumes/<plugin>/<name>/mount`), as
/// the kubelet sends it in `csi.storage.k8s.io/pod.uid`; a fixed one for other paths.
pub fn pod_uid_of(target: &Path) -> String {
    let components: Vec<&str> = target.iter().filter_map(|c| c.to_str()).collect();
    match components.as_slice() {
        [.., "pods", uid, "volumes", _, _, "mount"] => uid.to_string(),
        _ => "0c1f4d6e-0000-4000-8000-000000000001".to_string(),
    }
}

/// A NodePublishVolume request as the kubelet sends it for an inline volume (readonly, with the
/// pod-info keys the CSIDriver's `podInfoOnMount` adds) plus `extra` attributes.
pub fn publish_request(volume_id: &str, target: &Path, extra: &[(&str, &str)]) -> NodePublishVolumeRequest {
    let uid = pod_uid_of(target);
    let mut volume_context = attrs(&[
        ("csi.storage.k8s.io/pod.name", "web-0"),
        ("csi.storage.k8s.io/pod.namespace", "default"),
        ("csi.storage.k8s.io/pod.uid", uid.as_str()),
        ("csi.storage.k8s.io/serviceAccount.name", "default"),
        ("csi.storage.k8s.io/ephemeral", "true"),
    ]);
    volume_context.extend(attrs(extra));
    NodePublishVolumeRequest {
        volume_id: volume_id.to_string(),
        publish_context: HashMap::new(),
        staging_target_path: String::new(),
        target_path: target.to_str().expect("UTF-8 path").to_string(),
        volume_capability: Some(mount_capability()),
        readonly: true,
        secrets: HashMap::new(),
        volume_context,
    }
}

pub fn unpublish_request(volume_id: &str, target: &Path) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: volume_id.to_string(),
        target_path: target.to_str().expect("UTF-8 path").to_string(),
    }
}

pub fn stats_request(volume_id: &str, path: &Path) -> NodeGetVolumeStatsRequest {
    NodeGetVolumeStatsRequest {
        volume_id: volume_id.to_string(),
        volume_path: path.to_str().expect("UTF-8 path").to_string(),
        staging_target_path: String::new(),
    }
}

/// The gRPC code of a call's outcome (`Ok` for a success), for asserting on it.
pub fn code_of<T>(result: &Result<T, tonic::Status>) -> tonic::Code {
    match result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

/// The message of a call's error, or the success it was not expected to be.
pub fn message_of<T: std::fmt::Debug>(result: &Result<T, tonic::Status>) -> String {
    match result {
        Ok(value) => format!("OK {value:?}"),
        Err(status) => status.message().to_string(),
    }
}

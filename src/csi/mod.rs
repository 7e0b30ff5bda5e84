//! The gRPC face: CSI Identity and Node services, and the kubelet's plugin registration
//! ([`registration`]). Handlers turn each protobuf request into a
//! typed one once ([`request`]), call [`node`](crate::node), and map errors to gRPC status codes
//! in one place ([`status`]). No certificate or mount code lives here.

mod authority;
mod identity;
mod node;
mod registration;
mod request;
mod server;
mod status;

pub use identity::IdentityService;
pub use node::NodeService;
pub use registration::{CSI_PLUGIN, KubeletAnswer, RegistrationService, SUPPORTED_VERSIONS, socket_name};
pub use server::{Endpoint, serve};

use crate::domain;

/// Why a CSI call failed; [`status`] turns each variant into a `tonic::Status`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is required")]
    MissingField(&'static str),
    #[error("block volumes are not supported: a trust bundle is a directory; use a mount capability")]
    BlockAccess,
    #[error("access mode {0} is not supported; use SINGLE_NODE_WRITER or a read-only mode")]
    UnsupportedAccessMode(String),
    #[error("fs_type {0:?} is not supported: the volume is a tmpfs bind mount; leave fsType empty")]
    UnsupportedFsType(String),
    #[error("mount flags are not supported (got {0}); the volume is always mounted ro,nosuid,nodev,noexec")]
    MountFlags(usize),
    #[error("{field} {path:?} must be an absolute path without '..' components")]
    BadPath { field: &'static str, path: String },
    #[error(transparent)]
    Attributes(#[from] domain::Error),
    #[error(
        "the volume's attributes are {bytes} bytes, over the driver's limit of {max} ({flag}); name fewer or shorter sources",
        flag = domain::ATTRIBUTE_BYTES_FLAG
    )]
    AttributesTooLarge { bytes: usize, max: usize },
    #[error(
        "the volume names {sources} sources, over the driver's limit of {max} per volume ({flag}); name fewer (one ConfigMap can hold many certificates), or ask the cluster operator to raise {flag}",
        flag = domain::SOURCES_FLAG
    )]
    TooManySources { sources: usize, max: usize },
    #[error(
        "the volume names cluster sources but the request carries no {key}; set podInfoOnMount: true on the driver's CSIDriver object so the kubelet says whose pod this is"
    )]
    NoPodInfo { key: &'static str },
    #[error(
        "the volume names Secrets but the request carries no csi.storage.k8s.io/serviceAccount.name; set podInfoOnMount: true on the driver's CSIDriver object so the kubelet says whose pod this is"
    )]
    NoServiceAccount,
    #[error(
        "the volume names Secrets, which trustmount reads only with the pod's own ServiceAccount token, but the request's secrets carry none (csi.storage.k8s.io/serviceAccount.tokens); the driver's CSIDriver object must set tokenRequests (audience \"\") and serviceAccountTokenInSecrets: true (Kubernetes >= 1.35); a token in volumeAttributes is never used"
    )]
    NoToken,
    #[error(transparent)]
    Token(#[from] crate::sources::cluster::TokenError),
    #[error(
        "csi.storage.k8s.io/pod.uid is {uid:?} but target_path {target:?} is not in that pod's volumes directory (<kubelet-dir>/pods/{uid}/volumes/…)"
    )]
    PodUidMismatch { uid: String, target: String },
    #[error(transparent)]
    Node(#[from] crate::node::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

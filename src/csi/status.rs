//! The one place errors become gRPC status codes. Matches are exhaustive (no `_`), so a new
//! error variant forces a decision here.

use tonic::{Code, Status};

use super::Error;
use crate::domain::echo;
use crate::sources::{self, cluster};
use crate::volume;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = code_of(&error);
        // Every echoed value is bounded where it is echoed; this bounds their sum.
        Status::new(code, echo::cut(&error.to_string(), echo::MESSAGE_MAX))
    }
}

fn code_of(error: &Error) -> Code {
    match error {
        Error::MissingField(_)
        | Error::BlockAccess
        | Error::UnsupportedAccessMode(_)
        | Error::UnsupportedFsType(_)
        | Error::MountFlags(_)
        | Error::BadPath { .. }
        // The kubelet never sends a pod UID that its own target path contradicts: the request
        // is malformed (or forged), and retrying it cannot help. Not PERMISSION_DENIED: no
        // identity lacks a permission here, the arguments disagree with each other.
        | Error::PodUidMismatch { .. }
        // The kubelet's token JSON is malformed: no retry of the same request can fix it.
        | Error::Token(_)
        | Error::Attributes(_)
        // Bounds on the request's own shape: the same request never fits.
        | Error::AttributesTooLarge { .. }
        | Error::TooManySources { .. } => Code::InvalidArgument,
        // The operator's CSIDriver object must change; the request itself is fine.
        Error::NoPodInfo { .. } | Error::NoServiceAccount | Error::NoToken => Code::FailedPrecondition,
        Error::Node(crate::node::Error::Volume(error)) => volume_code(error),
        Error::Node(crate::node::Error::Sources(error)) => sources_code(error),
    }
}

fn volume_code(error: &volume::Error) -> Code {
    match error {
        volume::Error::TargetOutsideKubeletDir { .. } => Code::InvalidArgument,
        volume::Error::AlreadyPublished { .. } => Code::AlreadyExists,
        volume::Error::NotPublished { .. } => Code::NotFound,
        // A race with whoever changes the path; a retry resolves it afresh.
        volume::Error::TargetChanged { .. } => Code::Aborted,
        volume::Error::StoreFull { .. }
        | volume::Error::OverNamespaceBudget { .. }
        | volume::Error::OverNamespaceStore { .. }
        | volume::Error::OverFillLimit { .. } => Code::ResourceExhausted,
        // A newer driver published at this target; this one leaves it alone.
        volume::Error::NewerRecord { .. } => Code::FailedPrecondition,
        volume::Error::Io { .. }
        | volume::Error::Mount { .. }
        | volume::Error::Record { .. }
        | volume::Error::StoreFormat { .. }
        | volume::Error::Task(_)
        // Rendered files that are unsafe to write are our bug, not the caller's.
        | volume::Error::InvalidFiles { .. } => Code::Internal,
    }
}

fn sources_code(error: &sources::Error) -> Code {
    match error {
        // The request is fine; the driver's sources cannot satisfy it.
        sources::Error::EmptyBundle => Code::FailedPrecondition,
        // One volume asks more of the node's shared driver than it gives any one volume.
        sources::Error::TooManyCertificates { .. } => Code::ResourceExhausted,
        // Only at load or reload, which keeps the previous sources; here for completeness.
        sources::Error::TooLarge { .. } => Code::FailedPrecondition,
        sources::Error::Read { .. } => Code::Unavailable,
        sources::Error::Bundle(_) => Code::Internal,
        sources::Error::Cluster(error) => cluster_code(error),
    }
}

fn cluster_code(error: &cluster::Error) -> Code {
    match error {
        // A namespace over its budget on this node: a resource bound of the node, not bad input.
        cluster::Error::OverNamespaceBudget { .. } => Code::ResourceExhausted,
        // A source over the driver's per-source limits: the object must shrink (or the limit
        // grow); no retry of the same request helps, and it is a resource bound, not bad input.
        cluster::Error::Content { source, .. } if matches!(**source, crate::bundle::Error::OverLimit { .. }) => {
            Code::ResourceExhausted
        }
        // The cluster (or the driver's mode) cannot satisfy the volume until someone changes
        // it; the kubelet retries and shows the message in the pod's events.
        cluster::Error::Standalone { .. }
        | cluster::Error::Missing { .. }
        | cluster::Error::MissingKey { .. }
        | cluster::Error::NoMatch { .. }
        | cluster::Error::NoCertificates { .. }
        | cluster::Error::Content { .. }
        | cluster::Error::UnknownKind { .. }
        | cluster::Error::MissingSecretKey { .. }
        | cluster::Error::NoToken
        | cluster::Error::TrustBundlesNotServed
        // The operator's CSIDriver object must change (read again at the next publish).
        | cluster::Error::PodInfoOff { .. } => Code::FailedPrecondition,
        // The pod's own ServiceAccount lacks the permission; its namespace's RBAC must change.
        cluster::Error::Forbidden { .. } => Code::PermissionDenied,
        // The pod's token (a credential of this request) was not accepted. Not
        // FAILED_PRECONDITION: gRPC reserves UNAUTHENTICATED for exactly "no valid credentials
        // for the operation", as PERMISSION_DENIED is for the 403 above, so the two API answers
        // keep their meaning; the message says what to fix (the tokenRequests audience), and an
        // expired token is replaced at the kubelet's next call either way.
        cluster::Error::Unauthenticated { .. } => Code::Unauthenticated,
        // Transient: the cache will sync, the API server answer, the kubelet republish.
        cluster::Error::NotSynced { .. }
        | cluster::Error::PodInfoNotChecked { .. }
        | cluster::Error::SecretRequest { .. }
        | cluster::Error::SecretsNotRead { .. } => Code::Unavailable,
        // Only at start, which exits instead; here for completeness.
        cluster::Error::Config { .. }
        // An API server answering 200 with something that is no Secret.
        | cluster::Error::SecretUnreadable { .. } => Code::Internal,
    }
}

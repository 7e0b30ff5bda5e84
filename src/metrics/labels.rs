//! The label values metrics (and log lines) use: closed sets, so no series can multiply.

use prometheus_client::encoding::EncodeLabelSet;
use tonic::Code;

/// The CSI calls that are counted: the ones about a volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CsiMethod {
    Publish,
    Unpublish,
    Stats,
}

impl CsiMethod {
    /// The RPC's name, as in the CSI spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "NodePublishVolume",
            Self::Unpublish => "NodeUnpublishVolume",
            Self::Stats => "NodeGetVolumeStats",
        }
    }
}

/// The canonical gRPC name of a status code (`OK`, `INVALID_ARGUMENT`, …), as gRPC's
/// `doc/statuscodes.md` spells them.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct CallLabels {
    pub method: &'static str,
    pub grpc_code: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ReasonLabels {
    pub reason: &'static str,
}

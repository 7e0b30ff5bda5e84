//! The kinds of certificate source: a closed set that rotation, publish, health and the metrics
//! labels all speak.

/// Where a change came from: the kind of source, never which object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    ConfigMap,
    ClusterTrustBundle,
    /// Read with the pod's token at a republish.
    Secret,
    /// An `--extra-pem` file.
    File,
    /// The `--system-roots` file.
    System,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfigMap => "configmap",
            Self::ClusterTrustBundle => "clustertrustbundle",
            Self::Secret => "secret",
            Self::File => "file",
            Self::System => "system",
        }
    }
}

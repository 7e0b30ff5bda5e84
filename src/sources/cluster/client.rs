//! The driver's Kubernetes client: which mode it runs in (a kubeconfig, in-cluster, or
//! standalone) and the client that mode gives.

use std::path::PathBuf;

use super::{Error, Result};

/// Where the driver's cluster access comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Local sources only: `--standalone`, or no cluster configuration at all.
    Standalone { reason: &'static str },
    /// `--kubeconfig PATH` (or `KUBECONFIG`).
    Kubeconfig(PathBuf),
    /// The pod's ServiceAccount: `KUBERNETES_SERVICE_HOST` is set.
    InCluster,
}

impl Mode {
    /// `--standalone` wins; then a kubeconfig; then in-cluster config when running in a pod.
    pub fn choose(standalone: bool, kubeconfig: Option<PathBuf>, in_pod: bool) -> Self {
        match (standalone, kubeconfig) {
            (true, _) => Self::Standalone { reason: "--standalone" },
            (false, Some(path)) => Self::Kubeconfig(path),
            (false, None) if in_pod => Self::InCluster,
            (false, None) => Self::Standalone { reason: "no --kubeconfig and not running in a pod" },
        }
    }

    /// The client this mode gives; `None` when standalone. Reads files only (no request).
    ///
    /// # Errors
    /// An unreadable or invalid kubeconfig, or in-cluster files missing.
    pub async fn client(&self) -> Result<Option<kube::Client>> {
        let config = match self {
            Self::Standalone { .. } => return Ok(None),
            Self::Kubeconfig(path) => {
                let config_error =
                    |reason: String| Error::Config { origin: format!("kubeconfig {}", path.display()), reason };
                let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| config_error(e.to_string()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                    .await
                    .map_err(|e| config_error(e.to_string()))?
            }
            Self::InCluster => kube::Config::incluster().map_err(|e| Error::Config {
                origin: "the pod's in-cluster config".to_owned(),
                reason: e.to_string(),
            })?,
        };
        let client = kube::Client::try_from(config)
            .map_err(|e| Error::Config { origin: "the client configuration".to_owned(), reason: e.to_string() })?;
        Ok(Some(client))
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Standalone { .. } => f.write_str("standalone"),
            Self::Kubeconfig(_) => f.write_str("kubeconfig"),
            Self::InCluster => f.write_str("in-cluster"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_wins_then_kubeconfig_then_in_cluster() {
        let path = PathBuf::from("/k");
        assert!(matches!(Mode::choose(true, Some(path.clone()), true), Mode::Standalone { .. }));
        assert_eq!(Mode::choose(false, Some(path.clone()), true), Mode::Kubeconfig(path));
        assert_eq!(Mode::choose(false, None, true), Mode::InCluster);
        assert!(matches!(Mode::choose(false, None, false), Mode::Standalone { .. }));
    }
}

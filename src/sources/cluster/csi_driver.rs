//! The start-up check: the driver reads its own CSIDriver object, since only with
//! `podInfoOnMount: true` does the kubelet pass (and overwrite) the pod's namespace, which bounds
//! what a cluster source may read.

use k8s_openapi::api::storage::v1::CSIDriver;

/// What the CSIDriver object said, when it did not say `podInfoOnMount: true`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PodInfoProblem {
    #[error("CSIDriver {driver} sets podInfoOnMount: {value}")]
    Off { driver: String, value: String },
    #[error("CSIDriver {driver} does not exist")]
    Missing { driver: String },
    #[error("CSIDriver {driver} cannot be read: {reason}")]
    Unreadable { driver: String, reason: String },
}

impl PodInfoProblem {
    pub fn driver(&self) -> &str {
        match self {
            Self::Off { driver, .. } | Self::Missing { driver } | Self::Unreadable { driver, .. } => driver,
        }
    }
}

/// GETs the CSIDriver `driver` (one request, bounded by `timeout`).
///
/// # Errors
/// [`PodInfoProblem`] unless the object exists and sets `podInfoOnMount: true`.
pub async fn check_pod_info(
    client: kube::Client,
    driver: &str,
    timeout: std::time::Duration,
) -> Result<(), PodInfoProblem> {
    let api: kube::Api<CSIDriver> = kube::Api::all(client);
    let unreadable = |reason: String| PodInfoProblem::Unreadable { driver: driver.to_owned(), reason };
    let found = match tokio::time::timeout(timeout, api.get_opt(driver)).await {
        Err(_) => return Err(unreadable(format!("no answer within {timeout:?}"))),
        Ok(Err(error)) => return Err(unreadable(error.to_string())),
        Ok(Ok(found)) => found,
    };
    let Some(object) = found else { return Err(PodInfoProblem::Missing { driver: driver.to_owned() }) };
    match object.spec.pod_info_on_mount {
        Some(true) => Ok(()),
        Some(false) => Err(PodInfoProblem::Off { driver: driver.to_owned(), value: "false".to_owned() }),
        None => Err(PodInfoProblem::Off { driver: driver.to_owned(), value: "unset (false)".to_owned() }),
    }
}

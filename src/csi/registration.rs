//! The kubelet's plugin registration (pluginregistration v1): what node-driver-registrar did in
//! its own container. The kubelet's plugin watcher finds the socket in
//! `<kubelet-dir>/plugins_registry/`, calls `GetInfo`, dials the CSI endpoint it is told (calling
//! `NodeGetInfo` there), and reports the outcome with `NotifyRegistrationStatus`. Removing the
//! socket deregisters the driver.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::proto::pluginregistration as pb;

/// The kubelet's name for a CSI driver's registration (`pluginregistration.CSIPlugin`).
pub const CSI_PLUGIN: &str = "CSIPlugin";
/// The CSI versions the driver speaks. The kubelet takes the highest 1.x (or 0.x) and refuses a
/// driver naming only 2.x or later; node-driver-registrar also says `1.0.0`.
pub const SUPPORTED_VERSIONS: [&str; 1] = ["1.0.0"];

/// The registration socket's name in the plugin watcher's directory, as node-driver-registrar
/// names it: `<driver-name>-reg.sock`.
pub fn socket_name(driver_name: &str) -> String {
    format!("{driver_name}-reg.sock")
}

/// What the kubelet last said about the registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeletAnswer {
    /// The kubelet has not called `NotifyRegistrationStatus` yet.
    NotYet,
    Registered,
    /// The kubelet's error, as it sent it.
    Refused(String),
}

impl std::fmt::Display for KubeletAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotYet => f.write_str("the kubelet has not answered yet"),
            Self::Registered => f.write_str("registered by the kubelet"),
            Self::Refused(error) => write!(f, "refused by the kubelet: {error}"),
        }
    }
}

/// The pluginregistration v1 `Registration` service of one driver.
#[derive(Clone, Debug)]
pub struct RegistrationService {
    socket: PathBuf,
    driver_name: String,
    endpoint: String,
    answer: Arc<watch::Sender<KubeletAnswer>>,
}

impl RegistrationService {
    /// Serves on `socket` (in the plugin watcher's directory) and tells the kubelet that
    /// `driver_name`'s CSI socket is at `endpoint`: its path as the kubelet sees it, which in a
    /// container is the host's path, not the container's.
    pub fn new(socket: PathBuf, driver_name: String, endpoint: &Path) -> Self {
        let (answer, _) = watch::channel(KubeletAnswer::NotYet);
        Self { socket, driver_name, endpoint: endpoint.display().to_string(), answer: Arc::new(answer) }
    }

    /// Where the kubelet's plugin watcher finds this service.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The kubelet's latest answer, updated as it calls.
    pub fn answers(&self) -> watch::Receiver<KubeletAnswer> {
        self.answer.subscribe()
    }
}

#[tonic::async_trait]
impl pb::registration_server::Registration for RegistrationService {
    #[instrument(name = "GetInfo", skip_all)]
    async fn get_info(&self, _request: Request<pb::InfoRequest>) -> Result<Response<pb::PluginInfo>, Status> {
        tracing::debug!(driver.name = %self.driver_name, endpoint = %self.endpoint, "the kubelet asked who we are");
        Ok(Response::new(pb::PluginInfo {
            r#type: CSI_PLUGIN.to_owned(),
            name: self.driver_name.clone(),
            endpoint: self.endpoint.clone(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
        }))
    }

    /// The kubelet sends `plugin_registered: false` with its reason when it cannot use the
    /// driver (an endpoint it cannot dial, a version it does not speak, a `NodeGetInfo` that
    /// failed); it retries on its own with backoff, so each refusal is only said, at warn.
    #[instrument(name = "NotifyRegistrationStatus", skip_all)]
    async fn notify_registration_status(
        &self,
        request: Request<pb::RegistrationStatus>,
    ) -> Result<Response<pb::RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        let answer = if status.plugin_registered {
            tracing::info!(driver.name = %self.driver_name, endpoint = %self.endpoint, "registered with the kubelet");
            KubeletAnswer::Registered
        } else {
            tracing::warn!(
                driver.name = %self.driver_name,
                endpoint = %self.endpoint,
                error = %status.error,
                "the kubelet refused the registration; check that the endpoint is the CSI socket's path on the host (--kubelet-registration-path)"
            );
            KubeletAnswer::Refused(status.error)
        };
        self.answer.send_replace(answer);
        Ok(Response::new(pb::RegistrationStatusResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::pluginregistration::registration_server::Registration;

    fn service() -> RegistrationService {
        RegistrationService::new(
            PathBuf::from("/var/lib/kubelet/plugins_registry/csi.example.com-reg.sock"),
            "csi.example.com".to_owned(),
            Path::new("/var/lib/kubelet/plugins/csi.example.com/csi.sock"),
        )
    }

    #[tokio::test]
    async fn get_info_names_a_csi_plugin_its_host_endpoint_and_csi_1_0() {
        let info = service().get_info(Request::new(pb::InfoRequest {})).await.unwrap().into_inner();
        assert_eq!(info.r#type, "CSIPlugin");
        assert_eq!(info.name, "csi.example.com");
        assert_eq!(
            info.endpoint, "/var/lib/kubelet/plugins/csi.example.com/csi.sock",
            "a bare path, as the kubelet dials it"
        );
        assert_eq!(info.supported_versions, ["1.0.0"]);
    }

    #[tokio::test]
    async fn the_kubelets_answers_are_kept_latest_first() {
        let service = service();
        let answers = service.answers();
        assert_eq!(*answers.borrow(), KubeletAnswer::NotYet);
        let refused = pb::RegistrationStatus { plugin_registered: false, error: "no such socket".to_owned() };
        service.notify_registration_status(Request::new(refused)).await.unwrap();
        assert_eq!(*answers.borrow(), KubeletAnswer::Refused("no such socket".to_owned()));
        let registered = pb::RegistrationStatus { plugin_registered: true, error: String::new() };
        service.notify_registration_status(Request::new(registered)).await.unwrap();
        assert_eq!(*answers.borrow(), KubeletAnswer::Registered);
    }

    #[test]
    fn the_socket_is_named_as_node_driver_registrar_names_it() {
        assert_eq!(socket_name("csi.trustmount.io"), "csi.trustmount.io-reg.sock");
    }
}

//! `/healthz`: the liveness answer the livenessprobe sidecar gave, from the driver itself. Like
//! the sidecar it calls CSI `Probe` over the driver's own socket, so a check passes only if the
//! gRPC server the kubelet uses answers, and the driver is ready; the body says why not
//! otherwise, and how the kubelet's registration went.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::Endpoint;
use trustmount::csi::KubeletAnswer;
use trustmount::proto::csi::v1::{ProbeRequest, identity_client::IdentityClient};
use trustmount::readiness::Readiness;

/// Under the probes' `timeoutSeconds: 3`, so a hung socket is reported, not timed out.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a check reads: the CSI socket, the start-up conditions, the kubelet's last answer.
#[derive(Clone, Debug)]
pub struct Health {
    socket: PathBuf,
    readiness: Readiness,
    registration: Option<watch::Receiver<KubeletAnswer>>,
}

/// One check's outcome: live or not, and the lines that say why.
#[derive(Debug)]
pub struct Verdict {
    pub live: bool,
    pub text: String,
}

impl Health {
    /// Checks `socket` (the CSI socket as the driver serves it) and `readiness`; reports
    /// `registration`'s answers (`None`: registration is off, another container registers).
    pub fn new(socket: PathBuf, readiness: Readiness, registration: Option<watch::Receiver<KubeletAnswer>>) -> Self {
        Self { socket, readiness, registration }
    }

    /// Live when `Probe` over the socket answers ready. The kubelet's registration answer is
    /// reported but never fails the check: the kubelet retries registration itself, and a
    /// restart would not change what it refused.
    pub async fn check(&self) -> Verdict {
        let probe = match tokio::time::timeout(PROBE_TIMEOUT, probe(&self.socket)).await {
            Ok(Ok(ready)) => Ok(ready),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        let (live, mut text) = match probe {
            Ok(true) => (true, String::from("ok: CSI Probe answers ready\n")),
            Ok(false) => {
                let pending: Vec<String> = self.readiness.pending().iter().map(ToString::to_string).collect();
                let waiting = if pending.is_empty() { String::from("(none left)") } else { pending.join(", ") };
                (false, format!("not ready: CSI Probe answers ready: false; waiting for: {waiting}\n"))
            }
            Err(error) => (false, format!("not live: CSI Probe on {} failed: {error}\n", self.socket.display())),
        };
        text.push_str(&match &self.registration {
            Some(answers) => format!("kubelet registration: {}\n", *answers.borrow()),
            None => String::from("kubelet registration: off (--kubelet-registration=false)\n"),
        });
        Verdict { live, text }
    }
}

/// CSI `Probe` on the unix socket at `path`, as the kubelet's side would call it.
async fn probe(path: &Path) -> Result<bool, String> {
    let path = path.to_owned();
    let channel = Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|error| format!("cannot connect: {}", chain(&error)))?;
    let answer = IdentityClient::new(channel).probe(ProbeRequest {}).await.map_err(|status| status.to_string())?;
    Ok(answer.into_inner().ready.unwrap_or(true))
}

/// An error with its sources, `a: b: c` (tonic's transport error alone says only "transport
/// error").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use tokio::net::UnixListener;
    use tokio_stream::wrappers::UnixListenerStream;
    use trustmount::csi::IdentityService;
    use trustmount::proto::csi::v1::identity_server::IdentityServer;
    use trustmount::readiness::Condition;

    use super::*;

    #[tokio::test]
    async fn no_csi_socket_is_not_live_and_says_which_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("csi.sock");
        let verdict = Health::new(socket.clone(), Readiness::new([]), None).check().await;
        assert!(!verdict.live);
        assert!(
            verdict.text.contains(&socket.display().to_string()) && verdict.text.contains("cannot connect"),
            "{}",
            verdict.text
        );
        assert!(verdict.text.contains("kubelet registration: off"), "{}", verdict.text);
    }

    #[tokio::test]
    async fn a_socket_answering_not_ready_is_not_live_and_names_the_conditions_pending() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("csi.sock");
        let readiness = Readiness::new(Condition::DAEMON);
        let listener = UnixListener::bind(&socket).unwrap();
        let identity = IdentityService::new("csi.trustmount.io".to_owned(), readiness.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(IdentityServer::new(identity))
                .serve_with_incoming(UnixListenerStream::new(listener)),
        );
        let (_, answers) = watch::channel(KubeletAnswer::Refused("bad endpoint".to_owned()));
        let health = Health::new(socket, readiness.clone(), Some(answers));
        readiness.mark(Condition::SourcesLoaded);
        readiness.mark(Condition::StoreOpen);
        let verdict = health.check().await;
        assert!(!verdict.live, "{}", verdict.text);
        assert!(
            verdict.text.contains("waiting for: cluster caches synced, adopted volumes refreshed"),
            "{}",
            verdict.text
        );
        assert!(verdict.text.contains("refused by the kubelet: bad endpoint"), "{}", verdict.text);
        readiness.mark(Condition::CachesSynced);
        readiness.mark(Condition::VolumesRefreshed);
        let verdict = health.check().await;
        assert!(verdict.live, "{}", verdict.text);
        assert!(verdict.text.starts_with("ok: CSI Probe answers ready\n"), "{}", verdict.text);
    }
}

//! Protobuf requests → typed requests, validating every argument before anything is touched
//! (CSI: "the SP MUST validate … before any lookup or side effect").

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use super::{Error, Result};
use crate::domain::{self, Limits, SERVICE_ACCOUNT_TOKENS, echo};
use crate::proto::csi::v1 as pb;
use crate::sources::cluster::{self, PodToken};
use crate::volume::Publication;

use pb::volume_capability::access_mode::Mode;

/// Filesystem types a kubelet may pass for this driver: none, or the truth.
const ACCEPTED_FS_TYPES: &[&str] = &["", "tmpfs"];

/// A publication, and the pod's token when the volume names Secrets (the only use of it).
pub fn publication(request: pb::NodePublishVolumeRequest, limits: &Limits) -> Result<(Publication, Option<PodToken>)> {
    let volume_id = required("volume_id", request.volume_id)?;
    let target = absolute_path("target_path", required("target_path", request.target_path)?)?;
    check_capability(request.volume_capability.as_ref())?;
    // Bounded before anything is parsed: every attribute is the pod author's input.
    let attribute_bytes: usize = request
        .volume_context
        .iter()
        .filter(|(key, _)| !key.starts_with(domain::KUBELET_PREFIX))
        .map(|(key, value)| key.len() + value.len())
        .sum();
    if attribute_bytes > limits.attribute_bytes {
        return Err(Error::AttributesTooLarge { bytes: attribute_bytes, max: limits.attribute_bytes });
    }
    let (spec, pod) = cluster::parse_attributes(&request.volume_context)?;
    let sources = spec.cluster.named.values().map(Vec::len).sum::<usize>();
    if sources > limits.sources {
        return Err(Error::TooManySources { sources, max: limits.sources });
    }
    // The namespace decides what a cluster source may read: it must come from the kubelet.
    // The pod UID too, checked against the target path the kubelet chose: a pod author who
    // writes pod info into volumeAttributes (passed untouched while podInfoOnMount is off)
    // cannot know the UID the API server gives the pod, so a forged namespace fails here even
    // before the CSIDriver watch says podInfoOnMount went off.
    if spec.has_cluster_sources() {
        if pod.namespace.is_empty() {
            return Err(Error::NoPodInfo { key: domain::POD_NAMESPACE });
        }
        if pod.uid.is_empty() {
            return Err(Error::NoPodInfo { key: domain::POD_UID });
        }
    }
    if !pod.uid.is_empty() && pod_uid_of(&target) != Some(pod.uid.as_str()) {
        return Err(Error::PodUidMismatch { uid: pod.uid, target: echo::value(&target.display().to_string()) });
    }
    let token = if cluster::reads_as_pod(&spec) {
        // The ServiceAccount is part of the spec: it must come from the kubelet too.
        if pod.service_account.is_empty() {
            return Err(Error::NoServiceAccount);
        }
        Some(pod_token(&request.secrets)?.ok_or(Error::NoToken)?)
    } else {
        None
    };
    Ok((Publication { volume_id, target, readonly: request.readonly, spec, pod }, token))
}

/// The kubelet's `tokenRequests` token, from the request's `secrets` only (the CSIDriver's
/// `serviceAccountTokenInSecrets: true`, Kubernetes >= 1.35): the channel meant for credentials,
/// never logged by the kubelet or the CSI sidecars, and one a pod author cannot write into.
/// The same key in `volume_context` is ignored: without `tokenRequests` the kubelet passes a
/// pod author's attributes untouched, so a token pasted there would be used as the pod's.
fn pod_token(secrets: &HashMap<String, String>) -> Result<Option<PodToken>> {
    let Some(json) = secrets.get(SERVICE_ACCOUNT_TOKENS) else {
        return Ok(None);
    };
    Ok(PodToken::from_kubelet_json(json)?)
}

pub fn unpublication(request: pb::NodeUnpublishVolumeRequest) -> Result<(String, PathBuf)> {
    let volume_id = required("volume_id", request.volume_id)?;
    let target = absolute_path("target_path", required("target_path", request.target_path)?)?;
    Ok((volume_id, target))
}

/// Only presence is checked: the path is judged by looking the volume up there (CSI: NOT_FOUND
/// when "the volume does not exist on the specified path", relative paths included).
pub fn stats_query(request: pb::NodeGetVolumeStatsRequest) -> Result<(String, PathBuf)> {
    let volume_id = required("volume_id", request.volume_id)?;
    let path = PathBuf::from(required("volume_path", request.volume_path)?);
    Ok((volume_id, path))
}

/// The pod a call is for, as the kubelet names it (podInfoOnMount): (namespace, name, uid),
/// empty when not given. For the call's log line, before anything is validated. Only these
/// three keys are read: the rest of the volume context can carry the pod's token.
pub fn pod_of(volume_context: &HashMap<String, String>) -> [&str; 3] {
    [domain::POD_NAMESPACE, domain::POD_NAME, domain::POD_UID]
        .map(|key| volume_context.get(key).map_or("", String::as_str))
}

/// The pod UID in a kubelet target path, `…/pods/<uid>/volumes/<plugin>/<name>/mount`.
pub fn pod_uid_of(target: &Path) -> Option<&str> {
    let components: Vec<&str> = target.components().filter_map(|c| c.as_os_str().to_str()).collect();
    match components.as_slice() {
        [.., "pods", uid, "volumes", _plugin, _name, "mount"] => Some(uid),
        _ => None,
    }
}

fn required(field: &'static str, value: String) -> Result<String> {
    if value.is_empty() {
        return Err(Error::MissingField(field));
    }
    Ok(value)
}

fn absolute_path(field: &'static str, value: String) -> Result<PathBuf> {
    let path = Path::new(&value);
    let lexically_clean = path.is_absolute() && !path.components().any(|c| matches!(c, Component::ParentDir));
    if !lexically_clean {
        return Err(Error::BadPath { field, path: echo::value(&value) });
    }
    Ok(PathBuf::from(value))
}

fn check_capability(capability: Option<&pb::VolumeCapability>) -> Result<()> {
    let capability = capability.ok_or(Error::MissingField("volume_capability"))?;
    match &capability.access_type {
        None => return Err(Error::MissingField("volume_capability.access_type")),
        Some(pb::volume_capability::AccessType::Block(_)) => return Err(Error::BlockAccess),
        Some(pb::volume_capability::AccessType::Mount(mount)) => {
            if !ACCEPTED_FS_TYPES.contains(&mount.fs_type.as_str()) {
                return Err(Error::UnsupportedFsType(echo::value(&mount.fs_type)));
            }
            if !mount.mount_flags.is_empty() {
                return Err(Error::MountFlags(mount.mount_flags.len()));
            }
        }
    }
    let mode = capability.access_mode.as_ref().ok_or(Error::MissingField("volume_capability.access_mode"))?.mode;
    // Every mode is served read-only; only "no mode" and unknown numbers are wrong.
    match Mode::try_from(mode) {
        Ok(Mode::Unknown) => Err(Error::MissingField("volume_capability.access_mode.mode")),
        Ok(_) => Ok(()),
        Err(_) => Err(Error::UnsupportedAccessMode(mode.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> pb::NodePublishVolumeRequest {
        pb::NodePublishVolumeRequest {
            volume_id: "csi-abc".into(),
            target_path: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/certs/mount".into(),
            volume_capability: Some(pb::VolumeCapability {
                access_type: Some(pb::volume_capability::AccessType::Mount(Default::default())),
                access_mode: Some(pb::volume_capability::AccessMode { mode: Mode::SingleNodeWriter as i32 }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn valid_request_becomes_a_publication() {
        let (publication, token) = publication(valid(), &Limits::default()).unwrap();
        assert!(token.is_none(), "no Secrets: no token taken");
        assert_eq!(publication.volume_id, "csi-abc");
        assert!(publication.spec.system_roots);
    }

    #[test]
    fn relative_and_dotdot_targets_are_rejected() {
        for target in ["relative/mount", "/var/lib/kubelet/../../etc"] {
            let mut request = valid();
            request.target_path = target.into();
            assert!(matches!(publication(request, &Limits::default()), Err(Error::BadPath { .. })), "{target}");
        }
    }

    #[test]
    fn the_pod_uid_must_be_the_one_in_the_target_path() {
        let with = |uid: &str, target: &str| {
            let mut request = valid();
            request.target_path = target.into();
            request.volume_context.insert("csi.storage.k8s.io/pod.uid".into(), uid.into());
            publication(request, &Limits::default())
        };
        assert!(with("u", "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/certs/mount").is_ok());
        for target in [
            "/var/lib/kubelet/pods/other/volumes/kubernetes.io~csi/certs/mount",
            "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/certs/elsewhere",
            "/somewhere/else",
        ] {
            assert!(matches!(with("u", target), Err(Error::PodUidMismatch { .. })), "{target}");
        }
        assert!(
            publication(valid(), &Limits::default()).is_ok(),
            "without a pod UID (no podInfoOnMount) nothing is compared"
        );
    }

    #[test]
    fn a_cluster_source_without_pod_info_asks_for_pod_info_on_mount() {
        let mut request = valid();
        request.volume_context.insert("configMaps".into(), "corp-ca".into());
        let error = publication(request.clone(), &Limits::default()).unwrap_err();
        assert!(matches!(error, Error::NoPodInfo { .. }) && error.to_string().contains("podInfoOnMount"), "{error}");
        request.volume_context.insert("csi.storage.k8s.io/pod.namespace".into(), "shop".into());
        // The namespace alone (as a pod author could write it) is not enough: the UID must be
        // there, and be the target path's.
        let error = publication(request.clone(), &Limits::default()).unwrap_err();
        assert!(error.to_string().contains("csi.storage.k8s.io/pod.uid"), "{error}");
        request.volume_context.insert("csi.storage.k8s.io/pod.uid".into(), "forged".into());
        assert!(matches!(publication(request.clone(), &Limits::default()), Err(Error::PodUidMismatch { .. })));
        request.volume_context.insert("csi.storage.k8s.io/pod.uid".into(), "u".into());
        assert!(publication(request, &Limits::default()).is_ok());
    }

    fn with_secret(namespace: &str, account: &str) -> pb::NodePublishVolumeRequest {
        let mut request = valid();
        request.volume_context.insert("secrets".into(), "corp-ca-secret".into());
        request.volume_context.insert("csi.storage.k8s.io/pod.namespace".into(), namespace.into());
        request.volume_context.insert("csi.storage.k8s.io/pod.uid".into(), "u".into());
        request.volume_context.insert("csi.storage.k8s.io/serviceAccount.name".into(), account.into());
        request
    }

    fn publication_of(request: pb::NodePublishVolumeRequest) -> Result<(Publication, Option<PodToken>)> {
        publication(request, &Limits::default())
    }

    #[test]
    fn attributes_and_sources_over_the_limits_are_refused_naming_the_flags() {
        let limits = Limits { attribute_bytes: 100, sources: 3, ..Limits::default() };
        let mut request = valid();
        request.volume_context.insert("csi.storage.k8s.io/pod.namespace".into(), "shop".into());
        request.volume_context.insert("csi.storage.k8s.io/pod.uid".into(), "u".into());
        request.volume_context.insert("configMaps".into(), "a, b, c".into());
        assert!(publication(request.clone(), &limits).is_ok());
        request.volume_context.insert("configMaps".into(), "a, b, c, d".into());
        let error = publication(request.clone(), &limits).unwrap_err();
        assert!(matches!(error, Error::TooManySources { sources: 4, max: 3 }), "{error}");
        assert!(error.to_string().contains("--max-volume-sources"), "{error}");
        // The kubelet's keys (a token JSON of a kilobyte or two) are not the pod author's.
        request.volume_context.insert("configMaps".into(), "a".into());
        request.volume_context.insert("csi.storage.k8s.io/ephemeral".into(), "true".repeat(50));
        assert!(!matches!(publication(request.clone(), &limits), Err(Error::AttributesTooLarge { .. })));
        request.volume_context.insert("configMaps".into(), "a".repeat(200));
        let error = publication(request, &limits).unwrap_err();
        assert!(matches!(error, Error::AttributesTooLarge { max: 100, .. }), "{error}");
        assert!(error.to_string().contains("--max-volume-attribute-bytes"), "{error}");
    }

    fn token_json(token: &str) -> String {
        format!(r#"{{"":{{"token":"{token}","expirationTimestamp":"2026-12-01T12:00:00Z"}}}}"#)
    }

    fn bearer(token: &PodToken) -> &str {
        token.authorization().to_str().unwrap()
    }

    #[test]
    fn the_token_comes_from_secrets_only() {
        let mut request = with_secret("shop", "web");
        // Pasted into the attributes (what a pod author can do): never used.
        request.volume_context.insert(SERVICE_ACCOUNT_TOKENS.into(), token_json("in-context"));
        assert!(matches!(super::publication(request.clone(), &Limits::default()), Err(Error::NoToken)));
        request.secrets.insert(SERVICE_ACCOUNT_TOKENS.into(), token_json("in-secrets"));
        let (publication, token) = super::publication(request.clone(), &Limits::default()).unwrap();
        assert_eq!(bearer(&token.unwrap()), "Bearer in-secrets");
        assert_eq!(publication.spec.cluster.service_account, "web");
        // A malformed entry in secrets is refused.
        request.secrets.insert(SERVICE_ACCOUNT_TOKENS.into(), "{not json".into());
        assert!(matches!(super::publication(request, &Limits::default()), Err(Error::Token(_))));
    }

    #[test]
    fn secrets_without_a_token_or_service_account_ask_for_the_csidriver_settings() {
        let error = publication_of(with_secret("shop", "web")).unwrap_err();
        assert!(matches!(error, Error::NoToken) && error.to_string().contains("tokenRequests"), "{error}");
        let mut empty = with_secret("shop", "web");
        empty.secrets.insert(SERVICE_ACCOUNT_TOKENS.into(), "{}".into());
        assert!(matches!(publication(empty, &Limits::default()), Err(Error::NoToken)));
        let mut no_account = with_secret("shop", "");
        no_account.secrets.insert(SERVICE_ACCOUNT_TOKENS.into(), token_json("t"));
        let error = publication(no_account, &Limits::default()).unwrap_err();
        assert!(matches!(error, Error::NoServiceAccount) && error.to_string().contains("podInfoOnMount"), "{error}");
        let error = publication_of(with_secret("", "web")).unwrap_err();
        assert!(matches!(error, Error::NoPodInfo { .. }), "{error}");
    }

    #[test]
    fn the_pod_for_the_log_is_read_from_its_three_keys_only() {
        let mut request = valid();
        assert_eq!(pod_of(&request.volume_context), ["", "", ""]);
        for (key, value) in [
            ("csi.storage.k8s.io/pod.namespace", "shop"),
            ("csi.storage.k8s.io/pod.name", "web-0"),
            ("csi.storage.k8s.io/pod.uid", "u"),
            (SERVICE_ACCOUNT_TOKENS, "secret"),
        ] {
            request.volume_context.insert(key.into(), value.into());
        }
        assert_eq!(pod_of(&request.volume_context), ["shop", "web-0", "u"]);
    }

    #[test]
    fn unknown_access_mode_number_is_rejected() {
        let mut request = valid();
        request.volume_capability.as_mut().unwrap().access_mode = Some(pb::volume_capability::AccessMode { mode: 99 });
        assert!(matches!(publication(request, &Limits::default()), Err(Error::UnsupportedAccessMode(_))));
    }
}

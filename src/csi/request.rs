//! Protobuf requests → typed requests, validating every argument before anything is touched
//! (CSI: "the SP MUST validate … before any lookup or side effect").

use std::path::{Component, Path, PathBuf};

use super::{Error, Result};
use crate::proto::csi::v1 as pb;
use crate::spec::VolumeSpec;
use crate::volume::Publication;

use pb::volume_capability::access_mode::Mode;

/// Filesystem types a kubelet may pass for this driver: none, or the truth.
const ACCEPTED_FS_TYPES: &[&str] = &["", "tmpfs"];

pub fn publication(request: pb::NodePublishVolumeRequest) -> Result<Publication> {
    let volume_id = required("volume_id", request.volume_id)?;
    let target = absolute_path("target_path", required("target_path", request.target_path)?)?;
    check_capability(request.volume_capability.as_ref())?;
    let (spec, pod) = VolumeSpec::from_attributes(&request.volume_context)?;
    // The namespace decides what a cluster source may read: it must come from the kubelet.
    if spec.has_cluster_sources() && pod.namespace.is_empty() {
        return Err(Error::NoPodInfo);
    }
    if !pod.uid.is_empty() && pod_uid_of(&target) != Some(pod.uid.as_str()) {
        return Err(Error::PodUidMismatch { uid: pod.uid, target: target.display().to_string() });
    }
    Ok(Publication { volume_id, target, readonly: request.readonly, spec, pod })
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

/// The pod UID in a kubelet target path, `…/pods/<uid>/volumes/<plugin>/<name>/mount`.
fn pod_uid_of(target: &Path) -> Option<&str> {
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
        return Err(Error::BadPath { field, path: value });
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
                return Err(Error::UnsupportedFsType(mount.fs_type.clone()));
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
        let publication = publication(valid()).unwrap();
        assert_eq!(publication.volume_id, "csi-abc");
        assert!(publication.spec.system_roots);
    }

    #[test]
    fn relative_and_dotdot_targets_are_rejected() {
        for target in ["relative/mount", "/var/lib/kubelet/../../etc"] {
            let mut request = valid();
            request.target_path = target.into();
            assert!(matches!(publication(request), Err(Error::BadPath { .. })), "{target}");
        }
    }

    #[test]
    fn the_pod_uid_must_be_the_one_in_the_target_path() {
        let with = |uid: &str, target: &str| {
            let mut request = valid();
            request.target_path = target.into();
            request.volume_context.insert("csi.storage.k8s.io/pod.uid".into(), uid.into());
            publication(request)
        };
        assert!(with("u", "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/certs/mount").is_ok());
        for target in [
            "/var/lib/kubelet/pods/other/volumes/kubernetes.io~csi/certs/mount",
            "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/certs/elsewhere",
            "/somewhere/else",
        ] {
            assert!(matches!(with("u", target), Err(Error::PodUidMismatch { .. })), "{target}");
        }
        assert!(publication(valid()).is_ok(), "without a pod UID (no podInfoOnMount) nothing is compared");
    }

    #[test]
    fn a_cluster_source_without_pod_info_asks_for_pod_info_on_mount() {
        let mut request = valid();
        request.volume_context.insert("configMaps".into(), "corp-ca".into());
        let error = publication(request.clone()).unwrap_err();
        assert!(matches!(error, Error::NoPodInfo) && error.to_string().contains("podInfoOnMount"), "{error}");
        request.volume_context.insert("csi.storage.k8s.io/pod.namespace".into(), "shop".into());
        assert!(publication(request).is_ok());
    }

    #[test]
    fn unknown_access_mode_number_is_rejected() {
        let mut request = valid();
        request.volume_capability.as_mut().unwrap().access_mode = Some(pb::volume_capability::AccessMode { mode: 99 });
        assert!(matches!(publication(request), Err(Error::UnsupportedAccessMode(_))));
    }
}

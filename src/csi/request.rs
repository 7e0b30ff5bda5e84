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
    fn unknown_access_mode_number_is_rejected() {
        let mut request = valid();
        request.volume_capability.as_mut().unwrap().access_mode = Some(pb::volume_capability::AccessMode { mode: 99 });
        assert!(matches!(publication(request), Err(Error::UnsupportedAccessMode(_))));
    }
}

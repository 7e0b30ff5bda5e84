//! Unmounting a target completely: every mount stacked on it, busy ones detached lazily.

use nix::errno::Errno;

use super::target::Target;
use super::{Error, Result};

/// How many stacked mounts on one target we peel off before giving up.
const MAX_STACKED_MOUNTS: usize = 8;

/// Unmounts everything stacked on `target`; busy mounts are detached lazily.
pub(super) fn unmount_all(target: &Target) -> Result<()> {
    for _ in 0..MAX_STACKED_MOUNTS {
        match target.unmount() {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(Error::Mount { source: Errno::EBUSY, .. }) => {
                tracing::warn!(target = %target.resolved().display(), "target busy; detaching it lazily");
                target.unmount_lazy()?;
            }
            Err(e) => return Err(e),
        }
        if !target.is_mounted()? {
            return Ok(());
        }
    }
    Err(Error::Mount { op: "unmount all mounts stacked on", path: target.resolved().to_owned(), source: Errno::EBUSY })
}

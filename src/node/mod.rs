//! The node's use cases, between `csi/` and `volume/`: publish (resolve the spec against the
//! sources, render, hand the files to the store, and close the race with a reload), unpublish,
//! and a volume's stats with its health.

mod health;
mod volumes;

pub use health::Health;
pub use volumes::{Node, VolumeReport};

use crate::{sources, volume};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Volume(#[from] volume::Error),
    #[error(transparent)]
    Sources(#[from] sources::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

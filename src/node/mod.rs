//! The node's use cases, between `csi/` and `volume/`:
//! - `publish.rs`: publish (resolve the spec against the sources, render, hand the files to the
//!   store, and close the race with a reload) and unpublish;
//! - `health.rs`: a volume's stats with its health;
//! - `refresh.rs`: a refresh pass over the specs a change affects, with its metrics, events, log;
//! - `triggers.rs`: what sets passes off (start, file and cluster bursts, requests);
//! - `failures.rs`: the specs whose last refresh failed, which `health.rs` reports.

mod failures;
mod health;
mod publish;
mod refresh;
mod triggers;

pub use failures::Problem;
pub use health::{Health, VolumeReport};
pub use publish::Node;
pub use refresh::{Rotation, Trigger};

use crate::{sources, volume};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Volume(#[from] volume::Error),
    #[error(transparent)]
    Sources(#[from] sources::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

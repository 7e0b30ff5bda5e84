//! trustmount: a CSI node driver that publishes a merged CA trust bundle as a read-only volume.
//!
//! Data flows one way: [`csi`] (validate, map errors) → [`node`] (the use cases) → [`sources`]
//! (resolve certificates) → [`bundle`] (parse, dedupe, lay out files; pure) → [`volume`] (tmpfs,
//! atomic swap, bind mount). [`rotation`] re-enters at `sources/` and leaves through `volume/`.
//! [`metrics`] stands beside the flow: `csi/`, `rotation` and `sources/` record into it, and a
//! scrape reads the store and the sources; nothing in the flow reads it back. [`args`] is the
//! binary's command line, here so that tests can parse what the shipped manifests pass to it.
//! [`domain`] is the shared vocabulary every floor speaks (volume specs, pod identity, source
//! kinds).
#![forbid(unsafe_code)]

pub mod args;
pub mod bundle;
pub mod csi;
pub mod domain;
pub mod events;
pub mod metrics;
pub mod node;
pub mod readiness;
pub mod rotation;
pub mod sources;
pub mod volume;

pub mod proto {
    //! Code generated from `proto/csi.proto`.
    #![allow(clippy::all, missing_docs)]
    pub mod csi {
        pub mod v1 {
            tonic::include_proto!("csi.v1");
        }
    }
}

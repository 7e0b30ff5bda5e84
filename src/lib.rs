//! trustmount: a CSI node driver that publishes a merged CA trust bundle as a read-only volume.
//!
//! Data flows one way: [`csi`] (validate, map errors) → [`node`] (the use cases) → [`sources`]
//! (resolve certificates) → [`bundle`] (parse, dedupe, lay out files; pure) → [`volume`] (tmpfs,
//! atomic swap, bind mount). A refresh ([`node`]'s triggers) re-enters at `sources/` and leaves
//! through `volume/`.
//!
//! Below the flow: [`domain`], the shared vocabulary every floor speaks (volume specs, pod
//! identity, source kinds); [`metrics`], the recorder that `csi/`, `node/` and `sources/` write
//! into and nothing reads back (the binary's exporter, `cli/exporter/`, serves it with the gauges
//! a scrape reads from the store and the sources); [`clock`], the time the use cases judge by;
//! [`keyed_locks`], the per-key locks of `csi/` and `volume/`. [`args`] is the binary's command
//! line, here so that tests can parse what the shipped manifests pass to it.
#![forbid(unsafe_code)]

pub mod args;
pub mod bundle;
pub mod clock;
pub mod csi;
pub mod domain;
pub mod events;
pub mod fair_rate;
pub mod keyed_locks;
pub mod metrics;
pub mod node;
pub mod readiness;
pub mod sources;
pub mod volume;

pub mod proto {
    //! Code generated from `proto/csi.proto` and `proto/pluginregistration.proto`.
    #![allow(clippy::all, missing_docs)]
    pub mod csi {
        pub mod v1 {
            tonic::include_proto!("csi.v1");
        }
    }
    /// The kubelet's plugin registration API (pluginregistration v1).
    pub mod pluginregistration {
        tonic::include_proto!("pluginregistration");
    }
}

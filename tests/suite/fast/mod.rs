//! The fast tier: no control plane, no Go build (`tests/run fast`).

mod bundle_openssl;
mod cli;
mod crash;
mod csi_node;
mod layouts;
mod node_clock;
mod ns_selftest;
mod policy;
mod registration;
mod rotation;
mod trust;
mod volume_store;

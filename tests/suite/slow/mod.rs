//! The slow tier: a control plane, the image, deploy/, scale, csi-sanity (`tests/run slow`).

mod cluster_sources;
mod control_plane;
mod csi_sanity;
mod deploy;
mod docs;
mod events;
mod image;
mod metrics;
mod node;
mod node_images;
mod node_recipes;
mod noisy_neighbour;
mod rbac;
mod rotation_scale;
mod secret_sources;
mod source_kind;
mod upgrade;

//! What a spec reads from the cluster ([`Wanted`]) and what it gets from the caches
//! ([`Selected`]): the words every watched kind and the selection share, on a floor of their own
//! so that a kind's file and the selection over all kinds do not import each other.

use super::ObjectKey;
use super::defaults::Defaults;
use crate::bundle::{Certificate, Ignored};
use crate::domain::{SignerSelection, VolumeSpec};

/// What a spec reads from the cluster: its own sources plus, unless it opts out, the
/// driver-wide defaults (whose ConfigMaps live in the driver's namespace).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub trust_bundles: Vec<String>,
    pub signers: Vec<SignerSelection>,
    /// Each object with the key it takes (`None`: every key holding certificates).
    pub config_maps: Vec<(ObjectKey, Option<String>)>,
    pub optional: bool,
}

impl Wanted {
    pub fn of(spec: &VolumeSpec, defaults: &Defaults) -> Self {
        let cluster = &spec.cluster;
        let mut wanted = Self {
            trust_bundles: cluster.trust_bundles.clone(),
            signers: cluster.signer.iter().cloned().collect(),
            config_maps: cluster
                .config_maps
                .iter()
                .map(|r| (ObjectKey { namespace: spec.namespace.clone(), name: r.name.clone() }, r.key.clone()))
                .collect(),
            optional: cluster.optional,
        };
        if defaults.apply_to(spec) {
            wanted.trust_bundles.extend(defaults.trust_bundles.iter().cloned());
            wanted.trust_bundles.sort();
            wanted.trust_bundles.dedup();
            for signer in &defaults.signers {
                if !wanted.signers.contains(signer) {
                    wanted.signers.push(signer.clone());
                }
            }
            wanted.config_maps.extend(
                defaults.config_maps.iter().map(|r| {
                    (ObjectKey { namespace: defaults.namespace.clone(), name: r.name.clone() }, r.key.clone())
                }),
            );
            wanted.config_maps.sort();
            wanted.config_maps.dedup();
        }
        wanted
    }

    /// The ConfigMaps to watch, each once.
    pub fn config_map_keys(&self) -> Vec<ObjectKey> {
        let mut keys: Vec<ObjectKey> = self.config_maps.iter().map(|(key, _)| key.clone()).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    pub fn uses_trust_bundles(&self) -> bool {
        !self.trust_bundles.is_empty() || !self.signers.is_empty()
    }
}

/// What a spec gets from the cluster's caches.
#[derive(Clone, Debug, Default)]
pub struct Selected {
    pub certificates: Vec<Certificate>,
    /// The keys without certificates that ConfigMaps named without a key skipped.
    pub ignored: Vec<Ignored>,
}

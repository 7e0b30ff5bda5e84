//! A spec's certificates from the caches, and which specs a change touches. Pure over the
//! caches' current states: no request, no wait.

use super::config_maps::ConfigMaps;
use super::trust_bundles::{self, TrustBundles};
use super::wanted::{Selected, Wanted};
use super::{Change, Result};

pub fn certificates(wanted: &Wanted, trust_bundles: &TrustBundles, config_maps: &ConfigMaps) -> Result<Selected> {
    let mut selected = Selected::default();
    if wanted.uses_trust_bundles() {
        selected.certificates = trust_bundles.select(wanted)?;
    }
    config_maps.select(wanted, &mut selected)?;
    Ok(selected)
}

pub fn affects(change: &Change, cluster: &Wanted) -> bool {
    match change {
        Change::ConfigMap { object, data_keys } => super::config_maps::affects(object, data_keys.as_ref(), cluster),
        Change::ClusterSourcesAllowed => cluster.uses_trust_bundles() || !cluster.config_maps.is_empty(),
        Change::TrustBundle { name, before, after } => {
            trust_bundles::affects(name, [before, after].into_iter().flatten(), cluster)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::domain::{ConfigMapRef, LabelSelector, SignerSelection, VolumeSpec};
    use crate::sources::cluster::BundleMeta;
    use crate::sources::cluster::ObjectKey;
    use crate::sources::cluster::defaults::Defaults;

    /// Without defaults: what the spec itself names.
    fn affects(change: &Change, spec: &VolumeSpec) -> bool {
        super::affects(change, &Wanted::of(spec, &Defaults::default()))
    }

    fn spec(namespace: &str, refs: &[(&str, Option<&str>)]) -> VolumeSpec {
        let mut spec = VolumeSpec { namespace: namespace.to_owned(), ..VolumeSpec::default() };
        spec.cluster.config_maps = refs
            .iter()
            .map(|(name, key)| ConfigMapRef { name: (*name).to_owned(), key: key.map(str::to_owned) })
            .collect();
        spec
    }

    fn change(namespace: &str, name: &str, keys: Option<&[&str]>) -> Change {
        Change::ConfigMap {
            object: ObjectKey { namespace: namespace.to_owned(), name: name.to_owned() },
            data_keys: keys.map(|keys| keys.iter().map(|k| (*k).to_owned()).collect::<BTreeSet<_>>()),
        }
    }

    #[test]
    fn a_config_map_change_touches_only_specs_naming_it_in_its_namespace_and_key() {
        let bare = spec("a", &[("corp-ca", None)]);
        let one_key = spec("a", &[("corp-ca", Some("ca.crt"))]);
        let other_namespace = spec("b", &[("corp-ca", None)]);
        let other_name = spec("a", &[("team-ca", None)]);
        let readme = change("a", "corp-ca", Some(&["other.crt"]));
        assert!(affects(&readme, &bare));
        assert!(!affects(&readme, &one_key), "a name:key spec ignores other keys");
        assert!(!affects(&readme, &other_namespace));
        assert!(!affects(&readme, &other_name));
        let deleted = change("a", "corp-ca", None);
        assert!(affects(&deleted, &one_key));
        assert!(affects(&change("a", "corp-ca", Some(&["ca.crt"])), &one_key));
    }

    #[test]
    fn a_bundle_change_touches_specs_naming_it_or_whose_selector_matched_before_or_after() {
        let mut by_name = VolumeSpec::default();
        by_name.cluster.trust_bundles = vec!["corp".to_owned()];
        let mut by_signer = VolumeSpec::default();
        by_signer.cluster.signer = Some(SignerSelection {
            signer_name: "example.com/s".to_owned(),
            selector: LabelSelector::parse("env=prod").unwrap(),
        });
        let meta = |signer: &str, env: &str| BundleMeta {
            signer_name: Some(signer.to_owned()),
            labels: BTreeMap::from([("env".to_owned(), env.to_owned())]),
        };
        let relabelled = Change::TrustBundle {
            name: "example.com:s:x".to_owned(),
            before: Some(meta("example.com/s", "prod")),
            after: Some(meta("example.com/s", "dev")),
        };
        assert!(affects(&relabelled, &by_signer), "it left the selection");
        assert!(!affects(&relabelled, &by_name));
        let other_signer =
            Change::TrustBundle { name: "corp".to_owned(), before: None, after: Some(meta("example.com/t", "prod")) };
        assert!(affects(&other_signer, &by_name));
        assert!(!affects(&other_signer, &by_signer));
    }

    #[test]
    fn defaults_join_every_spec_that_does_not_opt_out_and_read_the_drivers_namespace() {
        let defaults = Defaults {
            namespace: "trustmount".to_owned(),
            config_maps: vec![ConfigMapRef { name: "org-ca".to_owned(), key: None }],
            trust_bundles: vec!["corp".to_owned()],
            ..Defaults::default()
        };
        let plain = spec("a", &[]);
        let mut opted_out = spec("a", &[("org-ca", None)]);
        opted_out.cluster.defaults = false;
        let wanted = Wanted::of(&plain, &defaults);
        let driver_object = ObjectKey { namespace: "trustmount".to_owned(), name: "org-ca".to_owned() };
        assert_eq!(wanted.config_map_keys(), [driver_object]);
        assert!(wanted.uses_trust_bundles());
        assert!(super::affects(&change("trustmount", "org-ca", Some(&["ca.crt"])), &wanted));
        assert!(!super::affects(&change("a", "org-ca", Some(&["ca.crt"])), &wanted), "not the pod's namespace");
        let out = Wanted::of(&opted_out, &defaults);
        assert!(!out.uses_trust_bundles());
        assert!(!super::affects(&change("trustmount", "org-ca", None), &out));
        assert!(super::affects(&change("a", "org-ca", None), &out), "its own ConfigMap of the same name");
    }
}

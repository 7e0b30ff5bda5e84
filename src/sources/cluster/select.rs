//! A spec's certificates from the caches, and which specs a change touches. Pure over the
//! caches' current states: no request, no wait.

use std::collections::HashSet;

use super::config_maps::ConfigMaps;
use super::content::KeyContent;
use super::trust_bundles::{self, Bundle, TrustBundles};
use super::{Change, Error, ObjectKey, Result};
use crate::bundle::Certificate;
use crate::spec::VolumeSpec;

const TRUST_BUNDLE: &str = "ClusterTrustBundle";
const CONFIG_MAP: &str = "ConfigMap";
/// The one field of a ClusterTrustBundle that holds certificates.
const TRUST_BUNDLE_FIELD: &str = "spec.trustBundle";

/// The ConfigMaps `spec` names, in its pod's namespace.
pub fn config_map_keys(spec: &VolumeSpec) -> Vec<ObjectKey> {
    let mut names: Vec<&str> = spec.cluster.config_maps.iter().map(|r| r.name.as_str()).collect();
    names.dedup();
    names.into_iter().map(|name| ObjectKey { namespace: spec.namespace.clone(), name: name.to_owned() }).collect()
}

pub fn uses_trust_bundles(spec: &VolumeSpec) -> bool {
    !spec.cluster.trust_bundles.is_empty() || spec.cluster.signer.is_some()
}

pub fn certificates(
    spec: &VolumeSpec,
    trust_bundles: &TrustBundles,
    config_maps: &ConfigMaps,
) -> Result<Vec<Certificate>> {
    let mut certificates = if uses_trust_bundles(spec) { from_trust_bundles(spec, trust_bundles)? } else { Vec::new() };
    certificates.extend(from_config_maps(spec, config_maps)?);
    Ok(certificates)
}

/// Bundles named, then those of the signer that match, in name order; their certificates in
/// (bundle name, DER) order, each once.
fn from_trust_bundles(spec: &VolumeSpec, cache: &TrustBundles) -> Result<Vec<Certificate>> {
    let cluster = &spec.cluster;
    let bundles = match cache.get() {
        None => {
            return Err(Error::NotSynced { what: "ClusterTrustBundles".to_owned(), waited: super::FIRST_SYNC_TIMEOUT });
        }
        Some(trust_bundles::State::NotServed) => return Err(Error::TrustBundlesNotServed),
        Some(trust_bundles::State::Synced(bundles)) => bundles,
    };
    let mut selected: Vec<(&String, &Bundle)> = Vec::new();
    for name in &cluster.trust_bundles {
        match bundles.get_key_value(name) {
            Some(found) => selected.push(found),
            None if cluster.optional => {}
            None => return Err(Error::Missing { kind: TRUST_BUNDLE, object: name.clone() }),
        }
    }
    if let Some(selection) = &cluster.signer {
        let before = selected.len();
        selected.extend(bundles.iter().filter(|(_, bundle)| bundle.meta.selected_by(selection)));
        if selected.len() == before && !cluster.optional {
            return Err(Error::NoMatch {
                signer: selection.signer_name.clone(),
                selector: selection.selector.to_string(),
            });
        }
    }
    selected.sort_by_key(|(name, _)| *name);
    selected.dedup_by_key(|(name, _)| *name);
    let mut certificates: Vec<(&String, &Certificate)> = Vec::new();
    for (name, bundle) in selected {
        match &bundle.content {
            KeyContent::Certificates(found) => certificates.extend(found.iter().map(|c| (name, c))),
            KeyContent::Ignored(source) | KeyContent::Invalid(source) => {
                return Err(Error::Content {
                    kind: TRUST_BUNDLE,
                    object: name.clone(),
                    key: TRUST_BUNDLE_FIELD.to_owned(),
                    source: Box::new(source.clone()),
                });
            }
        }
    }
    certificates.sort_by(|a, b| (a.0, &a.1.der).cmp(&(b.0, &b.1.der)));
    let mut seen = HashSet::new();
    Ok(certificates.into_iter().filter(|(_, c)| seen.insert(c.fingerprint)).map(|(_, c)| c.clone()).collect())
}

fn from_config_maps(spec: &VolumeSpec, cache: &ConfigMaps) -> Result<Vec<Certificate>> {
    let cluster = &spec.cluster;
    let mut certificates = Vec::new();
    for reference in &cluster.config_maps {
        let key = ObjectKey { namespace: spec.namespace.clone(), name: reference.name.clone() };
        let object = key.to_string();
        let content = cache
            .get(&key)
            .ok_or_else(|| Error::NotSynced { what: format!("ConfigMap {key}"), waited: super::FIRST_SYNC_TIMEOUT })?;
        let Some(keys) = content.as_ref() else {
            if cluster.optional {
                continue;
            }
            return Err(Error::Missing { kind: CONFIG_MAP, object });
        };
        let content_error = |data_key: &str, source: &crate::bundle::Error| Error::Content {
            kind: CONFIG_MAP,
            object: object.clone(),
            key: data_key.to_owned(),
            source: Box::new(source.clone()),
        };
        match &reference.key {
            Some(data_key) => match keys.get(data_key) {
                None if cluster.optional => {}
                None => return Err(Error::MissingKey { object, key: data_key.clone() }),
                Some(KeyContent::Certificates(found)) => certificates.extend(found.iter().cloned()),
                Some(KeyContent::Ignored(source) | KeyContent::Invalid(source)) => {
                    return Err(content_error(data_key, source));
                }
            },
            None => {
                let before = certificates.len();
                for (data_key, value) in keys {
                    match value {
                        KeyContent::Certificates(found) => certificates.extend(found.iter().cloned()),
                        KeyContent::Ignored(_) => {}
                        KeyContent::Invalid(source) => return Err(content_error(data_key, source)),
                    }
                }
                if certificates.len() == before {
                    return Err(Error::NoCertificates { kind: CONFIG_MAP, object });
                }
            }
        }
    }
    Ok(certificates)
}

pub fn affects(change: &Change, spec: &VolumeSpec) -> bool {
    let cluster = &spec.cluster;
    match change {
        Change::ConfigMap { object, data_keys } => {
            object.namespace == spec.namespace
                && cluster.config_maps.iter().any(|reference| {
                    reference.name == object.name
                        && match (&reference.key, data_keys) {
                            (_, None) | (None, Some(_)) => true,
                            (Some(key), Some(changed)) => changed.contains(key),
                        }
                })
        }
        Change::TrustBundle { name, before, after } => {
            cluster.trust_bundles.contains(name)
                || cluster.signer.as_ref().is_some_and(|selection| {
                    [before, after].into_iter().flatten().any(|meta| meta.selected_by(selection))
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::sources::cluster::BundleMeta;
    use crate::spec::{ConfigMapRef, LabelSelector, SignerSelection};

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
}

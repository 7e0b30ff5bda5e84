//! The driver-wide default sources: ClusterTrustBundles (by name or signer) and ConfigMaps in
//! the driver's own namespace, added to every volume unless it says `defaults: "false"`. They
//! are driver configuration, the same for every spec, so they are not part of a spec's digest;
//! the first rotation pass after a start re-renders adopted specs with the current ones.

use std::collections::{BTreeMap, HashMap};

use crate::domain::{self, Reference, VolumeSpec};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Defaults {
    /// Per kind tag, as a spec's sources ([`domain::ClusterSources::named`]): canonical, never
    /// empty. A signer takes the one `--default-label-selector` (none: every bundle of it).
    pub named: BTreeMap<String, Vec<Reference>>,
    /// The driver's own namespace: where default objects of namespaced kinds are read.
    pub namespace: String,
}

/// The flags' values, as given.
#[derive(Clone, Debug, Default)]
pub struct Flags<'a> {
    pub trust_bundles: &'a [String],
    pub signer_names: &'a [String],
    pub label_selector: Option<&'a str>,
    pub config_maps: &'a [String],
    pub namespace: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{flag}: {source}")]
    Invalid {
        flag: &'static str,
        #[source]
        source: domain::Error,
    },
    #[error(
        "--default-config-map needs the driver's namespace: set --namespace (or POD_NAMESPACE from the downward API, metadata.namespace)"
    )]
    NoNamespace,
    #[error("--default-label-selector needs --default-signer-name")]
    SelectorWithoutSigner,
}

impl Defaults {
    /// Checks every value with the parsers of the matching volume attributes.
    ///
    /// # Errors
    /// A value the volume attribute would refuse, a default ConfigMap without a namespace, or a
    /// label selector without a signer.
    pub fn parse(flags: &Flags<'_>) -> Result<Self, Error> {
        let mut named = domain::ClusterSources::default();
        let mut add = |flag: &'static str, pairs: &[(&str, &str)]| {
            let attributes: HashMap<String, String> =
                pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            let (spec, _) = super::parse_attributes(&attributes).map_err(|source| Error::Invalid { flag, source })?;
            for (tag, refs) in spec.cluster.named {
                named.add(&tag, refs);
            }
            Ok(())
        };
        if !flags.trust_bundles.is_empty() {
            add("--default-cluster-trust-bundle", &[("clusterTrustBundles", &flags.trust_bundles.join(","))])?;
        }
        if flags.label_selector.is_some() && flags.signer_names.is_empty() {
            return Err(Error::SelectorWithoutSigner);
        }
        for signer in flags.signer_names {
            let mut pairs = vec![("signerName", signer.as_str())];
            if let Some(selector) = flags.label_selector {
                pairs.push(("labelSelector", selector));
            }
            let flag =
                if flags.label_selector.is_some() { "--default-label-selector" } else { "--default-signer-name" };
            add(flag, &pairs)?;
        }
        let mut namespace = String::new();
        if !flags.config_maps.is_empty() {
            add("--default-config-map", &[("configMaps", &flags.config_maps.join(","))])?;
            namespace = flags.namespace.filter(|n| !n.is_empty()).ok_or(Error::NoNamespace)?.to_owned();
        }
        Ok(Self { named: named.named, namespace })
    }

    pub fn is_empty(&self) -> bool {
        self.named.values().all(Vec::is_empty)
    }

    /// What the defaults name of kind `tag`.
    pub fn of(&self, tag: &str) -> &[Reference] {
        self.named.get(tag).map_or(&[], Vec::as_slice)
    }

    /// Whether `spec` gets them: unless it opts out with `defaults: "false"`.
    pub fn apply_to(&self, spec: &VolumeSpec) -> bool {
        spec.cluster.defaults && !self.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn flags_are_checked_like_the_volume_attributes() {
        let config_maps = strings(&["corp-ca:ca.crt", "team-ca"]);
        let signers = strings(&["example.com/corp"]);
        let bundles = strings(&["b", "a", "b"]);
        let flags = Flags {
            trust_bundles: &bundles,
            signer_names: &signers,
            label_selector: Some("env=prod"),
            config_maps: &config_maps,
            namespace: Some("trustmount"),
        };
        let defaults = Defaults::parse(&flags).unwrap();
        let spelled = |tag: &str| defaults.of(tag).iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(spelled("clustertrustbundle"), ["a", "b", "signer example.com/corp (env=prod)"]);
        assert_eq!(spelled("configmap"), ["corp-ca:ca.crt", "team-ca"]);
        assert_eq!(defaults.namespace, "trustmount");

        let elsewhere = strings(&["team-b/ca"]);
        let error = Defaults::parse(&Flags { config_maps: &elsewhere, namespace: Some("x"), ..Flags::default() });
        assert!(matches!(error, Err(Error::Invalid { flag: "--default-config-map", .. })), "{error:?}");
        let no_namespace = Defaults::parse(&Flags { config_maps: &config_maps, ..Flags::default() });
        assert!(matches!(no_namespace, Err(Error::NoNamespace)));
        let lonely = Defaults::parse(&Flags { label_selector: Some("a=b"), ..Flags::default() });
        assert!(matches!(lonely, Err(Error::SelectorWithoutSigner)));
        assert!(Defaults::parse(&Flags::default()).unwrap().is_empty());
    }
}

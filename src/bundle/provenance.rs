//! Where a certificate came from, typed: a local file, a name its loader gave it, or one key of a
//! cluster object. One [`Display`](std::fmt::Display), the `# source:` comment of bundle files;
//! readers (health, the expiry gauge) match on the value and never parse that text back.
//!
//! Kind-agnostic on purpose: `bundle/` is the floor below `domain/` and `sources/`, so a cluster
//! source kind names itself here with its [`KindName`] and nothing in this module knows the
//! kinds.

use std::fmt;
use std::path::PathBuf;

/// Where one certificate came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provenance {
    /// A name its loader gave it: `system:embedded`, the path `inspect` was given, a test's name.
    Named(String),
    /// An `--extra-pem` file (`render --pem`): `file:<path>`.
    File(PathBuf),
    /// A key (or field) of a cluster object.
    Object(ObjectOrigin),
}

/// A cluster source kind as certificates and people name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KindName {
    /// Lowercase, the prefix of `# source:` comments: `configmap`.
    pub tag: &'static str,
    /// As Kubernetes spells the kind: `ConfigMap`.
    pub title: &'static str,
}

/// Which namespace an object is in, as far as bundle files say.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Cluster-scoped (a ClusterTrustBundle).
    Cluster,
    /// The pod's own, left out of bundle files: namespaces holding the same certificates under
    /// the same name render byte-identical files, which the store keeps once.
    PodNamespace,
    /// This namespace, spelled out (the driver's, for defaults).
    Namespace(String),
}

/// One object of a cluster source kind, and the key its certificates came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectOrigin {
    pub kind: KindName,
    pub scope: Scope,
    pub name: String,
    /// `None`: the object as a whole (its one certificate field, or every key of it).
    pub key: Option<String>,
}

impl ObjectOrigin {
    /// The same object, key `key`.
    pub fn with_key(&self, key: &str) -> Self {
        Self { key: Some(key.to_owned()), ..self.clone() }
    }

    /// For people: `ConfigMap team-a/ca key ca.crt` (see [`Provenance::in_namespace`]).
    pub fn describe(&self) -> String {
        let object = match &self.scope {
            Scope::Namespace(namespace) => format!("{namespace}/{}", self.name),
            Scope::Cluster | Scope::PodNamespace => self.name.clone(),
        };
        match &self.key {
            Some(key) => format!("{} {object} key {key}", self.kind.title),
            None => format!("{} {object}", self.kind.title),
        }
    }
}

impl Provenance {
    /// For people (volume health): `ConfigMap team-a/ca key ca.crt`, `--extra-pem /corp/ca.pem`.
    pub fn describe(&self) -> String {
        match self {
            Self::Named(name) => name.clone(),
            Self::File(path) => format!("--extra-pem {}", path.display()),
            Self::Object(origin) => origin.describe(),
        }
    }

    /// With the pod's own namespace spelled out (when known): what a person reading volume
    /// health needs, where bundle files leave it out.
    #[must_use]
    pub fn in_namespace(self, namespace: &str) -> Self {
        match self {
            Self::Object(origin) if origin.scope == Scope::PodNamespace && !namespace.is_empty() => {
                Self::Object(ObjectOrigin { scope: Scope::Namespace(namespace.to_owned()), ..origin })
            }
            other => other,
        }
    }
}

impl fmt::Display for ObjectOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.kind.tag)?;
        if let Scope::Namespace(namespace) = &self.scope {
            write!(f, "{namespace}/")?;
        }
        f.write_str(&self.name)?;
        match &self.key {
            Some(key) => write!(f, ":{key}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Named(name) => f.write_str(name),
            Self::File(path) => write!(f, "file:{}", path.display()),
            Self::Object(origin) => origin.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG_MAP: KindName = KindName { tag: "configmap", title: "ConfigMap" };

    fn origin(scope: Scope, key: Option<&str>) -> ObjectOrigin {
        ObjectOrigin { kind: CONFIG_MAP, scope, name: "corp-ca".to_owned(), key: key.map(str::to_owned) }
    }

    #[test]
    fn the_pods_namespace_is_left_out_of_files_and_spelled_out_for_people() {
        let own = Provenance::Object(origin(Scope::PodNamespace, Some("ca.crt")));
        assert_eq!(own.to_string(), "configmap:corp-ca:ca.crt");
        assert_eq!(own.clone().in_namespace(""), own, "no namespace known: as in files");
        let own = own.in_namespace("team-a");
        assert_eq!(own.describe(), "ConfigMap team-a/corp-ca key ca.crt");
        assert_eq!(own.to_string(), "configmap:team-a/corp-ca:ca.crt");
        let driver = Provenance::Object(origin(Scope::Namespace("trustmount".to_owned()), None));
        assert_eq!(driver.to_string(), "configmap:trustmount/corp-ca");
        assert_eq!(driver.clone().in_namespace("team-a").describe(), "ConfigMap trustmount/corp-ca");
        let cluster = Provenance::Object(origin(Scope::Cluster, None));
        assert_eq!(cluster.in_namespace("team-a").describe(), "ConfigMap corp-ca", "cluster-scoped: no namespace");
    }

    #[test]
    fn local_sources_keep_their_spelling() {
        assert_eq!(Provenance::File("/corp/ca.pem".into()).to_string(), "file:/corp/ca.pem");
        assert_eq!(Provenance::File("/corp/ca.pem".into()).describe(), "--extra-pem /corp/ca.pem");
        assert_eq!(Provenance::Named("system:embedded".to_owned()).to_string(), "system:embedded");
    }
}

//! Secrets, read with the pod's own ServiceAccount token, never with the driver's identity (its
//! ClusterRole has nothing on Secrets): a pod mounts only what its own RBAC lets it read.
//!
//! The model:
//! - **Read on every publish, warm or not.** Only a publish carries a token, and tokens are
//!   short-lived, so there is no watch. The read *is* the pod's access check: a pod whose
//!   ServiceAccount may not get the Secret fails with PERMISSION_DENIED even when another pod
//!   already published the same attributes, and never gets that spec's directory. With
//!   `requiresRepublish: true` the kubelet republishes every minute or two, so a changed Secret
//!   reaches the volume then: a read whose content differs from the last one refreshes the specs
//!   that use it through the store's refresh path.
//! - **Per ServiceAccount.** The spec of a volume with Secret sources carries the ServiceAccount
//!   (and so does its digest): pods of two ServiceAccounts never share a directory, and the
//!   content cached here is keyed by ServiceAccount too, so a refresh of one spec renders only
//!   what its own ServiceAccount read.
//! - **Between publishes** (a ConfigMap or a source file changed) a refresh renders the Secret
//!   content last read for that spec's ServiceAccount; after a restart nothing is cached, and
//!   such specs wait for the kubelet's next republish instead.
//! - **One key, never a private key.** Only the named keys of `data` are decoded (`tls.key` is
//!   skipped unread); a private key, or nothing but non-certificates, in a named key fails the
//!   source.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::Secret;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::content::{self, KeyContent};
use super::token::PodToken;
use super::{Error, ObjectKey, Result};
use crate::bundle::{Certificate, KindName, ObjectOrigin, Scope};
use crate::domain::{SecretRef, VolumeSpec};

/// How certificates and messages name the kind.
pub const KIND: KindName = KindName { tag: "secret", title: "Secret" };
const SECRET: &str = KIND.title;

/// One key of one Secret, as read by one ServiceAccount.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    pub namespace: String,
    pub service_account: String,
    pub name: String,
    pub key: String,
}

impl Slot {
    fn of(spec: &VolumeSpec, reference: &SecretRef) -> Self {
        Self {
            namespace: spec.namespace.clone(),
            service_account: spec.cluster.service_account.clone(),
            name: reference.name.clone(),
            key: reference.key.clone(),
        }
    }
}

/// A slot's content: `None` when an optional Secret or key is missing (skipped).
type Content = Option<Vec<Certificate>>;

/// What one publish read.
#[derive(Debug)]
pub struct Read {
    /// The certificates of every Secret source of the spec, in reference order.
    pub certificates: Vec<Certificate>,
    /// The slots whose content differs from (or was not in) the last read.
    pub changed: Vec<Slot>,
}

pub struct Secrets {
    /// No credentials of its own (the driver's cluster URL and CA only): every request carries
    /// the pod's token, and a request without one would be anonymous, never the driver.
    client: kube::Client,
    /// The last content each ServiceAccount read, for refreshes between publishes.
    read: Mutex<HashMap<Slot, Arc<Content>>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets").field("cached", &self.cache().len()).finish_non_exhaustive()
    }
}

impl Secrets {
    /// `client` must carry no identity: see [`Clients`](super::Clients).
    pub fn new(client: kube::Client) -> Self {
        Self { client, read: Mutex::default() }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<Slot, Arc<Content>>> {
        self.read.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads every Secret `spec` names with `token` (one GET per Secret), and remembers the
    /// content for later refreshes of specs of the same ServiceAccount.
    ///
    /// # Errors
    /// [`Error::Forbidden`] (403), [`Error::Unauthenticated`] (401), a missing Secret or key
    /// (unless `optional`), a key without certificates or with a private key, or a failed request.
    /// After a failure nothing read for this spec is kept: refreshes stop using it.
    pub async fn read(&self, spec: &VolumeSpec, token: &PodToken) -> Result<Read> {
        let result = self.read_all(spec, token).await;
        let mut cache = self.cache();
        let slots = spec.cluster.secrets.iter().map(|reference| Slot::of(spec, reference));
        match result {
            Err(error) => {
                for slot in slots {
                    cache.remove(&slot);
                }
                Err(error)
            }
            Ok(contents) => {
                let mut certificates = Vec::new();
                let mut changed = Vec::new();
                for (slot, content) in slots.zip(contents) {
                    certificates.extend(content.iter().flatten().cloned());
                    if cache.get(&slot).is_none_or(|cached| **cached != content) {
                        changed.push(slot.clone());
                    }
                    cache.insert(slot, Arc::new(content));
                }
                Ok(Read { certificates, changed })
            }
        }
    }

    /// Each reference's content, in order.
    async fn read_all(&self, spec: &VolumeSpec, token: &PodToken) -> Result<Vec<Content>> {
        let cluster = &spec.cluster;
        let mut wanted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for reference in &cluster.secrets {
            wanted.entry(&reference.name).or_default().insert(&reference.key);
        }
        let mut found = BTreeMap::new();
        for (name, keys) in wanted {
            let key = ObjectKey { namespace: spec.namespace.clone(), name: name.to_owned() };
            found.insert(name, self.get(&key, &cluster.service_account, &keys, token).await?);
        }
        let mut contents = Vec::new();
        for reference in &cluster.secrets {
            let object = format!("{}/{}", spec.namespace, reference.name);
            let data = match found.get(reference.name.as_str()) {
                Some(Some(data)) => data,
                Some(None) | None if cluster.optional => {
                    contents.push(None);
                    continue;
                }
                Some(None) | None => return Err(Error::Missing { kind: SECRET, object }),
            };
            let Some(bytes) = data.get(&reference.key) else {
                if cluster.optional {
                    contents.push(None);
                    continue;
                }
                return Err(Error::MissingSecretKey { object, key: reference.key.clone() });
            };
            let origin = ObjectOrigin {
                kind: KIND,
                scope: Scope::Namespace(spec.namespace.clone()),
                name: reference.name.clone(),
                key: Some(reference.key.clone()),
            };
            match content::classify(&origin, bytes) {
                KeyContent::Certificates(certificates) => contents.push(Some(certificates)),
                // A named key must hold certificates: nothing else of it, a private key least of all.
                KeyContent::Ignored(source) | KeyContent::Invalid(source) => {
                    return Err(Error::Content {
                        kind: SECRET,
                        object,
                        key: reference.key.clone(),
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(contents)
    }

    /// GETs one Secret as the pod and decodes only `keys` of its `data`; `None` for a 404.
    async fn get(
        &self,
        object: &ObjectKey,
        service_account: &str,
        keys: &BTreeSet<&str>,
        token: &PodToken,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        let path = <Secret as kube::Resource>::url_path(&(), Some(&object.namespace));
        let mut request =
            kube::core::Request::new(path).get(&object.name, &kube::api::GetParams::default()).map_err(|source| {
                Error::SecretRequest { object: object.to_string(), source: kube::Error::BuildRequest(source) }
            })?;
        request.headers_mut().insert(http::header::AUTHORIZATION, token.authorization().clone());
        // `request_text`, not `request::<Secret>`: kube logs the whole body when it cannot parse
        // one, and this body holds the Secret's every key.
        match self.client.request_text(request).await {
            Ok(text) => {
                let parsed = wanted_data(&text, keys);
                wipe(text);
                parsed.map(Some).map_err(|reason| Error::SecretUnreadable { object: object.to_string(), reason })
            }
            Err(kube::Error::Api(status)) => match status.code {
                404 => Ok(None),
                403 => Err(Error::Forbidden {
                    namespace: object.namespace.clone(),
                    service_account: service_account.to_owned(),
                    secret: object.name.clone(),
                }),
                401 => Err(Error::Unauthenticated {
                    namespace: object.namespace.clone(),
                    service_account: service_account.to_owned(),
                    secret: object.name.clone(),
                }),
                _ => Err(Error::SecretRequest { object: object.to_string(), source: kube::Error::Api(status) }),
            },
            Err(source) => Err(Error::SecretRequest { object: object.to_string(), source }),
        }
    }

    /// The certificates of `spec`'s Secret sources as last read, for a refresh (no token then).
    ///
    /// # Errors
    /// [`Error::SecretsNotRead`] when a source was not read since the driver started (or its last
    /// read failed): the next republish reads it.
    pub fn cached(&self, spec: &VolumeSpec) -> Result<Vec<Certificate>> {
        let cache = self.cache();
        let mut certificates = Vec::new();
        for reference in &spec.cluster.secrets {
            let content = cache.get(&Slot::of(spec, reference)).ok_or_else(|| Error::SecretsNotRead {
                object: format!("{}/{}", spec.namespace, reference.name),
                service_account: spec.cluster.service_account.clone(),
            })?;
            certificates.extend(content.iter().flatten().cloned());
        }
        Ok(certificates)
    }

    /// Whether every Secret source of `spec` has content read since the driver started.
    pub fn all_read(&self, spec: &VolumeSpec) -> bool {
        let cache = self.cache();
        spec.cluster.secrets.iter().all(|reference| cache.contains_key(&Slot::of(spec, reference)))
    }

    /// Forgets what no live spec names any more.
    pub fn retain(&self, live: &[VolumeSpec]) {
        let named: HashSet<Slot> = live
            .iter()
            .flat_map(|spec| spec.cluster.secrets.iter().map(|reference| Slot::of(spec, reference)))
            .collect();
        self.cache().retain(|slot, _| named.contains(slot));
    }

    /// Whether `spec` renders from one of `slots`.
    pub fn uses_any(spec: &VolumeSpec, slots: &[Slot]) -> bool {
        spec.cluster.secrets.iter().any(|reference| slots.contains(&Slot::of(spec, reference)))
    }
}

/// Overwrites a response body that held a whole Secret before freeing it (best effort: the HTTP
/// layers' own buffers are gone from reach).
fn wipe(text: String) {
    let mut bytes = text.into_bytes();
    bytes.fill(0);
    std::hint::black_box(&bytes);
}

/// `keys` of a Secret's `data`, base64-decoded; every other field and key is skipped unread.
///
/// # Errors
/// JSON that is not a Secret; the reason names where, never what (the body holds secrets).
fn wanted_data(json: &str, keys: &BTreeSet<&str>) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let data = TopLevel { keys }.deserialize(&mut deserializer).and_then(|data| deserializer.end().map(|()| data));
    data.map_err(|error| {
        format!("the API server's answer is no Secret (at line {}, column {})", error.line(), error.column())
    })
}

/// The Secret object: only `data` is looked into.
struct TopLevel<'a> {
    keys: &'a BTreeSet<&'a str>,
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = BTreeMap<String, Vec<u8>>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = BTreeMap<String, Vec<u8>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Secret")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut data = BTreeMap::new();
        while let Some(field) = map.next_key::<String>()? {
            if field == "data" {
                data = map.next_value_seed(Data { keys: self.keys })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(data)
    }
}

/// A Secret's `data` (absent or null: empty): the wanted keys decoded, the others ignored.
struct Data<'a> {
    keys: &'a BTreeSet<&'a str>,
}

impl<'de> DeserializeSeed<'de> for Data<'_> {
    type Value = BTreeMap<String, Vec<u8>>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Data<'_> {
    type Value = BTreeMap<String, Vec<u8>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Secret's data")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut data = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            if self.keys.contains(key.as_str()) {
                let value: k8s_openapi::ByteString = map.next_value()?;
                data.insert(key, value.0);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
        names.iter().copied().collect()
    }

    #[test]
    fn only_the_wanted_keys_are_decoded() {
        // "tls.key" is not even valid base64 here: it is skipped, not decoded.
        let json = r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s","annotations":{"data":"x"}},
            "data":{"ca.crt":"Y2E=","tls.crt":"Y3J0","tls.key":"!not base64!"},"type":"kubernetes.io/tls"}"#;
        let data = wanted_data(json, &keys(&["ca.crt"])).unwrap();
        assert_eq!(data, BTreeMap::from([("ca.crt".to_owned(), b"ca".to_vec())]));
        let two = wanted_data(json, &keys(&["ca.crt", "tls.crt", "absent"])).unwrap();
        assert_eq!(two.keys().map(String::as_str).collect::<Vec<_>>(), ["ca.crt", "tls.crt"]);
    }

    #[test]
    fn a_secret_without_data_has_no_keys_and_a_bad_answer_is_refused_without_quoting_it() {
        for json in [r#"{"kind":"Secret"}"#, r#"{"kind":"Secret","data":null}"#] {
            assert!(wanted_data(json, &keys(&["ca.crt"])).unwrap().is_empty(), "{json}");
        }
        for bad in [r#"{"data":{"ca.crt":"!s3cr3t!"}}"#, r#"{"data":"s3cr3t"}"#, r#"["s3cr3t"]"#, r#"{"data":{}} x"#] {
            let reason = wanted_data(bad, &keys(&["ca.crt"])).unwrap_err();
            assert!(!reason.contains("s3cr3t") && reason.contains("line"), "{bad}: {reason}");
        }
    }

    #[test]
    fn wipe_takes_any_string() {
        wipe(String::new());
        wipe("tls.key".to_owned());
    }

    #[test]
    fn slots_are_per_service_account() {
        let mut spec = VolumeSpec { namespace: "ns".to_owned(), ..VolumeSpec::default() };
        spec.cluster.secrets = vec![SecretRef { name: "ca".to_owned(), key: "ca.crt".to_owned() }];
        spec.cluster.service_account = "granted".to_owned();
        let granted = Slot::of(&spec, &spec.cluster.secrets[0]);
        let mut other = spec.clone();
        other.cluster.service_account = "other".to_owned();
        assert!(Secrets::uses_any(&spec, std::slice::from_ref(&granted)));
        assert!(!Secrets::uses_any(&other, &[granted]));
    }
}

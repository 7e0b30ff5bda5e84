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

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::content::{self, KeyContent};
use super::kind::{Kind, ObjectChange, PodRead, Registration, Selected, Slot, Want};
use super::token::PodToken;
use super::watch_loop;
use super::{Error, ObjectKey, Result};
use crate::bundle::{Certificate, KindName, ObjectOrigin, Scope};
use crate::domain::{self, ListAttributes};

/// How certificates and messages name the kind.
pub const KIND: KindName = KindName { tag: domain::SECRETS_TAG, title: "Secret" };
const SECRET: &str = KIND.title;
/// Volume attribute: Secrets in the pod's namespace, `name` (key [`DEFAULT_KEY`]) or
/// `name:key`, comma-separated; read with the pod's own ServiceAccount token.
pub const ATTRIBUTE: &str = "secrets";
/// The key a bare Secret name takes: what cert-manager (and `kubernetes.io/tls` Secrets from
/// most CAs) call the issuing CA. A Secret is never searched key by key: its other keys are
/// usually `tls.key`.
pub const DEFAULT_KEY: &str = "ca.crt";

pub const REGISTRATION: Registration = Registration {
    attributes: &ListAttributes {
        kind: KIND,
        attributes: &[ATTRIBUTE],
        parse: |key, value| domain::parse_named_keys(key, value, SECRET, Some(DEFAULT_KEY)),
        namespaced: true,
        reads_as_pod: true,
    },
    watched: false,
    start: |context| Box::new(Secrets::new(context.as_pod.clone(), context.limits)),
};

/// One key of one Secret, as read by one ServiceAccount: `want`'s references in order.
fn slots(want: &Want) -> impl Iterator<Item = Slot> + '_ {
    want.objects().map(|(object, key)| Slot {
        kind: KIND.tag,
        namespace: object.namespace,
        service_account: want.service_account.clone(),
        name: object.name,
        key: key.map(str::to_owned),
    })
}

/// A slot's content: `None` when an optional Secret or key is missing (skipped).
type Content = Option<Vec<Certificate>>;

pub struct Secrets {
    /// No credentials of its own (the driver's cluster URL and CA only): every request carries
    /// the pod's token, and a request without one would be anonymous, never the driver.
    client: kube::Client,
    /// The last content each ServiceAccount read, for refreshes between publishes.
    read: Mutex<HashMap<Slot, Arc<Content>>>,
    limits: domain::Limits,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets").field("cached", &self.cache().len()).finish_non_exhaustive()
    }
}

impl Secrets {
    /// `client` must carry no identity: see [`Clients`](super::Clients).
    pub fn new(client: kube::Client, limits: domain::Limits) -> Self {
        Self { client, read: Mutex::default(), limits }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<Slot, Arc<Content>>> {
        self.read.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads every Secret `want` names with `token` (one GET per Secret), and remembers the
    /// content for later refreshes of specs of the same ServiceAccount.
    ///
    /// # Errors
    /// [`Error::Forbidden`] (403), [`Error::Unauthenticated`] (401), a missing Secret or key
    /// (unless `optional`), a key without certificates or with a private key, or a failed request.
    /// After a failure nothing read for this spec is kept: refreshes stop using it.
    async fn read(&self, want: &Want, token: &PodToken) -> Result<PodRead> {
        let result = self.read_all(want, token).await;
        let mut cache = self.cache();
        match result {
            Err(error) => {
                for slot in slots(want) {
                    cache.remove(&slot);
                }
                Err(error)
            }
            Ok(contents) => {
                let mut read = PodRead::default();
                for (slot, content) in slots(want).zip(contents) {
                    read.certificates.extend(content.iter().flatten().cloned());
                    if cache.get(&slot).is_none_or(|cached| **cached != content) {
                        read.changed.push(slot.clone());
                    }
                    cache.insert(slot, Arc::new(content));
                }
                Ok(read)
            }
        }
    }

    /// Each reference's content, in order.
    async fn read_all(&self, want: &Want, token: &PodToken) -> Result<Vec<Content>> {
        let mut wanted: BTreeMap<ObjectKey, BTreeSet<&str>> = BTreeMap::new();
        for (object, key) in want.objects() {
            wanted.entry(object).or_default().insert(key.unwrap_or(DEFAULT_KEY));
        }
        let mut found = BTreeMap::new();
        for (object, keys) in wanted {
            let data = self.get(&object, &want.service_account, &keys, token).await?;
            found.insert(object, data);
        }
        // Parsing is CPU work on bytes the pod's namespace wrote: on the blocking pool, bounded
        // with the watches' parses, never on the workers that answer the kubelet.
        let references: Vec<(ObjectKey, String)> =
            want.objects().map(|(key, data_key)| (key, data_key.unwrap_or(DEFAULT_KEY).to_owned())).collect();
        let (optional, limits) = (want.optional, self.limits);
        let _permit = watch_loop::parse_permit().await;
        tokio::task::spawn_blocking(move || classify_all(&references, &found, optional, &limits))
            .await
            .map_err(|error| Error::SecretUnreadable { object: "(parse)".to_owned(), reason: error.to_string() })?
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
}

impl Kind for Secrets {
    fn name(&self) -> KindName {
        KIND
    }

    /// The certificates of `want`'s Secrets as last read, for a refresh (no token then).
    ///
    /// # Errors
    /// [`Error::SecretsNotRead`] when a source was not read since the driver started (or its last
    /// read failed): the next republish reads it.
    fn select(&self, want: &Want, selected: &mut Selected) -> Result<()> {
        let cache = self.cache();
        for slot in slots(want) {
            let content = cache.get(&slot).ok_or_else(|| Error::SecretsNotRead {
                object: format!("{}/{}", slot.namespace, slot.name),
                service_account: want.service_account.clone(),
            })?;
            selected.certificates.extend(content.iter().flatten().cloned());
        }
        Ok(())
    }

    /// Never watched: a Secret's change reaches a volume through a republish's read.
    fn affects(&self, _: &ObjectChange, _: &Want) -> bool {
        false
    }

    /// Forgets what no live spec names any more.
    fn retain(&self, wants: &[&Want]) {
        let named: HashSet<Slot> = wants.iter().flat_map(|want| slots(want)).collect();
        self.cache().retain(|slot, _| named.contains(slot));
    }

    fn read_as_pod<'a>(&'a self, want: &'a Want, token: &'a PodToken) -> Option<BoxFuture<'a, Result<PodRead>>> {
        Some(Box::pin(self.read(want, token)))
    }

    /// Every Secret source of `want` has content read since the driver started.
    fn refreshable(&self, want: &Want) -> bool {
        let cache = self.cache();
        slots(want).all(|slot| cache.contains_key(&slot))
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
pub fn wanted_data(json: &str, keys: &BTreeSet<&str>) -> Result<BTreeMap<String, Vec<u8>>, String> {
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

/// Each reference's content from the Secrets' decoded `data` (`None` for a 404), in order.
fn classify_all(
    references: &[(ObjectKey, String)],
    found: &BTreeMap<ObjectKey, Option<BTreeMap<String, Vec<u8>>>>,
    optional: bool,
    limits: &domain::Limits,
) -> Result<Vec<Content>> {
    let mut contents = Vec::new();
    for (key, data_key) in references {
        let object = key.to_string();
        let data = match found.get(key) {
            Some(Some(data)) => data,
            Some(None) | None if optional => {
                contents.push(None);
                continue;
            }
            Some(None) | None => return Err(Error::Missing { kind: SECRET, object }),
        };
        let Some(bytes) = data.get(data_key) else {
            if optional {
                contents.push(None);
                continue;
            }
            return Err(Error::MissingSecretKey { object, key: data_key.clone() });
        };
        let origin = ObjectOrigin {
            kind: KIND,
            scope: Scope::Namespace(key.namespace.clone()),
            name: key.name.clone(),
            key: Some(data_key.clone()),
        };
        match content::classify(&origin, bytes, limits) {
            KeyContent::Certificates(certificates) => contents.push(Some(certificates)),
            // A named key must hold certificates: nothing else of it, a private key least of all.
            KeyContent::Ignored(source) | KeyContent::Invalid(source) => {
                return Err(Error::Content { kind: SECRET, object, key: data_key.clone(), source: Box::new(source) });
            }
        }
    }
    Ok(contents)
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
    fn slots_are_per_service_account_and_a_bare_name_is_key_ca_crt() {
        let mut attributes = BTreeMap::new();
        attributes.insert(ATTRIBUTE, "ca, other:ca.pem");
        let refs = REGISTRATION.attributes.parse(&attributes).unwrap();
        assert_eq!(
            refs,
            [domain::Reference::object("ca", Some("ca.crt")), domain::Reference::object("other", Some("ca.pem"))]
        );
        let want = |account: &str| Want {
            refs: refs.iter().map(|r| ("ns".to_owned(), r.clone())).collect(),
            optional: false,
            service_account: account.to_owned(),
        };
        let granted: Vec<Slot> = slots(&want("granted")).collect();
        assert_eq!(granted[0].key.as_deref(), Some("ca.crt"));
        assert!(super::super::kind::uses_slot(KIND.tag, &want("granted"), &granted[..1]));
        assert!(!super::super::kind::uses_slot(KIND.tag, &want("other"), &granted));
    }
}

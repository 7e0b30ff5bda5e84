//! Volume records, every version. Each DTO names its JSON keys and enum tags explicitly; the
//! conversions to and from [`Record`] go field by field through the domain types' public fields.
//!
//! Version 1 (no `format` key; every driver up to 02e7ca2): serde's derive of `Record`,
//! `VolumeSpec`, `RenderOptions`, `ClusterSources`, `LabelSelector`, `PodInfo`, frozen as it was.
//! `spec.cluster` is absent when it is the default, and each of its keys is absent when empty
//! (`defaults` when true); the selector is its requirements, operators externally tagged.
//!
//! Version 2: `"format": 2` first, then version 1's keys and shapes, every key always written.
//! So a driver of 02e7ca2 (whose derive ignores an unknown key and takes `null` for an absent
//! option) reads a version 2 record as the same record: a rollback to it adopts the volumes
//! this driver published instead of finding them corrupt and unmounting them. Keep that while
//! 02e7ca2 may be rolled back to. The kinds of that time (ClusterTrustBundles, ConfigMaps,
//! Secrets) keep their keys of version 1.
//!
//! Version 3: version 2 plus `spec.cluster.sources`, the references of every other kind by its
//! tag. Written only for a spec naming such a kind, so every other record stays version 2 (and
//! readable by 02e7ca2); a driver that does not know version 3 leaves such a volume mounted.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::bundle::{JavaTruststore, Layout, RenderOptions};
use std::collections::BTreeMap;

use crate::domain::{
    CONFIG_MAPS_TAG, ClusterSources, LabelSelector, PodInfo, Reference, SECRETS_TAG, SelectorOperator, SignerSelection,
    SpecDigest, TRUST_BUNDLES_TAG, VolumeSpec,
};

use super::super::record::{Record, State};
use super::Error;

/// The newest record format this driver writes (and reads).
pub const RECORD_FORMAT: u32 = 3;
/// What it writes for a spec of the kinds of 02e7ca2 only.
const FORMAT_OF_THE_FIRST_KINDS: u32 = 2;
/// The key that names a record's format; absent in version 1.
const FORMAT_KEY: &str = "format";
const WHAT: &str = "volume record";

/// Reads a record of any known format, with the format it was in. Its state is the file
/// name's business: it comes back [`State::Published`].
///
/// # Errors
/// [`Error::Newer`] for a record of a format after [`RECORD_FORMAT`]; otherwise anything that
/// is not a record of a known format.
pub fn decode(bytes: &[u8]) -> Result<(Record, u32), Error> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(Error::Syntax)?;
    let invalid = |version: u32, reason: String| Error::Invalid { what: WHAT, version, reason };
    let object = value.as_object().ok_or_else(|| invalid(1, "it is not a JSON object".to_owned()))?;
    let version = match object.get(FORMAT_KEY) {
        None => 1,
        Some(format) => match format.as_u64() {
            Some(2) => 2,
            Some(3) => 3,
            Some(found) if found > u64::from(RECORD_FORMAT) => {
                return Err(Error::Newer { what: WHAT, found, known: RECORD_FORMAT });
            }
            // Version 1 never had the key; anything else was never written.
            _ => return Err(invalid(1, format!("its {FORMAT_KEY:?} is {format}, which no trustmount writes"))),
        },
    };
    let record = match version {
        1 => RecordV2::from(serde_json::from_value::<RecordV1>(value).map_err(|e| invalid(1, e.to_string()))?)
            .into_record(),
        _ => serde_json::from_value::<RecordV2>(value).map_err(|e| invalid(version, e.to_string()))?.into_record(),
    };
    record.map(|record| (record, version)).map_err(|reason| invalid(version, reason))
}

/// The bytes of `record` (pretty JSON, for a person reading it): format 2, or 3 for a spec
/// naming a kind after 02e7ca2's.
///
/// # Errors
/// Only a target that is not UTF-8 (the kubelet sends strings, so never from a publish).
pub fn encode(record: &Record) -> Result<Vec<u8>, Error> {
    let dto = RecordV2::from(record);
    let version = dto.format;
    serde_json::to_vec_pretty(&dto).map_err(|e| Error::Invalid { what: WHAT, version, reason: e.to_string() })
}

/// The tags serde's derive gave the variants in version 1, kept in every version.
#[derive(Clone, Copy, Serialize, Deserialize)]
enum LayoutTag {
    #[serde(rename = "Debian")]
    Debian,
    #[serde(rename = "Rhel")]
    Rhel,
    #[serde(rename = "Suse")]
    Suse,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
enum JavaTag {
    #[serde(rename = "Jks")]
    Jks,
    #[serde(rename = "Pkcs12")]
    Pkcs12,
    #[serde(rename = "None")]
    None,
}

#[derive(Serialize, Deserialize)]
struct RenderDto {
    #[serde(rename = "layout")]
    layout: LayoutTag,
    #[serde(rename = "java")]
    java: JavaTag,
}

impl From<RenderOptions> for RenderDto {
    fn from(render: RenderOptions) -> Self {
        let layout = match render.layout {
            Layout::Debian => LayoutTag::Debian,
            Layout::Rhel => LayoutTag::Rhel,
            Layout::Suse => LayoutTag::Suse,
        };
        let java = match render.java {
            JavaTruststore::Jks => JavaTag::Jks,
            JavaTruststore::Pkcs12 => JavaTag::Pkcs12,
            JavaTruststore::None => JavaTag::None,
        };
        Self { layout, java }
    }
}

impl From<RenderDto> for RenderOptions {
    fn from(render: RenderDto) -> Self {
        let layout = match render.layout {
            LayoutTag::Debian => Layout::Debian,
            LayoutTag::Rhel => Layout::Rhel,
            LayoutTag::Suse => Layout::Suse,
        };
        let java = match render.java {
            JavaTag::Jks => JavaTruststore::Jks,
            JavaTag::Pkcs12 => JavaTruststore::Pkcs12,
            JavaTag::None => JavaTruststore::None,
        };
        Self { layout, java }
    }
}

/// The same keys in both versions.
#[derive(Serialize, Deserialize)]
struct PodDto {
    #[serde(rename = "name")]
    name: String,
    #[serde(rename = "namespace")]
    namespace: String,
    #[serde(rename = "uid")]
    uid: String,
    #[serde(rename = "service_account")]
    service_account: String,
    #[serde(rename = "ephemeral")]
    ephemeral: bool,
}

impl From<&PodInfo> for PodDto {
    fn from(pod: &PodInfo) -> Self {
        Self {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            uid: pod.uid.clone(),
            service_account: pod.service_account.clone(),
            ephemeral: pod.ephemeral,
        }
    }
}

impl From<PodDto> for PodInfo {
    fn from(pod: PodDto) -> Self {
        Self {
            name: pod.name,
            namespace: pod.namespace,
            uid: pod.uid,
            service_account: pod.service_account,
            ephemeral: pod.ephemeral,
        }
    }
}

/// The same keys in both versions; a bare ConfigMap name has no key (absent in v1, null in v2).
#[derive(Serialize, Deserialize)]
struct ConfigMapDto {
    #[serde(rename = "name")]
    name: String,
    #[serde(rename = "key", default)]
    key: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SecretDto {
    #[serde(rename = "name")]
    name: String,
    #[serde(rename = "key")]
    key: String,
}

/// A reference of a kind after 02e7ca2's (version 3).
#[derive(Serialize, Deserialize)]
enum ReferenceDto {
    #[serde(rename = "object")]
    Object {
        #[serde(rename = "name")]
        name: String,
        #[serde(rename = "key")]
        key: Option<String>,
    },
    #[serde(rename = "signer")]
    Signer(SignerDto),
}

/// The same keys in both versions.
#[derive(Serialize, Deserialize)]
struct SignerDto {
    #[serde(rename = "signer_name")]
    signer_name: String,
    #[serde(rename = "selector")]
    selector: SelectorDto,
}

#[derive(Serialize, Deserialize)]
struct SelectorDto {
    /// Sorted, as `LabelSelector` keeps them.
    #[serde(rename = "requirements")]
    requirements: Vec<RequirementDto>,
}

#[derive(Serialize, Deserialize)]
struct RequirementDto {
    #[serde(rename = "key")]
    key: String,
    #[serde(rename = "operator")]
    operator: OperatorDto,
}

/// Externally tagged, as serde derived it: `"Exists"` or `{"In": ["a", "b"]}`.
#[derive(Serialize, Deserialize)]
enum OperatorDto {
    #[serde(rename = "Exists")]
    Exists,
    #[serde(rename = "DoesNotExist")]
    DoesNotExist,
    #[serde(rename = "Equals")]
    Equals(String),
    #[serde(rename = "NotEquals")]
    NotEquals(String),
    /// Sorted, without duplicates.
    #[serde(rename = "In")]
    In(Vec<String>),
    #[serde(rename = "NotIn")]
    NotIn(Vec<String>),
}

impl From<&LabelSelector> for SelectorDto {
    fn from(selector: &LabelSelector) -> Self {
        let requirements = selector
            .requirements()
            .iter()
            .map(|requirement| RequirementDto {
                key: requirement.key().to_owned(),
                operator: match requirement.operator() {
                    SelectorOperator::Exists => OperatorDto::Exists,
                    SelectorOperator::DoesNotExist => OperatorDto::DoesNotExist,
                    SelectorOperator::Equals(value) => OperatorDto::Equals(value.clone()),
                    SelectorOperator::NotEquals(value) => OperatorDto::NotEquals(value.clone()),
                    SelectorOperator::In(values) => OperatorDto::In(values.iter().cloned().collect()),
                    SelectorOperator::NotIn(values) => OperatorDto::NotIn(values.iter().cloned().collect()),
                },
            })
            .collect();
        Self { requirements }
    }
}

impl SelectorDto {
    /// Through the selector's string syntax, the only way in that checks what it holds.
    fn into_selector(self) -> Result<LabelSelector, String> {
        let spelled: Vec<String> = self
            .requirements
            .into_iter()
            .map(|RequirementDto { key, operator }| match operator {
                OperatorDto::Exists => key,
                OperatorDto::DoesNotExist => format!("!{key}"),
                OperatorDto::Equals(value) => format!("{key}={value}"),
                OperatorDto::NotEquals(value) => format!("{key}!={value}"),
                OperatorDto::In(values) => format!("{key} in ({})", values.join(",")),
                OperatorDto::NotIn(values) => format!("{key} notin ({})", values.join(",")),
            })
            .collect();
        let text = spelled.join(",");
        LabelSelector::parse(&text).map_err(|e| format!("its label selector {text:?} does not parse: {e}"))
    }
}

impl From<&SignerSelection> for SignerDto {
    fn from(signer: &SignerSelection) -> Self {
        Self { signer_name: signer.signer_name.clone(), selector: (&signer.selector).into() }
    }
}

impl SignerDto {
    fn into_signer(self) -> Result<SignerSelection, String> {
        Ok(SignerSelection { signer_name: self.signer_name, selector: self.selector.into_selector()? })
    }
}

fn digest(text: String) -> Result<SpecDigest, String> {
    SpecDigest::parse(&text).ok_or_else(|| format!("its digest {text:?} is not 32 lowercase hex digits"))
}

// ---- version 1 (read only) ----

#[derive(Deserialize)]
struct RecordV1 {
    #[serde(rename = "volume_id")]
    volume_id: String,
    #[serde(rename = "target")]
    target: PathBuf,
    #[serde(rename = "readonly")]
    readonly: bool,
    #[serde(rename = "spec")]
    spec: SpecV1,
    #[serde(rename = "digest")]
    digest: String,
    #[serde(rename = "pod")]
    pod: PodDto,
    #[serde(rename = "published_at")]
    published_at: u64,
}

#[derive(Deserialize)]
struct SpecV1 {
    #[serde(rename = "namespace")]
    namespace: String,
    #[serde(rename = "system_roots")]
    system_roots: bool,
    #[serde(rename = "render")]
    render: RenderDto,
    #[serde(rename = "keep_expired")]
    keep_expired: bool,
    /// Absent when default (and in records from before cluster sources).
    #[serde(rename = "cluster", default)]
    cluster: Option<ClusterV1>,
}

#[derive(Deserialize)]
struct ClusterV1 {
    #[serde(rename = "trust_bundles", default)]
    trust_bundles: Vec<String>,
    #[serde(rename = "signer", default)]
    signer: Option<SignerDto>,
    #[serde(rename = "config_maps", default)]
    config_maps: Vec<ConfigMapDto>,
    #[serde(rename = "secrets", default)]
    secrets: Vec<SecretDto>,
    #[serde(rename = "service_account", default)]
    service_account: String,
    #[serde(rename = "optional", default)]
    optional: bool,
    #[serde(rename = "defaults", default = "yes")]
    defaults: bool,
}

fn yes() -> bool {
    true
}

/// Version 1 read is version 2 with version 1's defaults filled in: one way from a DTO to a
/// [`Record`], whatever the version on disk.
impl From<RecordV1> for RecordV2 {
    fn from(v1: RecordV1) -> Self {
        let spec = v1.spec;
        let cluster = spec.cluster.map_or_else(
            || ClusterV2 {
                trust_bundles: Vec::new(),
                signer: None,
                config_maps: Vec::new(),
                secrets: Vec::new(),
                service_account: String::new(),
                optional: false,
                defaults: yes(),
                sources: BTreeMap::new(),
            },
            |cluster| ClusterV2 {
                trust_bundles: cluster.trust_bundles,
                signer: cluster.signer,
                config_maps: cluster.config_maps,
                secrets: cluster.secrets,
                service_account: cluster.service_account,
                optional: cluster.optional,
                defaults: cluster.defaults,
                sources: BTreeMap::new(),
            },
        );
        Self {
            format: 1,
            volume_id: v1.volume_id,
            target: v1.target,
            readonly: v1.readonly,
            spec: SpecV2 {
                namespace: spec.namespace,
                system_roots: spec.system_roots,
                render: spec.render,
                keep_expired: spec.keep_expired,
                cluster,
            },
            digest: v1.digest,
            pod: v1.pod,
            published_at: v1.published_at,
        }
    }
}

// ---- version 2 (written and read) ----

#[derive(Serialize, Deserialize)]
struct RecordV2 {
    /// Always [`RECORD_FORMAT`] when written; checked before this is parsed (1 for a version 1
    /// record read and upgraded in memory).
    #[serde(rename = "format")]
    format: u32,
    #[serde(rename = "volume_id")]
    volume_id: String,
    #[serde(rename = "target")]
    target: PathBuf,
    #[serde(rename = "readonly")]
    readonly: bool,
    #[serde(rename = "spec")]
    spec: SpecV2,
    #[serde(rename = "digest")]
    digest: String,
    #[serde(rename = "pod")]
    pod: PodDto,
    /// Unix seconds.
    #[serde(rename = "published_at")]
    published_at: u64,
}

#[derive(Serialize, Deserialize)]
struct SpecV2 {
    #[serde(rename = "namespace")]
    namespace: String,
    #[serde(rename = "system_roots")]
    system_roots: bool,
    #[serde(rename = "render")]
    render: RenderDto,
    #[serde(rename = "keep_expired")]
    keep_expired: bool,
    #[serde(rename = "cluster")]
    cluster: ClusterV2,
}

#[derive(Serialize, Deserialize)]
struct ClusterV2 {
    #[serde(rename = "trust_bundles")]
    trust_bundles: Vec<String>,
    #[serde(rename = "signer")]
    signer: Option<SignerDto>,
    #[serde(rename = "config_maps")]
    config_maps: Vec<ConfigMapDto>,
    #[serde(rename = "secrets")]
    secrets: Vec<SecretDto>,
    #[serde(rename = "service_account")]
    service_account: String,
    #[serde(rename = "optional")]
    optional: bool,
    #[serde(rename = "defaults")]
    defaults: bool,
    /// Version 3: every other kind's references, by tag.
    #[serde(rename = "sources", default, skip_serializing_if = "BTreeMap::is_empty")]
    sources: BTreeMap<String, Vec<ReferenceDto>>,
}

impl From<&Record> for RecordV2 {
    fn from(record: &Record) -> Self {
        let spec = &record.spec;
        let cluster = &spec.cluster;
        let first_kinds = [TRUST_BUNDLES_TAG, CONFIG_MAPS_TAG, SECRETS_TAG];
        let sources: BTreeMap<String, Vec<ReferenceDto>> = cluster
            .named
            .iter()
            .filter(|(tag, _)| !first_kinds.contains(&tag.as_str()))
            .map(|(tag, refs)| (tag.clone(), refs.iter().map(ReferenceDto::from).collect()))
            .collect();
        Self {
            format: if sources.is_empty() { FORMAT_OF_THE_FIRST_KINDS } else { RECORD_FORMAT },
            volume_id: record.volume_id.clone(),
            target: record.target.clone(),
            readonly: record.readonly,
            spec: SpecV2 {
                namespace: spec.namespace.clone(),
                system_roots: spec.system_roots,
                render: spec.render.into(),
                keep_expired: spec.keep_expired,
                cluster: ClusterV2 {
                    trust_bundles: cluster.objects(TRUST_BUNDLES_TAG).map(|(name, _)| name.to_owned()).collect(),
                    signer: cluster.signers(TRUST_BUNDLES_TAG).next().map(SignerDto::from),
                    config_maps: cluster
                        .objects(CONFIG_MAPS_TAG)
                        .map(|(name, key)| ConfigMapDto { name: name.to_owned(), key: key.map(str::to_owned) })
                        .collect(),
                    secrets: cluster
                        .objects(SECRETS_TAG)
                        .map(|(name, key)| SecretDto { name: name.to_owned(), key: key.unwrap_or_default().to_owned() })
                        .collect(),
                    service_account: cluster.service_account.clone(),
                    optional: cluster.optional,
                    defaults: cluster.defaults,
                    sources,
                },
            },
            digest: record.digest.as_str().to_owned(),
            pod: (&record.pod).into(),
            published_at: record.published_at,
        }
    }
}

impl From<&Reference> for ReferenceDto {
    fn from(reference: &Reference) -> Self {
        match reference {
            Reference::Object { name, key } => Self::Object { name: name.clone(), key: key.clone() },
            Reference::Signer(signer) => Self::Signer(signer.into()),
        }
    }
}

impl ReferenceDto {
    fn into_reference(self) -> Result<Reference, String> {
        Ok(match self {
            Self::Object { name, key } => Reference::Object { name, key },
            Self::Signer(signer) => Reference::Signer(signer.into_signer()?),
        })
    }
}

impl RecordV2 {
    fn into_record(self) -> Result<Record, String> {
        let spec = self.spec;
        let cluster = spec.cluster;
        let mut sources = ClusterSources {
            service_account: cluster.service_account,
            optional: cluster.optional,
            defaults: cluster.defaults,
            ..ClusterSources::default()
        };
        let signer = cluster.signer.map(SignerDto::into_signer).transpose()?;
        sources.add(
            TRUST_BUNDLES_TAG,
            cluster.trust_bundles.iter().map(|name| Reference::object(name, None)).chain(signer.map(Reference::Signer)),
        );
        sources.add(
            CONFIG_MAPS_TAG,
            cluster.config_maps.into_iter().map(|r| Reference::Object { name: r.name, key: r.key }),
        );
        sources.add(
            SECRETS_TAG,
            cluster.secrets.into_iter().map(|r| Reference::Object { name: r.name, key: Some(r.key) }),
        );
        for (tag, refs) in cluster.sources {
            let refs: Vec<Reference> = refs.into_iter().map(ReferenceDto::into_reference).collect::<Result<_, _>>()?;
            sources.add(&tag, refs);
        }
        Ok(Record {
            volume_id: self.volume_id,
            target: self.target,
            readonly: self.readonly,
            spec: VolumeSpec {
                namespace: spec.namespace,
                system_roots: spec.system_roots,
                render: spec.render.into(),
                keep_expired: spec.keep_expired,
                cluster: sources,
            },
            digest: digest(self.digest)?,
            pod: self.pod.into(),
            published_at: self.published_at,
            state: State::Published,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// (fixture, pod uid, readonly, the attributes `tests/fixtures/records/generate` published
    /// it with): every case the driver at 02e7ca2 wrote.
    type Case = (&'static str, &'static str, bool, &'static [(&'static str, &'static str)]);
    const CASES: &[Case] = &[
        ("local-debian-jks.json", "uid-1", true, &[]),
        (
            "local-rhel-pkcs12-keep.json",
            "uid-2",
            true,
            &[("layout", "rhel"), ("javaTruststore", "pkcs12"), ("expired", "keep"), ("systemRoots", "false")],
        ),
        ("local-suse-none.json", "uid-3", false, &[("layout", "suse"), ("javaTruststore", "none")]),
        ("config-maps.json", "uid-4", true, &[("configMaps", "corp-ca, team-ca:ca.crt")]),
        ("trust-bundles.json", "uid-5", true, &[("clusterTrustBundles", "corp-root, example.com:corp:one")]),
        (
            "signer-selector.json",
            "uid-6",
            true,
            &[
                ("signerName", "example.com/corp"),
                ("labelSelector", "env in (prod,staging), !legacy, tier=web, zone!=b, owner, ring notin (canary)"),
            ],
        ),
        ("secrets.json", "uid-7", true, &[("secrets", "corp-ca-secret, other:ca.pem")]),
        (
            "optional-no-defaults.json",
            "uid-8",
            true,
            &[("configMaps", "corp-ca"), ("optional", "true"), ("defaults", "false")],
        ),
        ("pending.pending", "uid-9", true, &[("layout", "rhel")]),
    ];

    /// `generate` pins it (the time of its first run).
    const PUBLISHED_AT: u64 = 1_796_186_246;

    fn fixture(version: &str, name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/records/{version}/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The record a case describes, from today's attribute parser: a fixture must mean this.
    fn expected(uid: &str, readonly: bool, pairs: &[(&str, &str)], name: &str) -> Record {
        let mut attributes: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        for (key, value) in [
            ("pod.name", format!("web-{uid}")),
            ("pod.namespace", "shop".to_owned()),
            ("pod.uid", uid.to_owned()),
            ("serviceAccount.name", "web".to_owned()),
            ("ephemeral", "true".to_owned()),
        ] {
            attributes.insert(format!("csi.storage.k8s.io/{key}"), value);
        }
        let (spec, pod) = crate::sources::cluster::parse_attributes(&attributes).unwrap();
        let case = name.split('.').next().unwrap();
        Record {
            volume_id: format!("csi-{case}"),
            target: format!("/run/trustmount-fixtures/kubelet/pods/{uid}/volumes/kubernetes.io~csi/trust/mount").into(),
            readonly,
            digest: spec.digest(),
            spec,
            pod,
            published_at: PUBLISHED_AT,
            state: State::Published,
        }
    }

    /// `local-*` have no `cluster` key, as every record before cluster sources: they read with
    /// none.
    #[test]
    fn every_record_02e7ca2_wrote_reads_as_format_1_with_the_meaning_it_was_published_with() {
        for (name, uid, readonly, pairs) in CASES {
            let (record, version) = decode(&fixture("v1", name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(version, 1, "{name}");
            assert_eq!(record, expected(uid, *readonly, pairs, name), "{name}");
            assert_eq!(record.digest, record.spec.digest(), "{name}: the digest inside no longer matches its spec");
        }
    }

    /// The v2 goldens are this writer's output for the v1 fixtures' records: byte for byte, and
    /// the same meaning read back.
    #[test]
    fn a_format_1_record_written_back_is_the_format_2_golden_with_the_same_meaning() {
        for (name, ..) in CASES {
            let (old, _) = decode(&fixture("v1", name)).unwrap();
            let written = encode(&old).unwrap();
            let golden = fixture("v2", name);
            assert!(
                written == golden,
                "{name}: the writer's output changed; a change of format needs a new version\n{}",
                String::from_utf8_lossy(&written)
            );
            let (new, version) = decode(&golden).unwrap();
            assert_eq!(version, 2, "the kinds of 02e7ca2 stay in format 2, which 02e7ca2 reads");
            assert_eq!(new, old, "{name}");
            assert_eq!(new.digest, new.spec.digest(), "{name}");
        }
    }

    /// A kind after 02e7ca2's (here a throwaway `bundle`, by name and by signer) goes to
    /// `spec.cluster.sources` in format 3, pinned by its golden; the first kinds stay where
    /// format 2 puts them, beside it.
    #[test]
    fn a_spec_naming_a_later_kind_is_written_in_format_3_and_read_back() {
        let mut record = expected("uid-10", true, &[("configMaps", "corp-ca")], "other-kind.json");
        let signer = SignerSelection {
            signer_name: "example.com/corp".to_owned(),
            selector: LabelSelector::parse("env in (prod)").unwrap(),
        };
        record.spec.cluster.add("bundle", [Reference::object("org", Some("ca.crt")), Reference::Signer(signer)]);
        record.digest = record.spec.digest();
        let written = encode(&record).unwrap();
        let golden = fixture("v3", "other-kind.json");
        assert!(
            written == golden,
            "the writer's output changed; a change of format needs a new version\n{}",
            String::from_utf8_lossy(&written)
        );
        let (read, version) = decode(&golden).unwrap();
        assert_eq!(version, 3);
        assert_eq!(read, record);
        let (plain, _) = decode(&fixture("v2", "config-maps.json")).unwrap();
        assert!(!String::from_utf8(encode(&plain).unwrap()).unwrap().contains("\"sources\""));
    }

    #[test]
    fn a_record_of_a_newer_format_is_newer_not_invalid() {
        let newer = br#"{"format": 4, "renamed_everything": true}"#;
        assert!(matches!(decode(newer), Err(Error::Newer { found: 4, known: 3, .. })), "{:?}", decode(newer).err());
    }

    #[test]
    fn what_no_trustmount_wrote_is_invalid() {
        let v2 = String::from_utf8(fixture("v2", "config-maps.json")).unwrap();
        let cases = [
            "{not json".to_owned(),
            "[1, 2]".to_owned(),
            v2.replacen("\"format\": 2", "\"format\": 1", 1),
            v2.replacen("\"format\": 2", "\"format\": \"2\"", 1),
            v2.replacen("\"format\": 2", "\"format\": 0", 1),
            v2.replacen("\"Debian\"", "\"debian\"", 1),
            v2.replacen("\"volume_id\"", "\"volumeId\"", 1),
            v2.replacen("\"digest\": \"", "\"digest\": \"../", 1),
        ];
        for text in cases {
            let result = decode(text.as_bytes());
            assert!(matches!(result, Err(Error::Syntax(_) | Error::Invalid { .. })), "{text}: {result:?}");
        }
        let selector = String::from_utf8(fixture("v2", "signer-selector.json")).unwrap();
        let broken = selector.replacen("\"key\": \"env\"", "\"key\": \"env in (\"", 1);
        assert!(matches!(decode(broken.as_bytes()), Err(Error::Invalid { version: 2, .. })));
    }

    #[test]
    fn the_record_holds_no_service_account_token() {
        let pairs = [
            ("csi.storage.k8s.io/serviceAccount.tokens", r#"{"":{"token":"abc","expirationTimestamp":"x"}}"#),
            ("secrets", "ca"),
        ];
        let written = encode(&expected("uid-1", true, &pairs, "t.json")).unwrap();
        assert!(!String::from_utf8(written).unwrap().contains("abc"));
    }

    #[test]
    fn a_target_that_is_not_utf8_is_an_error_not_an_empty_record() {
        use std::os::unix::ffi::OsStrExt;
        let mut record = expected("uid-1", true, &[], "t.json");
        record.target = std::ffi::OsStr::from_bytes(b"/k/\xff").into();
        assert!(matches!(encode(&record), Err(Error::Invalid { version: 2, .. })));
    }
}

//! Report on a bundle file for the CLI: what is in it, where each certificate came from, when
//! it expires, and what a volume would drop under the policy (so inspecting a source file
//! shows what a volume would leave out). The CLI reads the file and prints [`to_text`] or JSON
//! of an [`Inspection`].

use std::fmt::Write as _;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{
    Ignored, Kind, Result, Strictness, parse_source, pem,
    policy::{self, DropReason},
};

const SECONDS_PER_DAY: i64 = 86_400;

/// One certificate of an inspected file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CertificateReport {
    pub subject: String,
    pub issuer: String,
    /// RFC 3339, UTC.
    pub not_before: String,
    /// RFC 3339, UTC.
    pub not_after: String,
    /// Whole days until `not_after`; negative once expired.
    pub days_left: i64,
    /// SHA-256 of the DER, lowercase hex.
    pub sha256: String,
    /// OpenSSL subject hash, `%08x`, the `<hash>.N` link name.
    pub subject_hash: String,
    /// The `# source:` comment before the block in a trustmount bundle, else `file_name`.
    pub source: String,
    pub kind: Kind,
    /// Why a volume with default attributes would leave it out; `None` if it would keep it.
    pub dropped: Option<DropReason>,
}

/// What `inspect --json` prints: every certificate, and how many a volume would drop and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Inspection {
    pub certificates: Vec<CertificateReport>,
    /// How many a volume with default attributes would keep.
    pub kept: usize,
    /// One entry per reason that applies, in [`DropReason::ALL`] order.
    pub dropped: Vec<DropCount>,
    /// The keys each source skipped (no certificate in them), from the bundle file's header.
    pub ignored: Vec<IgnoredCount>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IgnoredCount {
    /// `configmap <namespace>/<name>`.
    pub source: String,
    pub count: usize,
    pub keys: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DropCount {
    pub reason: DropReason,
    pub count: usize,
    pub explanation: &'static str,
}

impl Inspection {
    pub fn new(certificates: Vec<CertificateReport>) -> Self {
        let dropped = drop_counts(&certificates);
        let kept = certificates.len() - dropped.iter().map(|d| d.count).sum::<usize>();
        Self { certificates, kept, dropped, ignored: Vec::new() }
    }

    /// With what the sources of the inspected files skipped ([`ignored_keys`]).
    pub fn with_ignored(mut self, ignored: &[Ignored]) -> Self {
        self.ignored = ignored
            .iter()
            .map(|i| IgnoredCount { source: i.source.clone(), count: i.keys.len(), keys: i.keys.clone() })
            .collect();
        self
    }
}

/// The keys the sources of a trustmount bundle file skipped, from its `# ignored:` header.
pub fn ignored_keys(bytes: &[u8]) -> Vec<Ignored> {
    Ignored::read_all(bytes)
}

/// One line per source that skipped keys: `configmap:name: 2 keys ignored (README, x)`.
pub fn ignored_text(ignored: &[Ignored]) -> String {
    let mut out = String::new();
    for i in ignored {
        let noun = if i.keys.len() == 1 { "key" } else { "keys" };
        let _ = writeln!(out, "{}: {} {noun} ignored ({})", i.source, i.keys.len(), i.keys.join(", "));
    }
    out
}

fn drop_counts(reports: &[CertificateReport]) -> Vec<DropCount> {
    DropReason::ALL
        .into_iter()
        .map(|reason| DropCount {
            reason,
            count: reports.iter().filter(|r| r.dropped == Some(reason)).count(),
            explanation: reason.explain(),
        })
        .filter(|d| d.count > 0)
        .collect()
}

/// Reports every certificate of one file (PEM, DER or PKCS#7), in file order, judged by the
/// policy at `now` as a volume with default attributes (`expired: "drop"`) would.
///
/// # Errors
/// Like [`parse_source`] with [`Strictness::Strict`]: a private key, a broken or non-certificate
/// block, or no certificate at all.
pub fn inspect(file_name: &str, bytes: &[u8], now: i64) -> Result<Vec<CertificateReport>> {
    let parsed = parse_source(file_name, bytes, Strictness::Strict)?;
    // Indexed by block: a PKCS#7 block holds several certificates.
    let comments: Vec<Option<String>> = if pem::looks_like_pem(bytes) {
        pem::read_blocks(bytes).into_iter().map(|b| b.source_comment).collect()
    } else {
        Vec::new()
    };
    Ok(parsed
        .certificates
        .iter()
        .zip(&parsed.blocks)
        .map(|(cert, block)| CertificateReport {
            subject: cert.subject.clone(),
            issuer: cert.issuer.clone(),
            not_before: rfc3339(cert.not_before),
            not_after: rfc3339(cert.not_after),
            days_left: (cert.not_after - now).div_euclid(SECONDS_PER_DAY),
            sha256: hex::encode(cert.fingerprint),
            subject_hash: format!("{:08x}", cert.subject_hash),
            source: comments
                .get(block - 1)
                .cloned()
                .flatten()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| file_name.to_owned()),
            kind: cert.kind,
            dropped: policy::drop_reason(cert, now, false),
        })
        .collect())
}

/// Human-readable listing, one paragraph per certificate, then counts: how many, how many
/// expired, and how many a volume would drop and why.
pub fn to_text(reports: &[CertificateReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let status = if r.days_left < 0 {
            format!("EXPIRED {} days ago", -r.days_left)
        } else {
            format!("{} days left", r.days_left)
        };
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{}", r.subject);
        let _ = writeln!(out, "  issuer:   {}", r.issuer);
        let _ = writeln!(out, "  expires:  {} ({status})", r.not_after);
        let _ = writeln!(out, "  sha256:   {}", r.sha256);
        let _ = writeln!(out, "  hash:     {}", r.subject_hash);
        let _ = writeln!(out, "  source:   {}", r.source);
        let _ = writeln!(out, "  kind:     {}", kind_name(r.kind));
        if let Some(reason) = r.dropped {
            let _ = writeln!(out, "  DROPPED:  {}", reason.explain());
        }
        out.push('\n');
    }
    let expired = reports.iter().filter(|r| r.days_left < 0).count();
    let _ = writeln!(out, "{} certificates, {expired} expired", reports.len());
    let counts = drop_counts(reports);
    if counts.is_empty() {
        let _ = writeln!(out, "a volume would keep all of them");
    } else {
        let total: usize = counts.iter().map(|d| d.count).sum();
        let _ = writeln!(out, "a volume would drop {total}:");
        for d in counts {
            let _ = writeln!(out, "  {} {}", d.count, d.reason.explain());
        }
    }
    out
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Ca => "CA",
        Kind::SelfSignedEndEntity => "self-signed end entity",
        Kind::EndEntity => "end entity issued by a CA",
    }
}

/// Falls back to raw seconds for times RFC 3339 cannot express (years outside 0000–9999).
fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{unix}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::certificate::tests::ca_der;
    use crate::bundle::{Bundle, Certificate, Entry, RenderOptions, render};
    use rcgen::DnType;

    fn cn(name: &str, source: &str) -> Certificate {
        Certificate::from_der(&ca_der(&[(DnType::CommonName, name)]), source, false).expect("parses")
    }

    fn bundle_bytes(bundle: &Bundle) -> Vec<u8> {
        let files = render(bundle, &RenderOptions::default()).expect("renders");
        files
            .entries
            .into_iter()
            .find_map(|(p, e)| match e {
                Entry::File(bytes) if p == "ca-certificates.crt" => Some(bytes),
                _ => None,
            })
            .expect("bundle file")
    }

    #[test]
    fn reports_the_source_comment_of_a_trustmount_bundle() {
        let bundle = Bundle::new([cn("A", "extra-pem:/corp/a.pem"), cn("B", "system:embedded")]);
        let reports = inspect("ca-certificates.crt", &bundle_bytes(&bundle), 0).expect("inspects");
        let sources: Vec<_> = reports.iter().map(|r| (r.subject.as_str(), r.source.as_str())).collect();
        assert_eq!(sources, [("CN=A", "extra-pem:/corp/a.pem"), ("CN=B", "system:embedded")]);
        let cert = &bundle.certificates()[0];
        assert_eq!(reports[0].sha256, hex::encode(cert.fingerprint));
        assert_eq!(reports[0].subject_hash, format!("{:08x}", cert.subject_hash));
    }

    #[test]
    fn falls_back_to_the_file_name_without_comments() {
        let der = ca_der(&[(DnType::CommonName, "A")]);
        let reports = inspect("root.der", &der, 0).expect("inspects");
        assert_eq!(reports[0].source, "root.der");
    }

    #[test]
    fn counts_days_left_and_negative_days_once_expired() {
        let cert = cn("A", "s");
        let der = cert.der.clone();
        let at = |now| inspect("f", &der, now).expect("inspects")[0].days_left;
        assert_eq!(at(cert.not_after - 10 * SECONDS_PER_DAY), 10);
        assert_eq!(at(cert.not_after - 1), 0);
        assert_eq!(at(cert.not_after + 1), -1);
        assert_eq!(at(cert.not_after + 3 * SECONDS_PER_DAY), -3);
    }

    #[test]
    fn formats_times_as_rfc3339_and_text_mentions_expiry() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        let cert = cn("A", "s");
        let reports = inspect("f", &cert.der, cert.not_after + SECONDS_PER_DAY).expect("inspects");
        let text = to_text(&reports);
        assert!(text.contains("EXPIRED 1 days ago"), "{text}");
        assert!(text.contains("\n1 certificates, 1 expired\n"), "{text}");
        let json = serde_json::to_value(Inspection::new(reports)).expect("json");
        assert_eq!(json["certificates"][0]["subject"], "CN=A");
    }

    #[test]
    fn counts_the_keys_a_source_skipped_from_the_bundle_header() {
        let skipped = Ignored { source: "configmap:corp-ca".into(), keys: vec!["README".into(), "jwks.json".into()] };
        let bundle = Bundle::new([cn("A", "configmap:ns/corp-ca:ca.crt")]).with_ignored(vec![skipped.clone()]);
        let bytes = bundle_bytes(&bundle);
        let ignored = ignored_keys(&bytes);
        assert_eq!(ignored, [skipped]);
        assert_eq!(ignored_text(&ignored), "configmap:corp-ca: 2 keys ignored (README, jwks.json)\n");
        let reports = inspect("ca-certificates.crt", &bytes, 0).expect("the header is no obstacle to parsing");
        assert_eq!(reports[0].source, "configmap:ns/corp-ca:ca.crt");
        let json = serde_json::to_value(Inspection::new(reports).with_ignored(&ignored)).expect("json");
        assert_eq!(json["ignored"][0]["count"], 2);
        assert!(ignored_keys(&bundle_bytes(&Bundle::new([cn("A", "s")]))).is_empty());
    }

    #[test]
    fn rejects_a_file_with_a_private_key() {
        let text = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(inspect("f", text.as_bytes(), 0).is_err());
    }
    #[test]
    fn counts_what_a_volume_would_drop_and_why() {
        use crate::bundle::policy::tests::{ca, expired_ca, leaf, self_signed_leaf};
        let root = ca("Root");
        let ders = [
            root.der.clone(),
            leaf("server.corp", &root),
            expired_ca("Old Root"),
            self_signed_leaf("registry.corp"),
            leaf("other.corp", &root),
        ];
        let mut text = String::new();
        for der in &ders {
            crate::bundle::pem::write_block(&mut text, "CERTIFICATE", der);
        }
        // 2025-01-01: after the expired CA's end, within everything else.
        let reports = inspect("chain.pem", text.as_bytes(), 1_735_689_600).expect("inspects");
        let dropped: Vec<_> = reports.iter().map(|r| r.dropped).collect();
        use DropReason::{EndEntityNotSelfSigned as Leaf, Expired};
        assert_eq!(dropped, [None, Some(Leaf), Some(Expired), None, Some(Leaf)]);
        assert_eq!(reports[3].kind, Kind::SelfSignedEndEntity);

        let inspection = Inspection::new(reports.clone());
        assert_eq!(inspection.kept, 2);
        let counts: Vec<_> = inspection.dropped.iter().map(|d| (d.reason, d.count)).collect();
        assert_eq!(counts, [(Expired, 1), (Leaf, 2)]);
        let json = serde_json::to_value(&inspection).expect("json");
        assert_eq!(json["dropped"][1]["reason"], "end-entity-not-self-signed");
        assert_eq!(json["certificates"][1]["dropped"], "end-entity-not-self-signed");
        assert_eq!(json["certificates"][0]["dropped"], serde_json::Value::Null);

        let text = to_text(&reports);
        assert!(text.contains("a volume would drop 3:\n  1 expired"), "{text}");
        assert!(text.contains("  2 end-entity certificate issued by a CA"), "{text}");
    }

    #[test]
    fn a_file_of_cas_says_nothing_would_be_dropped() {
        let cert = cn("A", "s");
        let text = to_text(&inspect("f", &cert.der, cert.not_before).expect("inspects"));
        assert!(text.ends_with("a volume would keep all of them\n"), "{text}");
    }

    #[test]
    fn every_certificate_of_a_pkcs7_block_gets_its_source_comment() {
        let (a, b) = (cn("A", "s"), cn("B", "s"));
        let mut text = "# source: corp-chain\n".to_owned();
        let p7 = crate::bundle::pkcs7::tests::p7b(&[&a.der, &b.der]);
        crate::bundle::pem::write_block(&mut text, "PKCS7", &p7);
        text.push_str("# source: other\n");
        crate::bundle::pem::write_block(&mut text, "CERTIFICATE", &cn("C", "s").der);
        let reports = inspect("f", text.as_bytes(), 0).expect("inspects");
        let sources: Vec<_> = reports.iter().map(|r| r.source.as_str()).collect();
        assert_eq!(sources, ["corp-chain", "corp-chain", "other"]);
    }
}

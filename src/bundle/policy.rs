//! Which parsed certificates a volume actually trusts. Parsing rejects what must never reach a
//! pod (keys, garbage); the policy drops what parses but does not belong in a trust store, per
//! volume and at render time, because expiry depends on the clock and on the spec.

use super::Certificate;
use super::certificate::Kind;

/// Why the policy left a certificate out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropReason {
    /// `not_after` is in the past (the volume attribute `expired: "keep"` keeps it).
    Expired,
    /// A server or client certificate issued by a CA: trust that CA instead.
    EndEntityNotSelfSigned,
}

impl DropReason {
    /// Every reason, in the order summaries list them.
    pub const ALL: [DropReason; 2] = [DropReason::Expired, DropReason::EndEntityNotSelfSigned];

    /// What a log line or `inspect` says, including how to avoid the drop.
    pub fn explain(self) -> &'static str {
        match self {
            DropReason::Expired => "expired (set the volume attribute expired: \"keep\" to keep expired certificates)",
            DropReason::EndEntityNotSelfSigned => {
                "end-entity certificate issued by a CA, not self-signed (add the issuing CA instead)"
            }
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DropReason::Expired => "expired",
            DropReason::EndEntityNotSelfSigned => "end-entity-not-self-signed",
        })
    }
}

/// A certificate the policy left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub certificate: Certificate,
    pub reason: DropReason,
}

/// Why `certificate` would be dropped at `now` (Unix seconds), if it would.
///
/// An end entity that is not self-signed is dropped even with `keep_expired`: that attribute is
/// about old CAs, not about certificates that never belonged in a trust store.
pub fn drop_reason(certificate: &Certificate, now: i64, keep_expired: bool) -> Option<DropReason> {
    if certificate.kind == Kind::EndEntity {
        Some(DropReason::EndEntityNotSelfSigned)
    } else if !keep_expired && certificate.not_after < now {
        // RFC 5280: notAfter is the last second of validity, so it expires strictly after it.
        Some(DropReason::Expired)
    } else {
        None
    }
}

/// Splits certificates into the ones a volume trusts and the ones it drops, keeping order.
pub fn apply(
    certificates: impl IntoIterator<Item = Certificate>,
    now: i64,
    keep_expired: bool,
) -> (Vec<Certificate>, Vec<Dropped>) {
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for certificate in certificates {
        match drop_reason(&certificate, now, keep_expired) {
            None => kept.push(certificate),
            Some(reason) => dropped.push(Dropped { certificate, reason }),
        }
    }
    (kept, dropped)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};

    pub(crate) struct Signer {
        pub der: Vec<u8>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn params(cn: &str, ca: bool) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = if ca { IsCa::Ca(BasicConstraints::Unconstrained) } else { IsCa::ExplicitNoCa };
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2040, 1, 1);
        params
    }

    /// A self-signed CA valid 2020–2040 that can sign others.
    pub(crate) fn ca(cn: &str) -> Signer {
        let key = KeyPair::generate().expect("key");
        let params = params(cn, true);
        let der = params.self_signed(&key).expect("sign").der().to_vec();
        Signer { der, issuer: Issuer::new(params, key) }
    }

    /// An end-entity certificate signed by `by`.
    pub(crate) fn leaf(cn: &str, by: &Signer) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        params(cn, false).signed_by(&key, &by.issuer).expect("sign").der().to_vec()
    }

    pub(crate) fn self_signed_leaf(cn: &str) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        params(cn, false).self_signed(&key).expect("sign").der().to_vec()
    }

    pub(crate) fn expired_ca(cn: &str) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        let mut params = params(cn, true);
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2010, 1, 1);
        params.self_signed(&key).expect("sign").der().to_vec()
    }

    pub(crate) fn cert(der: &[u8]) -> Certificate {
        Certificate::from_der(der, "test", false).expect("parses")
    }

    /// 2025-01-01T00:00:00Z: inside every test certificate's validity except the expired one.
    const NOW: i64 = 1_735_689_600;

    #[test]
    fn a_ca_is_kept() {
        let ca = cert(&ca("Root").der);
        assert_eq!(ca.kind, Kind::Ca);
        assert_eq!(apply([ca.clone()], NOW, false), (vec![ca], vec![]));
    }

    #[test]
    fn a_self_signed_end_entity_is_kept() {
        let registry = cert(&self_signed_leaf("registry.corp"));
        assert_eq!(registry.kind, Kind::SelfSignedEndEntity);
        assert_eq!(apply([registry.clone()], NOW, false), (vec![registry], vec![]));
    }

    #[test]
    fn an_end_entity_signed_by_a_ca_is_dropped_even_with_keep_expired() {
        let root = ca("Root");
        let server = cert(&leaf("server.corp", &root));
        assert_eq!(server.kind, Kind::EndEntity);
        for keep_expired in [false, true] {
            let (kept, dropped) = apply([cert(&root.der), server.clone()], NOW, keep_expired);
            assert_eq!(kept, [cert(&root.der)]);
            assert_eq!(dropped, [Dropped { certificate: server.clone(), reason: DropReason::EndEntityNotSelfSigned }]);
        }
    }

    #[test]
    fn a_certificate_naming_itself_as_issuer_but_signed_by_another_key_is_not_self_signed() {
        let impostor_key = KeyPair::generate().expect("key");
        let same_name = Issuer::new(params("server.corp", true), impostor_key);
        let key = KeyPair::generate().expect("key");
        let der = params("server.corp", false).signed_by(&key, &same_name).expect("sign").der().to_vec();
        let forged = cert(&der);
        assert_eq!(forged.subject, forged.issuer);
        assert_eq!(forged.kind, Kind::EndEntity);
    }

    #[test]
    fn an_expired_ca_is_dropped_unless_expired_certificates_are_kept() {
        let old = cert(&expired_ca("Old Root"));
        let (kept, dropped) = apply([old.clone()], NOW, false);
        assert!(kept.is_empty());
        assert_eq!(dropped[0].reason, DropReason::Expired);
        assert_eq!(apply([old.clone()], NOW, true), (vec![old], vec![]));
    }

    #[test]
    fn a_certificate_is_valid_through_its_last_second() {
        let root = cert(&ca("Root").der);
        assert_eq!(drop_reason(&root, root.not_after, false), None);
        assert_eq!(drop_reason(&root, root.not_after + 1, false), Some(DropReason::Expired));
    }

    #[test]
    fn apply_keeps_the_input_order() {
        let (a, b, c) = (cert(&ca("A").der), cert(&ca("B").der), cert(&ca("C").der));
        let (kept, _) = apply([c.clone(), a.clone(), b.clone()], NOW, false);
        assert_eq!(kept, [c, a, b]);
    }
}

//! [`Bundle`]: the merged, deduplicated, deterministically ordered set of certificates.

use std::collections::HashSet;

use super::{Certificate, Ignored};

/// A deduplicated, deterministically ordered set of certificates, and what its sources skipped.
#[derive(Clone, Debug, Default)]
pub struct Bundle {
    certificates: Vec<Certificate>,
    ignored: Vec<Ignored>,
}

impl Bundle {
    /// Dedupes by fingerprint (the first source wins) and sorts by (subject, fingerprint), so
    /// the same certificates give byte-identical output whatever order the sources came in.
    pub fn new(certificates: impl IntoIterator<Item = Certificate>) -> Self {
        let mut seen = HashSet::new();
        let mut certificates: Vec<Certificate> =
            certificates.into_iter().filter(|c| seen.insert(c.fingerprint)).collect();
        certificates.sort_by(|a, b| (&a.subject, a.fingerprint).cmp(&(&b.subject, b.fingerprint)));
        Self { certificates, ignored: Vec::new() }
    }

    /// With the keys its sources skipped, sorted, so the bundle file says what a volume left out.
    pub fn with_ignored(mut self, mut ignored: Vec<Ignored>) -> Self {
        ignored.sort_by(|a, b| a.source.cmp(&b.source));
        ignored.dedup();
        self.ignored = ignored;
        self
    }

    pub fn certificates(&self) -> &[Certificate] {
        &self.certificates
    }

    pub fn ignored(&self) -> &[Ignored] {
        &self.ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::certificate::tests::ca_der;
    use rcgen::DnType;

    fn cert(cn: &str, source: &str) -> Certificate {
        Certificate::from_der(&ca_der(&[(DnType::CommonName, cn)]), source, false).expect("parses")
    }

    #[test]
    fn dedupes_by_fingerprint_keeping_the_first_source() {
        let a = cert("A", "first");
        let mut again = a.clone();
        again.source = crate::bundle::Provenance::Named("second".to_owned());
        let b = cert("B", "first");
        let bundle = Bundle::new([a.clone(), b.clone(), again]);
        assert_eq!(bundle.certificates(), [a, b]);
    }

    #[test]
    fn dedupe_is_idempotent() {
        let certs = [cert("A", "s"), cert("B", "s"), cert("A", "s")];
        let once = Bundle::new(certs.clone());
        let twice = Bundle::new(once.certificates().to_vec());
        assert_eq!(once.certificates(), twice.certificates());
        assert_eq!(once.certificates().len(), 3);
    }

    #[test]
    fn orders_by_subject_then_fingerprint_whatever_the_input_order() {
        let certs = vec![cert("C", "s"), cert("A", "s"), cert("B", "s"), cert("A", "s")];
        let forward = Bundle::new(certs.clone());
        let backward = Bundle::new(certs.into_iter().rev());
        assert_eq!(forward.certificates(), backward.certificates());
        let keys: Vec<_> = forward.certificates().iter().map(|c| (c.subject.clone(), c.fingerprint)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}

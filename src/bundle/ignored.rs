//! What a source skipped because it holds no certificate: a ConfigMap named without a key takes
//! every key that holds certificates and skips the others (a README beside the CA). Named in a
//! header comment of the bundle file, so `inspect` on a volume can count them.
//!
//! ```text
//! # ignored: configmap:corp-ca: README, config.json (2 keys without certificates)
//! ```

/// The keys one source skipped.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Ignored {
    /// The object, as its certificates' `# source:` names it: `configmap:<name>`.
    pub source: String,
    /// In key order.
    pub keys: Vec<String>,
}

const PREFIX: &str = "# ignored: ";
const SUFFIX: &str = " keys without certificates)";

impl Ignored {
    /// The header line, without its newline. `safe` keeps attacker-influenced text on one line.
    pub(crate) fn header_line(&self, safe: impl Fn(&str) -> String) -> String {
        let keys: Vec<String> = self.keys.iter().map(|key| safe(key)).collect();
        format!("{PREFIX}{}: {} ({}{SUFFIX}", safe(&self.source), keys.join(", "), self.keys.len())
    }

    /// Every header line of a bundle file written by [`Ignored::header_line`].
    pub fn read_all(bytes: &[u8]) -> Vec<Self> {
        String::from_utf8_lossy(bytes).lines().filter_map(Self::parse_line).collect()
    }

    fn parse_line(line: &str) -> Option<Self> {
        let rest = line.trim_end().strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
        let (source, rest) = rest.split_once(": ")?;
        let (keys, _count) = rest.rsplit_once(" (")?;
        let keys = keys.split(", ").filter(|key| !key.is_empty()).map(str::to_owned).collect();
        Some(Self { source: source.to_owned(), keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_line_reads_back_and_other_comments_are_not_headers() {
        let ignored = Ignored { source: "configmap:corp-ca".into(), keys: vec!["README".into(), "config.json".into()] };
        let line = ignored.header_line(str::to_owned);
        assert_eq!(line, "# ignored: configmap:corp-ca: README, config.json (2 keys without certificates)");
        let text = format!("{line}\n# CN=A\n# source: configmap:ns/corp-ca:ca.crt\n-----BEGIN CERTIFICATE-----\n");
        assert_eq!(Ignored::read_all(text.as_bytes()), [ignored]);
        assert!(Ignored::read_all(b"# ignored: nothing of ours\n").is_empty());
    }
}

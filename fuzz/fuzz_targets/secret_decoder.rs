//! A Secret as the API server returns it (JSON) through what a publish does with it: only the
//! wanted keys of `data` are base64-decoded, and each decoded value is classified like a read
//! key (certificates kept, anything else refused). Nothing may panic, and:
//! - only wanted keys come out (never `tls.key` when it is not asked for);
//! - a refused answer's reason names where only (line and column), never what: the body holds
//!   every key of the Secret;
//! - a value kept as certificates holds no PEM private-key block (DER input aside, whose bytes
//!   may contain anything).
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use trustmount::bundle::{KindName, ObjectOrigin, Provenance, Scope};
use trustmount::domain::SECRETS_TAG;
use trustmount::sources::cluster::{KeyContent, classify, wanted_data};

const KIND: KindName = KindName { tag: SECRETS_TAG, title: "Secret" };

/// `the API server's answer is no Secret (at line <n>, column <n>)`, nothing else.
fn names_where_only(reason: &str) -> bool {
    let Some(position) =
        reason.strip_prefix("the API server's answer is no Secret (at line ").and_then(|r| r.strip_suffix(')'))
    else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    position.split_once(", column ").is_some_and(|(line, column)| digits(line) && digits(column))
}

/// A `-----BEGIN …PRIVATE KEY…` line, as the PEM reader would see one.
fn has_private_key_block(bytes: &[u8]) -> bool {
    bytes.split(|&b| b == b'\n').map(<[u8]>::trim_ascii).any(|line| {
        line.starts_with(b"-----BEGIN") && line.to_ascii_uppercase().windows(11).any(|w| w == b"PRIVATE KEY")
    })
}

fuzz_target!(|data: &[u8]| {
    let json = String::from_utf8_lossy(data);
    for wanted in [&["ca.crt"][..], &["ca.crt", "tls.crt", "ca.pem"], &[]] {
        let keys: BTreeSet<&str> = wanted.iter().copied().collect();
        let decoded = match wanted_data(&json, &keys) {
            Ok(decoded) => decoded,
            Err(reason) => {
                assert!(names_where_only(&reason), "{reason}");
                continue;
            }
        };
        assert!(decoded.keys().all(|key| keys.contains(key.as_str())), "{:?} not in {keys:?}", decoded.keys());
        for (key, bytes) in &decoded {
            let origin = ObjectOrigin {
                kind: KIND,
                scope: Scope::Namespace("fuzz".to_owned()),
                name: "fuzz".to_owned(),
                key: Some(key.clone()),
            };
            match classify(&origin, bytes, &trustmount::domain::Limits::default()) {
                KeyContent::Certificates(certificates) => {
                    assert!(!certificates.is_empty());
                    let source = Provenance::Object(origin);
                    assert!(certificates.iter().all(|c| c.source == source));
                    if bytes.first() != Some(&0x30) {
                        assert!(!has_private_key_block(bytes), "a private key was kept: {bytes:?}");
                    }
                }
                KeyContent::Ignored(error) | KeyContent::Invalid(error) => {
                    let _ = error.to_string();
                }
            }
        }
    }
});

//! The certificate-source parser on arbitrary bytes: PEM, DER and PKCS#7 (DER directly, and the
//! same bytes in a `PKCS7` PEM block), both strictness modes, then everything downstream that
//! reads a parsed certificate (policy, inspect). Nothing may panic.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use trustmount::bundle::{self, Inspection, Strictness, parse_source, policy};

fuzz_target!(|data: &[u8]| {
    for strictness in [Strictness::Strict, Strictness::BestEffort] {
        if let Ok(parsed) = parse_source("fuzz", data, strictness) {
            for cert in &parsed.certificates {
                let _ = cert.readable_name();
            }
            for now in [i64::MIN, 0, i64::MAX] {
                let _ = policy::apply(parsed.certificates.iter().cloned(), now, false);
            }
        }
    }
    if let Ok(reports) = bundle::inspect("fuzz", data, 0) {
        let _ = bundle::to_text(&reports);
        let _ = Inspection::new(reports);
    }
    let body = base64::engine::general_purpose::STANDARD.encode(data);
    let pem = format!("-----BEGIN PKCS7-----\n{body}\n-----END PKCS7-----\n");
    for strictness in [Strictness::Strict, Strictness::BestEffort] {
        let _ = parse_source("fuzz", pem.as_bytes(), strictness);
    }
});

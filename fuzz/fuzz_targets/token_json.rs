//! The kubelet's `csi.storage.k8s.io/serviceAccount.tokens` JSON into the pod's token, on
//! arbitrary text. Nothing may panic, and nothing of a token may reach an error's `Display` or
//! the token's `Debug`: when the input is JSON, every string under an audience (its `token`, or
//! the entry itself) is picked out and must be absent from them, unless the fixed wording alone
//! (digits aside) already holds it, as it does for short strings like `e`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use trustmount::sources::cluster::{PodToken, TokenError};

/// Digit runs as one `0`: line and column numbers are not the token's.
fn collapse_digits(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_digits = false;
    for c in text.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !in_digits {
            out.push('0');
        }
        in_digits = c.is_ascii_digit();
    }
    out
}

/// What every message says whatever the input.
fn wording() -> &'static [String] {
    static WORDING: OnceLock<Vec<String>> = OnceLock::new();
    WORDING.get_or_init(fixed_wording)
}

fn fixed_wording() -> Vec<String> {
    let json = ["read", "syntax", "type", "truncation"]
        .map(|category| TokenError::Json { category, line: 0, column: 0 }.to_string());
    let mut all: Vec<String> = json.into_iter().collect();
    all.push(TokenError::NotABearerToken { audience: String::new() }.to_string());
    all.push("PodToken(<redacted>)".to_owned());
    all.into_iter().map(|text| collapse_digits(&text)).collect()
}

/// The strings a leak would show: each audience's `token`, or the entry when it is a string.
fn tokens(json: &Value) -> Vec<&str> {
    let Some(entries) = json.as_object() else { return Vec::new() };
    entries
        .values()
        .filter_map(|entry| match entry {
            Value::String(token) => Some(token.as_str()),
            Value::Object(status) => status.get("token").and_then(Value::as_str),
            _ => None,
        })
        .filter(|token| !token.is_empty())
        .collect()
}

fn assert_hidden(shown: &str, tokens: &[&str], wording: &[String]) {
    let shown = collapse_digits(shown);
    for token in tokens {
        let token = collapse_digits(token);
        if shown.contains(&token) && !wording.iter().any(|fixed| fixed.contains(&token)) {
            panic!("the token {token:?} shows in {shown:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let result = PodToken::from_kubelet_json(&text);
    let parsed: Option<Value> = serde_json::from_str(&text).ok();
    let tokens = parsed.as_ref().map(tokens).unwrap_or_default();
    match result {
        Ok(Some(token)) => {
            assert!(token.authorization().is_sensitive());
            assert!(token.authorization().as_bytes().starts_with(b"Bearer "));
            assert_hidden(&format!("{token:?}"), &tokens, wording());
        }
        Ok(None) => {}
        Err(error) => {
            let mut shown = error.to_string();
            // The audience is the JSON's key, not its token: show it as the empty one does.
            if let TokenError::NotABearerToken { audience } = &error {
                shown = shown.replacen(&format!("{audience:?}"), "\"\"", 1);
            }
            assert_hidden(&shown, &tokens, wording());
        }
    }
});

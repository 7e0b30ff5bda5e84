//! The pod's own ServiceAccount token, as the kubelet hands it over for the CSIDriver's
//! `tokenRequests`: a credential used for one thing only, reading the Secrets the volume names.
//! It is never logged, never part of a spec or a record, and its `Debug` says nothing of it.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// The audience key of a `tokenRequests` entry with `audience: ""`: the kubelet then asks for a
/// token of the API server's own audiences and files it under `""`
/// (`pkg/volume/csi/csi_mounter.go`, `podServiceAccountTokenAttrs`: `outputs[audience] = tr.Status`).
const API_SERVER_AUDIENCE: &str = "";

/// A bearer token of the pod's ServiceAccount, kept as the `Authorization` header it becomes
/// (marked sensitive, so HTTP layers never print it).
#[derive(Clone)]
pub struct PodToken {
    authorization: http::HeaderValue,
}

impl fmt::Debug for PodToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PodToken(<redacted>)")
    }
}

/// Why the kubelet's token JSON cannot be used. Never quotes the JSON: it holds tokens.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error(
        "csi.storage.k8s.io/serviceAccount.tokens is not the kubelet's JSON ({{\"<audience>\": {{\"token\": …, \"expirationTimestamp\": …}}}}): {category} error at line {line}, column {column}"
    )]
    Json { category: &'static str, line: usize, column: usize },
    #[error(
        "the token in csi.storage.k8s.io/serviceAccount.tokens for audience {audience:?} is not a bearer token (it holds characters outside visible ASCII)"
    )]
    NotABearerToken { audience: String },
}

/// One entry of the kubelet's JSON: a `TokenRequestStatus`.
#[derive(Deserialize)]
struct TokenStatus {
    #[serde(default)]
    token: String,
}

impl PodToken {
    /// The token to read Secrets with from the kubelet's `csi.storage.k8s.io/serviceAccount.tokens`
    /// JSON: the entry of audience `""` (the API server's own, as deploy/kubernetes/csidriver.yaml asks),
    /// else the only entry when there is exactly one (a CSIDriver that names the API server's
    /// audience explicitly). `None` when the JSON names no usable token.
    ///
    /// # Errors
    /// JSON that is not the kubelet's, or a token that cannot be an HTTP header.
    pub fn from_kubelet_json(json: &str) -> Result<Option<Self>, TokenError> {
        let mut entries: BTreeMap<String, TokenStatus> = serde_json::from_str(json).map_err(|error| {
            // Not `error.to_string()`: serde quotes the values it rejects, and these are tokens.
            let category = match error.classify() {
                serde_json::error::Category::Io => "read",
                serde_json::error::Category::Syntax => "syntax",
                serde_json::error::Category::Data => "type",
                serde_json::error::Category::Eof => "truncation",
            };
            TokenError::Json { category, line: error.line(), column: error.column() }
        })?;
        let chosen = match entries.remove_entry(API_SERVER_AUDIENCE) {
            Some(entry) => Some(entry),
            None if entries.len() == 1 => entries.pop_first(),
            None => None,
        };
        let Some((audience, status)) = chosen.filter(|(_, status)| !status.token.is_empty()) else {
            return Ok(None);
        };
        let mut authorization = http::HeaderValue::from_str(&format!("Bearer {}", status.token))
            .map_err(|_| TokenError::NotABearerToken { audience })?;
        authorization.set_sensitive(true);
        Ok(Some(Self { authorization }))
    }

    /// The `Authorization` header value, marked sensitive.
    pub fn authorization(&self) -> &http::HeaderValue {
        &self.authorization
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(json: &str) -> Option<String> {
        let token = PodToken::from_kubelet_json(json).expect("parses")?;
        Some(token.authorization().to_str().expect("ASCII").to_owned())
    }

    #[test]
    fn the_api_servers_audience_wins_else_the_only_entry() {
        let both = r#"{"vault":{"token":"v"},"":{"token":"api","expirationTimestamp":"2026-12-01T11:00:00Z"}}"#;
        assert_eq!(header(both).as_deref(), Some("Bearer api"));
        assert_eq!(header(r#"{"https://kubernetes.default.svc":{"token":"k"}}"#).as_deref(), Some("Bearer k"));
        assert_eq!(header(r#"{"a":{"token":"a"},"b":{"token":"b"}}"#), None, "which one is the API server's?");
        assert_eq!(header("{}"), None);
        assert_eq!(header(r#"{"":{"token":""}}"#), None);
    }

    #[test]
    fn nothing_of_the_token_reaches_debug_or_an_error() {
        let token = PodToken::from_kubelet_json(r#"{"":{"token":"s3cr3t"}}"#).unwrap().unwrap();
        assert!(!format!("{token:?}").contains("s3cr3t"));
        assert!(token.authorization().is_sensitive());
        for bad in [r#"{"":{"token":5}}"#, r#"{"":"s3cr3t"}"#, r#"{"":{"token":"s3cr3t""#, "s3cr3t"] {
            let error = PodToken::from_kubelet_json(bad).unwrap_err();
            assert!(matches!(error, TokenError::Json { .. }), "{bad}");
            assert!(!error.to_string().contains("s3cr3t"), "{error}");
        }
        let error = PodToken::from_kubelet_json("{\"\":{\"token\":\"s3cr3t\\n\"}}").unwrap_err();
        assert_eq!(error, TokenError::NotABearerToken { audience: String::new() });
        assert!(!error.to_string().contains("s3cr3t"));
    }
}

//! Names derived from certificates: per-certificate file names and Java store aliases, unique
//! and safe to use as a path component. Layouts and both Java stores share them.

use std::collections::{HashMap, HashSet};

use super::Certificate;

/// Longest readable stem we keep, so names stay well under the 255-byte limit.
pub(super) const MAX_STEM: usize = 64;

/// `<name>.pem`, one per certificate, in the same order, all distinct: the readable name
/// (`readable`, parsed once by the caller), else the fingerprint. A stem shared by several
/// certificates, or a name in `reserved`, gets a fingerprint suffix.
pub(super) fn file_names(certificates: &[Certificate], readable: &[Option<String>], reserved: &[&str]) -> Vec<String> {
    let stems: Vec<String> = certificates
        .iter()
        .zip(readable)
        .map(|(c, name)| name.as_deref().map(sanitize).unwrap_or_else(|| hex::encode(c.fingerprint)))
        .collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for stem in &stems {
        *counts.entry(stem).or_default() += 1;
    }
    let preferred = certificates.iter().zip(&stems).map(|(cert, stem)| {
        let name = format!("{stem}.pem");
        if counts.get(stem.as_str()).copied().unwrap_or(0) > 1 || reserved.contains(&name.as_str()) {
            format!("{stem}_{}.pem", short_fingerprint(cert))
        } else {
            name
        }
    });
    let fallbacks = certificates.iter().zip(&stems).map(|(cert, stem)| (stem, hex::encode(cert.fingerprint)));
    make_unique(preferred.zip(fallbacks).map(|(name, (stem, fp))| (name, format!("{stem}_{fp}"), ".pem")))
}

/// One alias per certificate: the lowercase forms of `stems` (the per-certificate file names
/// without `.pem`), made unique again because Java compares aliases case-insensitively.
pub(super) fn java_aliases(certificates: &[Certificate], stems: &[&str]) -> Vec<String> {
    make_unique(certificates.iter().zip(stems).map(|(cert, stem)| {
        let alias = stem.to_ascii_lowercase();
        let fallback = format!("{alias}_{}", short_fingerprint(cert));
        (alias, fallback, "")
    }))
}

/// Keeps each preferred name unless an earlier one took it; then falls back to a longer name,
/// numbered if even that is taken (only possible with adversarial subjects).
fn make_unique(candidates: impl Iterator<Item = (String, String, &'static str)>) -> Vec<String> {
    let mut taken = HashSet::new();
    candidates
        .map(|(preferred, fallback, suffix)| {
            let mut name = preferred;
            let mut n = 1;
            while taken.contains(&name) {
                name = if n == 1 { format!("{fallback}{suffix}") } else { format!("{fallback}_{n}{suffix}") };
                n += 1;
            }
            taken.insert(name.clone());
            name
        })
        .collect()
}

pub(super) fn short_fingerprint(cert: &Certificate) -> String {
    hex::encode(&cert.fingerprint[..4])
}

/// `[A-Za-z0-9._-]` only, never starting with a dot, at most [`MAX_STEM`] characters.
pub(super) fn sanitize(name: &str) -> String {
    let mut out: String = name
        .trim()
        .chars()
        .take(MAX_STEM)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    if out.starts_with('.') {
        out.replace_range(..1, "_");
    }
    out
}

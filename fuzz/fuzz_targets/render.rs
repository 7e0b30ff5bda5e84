//! The pure bundle path of `trustmount render` and of every publish, on arbitrary bytes as one
//! certificate source: parsed (strictly, as a user's source; else best-effort, as system roots),
//! deduped, kept by the policy at several `now`s, and laid out into files for every layout and
//! Java truststore, with the input's first lines as the keys a ConfigMap source skipped (they
//! reach the bundle file's header). No file I/O. Nothing may panic, and for every render:
//! - paths are sorted, unique and stay inside the volume (relative, no `.`, `..`, empty or
//!   dot-file component), and every symlink resolves to a file of the render;
//! - the layout's bundle files parse back (strictly) to exactly the bundle's certificates, in
//!   order: no subject, source name or skipped key can forge or break a PEM block.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustmount::bundle::{
    self, Bundle, Entry, Files, Ignored, JavaTruststore, Layout, RenderOptions, Strictness, parse_source, policy,
};

/// Unix seconds the policy runs at: before every certificate, a recent date, after every one.
const NOWS: [i64; 4] = [i64::MIN, 0, 1_767_225_600, i64::MAX];

/// The files of a layout that hold every certificate as PEM.
fn bundle_files(layout: Layout) -> &'static [&'static str] {
    match layout {
        Layout::Debian => &[bundle::BUNDLE_FILE],
        Layout::Rhel => &["pem/tls-ca-bundle.pem", "openssl/ca-bundle.trust.crt"],
        Layout::Suse => &["ca-bundle.pem"],
    }
}

fn get<'a>(files: &'a Files, path: &str) -> Option<&'a Entry> {
    files.entries.binary_search_by(|(p, _)| p.as_str().cmp(path)).ok().map(|i| &files.entries[i].1)
}

/// Follows `path` through the render's symlinks; `None` if a link leaves the volume, dangles
/// or loops.
fn resolve<'a>(files: &'a Files, path: &str) -> Option<&'a [u8]> {
    let mut current = path.to_owned();
    for _ in 0..16 {
        match get(files, &current)? {
            Entry::File(bytes) => return Some(bytes),
            Entry::Symlink(target) => {
                let mut parts: Vec<&str> = current.split('/').collect();
                parts.pop();
                for part in target.split('/') {
                    match part {
                        ".." => {
                            parts.pop()?;
                        }
                        "." | "" => {}
                        _ => parts.push(part),
                    }
                }
                current = parts.join("/");
            }
        }
    }
    None
}

fn check(bundle: &Bundle, options: RenderOptions, files: &Files) {
    for pair in files.entries.windows(2) {
        assert!(pair[0].0 < pair[1].0, "paths not sorted and unique: {:?}, {:?}", pair[0].0, pair[1].0);
    }
    for (path, entry) in &files.entries {
        assert!(
            path.split('/').all(|part| !part.is_empty() && !part.starts_with('.')),
            "{options:?}: path {path:?} leaves the volume or is a dot-file"
        );
        if let Entry::Symlink(_) = entry {
            assert!(resolve(files, path).is_some(), "{options:?}: {path:?} does not resolve to a file");
        }
    }
    if bundle.certificates().is_empty() {
        return;
    }
    let ders = |certificates: &[bundle::Certificate]| certificates.iter().map(|c| c.der.clone()).collect::<Vec<_>>();
    for path in bundle_files(options.layout) {
        let text = resolve(files, path).unwrap_or_else(|| panic!("{options:?}: no {path}"));
        let back = parse_source("rendered", text, Strictness::Strict)
            .unwrap_or_else(|e| panic!("{options:?}: {path} does not parse back: {e}"));
        assert_eq!(
            ders(&back.certificates),
            ders(bundle.certificates()),
            "{options:?}: {path} holds other certificates"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let parsed = match parse_source("fuzz", data, Strictness::Strict) {
        Ok(parsed) => parsed,
        Err(_) => match parse_source("fuzz", data, Strictness::BestEffort) {
            Ok(parsed) => parsed,
            Err(_) => return,
        },
    };
    let keys: Vec<String> = String::from_utf8_lossy(data).lines().take(3).map(str::to_owned).collect();
    let ignored =
        if keys.is_empty() { Vec::new() } else { vec![Ignored { source: "configmap:fuzz".to_owned(), keys }] };

    // As `Catalog::render`: dedupe the candidates, apply the policy, dedupe what it keeps.
    let candidates = Bundle::new(parsed.certificates);
    let mut rendered: Vec<Vec<[u8; 32]>> = Vec::new();
    let policies = NOWS.iter().map(|&now| (now, false)).chain([(0, true)]);
    for (now, keep_expired) in policies {
        let (kept, _dropped) = policy::apply(candidates.certificates().iter().cloned(), now, keep_expired);
        let bundle = Bundle::new(kept).with_ignored(ignored.clone());
        let fingerprints: Vec<[u8; 32]> = bundle.certificates().iter().map(|c| c.fingerprint).collect();
        if rendered.contains(&fingerprints) {
            continue;
        }
        rendered.push(fingerprints);
        for &layout in Layout::ALL {
            for &java in JavaTruststore::ALL {
                let options = RenderOptions { layout, java };
                match bundle::render(&bundle, &options) {
                    Ok(files) => check(&bundle, options, &files),
                    Err(error) => {
                        let _ = error.to_string();
                    }
                }
            }
        }
    }
});

//! The certificate policy and input formats through the CLI: PKCS#7 bundles made by openssl,
//! what `render` keeps and `inspect` says it would drop, and the per-source size limit.

use std::path::Path;
use std::process::Output;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};
use trustmount::bundle::{Strictness, parse_source};

use crate::support::daemon::BIN;
use crate::support::output::{assert_success, run, text};

fn params(cn: &str, ca: bool) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = if ca { IsCa::Ca(BasicConstraints::Unconstrained) } else { IsCa::ExplicitNoCa };
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2099, 1, 1);
    params
}

/// root → intermediate → server, as DER, in that order.
fn chain() -> [Vec<u8>; 3] {
    let root_key = KeyPair::generate().unwrap();
    let root_params = params("Policy Test Root", true);
    let root = root_params.self_signed(&root_key).unwrap().der().to_vec();
    let root = (root, Issuer::new(root_params, root_key));
    let intermediate_key = KeyPair::generate().unwrap();
    let intermediate_params = params("Policy Test Intermediate", true);
    let intermediate = intermediate_params.signed_by(&intermediate_key, &root.1).unwrap().der().to_vec();
    let intermediate_issuer = Issuer::new(intermediate_params, intermediate_key);
    let server = params("server.policy.test", false)
        .signed_by(&KeyPair::generate().unwrap(), &intermediate_issuer)
        .unwrap()
        .der()
        .to_vec();
    [root.0, intermediate, server]
}

fn pem(ders: &[&[u8]]) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    for der in ders {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// The DER of every certificate of a rendered bundle file, in order.
fn bundle_ders(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_source("test", &bytes, Strictness::Strict).unwrap().certificates.into_iter().map(|c| c.der).collect()
}

fn render(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["render", "--out", out.to_str().unwrap(), "--system-roots", "none"];
    args.extend_from_slice(extra);
    run(BIN, &args)
}

/// Writes chain.pem (root, intermediate, server) and the openssl PKCS#7 files made from it.
fn chain_files(dir: &Path) -> [Vec<u8>; 3] {
    let chain = chain();
    let chain_pem = dir.join("chain.pem");
    std::fs::write(&chain_pem, pem(&[&chain[0], &chain[1], &chain[2]])).unwrap();
    for (file, form) in [("chain.p7b", "PEM"), ("chain.p7c", "DER")] {
        let made = run(
            "openssl",
            &[
                "crl2pkcs7",
                "-nocrl",
                "-certfile",
                chain_pem.to_str().unwrap(),
                "-outform",
                form,
                "-out",
                dir.join(file).to_str().unwrap(),
            ],
        );
        assert_success(&format!("openssl crl2pkcs7 -outform {form}"), &made);
    }
    chain
}

#[test]
fn an_openssl_pkcs7_bundle_in_pem_or_der_renders_the_chains_ca_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let [root, intermediate, _server] = chain_files(dir.path());
    let p7b = std::fs::read_to_string(dir.path().join("chain.p7b")).unwrap();
    assert!(p7b.starts_with("-----BEGIN PKCS7-----"), "openssl wrote:\n{p7b}");
    for file in ["chain.p7b", "chain.p7c"] {
        let out = dir.path().join(format!("out-{file}"));
        let rendered = render(&out, &["--pem", dir.path().join(file).to_str().unwrap()]);
        assert_success(&format!("render --pem {file}"), &rendered);
        let mut got = bundle_ders(&out.join("ca-certificates.crt"));
        got.sort();
        let mut want = vec![root.clone(), intermediate.clone()];
        want.sort();
        assert_eq!(got, want, "{file}: the bundle must hold the root and intermediate, not the server certificate");
        assert!(text(&rendered.stderr).contains("wrote 2 certificates"), "{}", text(&rendered.stderr));
    }
}

#[test]
fn inspect_of_a_source_shows_what_a_volume_would_drop_and_why() {
    let dir = tempfile::tempdir().unwrap();
    chain_files(dir.path());
    let expired_key = KeyPair::generate().unwrap();
    let mut expired = params("Policy Test Expired Root", true);
    expired.not_before = date_time_ymd(2000, 1, 1);
    expired.not_after = date_time_ymd(2010, 1, 1);
    let expired = expired.self_signed(&expired_key).unwrap().der().to_vec();
    let expired_pem = dir.path().join("expired.pem");
    std::fs::write(&expired_pem, pem(&[&expired])).unwrap();

    let listing = run(BIN, &["inspect", dir.path().join("chain.p7b").to_str().unwrap()]);
    assert_success("inspect chain.p7b", &listing);
    let stdout = text(&listing.stdout);
    assert!(stdout.contains("3 certificates, 0 expired"), "{stdout}");
    assert!(stdout.contains("a volume would drop 1:\n  1 end-entity certificate issued by a CA"), "{stdout}");

    let listing = run(BIN, &["inspect", "--json", expired_pem.to_str().unwrap()]);
    assert_success("inspect --json expired.pem", &listing);
    let json: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    assert_eq!(json["kept"], 0, "{json}");
    assert_eq!(json["dropped"][0]["reason"], "expired", "{json}");
    assert_eq!(json["dropped"][0]["count"], 1, "{json}");

    // The volume agrees with inspect: nothing would be left, so render refuses…
    let refused = render(&dir.path().join("out"), &["--pem", expired_pem.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(64), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("would be empty"), "{}", text(&refused.stderr));
    // …unless expired certificates are kept.
    let kept = render(&dir.path().join("out"), &["--pem", expired_pem.to_str().unwrap(), "--expired", "keep"]);
    assert_success("render --expired keep", &kept);
    assert_eq!(bundle_ders(&dir.path().join("out/ca-certificates.crt")), vec![expired]);
}

#[test]
fn a_source_over_max_source_size_is_refused_with_its_size_and_one_at_the_limit_is_read() {
    const LIMIT: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let [root, ..] = chain();
    // Text around PEM blocks is allowed, so padding makes a valid source of any size.
    let certificate = pem(&[&root]);
    let padding = "#".repeat(LIMIT - certificate.len() - 1);
    let at_limit = dir.path().join("at-limit.pem");
    std::fs::write(&at_limit, format!("{padding}\n{certificate}")).unwrap();
    assert_eq!(std::fs::metadata(&at_limit).unwrap().len(), LIMIT as u64);
    let over = dir.path().join("over.pem");
    std::fs::write(&over, format!("{padding}#\n{certificate}")).unwrap();

    let rendered = render(&dir.path().join("ok"), &["--max-source-size", "1Mi", "--pem", at_limit.to_str().unwrap()]);
    assert_success("render at the limit", &rendered);
    assert_eq!(bundle_ders(&dir.path().join("ok/ca-certificates.crt")), vec![root]);

    let refused = render(&dir.path().join("no"), &["--max-source-size", "1Mi", "--pem", over.to_str().unwrap()]);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("1048577 bytes") && stderr.contains("1048576 bytes"), "{stderr}");
    assert!(stderr.contains("over.pem") && stderr.contains("--max-source-size"), "{stderr}");
    assert!(!dir.path().join("no").exists(), "a refused render wrote files");
}

#[test]
fn max_source_size_defaults_to_4mi_and_rejects_nonsense() {
    let dir = tempfile::tempdir().unwrap();
    let [root, ..] = chain();
    let big = dir.path().join("big.pem");
    std::fs::write(&big, format!("{}\n{}", "#".repeat(4 << 20), pem(&[&root]))).unwrap();
    let refused = render(&dir.path().join("out"), &["--pem", big.to_str().unwrap()]);
    assert!(text(&refused.stderr).contains(&format!("limit of {} bytes", 4 << 20)), "{}", text(&refused.stderr));
    let nonsense = render(&dir.path().join("out"), &["--max-source-size", "lots"]);
    assert_eq!(nonsense.status.code(), Some(64), "{}", text(&nonsense.stderr));
}

//! Checks `trustmount::bundle` against the real tools that will read its output: the `openssl`
//! CLI (subject hashes, `openssl rehash`, `openssl verify`) and `keytool` (the Java store).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, KeyPair};
use trustmount::bundle::{self, Bundle, Certificate, Entry, Files, RenderOptions, Strictness};

use crate::support;

fn run(program: &str, args: &[&str]) -> Output {
    let output =
        Command::new(program).args(args).output().unwrap_or_else(|e| support::tools::spawn_failed(program.as_ref(), e));
    assert!(output.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// What `openssl x509 -subject_hash` prints for a certificate file.
fn openssl_hash(cert: &Path, inform: &str) -> u32 {
    let out = run("openssl", &["x509", "-inform", inform, "-in", path_str(cert), "-noout", "-subject_hash"]);
    let text = String::from_utf8_lossy(&out.stdout);
    u32::from_str_radix(text.trim(), 16).unwrap_or_else(|e| panic!("bad hash {text:?}: {e}"))
}

fn parse_one(name: &str, bytes: &[u8]) -> Certificate {
    let parsed = bundle::parse_source(name, bytes, Strictness::Strict).expect("parses");
    assert_eq!(parsed.certificates.len(), 1);
    parsed.certificates.into_iter().next().expect("one certificate")
}

/// A self-signed certificate made by `openssl req` with the given subject and extra options.
/// `string_mask = default` lets OpenSSL pick PrintableString, T61String or BMPString, so the
/// canonicalisation of each type is exercised; `utf8only` is OpenSSL's own default.
fn openssl_cert(dir: &Path, name: &str, subject: &str, mask: &str, extra: &[&str]) -> PathBuf {
    let config = dir.join(format!("{name}.cnf"));
    std::fs::write(&config, format!("[req]\ndistinguished_name = dn\nstring_mask = {mask}\n[dn]\n"))
        .expect("write config");
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let mut args = vec![
        "req",
        "-x509",
        "-config",
        path_str(&config),
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "30",
        "-subj",
        subject,
        "-keyout",
        path_str(&key),
        "-out",
        path_str(&cert),
    ];
    args.extend_from_slice(extra);
    run("openssl", &args);
    cert
}

#[test]
fn subject_hash_matches_openssl_for_generated_subjects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(&str, &[&str])] = &[
        ("/CN=Test Root/O=Acme/C=DE", &[]),
        ("/CN=  Mixed   CASE\tName  /O=ACME corp", &[]),
        ("/CN=a+O=b", &["-multivalue-rdn"]),
        ("/O=b+CN=a/OU=Unit+OU=Another", &["-multivalue-rdn"]),
        ("/CN=Grüße Ünïcode/O=日本 Corp/OU=ÄÖÜ  Straße", &["-utf8"]),
        ("/CN=under_score@example.com", &[]),
        ("/emailAddress=ADMIN@Example.COM/CN=x", &[]),
        ("/serialNumber=12345/CN=serial", &[]),
        ("/", &[]),
    ];
    for (i, (subject, extra)) in cases.iter().enumerate() {
        for mask in ["default", "utf8only"] {
            let path = openssl_cert(dir.path(), &format!("case{i}{mask}"), subject, mask, extra);
            let ours = parse_one(subject, &std::fs::read(&path).expect("read")).subject_hash;
            assert_eq!(
                format!("{ours:08x}"),
                format!("{:08x}", openssl_hash(&path, "PEM")),
                "subject {subject:?} with string_mask {mask}"
            );
        }
    }
}

fn rcgen_cert(attributes: Vec<(DnType, DnValue)>) -> Vec<u8> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for (kind, value) in attributes {
        dn.push(kind, value);
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    params.self_signed(&key).expect("sign").der().to_vec()
}

#[test]
fn subject_hash_matches_openssl_for_every_string_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "  Mixed  CASE Name ";
    let cases: Vec<(&str, DnValue)> = vec![
        ("utf8", DnValue::Utf8String("  Grüße  日本 ".into())),
        ("printable", DnValue::PrintableString(text.try_into().expect("printable"))),
        ("ia5", DnValue::Ia5String(" Mixed_CASE@Name ".try_into().expect("ia5"))),
        ("teletex", DnValue::TeletexString(text.try_into().expect("teletex"))),
        ("bmp", DnValue::BmpString(" Grüße  日本 ".try_into().expect("bmp"))),
        ("universal", DnValue::UniversalString(" Grüße 𝄞 X ".try_into().expect("universal"))),
    ];
    for (name, value) in cases {
        let der = rcgen_cert(vec![
            (DnType::CountryName, DnValue::PrintableString("DE".try_into().expect("printable"))),
            (DnType::CommonName, value),
        ]);
        let path = dir.path().join(format!("{name}.der"));
        std::fs::write(&path, &der).expect("write");
        let ours = parse_one(name, &der).subject_hash;
        assert_eq!(format!("{ours:08x}"), format!("{:08x}", openssl_hash(&path, "DER")), "{name}");
    }
}

#[test]
fn subject_hash_matches_openssl_for_every_embedded_mozilla_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let roots: Vec<(PathBuf, Certificate)> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .enumerate()
        .map(|(i, der)| {
            let path = dir.path().join(format!("{i}.der"));
            std::fs::write(&path, der.as_ref()).expect("write");
            (path, parse_one("embedded", der.as_ref()))
        })
        .collect();
    assert!(roots.len() > 100);
    // One openssl process per root, a few at a time, to stay within seconds.
    std::thread::scope(|scope| {
        for chunk in roots.chunks(roots.len().div_ceil(8)) {
            scope.spawn(move || {
                for (path, cert) in chunk {
                    assert_eq!(
                        format!("{:08x}", cert.subject_hash),
                        format!("{:08x}", openssl_hash(path, "DER")),
                        "{}",
                        cert.subject
                    );
                }
            });
        }
    });
}

/// Writes rendered files (and symlinks) under `dir`.
fn write_files(dir: &Path, files: &Files) {
    for (path, entry) in &files.entries {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        match entry {
            Entry::File(bytes) => std::fs::write(&full, bytes).expect("write"),
            Entry::Symlink(target) => std::os::unix::fs::symlink(target, &full).expect("symlink"),
        }
    }
}

fn embedded_plus_same_subjects() -> Bundle {
    let mut certs: Vec<Certificate> =
        webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().map(|der| parse_one("system:embedded", der.as_ref())).collect();
    // Same subject three times, plus spellings that differ only in case and spacing: all
    // share one hash, so they exercise the `.N` numbering.
    for cn in ["Same Subject", "Same Subject", "Same Subject", "same  SUBJECT", " SAME subject"] {
        let der = rcgen_cert(vec![(DnType::CommonName, DnValue::Utf8String(cn.into()))]);
        certs.push(parse_one("extra", &der));
    }
    Bundle::new(certs)
}

#[test]
fn hash_links_are_exactly_what_openssl_rehash_makes() {
    let bundle = embedded_plus_same_subjects();
    let files = bundle::render(&bundle, &RenderOptions::default()).expect("renders");

    // Only the per-certificate files, so rehash sees the same inputs our links point to.
    let dir = tempfile::tempdir().expect("tempdir");
    let is_hash_link = |p: &str| {
        p.split_once('.')
            .is_some_and(|(h, n)| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()) && n.parse::<u32>().is_ok())
    };
    let mut ours = BTreeMap::new();
    for (path, entry) in &files.entries {
        match entry {
            Entry::File(bytes) if path.ends_with(".pem") => {
                std::fs::write(dir.path().join(path), bytes).expect("write");
            }
            Entry::Symlink(target) if is_hash_link(path) => {
                ours.insert(path.clone(), target.clone());
            }
            _ => {}
        }
    }
    run("openssl", &["rehash", path_str(dir.path())]);
    let mut theirs = BTreeMap::new();
    for entry in std::fs::read_dir(dir.path()).expect("read dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_symlink() {
            let target = std::fs::read_link(entry.path()).expect("link");
            theirs.insert(entry.file_name().to_string_lossy().into_owned(), target.to_string_lossy().into_owned());
        }
    }
    assert_eq!(ours.len(), bundle.certificates().len());
    assert!(ours.keys().any(|k| k.ends_with(".4")), "expected five same-hash certificates");
    assert_eq!(ours, theirs);
}

#[test]
fn openssl_verifies_a_leaf_through_the_bundle_file_and_the_hash_links() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    let ca = openssl_cert(
        &work,
        "ca",
        "/CN=Corp Root CA/O=Corp",
        "utf8only",
        &["-addext", "basicConstraints=critical,CA:TRUE"],
    );
    let csr = work.join("leaf.csr");
    let leaf = work.join("leaf.pem");
    let leaf_key = work.join("leaf.key");
    run(
        "openssl",
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=service.corp",
            "-keyout",
            path_str(&leaf_key),
            "-out",
            path_str(&csr),
        ],
    );
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            path_str(&csr),
            "-CA",
            path_str(&ca),
            "-CAkey",
            path_str(&work.join("ca.key")),
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            path_str(&leaf),
        ],
    );
    let ca_cert = parse_one("corp", &std::fs::read(&ca).expect("read"));
    let mut certs = vec![ca_cert];
    certs.extend(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().map(|der| parse_one("system:embedded", der.as_ref())));
    let files = bundle::render(&Bundle::new(certs), &RenderOptions::default()).expect("renders");
    let certs_dir = dir.path().join("certs");
    write_files(&certs_dir, &files);

    let ca_file = certs_dir.join("ca-certificates.crt");
    for args in [
        vec!["verify", "-CAfile", path_str(&ca_file), path_str(&leaf)],
        vec!["verify", "-no-CAfile", "-no-CAstore", "-CApath", path_str(&certs_dir), path_str(&leaf)],
    ] {
        let out = run("openssl", &args);
        assert!(String::from_utf8_lossy(&out.stdout).contains(": OK"), "{args:?}");
    }
}

#[test]
fn keytool_lists_every_certificate_of_the_java_store() {
    let bundle = embedded_plus_same_subjects();
    let files = bundle::render(&bundle, &RenderOptions::default()).expect("renders");
    let dir = tempfile::tempdir().expect("tempdir");
    write_files(dir.path(), &files);
    let store = dir.path().join("java/cacerts");
    let count =
        |stdout: &[u8]| String::from_utf8_lossy(stdout).lines().filter(|l| l.contains("trustedCertEntry")).count();

    let out = run("keytool", &["-list", "-keystore", path_str(&store), "-storepass", bundle::JAVA_STORE_PASSWORD]);
    assert_eq!(count(&out.stdout), bundle.certificates().len());

    // How the JDK opens its default truststore: no password, so no integrity check.
    let out = Command::new("keytool")
        .args(["-list", "-keystore", path_str(&store)])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run keytool");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(count(&out.stdout), bundle.certificates().len());

    // The symlink resolves to the same store.
    assert_eq!(
        std::fs::read(dir.path().join("adoptium/cacerts")).expect("read via link"),
        std::fs::read(&store).expect("read")
    );
}

/// T61String with Latin-1 bytes (each byte is its own code point, so `É` folds to `é` only if
/// OpenSSL lowercases non-ASCII — it does not), and NumericString (copied as it is, never
/// canonicalised): the two rules a UTF-8-only implementation gets wrong.
#[test]
fn subject_hash_matches_openssl_for_latin1_t61_and_numeric_strings() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    // OpenSSL reads -subj bytes as Latin-1 and, with string_mask=default, stores non-ASCII as T61.
    let config = dir.path().join("t61.cnf");
    std::fs::write(&config, "[req]\ndistinguished_name = dn\nstring_mask = default\n[dn]\n").expect("config");
    let t61 = dir.path().join("t61.pem");
    let subject: &[u8] = b"/CN=  Caf\xe9  CR\xc8ME /O=ACME";
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3"])
        .arg("-config")
        .arg(&config)
        .arg("-keyout")
        .arg(dir.path().join("t61.key"))
        .arg("-out")
        .arg(&t61)
        .arg("-subj")
        .arg(std::ffi::OsStr::from_bytes(subject))
        .output()
        .expect("run openssl");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let der_of_t61 = std::fs::read(&t61).expect("read");
    let cert = parse_one("t61", &der_of_t61);
    // Make sure the case really is a T61String holding Latin-1 bytes.
    let raw = bundle::parse_source("t61", &der_of_t61, Strictness::Strict).expect("parses").certificates[0].der.clone();
    let holds_latin1_t61 = raw.iter().enumerate().any(|(i, &tag)| {
        let len = raw.get(i + 1).copied().unwrap_or(0) as usize;
        tag == 0x14 && raw.get(i + 2..i + 2 + len).is_some_and(|value| value.contains(&0xe9))
    });
    assert!(holds_latin1_t61, "the subject should hold a T61String with the Latin-1 byte 0xE9");
    assert_eq!(format!("{:08x}", cert.subject_hash), format!("{:08x}", openssl_hash(&t61, "PEM")), "T61 Latin-1");

    // NumericString: rcgen cannot emit one, so re-tag a PrintableString of digits (0x13 → 0x12)
    // in subject and issuer; `openssl x509 -subject_hash` does not check the signature.
    let mut der =
        rcgen_cert(vec![(DnType::CommonName, DnValue::PrintableString("  0123 4567 ".try_into().expect("printable")))]);
    let printable_digits = [0x13, 12, b' ', b' ', b'0', b'1', b'2', b'3', b' ', b'4', b'5', b'6', b'7', b' '];
    let mut retagged = 0;
    for i in 0..der.len().saturating_sub(printable_digits.len() - 1) {
        if der[i..].starts_with(&printable_digits) {
            der[i] = 0x12;
            retagged += 1;
        }
    }
    assert_eq!(retagged, 2, "subject and issuer should both hold the digits");
    let numeric = dir.path().join("numeric.der");
    std::fs::write(&numeric, &der).expect("write");
    let cert = bundle::parse_source("numeric", &der, Strictness::BestEffort).expect("parses").certificates;
    assert_eq!(cert.len(), 1, "the re-tagged certificate still parses");
    assert_eq!(
        format!("{:08x}", cert[0].subject_hash),
        format!("{:08x}", openssl_hash(&numeric, "DER")),
        "NumericString"
    );
}

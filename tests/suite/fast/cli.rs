//! The command line: `render` writes a volume's files without mounting, `inspect` lists a
//! bundle's certificates, and bad input fails loudly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::in_private_mount_namespace;
use crate::support;
use crate::support::certs::{TestCa, openssl_subject_hash, pem_certificates};
use crate::support::daemon::BIN;
use crate::support::output::{assert_success, text};

fn trustmount(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(BIN).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("run {BIN}: {e}"))
}

fn render(out: &Path, pems: &[&Path], system_roots: &str) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = vec!["render".as_ref(), "--out".as_ref(), out.as_os_str()];
    for pem in pems {
        args.push("--pem".as_ref());
        args.push(pem.as_os_str());
    }
    args.push("--system-roots".as_ref());
    args.push(system_roots.as_ref());
    trustmount(&args)
}

#[test]
fn render_with_one_pem_and_no_system_roots_writes_the_volume_files_and_inspect_lists_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let out = dir.path().join("out");
    let result = render(&out, &[&ca.cert_path], "none");
    assert_success("render", &result);

    for name in ["ca-certificates.crt", "cert.pem", "ca-bundle.crt"] {
        let ders = pem_certificates(&std::fs::read(out.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}")));
        assert_eq!(ders, vec![ca.der.clone()], "{name} must hold exactly the one CA");
    }
    let hash = openssl_subject_hash(&ca.cert_path);
    let link = out.join(format!("{hash}.0"));
    assert_eq!(pem_certificates(&std::fs::read(&link).unwrap()), vec![ca.der.clone()], "{}", link.display());
    assert!(!out.join(format!("{hash}.1")).exists());
    for store in ["java/cacerts", "adoptium/cacerts"] {
        let bytes = std::fs::read(out.join(store)).unwrap_or_else(|e| panic!("read {store}: {e}"));
        assert!(bytes.starts_with(&[0xfe, 0xed, 0xfe, 0xed]), "{store} is not a JKS store");
    }
    // Java reads it as a trust store with and without the conventional password.
    if let Ok(keytool) = which("keytool") {
        for password in [None, Some("changeit")] {
            let mut cmd = Command::new(&keytool);
            cmd.args(["-list", "-keystore"]).arg(out.join("java/cacerts"));
            if let Some(p) = password {
                cmd.args(["-storepass", p]);
            }
            let listed = cmd.stdin(Stdio::null()).output().unwrap();
            assert_success(&format!("keytool -list (password {password:?})"), &listed);
            assert!(
                text(&listed.stdout).contains("1 entr"),
                "keytool sees other than one entry:\n{}",
                text(&listed.stdout)
            );
        }
    }
    let per_cert: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pem") && p.file_name().unwrap() != "cert.pem")
        .collect();
    assert_eq!(per_cert.len(), 1, "one per-certificate .pem expected: {per_cert:?}");

    for path in [out.clone(), out.join("ca-certificates.crt")] {
        let listing = trustmount(&["inspect".as_ref(), path.as_os_str()]);
        assert_success("inspect", &listing);
        let stdout = text(&listing.stdout);
        assert!(
            stdout.contains(&ca.common_name),
            "inspect {} does not show the CA's subject:\n{stdout}",
            path.display()
        );
    }
}

/// Every string anywhere in a JSON value.
fn json_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

#[test]
fn inspect_json_is_valid_json_naming_each_certificate_and_its_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestCa::new(dir.path(), "first");
    let second = TestCa::new(dir.path(), "second");
    let bundle = dir.path().join("both.pem");
    std::fs::write(&bundle, format!("# a comment line between blocks\n{}\n{}", first.pem, second.pem)).unwrap();
    let listing = trustmount(&["inspect".as_ref(), bundle.as_os_str(), "--json".as_ref()]);
    assert_success("inspect --json", &listing);
    let value: serde_json::Value = serde_json::from_slice(&listing.stdout)
        .unwrap_or_else(|e| panic!("inspect --json is not JSON ({e}):\n{}", text(&listing.stdout)));
    let mut strings = Vec::new();
    json_strings(&value, &mut strings);
    let normalized: Vec<String> = strings.iter().map(|s| s.replace(':', "").to_lowercase()).collect();
    for ca in [&first, &second] {
        assert!(
            strings.iter().any(|s| s.contains(&ca.common_name)),
            "JSON lacks subject {}:\n{value:#}",
            ca.common_name
        );
        assert!(normalized.contains(&ca.fingerprint_hex()), "JSON lacks SHA-256 {}:\n{value:#}", ca.fingerprint_hex());
    }
}

#[test]
fn render_refuses_a_private_key_given_as_pem_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let out = dir.path().join("out");
    // A key alone, and a key after a valid certificate: both must fail the whole source.
    let mixed = dir.path().join("cert-and-key.pem");
    std::fs::write(&mixed, format!("{}{}", ca.pem, std::fs::read_to_string(&ca.key_path).unwrap())).unwrap();
    for bad in [&ca.key_path, &mixed] {
        let result = render(&out, &[bad], "none");
        let stderr = text(&result.stderr);
        assert!(!result.status.success(), "render accepted a private key in {}", bad.display());
        assert!(stderr.contains(bad.to_str().unwrap()), "stderr does not name {}:\n{stderr}", bad.display());
        assert!(!out.join("ca-certificates.crt").exists(), "a failed render left a bundle behind");
    }
}

#[test]
fn render_refuses_a_missing_pem_file_and_inspect_a_missing_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("does-not-exist.pem");
    let result = render(&dir.path().join("out"), &[&missing], "none");
    assert!(!result.status.success(), "render accepted a missing --pem file");
    assert!(text(&result.stderr).contains("does-not-exist.pem"), "{}", text(&result.stderr));
    let listing = trustmount(&["inspect".as_ref(), missing.as_os_str()]);
    assert!(!listing.status.success(), "inspect of a missing path succeeded");
    assert!(!listing.stderr.is_empty(), "inspect failed silently");
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

/// `<hash>` → set of certificate contents (DER) behind `<hash>.N` links in `dir`.
fn hash_links(dir: &Path) -> BTreeMap<String, BTreeSet<Vec<u8>>> {
    let mut map: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((hash, n)) = name.split_once('.') else { continue };
        if hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()) && n.bytes().all(|b| b.is_ascii_digit()) {
            let ders = pem_certificates(&std::fs::read(entry.path()).unwrap());
            assert_eq!(ders.len(), 1, "{name} must hold exactly one certificate");
            map.entry(hash.to_string()).or_default().insert(ders.into_iter().next().unwrap());
        }
    }
    map
}

#[test]
fn hash_links_are_the_ones_openssl_rehash_makes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let out = dir.path().join("out");
    assert_success("render", &render(&out, &[&ca.cert_path], "embedded"));

    // Copy every single-certificate .pem file (following symlinks) and let OpenSSL hash them.
    let copy = dir.path().join("rehash");
    std::fs::create_dir(&copy).unwrap();
    let mut copied = 0;
    for entry in std::fs::read_dir(&out).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".pem") || name == "cert.pem" {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        if pem_certificates(&bytes).len() == 1 {
            std::fs::write(copy.join(&name), bytes).unwrap();
            copied += 1;
        }
    }
    let bundle_count = pem_certificates(&std::fs::read(out.join("ca-certificates.crt")).unwrap()).len();
    assert!(bundle_count > 100, "embedded roots plus the CA expected, got {bundle_count}");
    assert_eq!(copied, bundle_count, "one per-certificate .pem per certificate in the bundle");

    let (ok, stdout, stderr) = support::fsutil::run(Command::new("openssl").arg("rehash").arg(&copy));
    assert!(ok, "openssl rehash failed\n{stdout}{stderr}");
    let ours = hash_links(&out);
    let openssl = hash_links(&copy);
    assert_eq!(openssl.values().map(BTreeSet::len).sum::<usize>(), bundle_count);
    let ours_keys: BTreeSet<_> = ours.keys().collect();
    let openssl_keys: BTreeSet<_> = openssl.keys().collect();
    assert_eq!(
        ours_keys.symmetric_difference(&openssl_keys).collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "hash names differ from openssl rehash"
    );
    for (hash, certs) in &openssl {
        assert_eq!(ours.get(hash), Some(certs), "{hash}.N links point at different certificates than openssl rehash's");
    }
    assert!(ours.contains_key(&openssl_subject_hash(&ca.cert_path)));
}

#[test]
fn serve_with_a_private_key_as_extra_pem_exits_64_naming_the_file() {
    if !in_private_mount_namespace!() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let socket = dir.path().join("csi.sock");
    let stderr_path = dir.path().join("serve.stderr");
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--endpoint")
        .arg(format!("unix://{}", socket.display()))
        .args(["--node-id", "n", "--system-roots", "none"])
        .arg("--kubelet-dir")
        .arg(dir.path().join("kubelet"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--extra-pem")
        .arg(&ca.key_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    // Bounded wait: it must exit by itself; if it is still serving after 20 s, that is the bug.
    let exited = support::poll_until_blocking(std::time::Duration::from_secs(20), support::wait::POLL, || {
        child.try_wait().unwrap().ok_or(())
    });
    let Ok(status) = exited else {
        let _ = child.kill();
        let _ = child.wait();
        support::fsutil::unmount_all_below(dir.path());
        panic!("trustmount serve started with a private key as --extra-pem");
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    support::fsutil::unmount_all_below(dir.path());
    assert_eq!(status.code(), Some(64), "bad configuration must exit 64\n{stderr}");
    assert!(stderr.contains(ca.key_path.to_str().unwrap()), "stderr does not name the file:\n{stderr}");
}

#[test]
fn inspect_finds_the_merged_bundle_of_every_layout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "layouts");
    for layout in ["debian", "rhel", "suse"] {
        let out = dir.path().join(layout);
        let rendered = trustmount(&[
            "render".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
            "--pem".as_ref(),
            ca.cert_path.as_os_str(),
            "--system-roots".as_ref(),
            "none".as_ref(),
            "--layout".as_ref(),
            layout.as_ref(),
        ]);
        assert_success(&format!("render --layout {layout}"), &rendered);
        let listed = trustmount(&["inspect".as_ref(), out.as_os_str()]);
        assert_success(&format!("inspect of the {layout} layout"), &listed);
        assert!(text(&listed.stdout).contains(&ca.common_name), "{layout}: {}", text(&listed.stdout));
    }
}

#[test]
fn inspect_piped_into_a_reader_that_stops_early_exits_cleanly() {
    use std::io::Read;
    // Far more than a pipe buffer of report: the same certificates many times over.
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "pipe");
    let big = dir.path().join("big.pem");
    std::fs::write(&big, ca.pem.repeat(2000)).unwrap();
    let mut child =
        Command::new(BIN).arg("inspect").arg(&big).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout); // what `| head` does
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "inspect failed on a closed pipe ({})\n{}", out.status, text(&out.stderr));
}

//! The `rhel` and `suse` layouts and both Java store formats, checked with the real tools:
//! `trustmount render` writes each into a tempdir (no mounts, nothing of the host's trust
//! store is read or written), then `openssl verify`, `openssl rehash`, curl, keytool and a
//! Java HTTPS client use the files against a CA and a TLS server made here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support;
use crate::support::certs::{TestCa, TestLeaf, pem_certificates};
use crate::support::daemon::BIN;
use crate::support::fsutil::run;
use crate::support::tls::TlsServer;

/// Two CAs (so counts mean something) and a server certificate signed by the first.
struct Fixture {
    ca: TestCa,
    other: TestCa,
    leaf: TestLeaf,
    dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let other = TestCa::new(dir.path(), "other");
    let leaf = ca.issue_server(dir.path(), "server");
    Fixture { ca, other, leaf, dir }
}

impl Fixture {
    /// `trustmount render --layout L --java-truststore J` of both CAs into a fresh directory.
    fn render(&self, layout: &str, java: &str) -> PathBuf {
        self.render_pems(&format!("{layout}-{java}"), layout, java, &[&self.ca.cert_path, &self.other.cert_path])
    }

    /// The same with only the unrelated CA: the control that must not trust the server.
    fn render_without_the_ca(&self, layout: &str, java: &str) -> PathBuf {
        self.render_pems(&format!("{layout}-{java}-without"), layout, java, &[&self.other.cert_path])
    }

    fn render_pems(&self, name: &str, layout: &str, java: &str, pems: &[&Path]) -> PathBuf {
        let out = self.dir.path().join(name);
        let mut cmd = Command::new(BIN);
        cmd.args(["render", "--system-roots", "none", "--layout", layout, "--java-truststore", java, "--out"])
            .arg(&out);
        for pem in pems {
            cmd.arg("--pem").arg(pem);
        }
        let (ok, stdout, stderr) = run(&mut cmd);
        assert!(ok, "render --layout {layout} --java-truststore {java} failed\n{stdout}{stderr}");
        out
    }

    fn empty_dir(&self) -> PathBuf {
        let empty = self.dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        empty
    }
}

/// `openssl verify` of the server certificate with only `trust` (a `-CAfile` or `-CApath`),
/// never the host's default store.
fn openssl_verify(leaf: &TestLeaf, trust: &[&str], path: &Path, purpose: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-no-CAstore"]);
    cmd.arg(if trust[0] == "-CAfile" { "-no-CApath" } else { "-no-CAfile" });
    if let Some(purpose) = purpose {
        cmd.args(["-purpose", purpose]);
    }
    cmd.args(trust).arg(path).arg(&leaf.cert_path);
    let (ok, stdout, stderr) = run(&mut cmd);
    (ok && stdout.contains(": OK"), format!("{stdout}{stderr}"))
}

fn assert_verifies(fx: &Fixture, flag: &str, path: &Path, purpose: Option<&str>) {
    let (ok, output) = openssl_verify(&fx.leaf, &[flag], path, purpose);
    assert!(ok, "openssl verify {flag} {} (purpose {purpose:?}) failed\n{output}", path.display());
}

fn assert_refuses(fx: &Fixture, flag: &str, path: &Path, purpose: Option<&str>) {
    let (ok, output) = openssl_verify(&fx.leaf, &[flag], path, purpose);
    assert!(!ok, "control: openssl verify {flag} {} (purpose {purpose:?}) succeeded\n{output}", path.display());
}

#[test]
fn rhel_bundle_and_hash_directory_verify_the_server_and_an_empty_directory_does_not() {
    let fx = fixture();
    let out = fx.render("rhel", "jks");
    assert_verifies(&fx, "-CAfile", &out.join("pem/tls-ca-bundle.pem"), None);
    // The links update-ca-trust adds for Debian- and old-Fedora-minded programs.
    for link in ["ca-bundle.crt", "ca-certificates.crt"] {
        assert_verifies(&fx, "-CAfile", &out.join("pem/directory-hash").join(link), None);
    }
    assert_verifies(&fx, "-CApath", &out.join("pem/directory-hash"), None);
    assert_refuses(&fx, "-CApath", &fx.empty_dir(), None);
    assert_refuses(&fx, "-CAfile", &fx.render_without_the_ca("rhel", "jks").join("pem/tls-ca-bundle.pem"), None);
}

#[test]
fn rhel_trust_bundle_trusts_every_ca_for_tls_servers_and_for_nothing_else() {
    let fx = fixture();
    let out = fx.render("rhel", "none");
    let trust_bundle = out.join("openssl/ca-bundle.trust.crt");
    assert_verifies(&fx, "-CAfile", &trust_bundle, Some("sslserver"));
    // Only serverAuth is granted: OpenSSL rejects the same CA for S/MIME.
    assert_refuses(&fx, "-CAfile", &trust_bundle, Some("smimesign"));

    let text = std::fs::read_to_string(&trust_bundle).unwrap();
    assert_eq!(text.matches("-----BEGIN TRUSTED CERTIFICATE-----").count(), 2, "{text}");
    let (ok, stdout, stderr) =
        run(Command::new("openssl").args(["x509", "-noout", "-text", "-trustout", "-in"]).arg(&trust_bundle));
    assert!(ok, "openssl x509 -trustout failed\n{stderr}");
    assert!(
        stdout.contains("Trusted Uses:\n  TLS Web Server Authentication\nNo Rejected Uses."),
        "unexpected trust settings:\n{stdout}"
    );
    // Both CAs come first or second by subject; either way its alias is its common name.
    assert!(
        [&fx.ca, &fx.other].iter().any(|ca| stdout.contains(&format!("Alias: {}", ca.common_name))),
        "no alias naming a CA:\n{stdout}"
    );
}

#[test]
fn suse_bundle_and_both_hash_directories_verify_the_server() {
    let fx = fixture();
    let out = fx.render("suse", "jks");
    assert_verifies(&fx, "-CAfile", &out.join("ca-bundle.pem"), None);
    assert_verifies(&fx, "-CApath", &out.join("pem"), None);
    assert_verifies(&fx, "-CApath", &out.join("openssl"), Some("sslserver"));
    assert_refuses(&fx, "-CApath", &fx.empty_dir(), None);
    assert_refuses(&fx, "-CApath", &fx.render_without_the_ca("suse", "jks").join("pem"), None);
}

/// `name → link target` for the links, `name → ""` for the files of a directory.
fn listing(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let target = std::fs::read_link(entry.path()).map(|t| t.display().to_string()).unwrap_or_default();
            (name, target)
        })
        .collect()
}

#[test]
fn hash_links_of_every_hashed_directory_are_what_openssl_rehash_makes() {
    let fx = fixture();
    let rhel = fx.render("rhel", "none");
    let suse = fx.render("suse", "none");
    for dir in [rhel.join("pem/directory-hash"), suse.join("pem"), suse.join("openssl")] {
        let ours = listing(&dir);
        let copy = fx.dir.path().join("rehash").join(dir.strip_prefix(fx.dir.path()).unwrap());
        std::fs::create_dir_all(&copy).unwrap();
        for (name, target) in &ours {
            if target.is_empty() {
                std::fs::copy(dir.join(name), copy.join(name)).unwrap();
            }
        }
        let (ok, stdout, stderr) = run(Command::new("openssl").arg("rehash").arg(&copy));
        assert!(ok, "openssl rehash {} failed\n{stdout}{stderr}", copy.display());
        let theirs = listing(&copy);
        let ours_hashed: BTreeMap<_, _> = ours.into_iter().filter(|(name, _)| !name.ends_with(".crt")).collect();
        assert_eq!(ours_hashed, theirs, "{}", dir.display());
        assert_eq!(
            theirs.values().filter(|t| !t.is_empty()).count(),
            2,
            "two hash links expected in {}",
            dir.display()
        );
    }
}

/// Runs `keytool -list` on `store`, with `-storepass changeit` or with no password at all
/// (EOF at the prompt, as the JVM's null password); returns stdout.
fn keytool_list(store: &Path, password: Option<&str>) -> String {
    let mut cmd = Command::new("keytool");
    cmd.args(["-list", "-keystore"]).arg(store);
    if let Some(password) = password {
        cmd.args(["-storepass", password]);
    }
    let (ok, stdout, stderr) = run(&mut cmd);
    assert!(ok, "keytool -list -keystore {} (password {password:?}) failed\n{stdout}{stderr}", store.display());
    stdout
}

#[test]
fn keytool_lists_both_cas_as_trusted_entries_in_every_store_with_and_without_a_password() {
    let fx = fixture();
    for (layout, store) in [("debian", "java/cacerts"), ("rhel", "java/cacerts"), ("suse", "java-cacerts")] {
        for (format, keystore_type) in [("jks", "JKS"), ("pkcs12", "PKCS12")] {
            let path = fx.render(layout, format).join(store);
            for password in [Some("changeit"), None] {
                let stdout = keytool_list(&path, password);
                let what = format!("{layout}/{store} as {format}, password {password:?}");
                assert!(stdout.contains(&format!("Keystore type: {keystore_type}")), "{what}:\n{stdout}");
                assert_eq!(stdout.matches("trustedCertEntry").count(), 2, "{what}:\n{stdout}");
                assert!(stdout.contains("Your keystore contains 2 entries"), "{what}:\n{stdout}");
            }
        }
    }
}

#[test]
fn java_none_writes_no_store_in_any_layout() {
    let fx = fixture();
    for (layout, store) in [("debian", "java/cacerts"), ("rhel", "java/cacerts"), ("suse", "java-cacerts")] {
        let out = fx.render(layout, "none");
        assert!(!out.join(store).exists(), "{layout} with javaTruststore none has {store}");
    }
}

/// curl GET of `url` trusting only `cacert` and, if given, `capath`.
fn curl(url: &str, cacert: &Path, capath: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new("curl");
    cmd.env_clear().env("PATH", "/usr/bin:/bin");
    cmd.args(["-sS", "--fail", "-o", "/dev/null", "--max-time", "20", "--cacert"]).arg(cacert);
    if let Some(capath) = capath {
        cmd.arg("--capath").arg(capath);
    }
    let (ok, stdout, stderr) = run(cmd.arg(url));
    (ok, format!("{stdout}{stderr}"))
}

#[test]
fn curl_trusts_the_server_through_each_layouts_bundle_and_hash_directory() {
    let fx = fixture();
    let server = TlsServer::start(&fx.leaf.cert_path, &fx.leaf.key_path);
    let url = server.url();
    let (rhel, suse, debian) = (fx.render("rhel", "none"), fx.render("suse", "none"), fx.render("debian", "none"));
    // With --capath, curl still reads a CA file: the unrelated CA's, so the host's default
    // bundle stays out of it and only the directory can make the server trusted.
    let unrelated = &fx.other.cert_path;
    let cases = [
        ("rhel bundle", rhel.join("pem/tls-ca-bundle.pem"), None),
        ("rhel trust bundle", rhel.join("openssl/ca-bundle.trust.crt"), None),
        ("rhel hash dir", unrelated.clone(), Some(rhel.join("pem/directory-hash"))),
        ("suse bundle", suse.join("ca-bundle.pem"), None),
        ("suse pem dir", unrelated.clone(), Some(suse.join("pem"))),
        ("suse openssl dir", unrelated.clone(), Some(suse.join("openssl"))),
        ("debian hash dir", unrelated.clone(), Some(debian)),
    ];
    for (what, cacert, capath) in &cases {
        let (ok, output) = curl(&url, cacert, capath.as_deref());
        assert!(ok, "curl with the {what} failed\n{output}");
    }
    let (ok, output) = curl(&url, unrelated, Some(&fx.empty_dir()));
    assert!(!ok, "control: curl trusted the server with an empty --capath\n{output}");
}

/// `java Fetch.java URL` with only `store` as its truststore and no password, as the JVM
/// opens a default truststore.
fn java_fetch(fx: &Fixture, url: &str, store: &Path, store_type: Option<&str>) -> (bool, String) {
    let source = fx.dir.path().join("Fetch.java");
    std::fs::write(&source, support::programs::FETCH_JAVA).unwrap();
    let mut cmd = Command::new("java");
    cmd.env_clear().env("PATH", "/usr/bin:/bin").env("HOME", fx.dir.path());
    cmd.arg(format!("-Djavax.net.ssl.trustStore={}", store.display()));
    if let Some(store_type) = store_type {
        cmd.arg(format!("-Djavax.net.ssl.trustStoreType={store_type}"));
    }
    let (ok, stdout, stderr) = run(cmd.arg(&source).arg(url));
    (ok && stdout.contains("HTTP 200"), format!("{stdout}{stderr}"))
}

#[test]
fn java_connects_with_each_store_format_as_its_truststore() {
    let fx = fixture();
    let server = TlsServer::start(&fx.leaf.cert_path, &fx.leaf.key_path);
    let url = server.url();
    let cases = [
        ("rhel", "jks", "java/cacerts", None),
        ("rhel", "pkcs12", "java/cacerts", Some("PKCS12")),
        ("suse", "pkcs12", "java-cacerts", None),
        ("suse", "jks", "java-cacerts", Some("JKS")),
    ];
    for (layout, format, store, store_type) in cases {
        let path = fx.render(layout, format).join(store);
        let (ok, output) = java_fetch(&fx, &url, &path, store_type);
        assert!(ok, "java with {layout}/{store} ({format}, type {store_type:?}) failed\n{output}");
    }
    let without = fx.render_without_the_ca("rhel", "pkcs12").join("java/cacerts");
    let (ok, output) = java_fetch(&fx, &url, &without, Some("PKCS12"));
    assert!(!ok, "control: java trusted the server through a store without its CA\n{output}");
    assert!(output.contains("PKIX path building failed"), "control failed for another reason:\n{output}");
}

/// EFI_CERT_X509_GUID and p11-kit's owner GUID as stored (first three fields little-endian).
const EFI_CERT_X509: [u8; 16] =
    [0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72];
const P11_KIT_OWNER: [u8; 16] =
    [0x50, 0x3b, 0xdd, 0xdc, 0x05, 0xf4, 0xfd, 0x43, 0x96, 0xbe, 0xbd, 0x33, 0xb1, 0x73, 0x47, 0x76];

fn le32(bytes: &[u8], at: usize) -> usize {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize
}

#[test]
fn edk2_cacerts_is_one_signature_list_per_certificate_in_bundle_order() {
    let fx = fixture();
    let out = fx.render("rhel", "none");
    let bytes = std::fs::read(out.join("edk2/cacerts.bin")).unwrap();
    let bundle_order = pem_certificates(&std::fs::read(out.join("pem/tls-ca-bundle.pem")).unwrap());
    let mut expected = vec![fx.ca.der.clone(), fx.other.der.clone()];
    expected.sort();
    let mut sorted_bundle = bundle_order.clone();
    sorted_bundle.sort();
    assert_eq!(sorted_bundle, expected, "the bundle must hold both CAs");

    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        assert!(bytes.len() - at >= 44, "truncated header at {at}");
        assert_eq!(bytes[at..at + 16], EFI_CERT_X509, "signature type at {at}");
        let (list_size, header_size, signature_size) =
            (le32(&bytes, at + 16), le32(&bytes, at + 20), le32(&bytes, at + 24));
        assert_eq!(header_size, 0, "at {at}");
        assert_eq!(list_size, 28 + signature_size, "one signature per list, at {at}");
        assert!(at + list_size <= bytes.len(), "list at {at} runs past the end");
        assert_eq!(bytes[at + 28..at + 44], P11_KIT_OWNER, "owner at {at}");
        found.push(bytes[at + 44..at + list_size].to_vec());
        at += list_size;
    }
    assert_eq!(found, bundle_order);
}

/// Every path below `root` with its content or link target, for byte-for-byte comparison.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Result<Vec<u8>, PathBuf>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_symlink() {
                out.insert(relative, Err(std::fs::read_link(&path).unwrap()));
            } else {
                out.insert(relative, Ok(std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

#[test]
fn rendering_the_same_certificates_twice_gives_identical_files_in_every_layout_and_format() {
    let fx = fixture();
    for layout in ["rhel", "suse"] {
        for java in ["jks", "pkcs12"] {
            let first = fx.render(layout, java);
            let second = fx.render_pems(
                &format!("{layout}-{java}-again"),
                layout,
                java,
                &[&fx.other.cert_path, &fx.ca.cert_path],
            );
            assert_eq!(snapshot(&first), snapshot(&second), "{layout} {java}");
        }
    }
}

#[test]
fn an_unknown_layout_or_java_format_is_refused_naming_the_valid_ones() {
    let fx = fixture();
    let out = fx.dir.path().join("refused");
    for (flag, value, valid) in
        [("--layout", "gentoo", ["debian", "rhel", "suse"]), ("--java-truststore", "bks", ["jks", "pkcs12", "none"])]
    {
        let (ok, stdout, stderr) = run(Command::new(BIN)
            .args(["render", "--system-roots", "none", flag, value, "--out"])
            .arg(&out)
            .arg("--pem")
            .arg(&fx.ca.cert_path));
        assert!(!ok, "render {flag} {value} succeeded\n{stdout}");
        for name in valid {
            assert!(stderr.contains(name), "the error does not name {name}:\n{stderr}");
        }
        assert!(!out.exists(), "a refused render wrote files");
    }
}

//! Test certificates made with rcgen: a CA, a server certificate it signs, and CAs that expire
//! soon or have expired. Written to PEM files in a caller-owned directory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// A CA certificate with its key, written as `<name>.pem` / `<name>.key`.
pub struct TestCa {
    pub common_name: String,
    pub params: CertificateParams,
    pub key: KeyPair,
    pub der: Vec<u8>,
    pub pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// A leaf certificate with its key.
pub struct TestLeaf {
    pub pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{}-{nanos:x}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

impl TestCa {
    /// A CA valid from yesterday for one year. Its common name is unique per call, so its
    /// subject can be looked for in bundles and listings.
    pub fn new(dir: &Path, name: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        Self::with_validity(dir, name, now - Duration::days(1), now + Duration::days(365))
    }

    /// A CA that is still valid but expires in `days` days.
    pub fn expiring_in_days(dir: &Path, name: &str, days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self::with_validity(dir, name, now - Duration::days(30), now + Duration::days(days))
    }

    /// A CA whose validity ended yesterday.
    pub fn expired(dir: &Path, name: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        Self::with_validity(dir, name, now - Duration::days(60), now - Duration::days(1))
    }

    pub fn with_validity(dir: &Path, name: &str, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        let common_name = format!("trustmount test CA {name} {}", unique_suffix());
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "trustmount tests");
        dn.push(DnType::CommonName, common_name.clone());
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        let pem = cert.pem();
        let der = cert.der().to_vec();
        let cert_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, &pem).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Self { common_name, params, key, der, pem, cert_path, key_path }
    }

    /// A server certificate for `localhost` and 127.0.0.1, signed by this CA, valid for 30 days.
    pub fn issue_server(&self, dir: &Path, name: &str) -> TestLeaf {
        self.issue_server_for(dir, name, &["localhost", "127.0.0.1"])
    }

    /// [`TestCa::issue_server`] for other names and addresses (`names`, subject alternative names).
    pub fn issue_server_for(&self, dir: &Path, name: &str, names: &[&str]) -> TestLeaf {
        let mut params = CertificateParams::new(names.iter().map(|name| name.to_string()).collect::<Vec<_>>())
            .expect("server params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "localhost");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(30);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("server key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let pem = cert.pem();
        let cert_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, &pem).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        TestLeaf { pem, cert_path, key_path }
    }

    /// Lower-case hex SHA-256 of the DER, no separators.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(Sha256::digest(&self.der))
    }
}

/// The DER of every CERTIFICATE block in a PEM text (text between blocks is ignored).
pub fn pem_certificates(bytes: &[u8]) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(bytes)
        .map(|block| block.expect("well-formed PEM block"))
        .filter(|block| block.label == "CERTIFICATE")
        .map(|block| block.contents)
        .collect()
}

/// OpenSSL's subject hash of a certificate file, as `openssl x509 -subject_hash` prints it.
pub fn openssl_subject_hash(cert: &Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-subject_hash", "-in"])
        .arg(cert)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl x509 -subject_hash failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The certificates (DER) of a volume's `ca-certificates.crt`, in order; none while it is missing.
pub fn bundle_ders_in_order(target: &Path) -> Vec<Vec<u8>> {
    pem_certificates(&std::fs::read(target.join("ca-certificates.crt")).unwrap_or_default())
}

/// Which certificates (DER) a volume's `ca-certificates.crt` holds, whatever the order.
pub fn bundle_ders(target: &Path) -> BTreeSet<Vec<u8>> {
    bundle_ders_in_order(target).into_iter().collect()
}

/// The certificates of `cas`, to compare with [`bundle_ders`].
pub fn ders(cas: &[&TestCa]) -> BTreeSet<Vec<u8>> {
    cas.iter().map(|ca| ca.der.clone()).collect()
}

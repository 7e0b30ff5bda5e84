//! `cargo bench --bench render`: how long `bundle::render` takes per layout and Java store
//! format, for a typical bundle (150 certificates, about the Mozilla roots plus a few private
//! CAs) and a large one (5 000).
//!
//! All combinations of one size run interleaved, round after round, so drift on the machine
//! hits them alike; each figure is the median of its rounds and is also given as a ratio to
//! the debian+jks render of the same size (what every volume rendered before rhel/suse).
//! Pure CPU: no files are written.

use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, SerialNumber};
use trustmount::bundle::{Bundle, Certificate, JavaTruststore, Layout, RenderOptions, render};

const SIZES: [(usize, usize); 2] = [(150, 15), (5_000, 5)];

fn main() {
    println!(
        "trustmount render benchmark ({} cores); median of N rounds, ms",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{:>6}  {:<7} {:<7} {:>10}  {:>13}", "certs", "layout", "java", "median ms", "vs debian+jks");
    for (count, rounds) in SIZES {
        let bundle = bundle_of(count);
        let combinations: Vec<RenderOptions> = Layout::ALL
            .iter()
            .flat_map(|&layout| JavaTruststore::ALL.iter().map(move |&java| RenderOptions { layout, java }))
            .collect();
        // One warm-up render each, so first-touch allocation is not measured.
        for options in &combinations {
            render(&bundle, options).expect("renders");
        }
        let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); combinations.len()];
        for _ in 0..rounds {
            for (options, samples) in combinations.iter().zip(&mut times) {
                let start = Instant::now();
                let files = render(&bundle, options).expect("renders");
                samples.push(start.elapsed());
                std::hint::black_box(files);
            }
        }
        let medians: Vec<f64> = times.iter_mut().map(|samples| median_ms(samples)).collect();
        let baseline = combinations
            .iter()
            .position(|o| o.layout == Layout::Debian && o.java == JavaTruststore::Jks)
            .map(|i| medians[i])
            .expect("debian+jks is measured");
        for (options, median) in combinations.iter().zip(&medians) {
            println!(
                "{:>6}  {:<7} {:<7} {:>10.2}  {:>12.2}x",
                count,
                options.layout.name(),
                options.java.name(),
                median,
                median / baseline
            );
        }
        println!("({count} certificates: {rounds} rounds)");
    }
}

/// `count` distinct self-signed CAs. One key signs them all (generating 5 000 keys would take
/// longer than the benchmark); subjects and serials differ, so names, hashes and fingerprints
/// do too. The subjects share prefixes, as real CA names do.
fn bundle_of(count: usize) -> Bundle {
    let key = KeyPair::generate().expect("key");
    let certificates = (0..count).map(|i| {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "DE");
        dn.push(DnType::OrganizationName, format!("Bench Trust Services {}", i % 40));
        dn.push(DnType::CommonName, format!("Bench Root CA {i:05}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.serial_number = Some(SerialNumber::from((i as u64 + 1).to_be_bytes().to_vec()));
        let der = params.self_signed(&key).expect("self-signed").der().to_vec();
        Certificate::from_der(&der, "bench:generated", false).expect("parses")
    });
    let bundle = Bundle::new(certificates);
    assert_eq!(bundle.certificates().len(), count, "generated certificates must be distinct");
    bundle
}

fn median_ms(samples: &mut [Duration]) -> f64 {
    samples.sort_unstable();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

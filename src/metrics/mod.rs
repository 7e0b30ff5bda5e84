//! Prometheus metrics, the recording face: counters and histograms that the CSI calls,
//! rotations and renders update as they happen. The binary's exporter (`cli/exporter/`) serves
//! them on `--metrics-addr`, with the gauges a scrape reads from the store and the sources; this
//! module reads nothing back, so every floor can write into it.
//!
//! Labels are bounded by construction: an RPC name, a gRPC code, a source kind. Volume ids, pods
//! and object names never become labels (one series per pod would grow without bound); they are
//! in the log lines instead.

mod labels;

pub use labels::{CsiMethod, code_name};

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::domain::SourceKind;

use labels::{CallLabels, KindLabels, ReasonLabels};

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The handle every recorder holds: cheap to clone, shared counters. It always records (a few
/// atomics per call); only `--metrics-addr` decides whether anyone can read them.
#[derive(Clone, Debug)]
pub struct Metrics {
    families: Arc<Families>,
}

#[derive(Debug)]
struct Families {
    csi_requests: Family<CallLabels, Counter>,
    csi_durations: HistogramFamily<CallLabels>,
    rotations: Family<KindLabels, Counter>,
    rotation_durations: HistogramFamily<KindLabels>,
    rotation_failures: Family<KindLabels, Counter>,
    bundle_certificates: Histogram,
    events_dropped: Family<ReasonLabels, Counter>,
}

/// 1 ms to about 16 s: a warm publish takes about a millisecond, a cold one that waits for a
/// first list up to the 10 s sync timeout.
fn csi_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// 10 ms to about 80 s: file changes wait 200 ms for their burst to settle; the kubelet's own
/// refresh, the baseline, takes 60 to 90 s.
fn rotation_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            families: Arc::new(Families {
                csi_requests: Family::default(),
                csi_durations: Family::new_with_constructor(csi_histogram),
                rotations: Family::default(),
                rotation_durations: Family::new_with_constructor(rotation_histogram),
                rotation_failures: Family::default(),
                // 1 to 4096: from one private CA to several system stores' worth.
                bundle_certificates: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
                events_dropped: Family::default(),
            }),
        }
    }

    /// One CSI call answered with `code` after `elapsed`.
    pub fn csi_call(&self, method: CsiMethod, code: tonic::Code, elapsed: Duration) {
        let labels = CallLabels { method: method.as_str(), grpc_code: code_name(code) };
        self.families.csi_requests.get_or_create(&labels).inc();
        self.families.csi_durations.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// One spec's `..data` swapped to a new generation, `latency` after the change was seen.
    pub fn rotated(&self, kind: SourceKind, latency: Duration) {
        let labels = KindLabels { kind: kind.as_str() };
        self.families.rotations.get_or_create(&labels).inc();
        self.families.rotation_durations.get_or_create(&labels).observe(latency.as_secs_f64());
    }

    /// A change of a `kind` source that could not reach a spec (or could not be loaded at all):
    /// the previous generation stays.
    pub fn rotation_failed(&self, kind: SourceKind) {
        self.families.rotation_failures.get_or_create(&KindLabels { kind: kind.as_str() }).inc();
    }

    /// A bundle rendered (a first publish of a spec, or a rotation) with `certificates` in it.
    pub fn bundle_rendered(&self, certificates: usize) {
        self.families.bundle_certificates.observe(certificates as f64);
    }

    /// A pod event not sent, and why (`duplicate`, `namespace_limit`, `driver_limit`): a
    /// closed set the caller names.
    pub fn event_dropped(&self, reason: &'static str) {
        self.families.events_dropped.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// The recorded families, without the scrape-time gauges (the exporter adds those).
    pub fn registry(&self) -> Registry {
        let f = &self.families;
        let mut registry = Registry::default();
        registry.register(
            "trustmount_csi_requests",
            "CSI calls answered, by RPC and gRPC code",
            f.csi_requests.clone(),
        );
        registry.register_with_unit(
            "trustmount_csi_request_duration",
            "Time to answer a CSI call, by RPC and gRPC code",
            Unit::Seconds,
            f.csi_durations.clone(),
        );
        registry.register(
            "trustmount_rotations",
            "Spec directories swapped to a new generation after a source changed, by source kind",
            f.rotations.clone(),
        );
        registry.register_with_unit(
            "trustmount_rotation_duration",
            "From a source change seen by the driver to a spec's ..data swapped, by source kind",
            Unit::Seconds,
            f.rotation_durations.clone(),
        );
        registry.register(
            "trustmount_rotation_failures",
            "Source changes that could not be loaded or rendered (the previous bundle stays), by source kind",
            f.rotation_failures.clone(),
        );
        registry.register(
            "trustmount_bundle_certificates",
            "Certificates in each bundle rendered (a spec's first publish, or a rotation)",
            f.bundle_certificates.clone(),
        );
        registry.register(
            "trustmount_events_dropped",
            "Pod events not sent to the API server: a repeat of what the pod was told, or over its namespace's or the driver's limit",
            f.events_dropped.clone(),
        );
        registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(metrics: &Metrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &metrics.registry()).unwrap();
        text
    }

    #[test]
    fn calls_are_counted_by_rpc_and_code_and_units_are_in_the_names() {
        let metrics = Metrics::new();
        metrics.csi_call(CsiMethod::Publish, tonic::Code::Ok, Duration::from_millis(3));
        metrics.csi_call(CsiMethod::Publish, tonic::Code::Ok, Duration::from_millis(5));
        metrics.csi_call(CsiMethod::Publish, tonic::Code::InvalidArgument, Duration::from_millis(1));
        metrics.rotated(SourceKind::Cluster("configmap"), Duration::from_millis(40));
        metrics.rotation_failed(SourceKind::File);
        metrics.bundle_rendered(140);
        metrics.event_dropped("namespace_limit");
        let text = render(&metrics);
        let line = |prefix: &str| text.lines().find(|l| l.starts_with(prefix)).map(str::to_owned);
        assert_eq!(
            line(r#"trustmount_csi_requests_total{method="NodePublishVolume",grpc_code="OK"}"#).as_deref(),
            Some(r#"trustmount_csi_requests_total{method="NodePublishVolume",grpc_code="OK"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"trustmount_csi_requests_total{method="NodePublishVolume",grpc_code="INVALID_ARGUMENT"} 1"#
            )
        );
        assert!(
            text.contains(
                r#"trustmount_csi_request_duration_seconds_count{method="NodePublishVolume",grpc_code="OK"} 2"#
            )
        );
        assert!(text.contains(r#"trustmount_rotations_total{kind="configmap"} 1"#), "{text}");
        assert!(text.contains(r#"trustmount_rotation_duration_seconds_count{kind="configmap"} 1"#), "{text}");
        assert!(text.contains(r#"trustmount_rotation_failures_total{kind="file"} 1"#), "{text}");
        assert!(text.contains("trustmount_bundle_certificates_count 1"), "{text}");
        assert!(text.contains("trustmount_bundle_certificates_sum 140"), "{text}");
        assert!(text.contains(r#"trustmount_events_dropped_total{reason="namespace_limit"} 1"#), "{text}");
    }
}

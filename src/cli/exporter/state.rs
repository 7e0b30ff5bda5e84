//! The gauges a scrape reads fresh: volumes and specs in the store, open watches, the tmpfs's
//! usage (statvfs) and the earliest expiry among the user certificates of published bundles.
//! Blocking (statvfs, index locks): the server runs a scrape on a blocking thread.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use trustmount::clock::Clock;
use trustmount::sources::Sources;
use trustmount::volume::Store;

#[derive(Debug)]
pub(super) struct State {
    pub store: Store,
    pub sources: Arc<Sources>,
    pub clock: Clock,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WatchLabels {
    kind: &'static str,
}

/// Bytes used and size of the filesystem at `path`.
// statvfs fields are u32 on 32-bit targets.
#[allow(clippy::useless_conversion)]
fn filesystem_usage(path: &Path) -> Option<(u64, u64)> {
    let vfs = nix::sys::statvfs::statvfs(path).ok()?;
    let fragment = u64::from(vfs.fragment_size());
    let size = u64::from(vfs.blocks()).saturating_mul(fragment);
    let free = u64::from(vfs.blocks_free()).saturating_mul(fragment);
    Some((size.saturating_sub(free), size))
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: N,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

impl Collector for State {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let live_specs = self.store.live_specs();
        gauge(
            &mut encoder,
            "trustmount_volumes_published",
            "Volumes published (bind mounts of a spec directory)",
            None,
            self.store.published_count() as i64,
        )?;
        gauge(
            &mut encoder,
            "trustmount_volume_specs",
            "Distinct volume specs published (one spec directory each, shared by its volumes)",
            None,
            live_specs.len() as i64,
        )?;

        // One inotify watch per directory holding a source file (see sources::watch_files).
        let file_dirs: BTreeSet<_> =
            self.sources.watched_files().iter().filter_map(|f| f.parent().map(Path::to_owned)).collect();
        let watches = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "trustmount_watches_open",
            "Watches open, by kind: one per ConfigMap named, one for all ClusterTrustBundles, one per source file directory",
            None,
            watches.metric_type(),
        )?;
        for (kind, count) in self.sources.open_watches().into_iter().chain([("file", file_dirs.len())]) {
            ConstGauge::new(count as i64).encode(family.encode_family(&WatchLabels { kind })?)?;
        }

        if let Some((used, size)) = filesystem_usage(self.store.root()) {
            gauge(&mut encoder, "trustmount_tmpfs_used", "Bytes used in the driver's tmpfs", Some(&Unit::Bytes), used)?;
            gauge(
                &mut encoder,
                "trustmount_tmpfs_size",
                "Size limit of the driver's tmpfs (--store-size)",
                Some(&Unit::Bytes),
                size,
            )?;
        }

        let now = self.clock.unix_seconds();
        let earliest = live_specs.iter().filter_map(|spec| self.sources.earliest_user_expiry(spec, now)).min();
        // Absent, not zero, when no published bundle holds a user certificate: zero would read
        // as "expires now" to an alert.
        if let Some(not_after) = earliest {
            gauge(
                &mut encoder,
                "trustmount_earliest_certificate_expiry",
                "Seconds until the earliest-expiring non-system certificate of a published bundle expires (negative once expired)",
                Some(&Unit::Seconds),
                not_after - now,
            )?;
        }
        Ok(())
    }
}

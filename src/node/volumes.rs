//! [`Node`]: publish, unpublish and report on volumes, with the current sources.

use std::path::Path;
use std::sync::Arc;

use time::OffsetDateTime;

use super::{Error, Health, Result};
use crate::rotation::Rotation;
use crate::sources::Sources;
use crate::volume::{Publication, Store, VolumeStats};

#[derive(Debug)]
pub struct Node {
    sources: Arc<Sources>,
    store: Store,
    rotation: Arc<Rotation>,
}

/// What NodeGetVolumeStats answers: usage and health.
#[derive(Debug)]
pub struct VolumeReport {
    pub stats: VolumeStats,
    pub health: Health,
}

impl Node {
    pub fn new(sources: Arc<Sources>, store: Store, rotation: Arc<Rotation>) -> Self {
        Self { sources, store, rotation }
    }

    /// Publishes a validated publication, rendering its spec from the current sources only when
    /// no volume of that spec exists yet.
    ///
    /// # Errors
    /// A render failure ([`Error::Sources`]) or a store failure ([`Error::Volume`]).
    pub async fn publish(&self, publication: Publication) -> Result<()> {
        // Cluster sources: their watches held (and first-synced) before anything is rendered.
        // A warm spec's watches already run: no request, no wait.
        let hold = self.sources.hold(&publication.spec).await?;
        let generation = self.sources.generation();
        let sources = Arc::clone(&self.sources);
        let spec = publication.spec.clone();
        // Called by the store only when no directory for this spec exists yet.
        let render = move || sources.render_files(&spec).map_err(Error::Sources);
        let published = self.store.publish(publication, render).await;
        if hold.is_some() {
            // Now live (or not): the spec's watches are kept by the live set, not the hold.
            self.sources.retain(|| self.store.live_specs());
        }
        drop(hold);
        published?;
        // The sources changed while this publish ran: its render may predate the change, and the
        // rotation pass for that change may have run before this spec was live.
        if self.sources.generation() != generation {
            self.rotation.request_refresh();
        }
        Ok(())
    }

    /// # Errors
    /// As [`Store::unpublish`].
    pub async fn unpublish(&self, volume_id: &str, target: &Path) -> Result<()> {
        self.store.unpublish(volume_id, target).await?;
        // The last volume naming an object gives up its watch.
        self.sources.retain(|| self.store.live_specs());
        Ok(())
    }

    /// # Errors
    /// `NotPublished` when `volume_id` is not published at `path`.
    pub async fn stats(&self, volume_id: &str, path: &Path) -> Result<VolumeReport> {
        let stats = self.store.stats(volume_id, path).await?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let health = Health::of(
            self.rotation.problem(&stats.digest),
            self.sources.catalog().earliest_user_expiry_at(&stats.spec, now),
            now,
        );
        Ok(VolumeReport { stats, health })
    }
}

//! [`Node`]: publish and unpublish volumes, with the current sources (a volume's report is in
//! `health.rs`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::refresh::{Rotation, Trigger};
use super::{Error, Result};
use crate::clock::Clock;
use crate::domain::{SourceKind, echo};
use crate::sources::Sources;
use crate::sources::cluster::PodToken;
use crate::volume::{Publication, Store};

#[derive(Debug)]
pub struct Node {
    pub(super) sources: Arc<Sources>,
    pub(super) store: Store,
    pub(super) rotation: Arc<Rotation>,
    /// Renders' and health's "now": expiry is judged against it.
    pub(super) clock: Clock,
}

impl Node {
    pub fn new(sources: Arc<Sources>, store: Store, rotation: Arc<Rotation>, clock: Clock) -> Self {
        Self { sources, store, rotation, clock }
    }

    /// Publishes a validated publication, rendering its spec from the current sources only when
    /// no volume of that spec exists yet. `token` is the pod's ServiceAccount token, which a spec
    /// with Secret sources needs (and nothing else uses).
    ///
    /// SECURITY: a warm publish of a spec with Secret sources still reads each Secret with this
    /// pod's token before it mounts anything: the read is the pod's access check, so a pod whose
    /// ServiceAccount may not read the Secret never gets the directory another pod's publish
    /// rendered (and the spec names its ServiceAccount, so pods of another one never share that
    /// directory anyway). A read whose content changed refreshes the specs that use it. Specs
    /// without Secret sources send no request on a warm publish.
    ///
    /// # Errors
    /// A render failure or a refused Secret read ([`Error::Sources`]), or a store failure
    /// ([`Error::Volume`]).
    pub async fn publish(&self, publication: Publication, token: Option<PodToken>) -> Result<()> {
        // Cluster sources: their watches held (and first-synced) before anything is rendered.
        // A warm spec's watches already run: no request, no wait.
        let hold = self.sources.hold(&publication.spec).await?;
        let reads = self.sources.read_as_pod(&publication.spec, token.as_ref()).await?.map(Arc::new);
        let generation = self.sources.generation();
        let sources = Arc::clone(&self.sources);
        let spec = publication.spec.clone();
        let rendered = Arc::new(AtomicBool::new(false));
        let now = self.clock.unix_seconds();
        // Called by the store only when no directory for this spec exists yet.
        let render = {
            let (rendered, reads) = (Arc::clone(&rendered), reads.clone());
            move || {
                rendered.store(true, Ordering::Relaxed);
                sources.render(&spec, reads.as_deref(), None, now).map_err(Error::Sources)
            }
        };
        let published = self.store.publish(publication.clone(), render).await;
        if hold.is_some() {
            // Now live (or not): the spec's watches are kept by the live set, not the hold.
            self.sources.retain(self.store.live_changes(), || self.store.live_specs());
        }
        drop(hold);
        published?;
        // An object read as the pod differently from last time (or first since a restart): every
        // live spec rendered from it gets a new generation, this one unless it was just rendered.
        if let Some(changed) = reads.as_ref().map(|read| &read.changed).filter(|changed| !changed.is_empty()) {
            let just_rendered = rendered.load(Ordering::Relaxed).then(|| publication.spec.digest());
            let objects = echo::names(changed.iter());
            self.rotation
                .refresh_where(
                    Trigger::change(SourceKind::Cluster(changed[0].kind), objects, self.clock.instant()),
                    |spec| self.sources.uses_read(spec, changed) && just_rendered.as_ref() != Some(&spec.digest()),
                )
                .await;
        }
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
        self.sources.retain(self.store.live_changes(), || self.store.live_specs());
        Ok(())
    }
}

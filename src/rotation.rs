//! Keeps published bundles current. When a source file changes, the sources are reloaded and
//! every live spec gets a new generation: one `..data` swap that all its pods see at once.
//! Rotation re-enters the data flow at `sources/` and leaves through `volume/`.
//!
//! A reload or render that fails leaves the current generation in place and is remembered per
//! spec, so NodeGetVolumeStats can report the volume abnormal until it recovers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::sources::{Reload, Sources};
use crate::spec::{SpecDigest, VolumeSpec};
use crate::volume::Store;

/// File updates come in bursts (a ConfigMap swap is several renames); wait for the burst to end
/// so one reload sees the final state.
const SETTLE: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub struct Rotation {
    sources: Arc<Sources>,
    store: Store,
    /// Specs whose last refresh failed, with why.
    failures: Mutex<HashMap<SpecDigest, String>>,
    requested: Notify,
}

impl Rotation {
    pub fn new(sources: Arc<Sources>, store: Store) -> Arc<Self> {
        Arc::new(Self { sources, store, failures: Mutex::new(HashMap::new()), requested: Notify::new() })
    }

    /// Renders a spec with the current sources; what publish and refresh both call.
    pub fn renderer(
        sources: Arc<Sources>,
        spec: VolumeSpec,
    ) -> impl FnOnce() -> Result<crate::bundle::Files, crate::sources::Error> + Send + 'static {
        move || sources.catalog().render(&spec).map(|rendered| rendered.files)
    }

    /// Asks for a refresh pass over every live spec (e.g. a publish rendered from a catalog
    /// that was replaced while it ran).
    pub fn request_refresh(&self) {
        self.requested.notify_one();
    }

    /// Why this spec's bundle is not current, if it is not.
    pub fn problem(&self, digest: &SpecDigest) -> Option<String> {
        let error = self.sources.refresh_error().or_else(|| self.failures().get(digest).cloned())?;
        Some(format!("the trust bundle could not be refreshed ({error}); the volume keeps the previous certificates"))
    }

    /// Runs for the life of the driver: on each source change (or request), a refresh pass.
    pub async fn run(self: Arc<Self>, mut changes: mpsc::Receiver<()>) {
        loop {
            let reload = tokio::select! {
                change = changes.recv() => match change {
                    Some(()) => true,
                    // No watch (no files to watch): refresh passes on request only.
                    None => { self.requested.notified().await; false }
                },
                () = self.requested.notified() => false,
            };
            if reload {
                tokio::time::sleep(SETTLE).await;
                while changes.try_recv().is_ok() {}
                let sources = Arc::clone(&self.sources);
                match tokio::task::spawn_blocking(move || sources.reload()).await {
                    Ok(Reload::Changed) => {}
                    Ok(Reload::Unchanged | Reload::Failed(_)) => continue,
                    Err(error) => {
                        tracing::warn!(%error, "source reload task failed");
                        continue;
                    }
                }
            }
            self.refresh_all().await;
        }
    }

    async fn refresh_all(&self) {
        let specs = self.store.live_specs();
        tracing::info!(specs = specs.len(), "refreshing published bundles");
        for spec in specs {
            let digest = spec.digest();
            let render = Self::renderer(Arc::clone(&self.sources), spec.clone());
            match self.store.refresh(spec, render).await {
                Ok(_) => {
                    self.failures().remove(&digest);
                }
                Err(error) => {
                    tracing::warn!(spec = %digest, %error, "refresh failed; keeping the current bundle");
                    self.failures().insert(digest, error.to_string());
                }
            }
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<SpecDigest, String>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

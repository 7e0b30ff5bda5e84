//! One rotation pass renders many specs, and specs that differ only by namespace (the same
//! ClusterTrustBundle or defaults in every namespace) resolve to the same certificates: their
//! files are equal, byte for byte. The memo renders each distinct input once per pass.
//!
//! The key is everything a render reads besides the spec's namespace: the catalog's generation,
//! the spec's render attributes, the resolved cluster certificates (fingerprint and source label,
//! which the `# source:` comments print) with the keys they skipped, and the clock's second
//! (the policy drops expired certificates).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::bundle::{Certificate, Files, Ignored, Provenance, RenderOptions};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct RenderKey {
    catalog_generation: u64,
    system_roots: bool,
    keep_expired: bool,
    render: RenderOptions,
    now: i64,
    certificates: Vec<([u8; 32], Provenance)>,
    ignored: Vec<(String, Vec<String>)>,
}

impl RenderKey {
    pub(super) fn new(
        catalog_generation: u64,
        spec: &crate::domain::VolumeSpec,
        certificates: &[Certificate],
        ignored: &[Ignored],
        now: i64,
    ) -> Self {
        Self {
            catalog_generation,
            system_roots: spec.system_roots,
            keep_expired: spec.keep_expired,
            render: spec.render,
            now,
            certificates: certificates.iter().map(|c| (c.fingerprint, c.source.clone())).collect(),
            ignored: ignored.iter().map(|i| (i.source.clone(), i.keys.clone())).collect(),
        }
    }
}

/// A render that succeeded: its files and how many certificates they hold.
pub(super) type Rendered = (Files, usize);

/// Renders shared by one pass. Concurrent renders of one key wait for the first (one render
/// per key, not one per racing spec); a failed render is not kept, so each spec reports its own
/// error.
#[derive(Debug, Default)]
pub struct RenderMemo {
    renders: Mutex<HashMap<RenderKey, Arc<OnceLock<Option<Rendered>>>>>,
}

impl RenderMemo {
    /// The files for `key`, rendering them with `render` unless this pass already did.
    pub(super) fn get_or_render<E>(
        &self,
        key: RenderKey,
        render: impl FnOnce() -> Result<Rendered, E>,
    ) -> Result<Rendered, E> {
        let slot = {
            let mut renders = self.renders.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(renders.entry(key).or_default())
        };
        let mut render = Some(render);
        let mut failure = None;
        let memoized = slot.get_or_init(|| match render.take().map(|render| render()) {
            Some(Ok(rendered)) => Some(rendered),
            Some(Err(error)) => {
                failure = Some(error);
                None
            }
            None => None,
        });
        match (memoized, failure, render) {
            (_, Some(error), _) => Err(error),
            (Some(rendered), None, _) => Ok(rendered.clone()),
            // Another spec's render of this key failed: this one renders, and reports, itself.
            (None, None, Some(render)) => render(),
            (None, None, None) => unreachable!("a render that ran either succeeded or failed"),
        }
    }

    /// How many distinct renders the pass made (for its log line).
    pub fn distinct(&self) -> usize {
        self.renders.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::bundle::Entry;
    use crate::domain::VolumeSpec;

    fn spec(namespace: &str) -> VolumeSpec {
        VolumeSpec {
            namespace: namespace.to_owned(),
            system_roots: true,
            render: RenderOptions::default(),
            keep_expired: false,
            cluster: Default::default(),
        }
    }

    fn files(text: &str) -> Files {
        Files { entries: vec![("ca-certificates.crt".to_owned(), Entry::File(text.as_bytes().to_vec()))] }
    }

    #[test]
    fn specs_differing_only_by_namespace_share_one_render() {
        let memo = RenderMemo::default();
        let renders = AtomicUsize::new(0);
        for namespace in ["team-a", "team-b", "team-c"] {
            let key = RenderKey::new(7, &spec(namespace), &[], &[], 1_000);
            let (rendered, count) = memo
                .get_or_render(key, || {
                    renders.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, ()>((files("one"), 1))
                })
                .unwrap();
            assert_eq!((rendered, count), (files("one"), 1));
        }
        assert_eq!(renders.load(Ordering::SeqCst), 1);
        assert_eq!(memo.distinct(), 1);
    }

    #[test]
    fn a_different_catalog_attribute_clock_or_ignored_key_renders_again() {
        let memo = RenderMemo::default();
        let base = spec("team-a");
        let no_roots = VolumeSpec { system_roots: false, ..spec("team-a") };
        let ignored = [Ignored { source: "configmap:corp".to_owned(), keys: vec!["notes".to_owned()] }];
        let keys = [
            RenderKey::new(1, &base, &[], &[], 1_000),
            RenderKey::new(2, &base, &[], &[], 1_000),
            RenderKey::new(1, &no_roots, &[], &[], 1_000),
            RenderKey::new(1, &base, &[], &[], 1_001),
            RenderKey::new(1, &base, &[], &ignored, 1_000),
        ];
        let renders = AtomicUsize::new(0);
        for key in keys {
            memo.get_or_render(key, || {
                renders.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ()>((files("x"), 1))
            })
            .unwrap();
        }
        assert_eq!(renders.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn a_failed_render_is_not_kept_so_the_next_spec_renders_and_reports_itself() {
        let memo = RenderMemo::default();
        let key = RenderKey::new(1, &spec("team-a"), &[], &[], 1_000);
        let first = memo.get_or_render(key.clone(), || Err::<Rendered, _>("empty bundle"));
        assert_eq!(first, Err("empty bundle"));
        let second = memo.get_or_render(key, || Err::<Rendered, _>("empty bundle again"));
        assert_eq!(second, Err("empty bundle again"));
    }

    #[test]
    fn concurrent_renders_of_one_key_render_once() {
        let memo = RenderMemo::default();
        let renders = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for namespace in ["a", "b", "c", "d", "e", "f", "g", "h"] {
                let (memo, renders) = (&memo, &renders);
                scope.spawn(move || {
                    let key = RenderKey::new(1, &spec(namespace), &[], &[], 1_000);
                    memo.get_or_render(key, || {
                        renders.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        Ok::<_, ()>((files("shared"), 1))
                    })
                    .unwrap()
                });
            }
        });
        assert_eq!(renders.load(Ordering::SeqCst), 1);
    }
}

//! [`VolumeIdLocks`]: one CSI operation per volume id at a time. Calls for the same volume id
//! wait for each other, calls for different volumes run in parallel. Entries are dropped once nobody holds or waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Debug, Default)]
pub struct VolumeIdLocks {
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

pub struct VolumeIdGuard<'a> {
    owner: &'a VolumeIdLocks,
    key: String,
    // Dropped before the map cleanup in `Drop` (fields drop after `drop` runs, so take it).
    guard: Option<OwnedMutexGuard<()>>,
}

impl VolumeIdLocks {
    pub async fn lock(&self, key: &str) -> VolumeIdGuard<'_> {
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            locks.entry(key.to_owned()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        VolumeIdGuard { owner: self, key: key.to_owned(), guard: Some(guard) }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().map(|l| l.len()).unwrap_or_default()
    }
}

impl Drop for VolumeIdGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.owner.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only the map holds the mutex now: nobody waits for it, so forget it.
        if locks.get(&self.key).is_some_and(|m| Arc::strong_count(m) == 1) {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn same_key_is_serialised_and_entries_are_dropped() {
        let locks = Arc::new(VolumeIdLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let max_inside = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (locks, inside, max_inside) = (locks.clone(), inside.clone(), max_inside.clone());
                tokio::spawn(async move {
                    let _guard = locks.lock("vol").await;
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    max_inside.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(max_inside.load(Ordering::SeqCst), 1);
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test]
    async fn different_keys_do_not_wait_for_each_other() {
        let locks = VolumeIdLocks::default();
        let _a = locks.lock("a").await;
        let b = tokio::time::timeout(Duration::from_secs(5), locks.lock("b")).await;
        assert!(b.is_ok());
    }
}

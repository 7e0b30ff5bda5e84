//! [`KeyedLocks`]: a lock per key, made on first use and forgotten once nobody holds or waits for
//! it. The CSI face serialises calls per volume id with async mutexes; the store serialises
//! writes per spec directory and per target with blocking ones. Both use this one map, so both
//! evict the same way.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

/// The map holds only weak handles: a lock lives as long as someone holds the `Arc` that
/// [`KeyedLocks::get`] returned (a guard from `lock_owned`, or the `Arc` itself while locking).
#[derive(Debug)]
pub struct KeyedLocks<K, L = Mutex<()>> {
    locks: Mutex<HashMap<K, Weak<L>>>,
}

impl<K, L> Default for KeyedLocks<K, L> {
    fn default() -> Self {
        Self { locks: Mutex::new(HashMap::new()) }
    }
}

impl<K: Eq + Hash, L: Default> KeyedLocks<K, L> {
    /// The lock for `key`, the same one for everyone who asks while it is held; lock it yourself.
    pub fn get<Q>(&self, key: &Q) -> Arc<L>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lock) = locks.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        // The one eviction rule: a new key sweeps out the locks nobody holds any more, so the
        // map holds the locks in use and at most the ones freed since the last new key.
        locks.retain(|_, weak| weak.strong_count() > 0);
        let lock = Arc::new(L::default());
        locks.insert(key.to_owned(), Arc::downgrade(&lock));
        lock
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().map(|l| l.len()).unwrap_or_default()
    }
}

/// Locks a blocking mutex that only guards `()`: a poisoned one is as good as a healthy one.
pub fn lock(mutex: &Mutex<()>) -> MutexGuard<'_, ()> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_same_key_gives_the_same_lock_and_freed_locks_are_swept_by_a_new_key() {
        let locks = KeyedLocks::<String>::default();
        let a = locks.get("a");
        let a2 = locks.get("a");
        assert!(Arc::ptr_eq(&a, &a2));
        let b = locks.get("b");
        assert!(!Arc::ptr_eq(&a, &b));
        drop((a, a2, b));
        let _c = locks.get("c");
        assert_eq!(locks.len(), 1);
    }

    #[tokio::test]
    async fn async_holders_of_one_key_take_turns_and_leave_no_entry_behind() {
        let locks = Arc::new(KeyedLocks::<String, tokio::sync::Mutex<()>>::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let max_inside = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (locks, inside, max_inside) = (locks.clone(), inside.clone(), max_inside.clone());
                tokio::spawn(async move {
                    let _guard = locks.get("vol").lock_owned().await;
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
        let _other = locks.get("other");
        assert_eq!(locks.len(), 1, "the freed lock of \"vol\" is swept");
    }

    #[tokio::test]
    async fn different_keys_do_not_wait_for_each_other() {
        let locks = KeyedLocks::<String, tokio::sync::Mutex<()>>::default();
        let _a = locks.get("a").lock_owned().await;
        let b = tokio::time::timeout(Duration::from_secs(5), locks.get("b").lock_owned()).await;
        assert!(b.is_ok());
    }

    #[test]
    fn a_poisoned_blocking_lock_still_locks() {
        let locks = KeyedLocks::<String>::default();
        let held = locks.get("a");
        let poisoner = Arc::clone(&held);
        let _ = std::thread::spawn(move || {
            let _guard = lock(&poisoner);
            panic!("poison the lock");
        })
        .join();
        assert!(held.is_poisoned());
        drop(lock(&held));
    }
}

//! [`DirLocks`]: a blocking mutex per directory the store writes (a spec dir by its digest, a
//! target by its path). Entries vanish when no one holds or waits for them.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

#[derive(Debug)]
pub struct DirLocks<K> {
    locks: Mutex<HashMap<K, Weak<Mutex<()>>>>,
}

impl<K> Default for DirLocks<K> {
    fn default() -> Self {
        Self { locks: Mutex::new(HashMap::new()) }
    }
}

impl<K: Eq + Hash + Clone> DirLocks<K> {
    /// The lock for `key`; lock it with `.lock()`. Blocking.
    pub fn get(&self, key: &K) -> Arc<Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lock) = locks.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        locks.retain(|_, weak| weak.strong_count() > 0);
        let lock = Arc::new(Mutex::new(()));
        locks.insert(key.clone(), Arc::downgrade(&lock));
        lock
    }
}

/// Locks a mutex that only guards `()`: a poisoned one is as good as a healthy one.
pub fn lock(mutex: &Mutex<()>) -> MutexGuard<'_, ()> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_lock_and_entries_are_dropped() {
        let locks = DirLocks::<String>::default();
        let a = locks.get(&"a".to_owned());
        let a2 = locks.get(&"a".to_owned());
        assert!(Arc::ptr_eq(&a, &a2));
        let b = locks.get(&"b".to_owned());
        assert!(!Arc::ptr_eq(&a, &b));
        drop((a, a2, b));
        let _c = locks.get(&"c".to_owned());
        assert_eq!(locks.locks.lock().unwrap().len(), 1);
    }
}

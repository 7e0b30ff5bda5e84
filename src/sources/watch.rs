//! Tells when a source file may have changed. Watches each file's directory (not the file):
//! a ConfigMap or Secret volume updates by swapping a `..data` symlink, which a watch on the
//! old file would never see.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

/// Keeps the watch alive; dropping it stops the notifications.
pub struct SourceWatch {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for SourceWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceWatch")
    }
}

/// Starts watching the directories of `files`; each burst of changes sends at least one `()`.
///
/// # Errors
/// The inotify watch cannot be set up (e.g. a directory does not exist).
pub fn watch_files(files: &[PathBuf]) -> notify::Result<(SourceWatch, mpsc::Receiver<()>)> {
    use notify::Watcher;
    // One pending signal is enough: the receiver reloads everything anyway.
    let (sender, receiver) = mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = sender.try_send(());
        }
    })?;
    let directories: BTreeSet<&Path> = files.iter().filter_map(|f| f.parent()).collect();
    for directory in directories {
        watcher.watch(directory, notify::RecursiveMode::NonRecursive)?;
    }
    Ok((SourceWatch { _watcher: watcher }, receiver))
}

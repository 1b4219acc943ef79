//! The file watcher: notify events from the plugin folders and the config
//! file's folder, debounced, reduced to "plugins changed" or "config changed"
//! for the reload thread. Folders are watched rather than files, because
//! editors and build tools replace a file by renaming another over it, which a
//! watch on the file itself would lose. Which files in a plugin folder are
//! plugins, and the path a drop-in one is served at, is decided here too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use crate::reload::{ReloadHandle, Trigger};
use crate::router::is_reserved;

/// Quiet time after a file's last event before it is looked at: a file still
/// being written keeps producing events, so it is not read half-written.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Watches the folders and wakes the reload thread.
pub(crate) struct Watcher {
    debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    /// Folders watched for plugins, besides the config file's.
    folders: BTreeSet<PathBuf>,
    config_folder: Option<PathBuf>,
}

impl Watcher {
    /// Starts watching the folder of `config_file` (if any); plugin folders are
    /// added with [`Watcher::watch_folders`].
    pub(crate) fn new(
        reload: ReloadHandle,
        config_file: Option<PathBuf>,
    ) -> notify::Result<Watcher> {
        let config_file = config_file.map(|file| absolute(&file));
        let config = config_file.clone();
        let handler = move |result: DebounceEventResult| match result {
            Ok(events) => {
                let mut trigger = None;
                for event in events.iter().filter(|e| worth_a_look(&e.kind)) {
                    for path in &event.paths {
                        if config.as_deref() == Some(path.as_path()) {
                            trigger = Some(Trigger::Config);
                        } else if trigger.is_none() && is_plugin_file(path) {
                            trigger = Some(Trigger::Plugins);
                        }
                    }
                }
                if let Some(trigger) = trigger {
                    reload.trigger(trigger);
                }
            }
            Err(errors) => {
                for error in errors {
                    tracing::warn!("file watcher: {error}");
                }
            }
        };
        let mut debouncer = new_debouncer(DEBOUNCE, None, handler)?;
        let config_folder = config_file
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf);
        if let Some(folder) = &config_folder {
            debouncer.watch(folder, RecursiveMode::NonRecursive)?;
        }
        Ok(Watcher {
            debouncer,
            folders: BTreeSet::new(),
            config_folder,
        })
    }

    /// Watches exactly these plugin folders from now on (and still the config
    /// file's folder). A folder that cannot be watched is logged.
    pub(crate) fn watch_folders(&mut self, folders: Vec<PathBuf>) {
        let wanted: BTreeSet<PathBuf> = folders.iter().map(|f| absolute(f)).collect();
        for gone in self.folders.difference(&wanted) {
            if self.config_folder.as_ref() != Some(gone) {
                let _ = self.debouncer.unwatch(gone);
            }
        }
        for new in wanted.difference(&self.folders) {
            if self.config_folder.as_ref() == Some(new) {
                continue;
            }
            match self.debouncer.watch(new, RecursiveMode::NonRecursive) {
                Ok(()) => tracing::debug!(folder = %new.display(), "watching"),
                Err(error) => tracing::warn!(
                    folder = %new.display(),
                    "cannot watch the plugin folder ({error}); changes in it are seen only on SIGHUP"
                ),
            }
        }
        self.folders = wanted;
    }
}

/// Whether an event can mean new file contents. Reads are not: berth's own
/// reads of a plugin would otherwise wake it again.
fn worth_a_look(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// `*.wasm`, not a dotfile: the names a plugin may have. Temporary names
/// (`.x.wasm.tmp`, `x.wasm~`) are not, and their final rename is an event on
/// the real name.
fn is_plugin_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|name| name.ends_with(".wasm") && !name.starts_with('.'))
}

/// The route path a drop-in plugin file is served at (`chat.wasm` -> `/chat`),
/// or `None` for files that are not plugins: dotfiles, temporary files that
/// editors and build tools write before renaming, and names a URL path
/// cannot hold plainly.
pub(crate) fn auto_route_path(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?;
    let stem = name.strip_suffix(".wasm")?;
    let plain = !stem.is_empty()
        && !stem.starts_with('.')
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    let path = format!("/{stem}");
    (plain && !is_reserved(&path)).then_some(path)
}

/// `path` made absolute, so that it compares equal to the paths in events.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_in_names() {
        let path = |name: &str| auto_route_path(Path::new(name));
        assert_eq!(path("/p/chat.wasm").as_deref(), Some("/chat"));
        assert_eq!(path("/p/my-game_2.wasm").as_deref(), Some("/my-game_2"));
        for ignored in [
            "/p/.chat.wasm",
            "/p/chat.wasm.tmp",
            "/p/chat.wasm~",
            "/p/.wasm",
            "/p/chat.WASM",
            "/p/sp ace.wasm",
            "/p/healthz.wasm",
            "/p/metrics.wasm",
        ] {
            assert_eq!(path(ignored), None, "{ignored}");
        }
    }
}

//! Keeps the routing table in line with the config file and the plugin files.
//!
//! One thread owns the running config and the published table. Whatever wakes
//! it (the file watcher, SIGHUP, startup) it does the same thing: work out the
//! routes the config and the plugin folder ask for, and for each one whose
//! settings or plugin bytes differ from the version serving, compile the new
//! plugin (or take it from the compile cache), make its workers, and publish a
//! new table in one swap. Comparing content hashes rather than reacting to
//! single file events makes every way a file can arrive (copy, rename over,
//! overwrite in place, move in, delete) come out the same, and makes a missed
//! or repeated event harmless. A file that cannot be loaded is logged and
//! remembered by its hash, and the version already serving stays.

use std::borrow::Cow;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, Overrides, PluginSource, ReloadPolicy, RouteConfig};
use crate::metrics::{Metrics, Reload};
use crate::pubsub::Topics;
use crate::router::{Route, Router, Table};
use crate::runtime::{CodeSource, Compiled, Runtime, RuntimeError};
use crate::state::State;
use crate::watch::{Watcher, auto_route_path};

/// What woke the reload thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// A plugin file may have changed.
    Plugins,
    /// The config file may have changed (or SIGHUP asked for a reload).
    Config,
    /// The server is shutting down.
    Stop,
}

/// Asks the reload thread to look again; cheap to clone.
#[derive(Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<Trigger>,
}

impl ReloadHandle {
    /// Re-reads the config file (if the server has one) and every plugin file,
    /// as SIGHUP does.
    pub fn reload(&self) {
        let _ = self.tx.send(Trigger::Config);
    }

    pub(crate) fn trigger(&self, trigger: Trigger) {
        let _ = self.tx.send(trigger);
    }
}

/// A file's identity and last change, to tell whether it must be hashed again.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Why a route could not get a new version.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The plugin file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The plugin could not be compiled, does not fit the world, or failed to start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// What route versions are built with (the runtime compiles plugins and
/// starts workers that reach the topics and the state store, counted in the
/// metrics) and where they are published (the router), until shutdown.
pub(crate) struct Wiring {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) topics: Arc<Topics>,
    pub(crate) state: Arc<State>,
    pub(crate) router: Arc<Router>,
    pub(crate) shutdown: CancellationToken,
}

/// The reload thread's state.
pub(crate) struct Reloader {
    wiring: Wiring,
    tokio: tokio::runtime::Handle,
    config: Config,
    config_file: Option<PathBuf>,
    overrides: Overrides,
    /// The routes published last.
    table: Table,
    /// Each plugin file's stamp and content hash when it was last hashed.
    hashes: HashMap<PathBuf, (Stamp, blake3::Hash)>,
    /// Per route path, the plugin hash and settings of the last failed load, so
    /// that an unchanged bad file is reported once rather than at every look.
    failed: HashMap<String, (blake3::Hash, RouteConfig)>,
    /// Compiled plugins still in use, by content hash: routes sharing a file,
    /// or a file put back, reuse them.
    compiled: HashMap<blake3::Hash, Weak<Compiled>>,
    /// Route worker threads, joined at shutdown.
    threads: Vec<JoinHandle<()>>,
    watcher: Option<Watcher>,
}

/// What the reload thread hands back when it stops: the worker threads to join.
pub(crate) type Stopped = Vec<JoinHandle<()>>;

impl Reloader {
    /// Loads every route of `config`. A configured route whose plugin cannot
    /// load fails startup; a drop-in plugin that cannot load is only logged.
    pub(crate) fn start(
        wiring: Wiring,
        config: Config,
        config_file: Option<PathBuf>,
        overrides: Overrides,
    ) -> Result<Reloader, LoadError> {
        let mut reloader = Reloader {
            wiring,
            tokio: tokio::runtime::Handle::current(),
            config,
            config_file,
            overrides,
            table: Table::new(),
            hashes: HashMap::new(),
            failed: HashMap::new(),
            compiled: HashMap::new(),
            threads: Vec::new(),
            watcher: None,
        };
        reloader.reconcile(true)?;
        Ok(reloader)
    }

    /// Starts the thread, watching the files first when `watch` is set.
    pub(crate) fn spawn(
        mut self,
        watch: bool,
    ) -> std::io::Result<(ReloadHandle, JoinHandle<Stopped>)> {
        let (tx, rx) = mpsc::channel();
        let handle = ReloadHandle { tx };
        if watch {
            match Watcher::new(handle.clone(), self.config_file.clone()) {
                Ok(watcher) => self.watcher = Some(watcher),
                Err(error) => tracing::warn!(
                    "cannot watch files ({error}); plugins and config reload only on SIGHUP"
                ),
            }
            self.rewatch();
        }
        let thread = std::thread::Builder::new()
            .name("berth-reload".into())
            .spawn(move || self.run(rx))?;
        Ok((handle, thread))
    }

    fn run(mut self, rx: mpsc::Receiver<Trigger>) -> Stopped {
        while let Ok(first) = rx.recv() {
            // Everything already queued is answered by one look.
            let triggers: Vec<Trigger> = std::iter::once(first).chain(rx.try_iter()).collect();
            if triggers.contains(&Trigger::Stop) {
                break;
            }
            if triggers.contains(&Trigger::Config) {
                self.reload_config();
            }
            // A drop-in route's failure is only logged, never fatal here.
            let _ = self.reconcile(false);
        }
        // The server is stopping: drop every route so their workers can end.
        drop(self.watcher.take());
        self.wiring.router.publish(Table::new());
        self.table.clear();
        self.threads
    }

    /// Reads the config file again; a bad one is reported and the running
    /// config stays.
    fn reload_config(&mut self) {
        let Some(file) = self.config_file.clone() else {
            return;
        };
        let mut next = match Config::load(&file) {
            Ok(next) => next,
            Err(error) => {
                let error: &ConfigError = &error;
                tracing::error!("config not reloaded: {error}; the running config stays");
                self.wiring.metrics.reloaded(Reload::Failed, 1);
                return;
            }
        };
        self.overrides.apply(&mut next);
        for name in next.startup.differences(&self.config.startup) {
            tracing::warn!(file = %file.display(), "{name} changed: it takes effect at the next restart");
        }
        tracing::info!(file = %file.display(), "config reloaded");
        // Settings that need a restart keep their running values, so that
        // the warning above is given once per edit, not at every reload.
        self.config.live = next.live;
        self.rewatch();
    }

    /// Points the watcher at the folders the current config names.
    fn rewatch(&mut self) {
        if let Some(watcher) = &mut self.watcher {
            watcher.watch_folders(self.config.live.plugin_folders());
        }
    }

    /// The routes the config and the plugin folder ask for: configured routes
    /// first, then one per drop-in plugin whose path no configured route takes.
    fn wanted(&self) -> Vec<RouteConfig> {
        let mut routes = self.config.live.routes.clone();
        if !self.config.live.auto_routes {
            return routes;
        }
        let folder = &self.config.live.plugin_dir;
        let listing = match std::fs::read_dir(folder) {
            Ok(listing) => listing,
            Err(error) => {
                tracing::warn!(folder = %folder.display(), "cannot list the plugin folder: {error}");
                return routes;
            }
        };
        let mut drop_ins: Vec<RouteConfig> = listing
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
            .filter_map(|entry| {
                let file = entry.path();
                let path = auto_route_path(&file)?;
                if routes.iter().any(|r| r.path == path) {
                    tracing::debug!(file = %file.display(), "{path} is a configured route; the file is not served there");
                    return None;
                }
                Some(RouteConfig {
                    allowed_origins: self.config.live.auto_route_origins.clone(),
                    ..RouteConfig::with_defaults(path, PluginSource::File(file))
                })
            })
            .collect();
        drop_ins.sort_by(|a, b| a.path.cmp(&b.path));
        routes.extend(drop_ins);
        routes
    }

    /// The content hash of a plugin, hashing the file again only when its
    /// stamp has changed; with the bytes, when it had to read them, so that a
    /// load that follows does not read the file a second time.
    fn hash_of(
        &mut self,
        source: &PluginSource,
    ) -> std::io::Result<(blake3::Hash, Option<Vec<u8>>)> {
        match source {
            PluginSource::Embedded { bytes, .. } => Ok((blake3::hash(bytes), None)),
            PluginSource::File(file) => {
                let stamp = Stamp::of(&std::fs::metadata(file)?);
                if let Some((known, hash)) = self.hashes.get(file)
                    && *known == stamp
                {
                    return Ok((*hash, None));
                }
                let (bytes, stamp) = read_stable(file)?;
                let hash = blake3::hash(&bytes);
                self.hashes.insert(file.clone(), (stamp, hash));
                Ok((hash, Some(bytes)))
            }
        }
    }

    /// Brings the table in line with what the config and the folder ask for,
    /// then publishes it. With `strict` (startup), the first configured route
    /// that cannot load is an error, and loads are not counted as reloads.
    fn reconcile(&mut self, strict: bool) -> Result<(), LoadError> {
        let configured = self.config.live.routes.len();
        let wanted = self.wanted();
        let mut next = Table::new();
        // Counted once the table is out: a version counts when it serves.
        let (mut loaded, mut failures) = (0, 0);
        for (index, route) in wanted.iter().cloned().enumerate() {
            let current = self.table.get(&route.path).cloned();
            let (hash, read) = match self.hash_of(&route.plugin) {
                Ok(found) => found,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    if let PluginSource::File(file) = &route.plugin {
                        self.hashes.remove(file);
                    }
                    if current.is_some() {
                        tracing::info!(route = %route.path, file = %route.plugin.display_name(),
                            "plugin file removed; the route stops taking new connections");
                    }
                    continue;
                }
                Err(error) => {
                    tracing::warn!(route = %route.path, file = %route.plugin.display_name(),
                        "cannot read the plugin ({error}); the route stays as it was");
                    if let Some(current) = current {
                        next.insert(route.path.clone(), current);
                    }
                    continue;
                }
            };
            if let Some(current) = &current
                && current.plugin_hash == hash
                && *current.config == route
            {
                next.insert(route.path.clone(), current.clone());
                continue;
            }
            if self
                .failed
                .get(&route.path)
                .is_some_and(|(h, r)| *h == hash && *r == route)
            {
                if let Some(current) = current {
                    next.insert(route.path.clone(), current);
                }
                continue;
            }
            match self.load(&route, hash, read) {
                Ok(version) => {
                    loaded += 1;
                    self.failed.remove(&route.path);
                    next.insert(route.path.clone(), Arc::new(version));
                }
                Err((error, hash)) => {
                    let consequence = if current.is_some() {
                        "the previous version keeps serving"
                    } else {
                        "the route is not served"
                    };
                    tracing::error!(route = %route.path, file = %route.plugin.display_name(),
                        hash = %short(&hash), "plugin not loaded: {error}; {consequence}");
                    if strict && index < configured {
                        return Err(error);
                    }
                    failures += 1;
                    self.failed
                        .insert(route.path.clone(), (hash, route.clone()));
                    if let Some(current) = current {
                        next.insert(route.path.clone(), current);
                    }
                }
            }
        }
        self.failed
            .retain(|path, _| wanted.iter().any(|r| &r.path == path));
        let old = std::mem::replace(&mut self.table, next.clone());
        self.wiring.router.publish(next);
        if !strict {
            self.wiring.metrics.reloaded(Reload::Ok, loaded);
            self.wiring.metrics.reloaded(Reload::Failed, failures);
        }
        for (path, version) in old {
            let replaced = match self.table.get(&path) {
                Some(now) if Arc::ptr_eq(now, &version) => continue,
                Some(now) => Some(now.config.on_reload),
                None => {
                    tracing::info!(route = %path, "route removed");
                    None
                }
            };
            let policy = replaced.unwrap_or(version.config.on_reload);
            if policy == ReloadPolicy::Restart {
                version.retired.cancel();
            }
        }
        self.compiled.retain(|_, weak| weak.strong_count() > 0);
        self.threads.retain(|thread| !thread.is_finished());
        Ok(())
    }

    /// Makes a new version of `route`: reads its plugin, compiles it (or
    /// reuses or loads it), starts its workers. On failure, returns the error
    /// and the hash of the bytes that failed.
    fn load(
        &mut self,
        route: &RouteConfig,
        hash: blake3::Hash,
        read: Option<Vec<u8>>,
    ) -> Result<Route, (LoadError, blake3::Hash)> {
        let started = Instant::now();
        let name = route.plugin.display_name();
        let (compiled, origin, hash) = match self.compiled.get(&hash).and_then(Weak::upgrade) {
            Some(compiled) => (compiled, "memory", hash),
            None => {
                let (bytes, hash): (Cow<[u8]>, _) = match (read, &route.plugin) {
                    (Some(bytes), _) => (Cow::Owned(bytes), hash),
                    (None, PluginSource::Embedded { bytes, .. }) => (Cow::Borrowed(*bytes), hash),
                    // Hashed earlier from an unchanged stamp: read it now,
                    // and hash what was read, which is what will run.
                    (None, PluginSource::File(file)) => match read_stable(file) {
                        Ok((bytes, stamp)) => {
                            let hash = blake3::hash(&bytes);
                            self.hashes.insert(file.clone(), (stamp, hash));
                            (Cow::Owned(bytes), hash)
                        }
                        Err(source) => {
                            let error = LoadError::Read { file: name, source };
                            return Err((error, hash));
                        }
                    },
                };
                let fail = |error: RuntimeError| (LoadError::Runtime(error), hash);
                let (compiled, origin) = self
                    .wiring
                    .runtime
                    .compile(&name, &bytes, &hash)
                    .map_err(fail)?;
                let compiled = Arc::new(compiled);
                self.compiled.insert(hash, Arc::downgrade(&compiled));
                (compiled, CodeSource::as_str(origin), hash)
            }
        };
        let fail = |error: RuntimeError| (LoadError::Runtime(error), hash);
        let compiled_in = started.elapsed();
        let config = Arc::new(route.clone());
        let metrics = Arc::new(self.wiring.metrics.route(&route.path));
        let workers = self
            .wiring
            .runtime
            .spawn_route(
                &self.tokio,
                &self.wiring.topics,
                &self.wiring.state,
                config.clone(),
                compiled,
                metrics.clone(),
            )
            .map_err(fail)?;
        self.threads.extend(workers.threads);
        tracing::info!(
            route = %route.path,
            file = %name,
            hash = %short(&hash),
            from = origin,
            compile_ms = millis(compiled_in),
            ready_ms = millis(started.elapsed()),
            "plugin loaded"
        );
        Ok(Route {
            config,
            plugin: workers.handle,
            retired: self.wiring.shutdown.child_token(),
            plugin_hash: hash,
            metrics,
        })
    }
}

/// A duration in milliseconds, to a tenth, for logs.
fn millis(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1e4).round() / 10.0
}

/// The first 12 hex digits of a content hash, for logs.
fn short(hash: &blake3::Hash) -> String {
    hash.to_hex()[..12].to_string()
}

/// Reads a file whole, and its stamp from the same open file, so that the
/// stamp describes the bytes read (a file replaced meanwhile is seen as new
/// at the next look).
fn read_stable(file: &Path) -> std::io::Result<(Vec<u8>, Stamp)> {
    use std::io::Read;
    let mut handle = std::fs::File::open(file)?;
    let stamp = Stamp::of(&handle.metadata()?);
    let mut bytes = Vec::with_capacity(stamp.len as usize);
    handle.read_to_end(&mut bytes)?;
    Ok((bytes, stamp))
}

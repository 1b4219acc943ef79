//! The plugin runtime: one wasmtime [`Engine`] and [`Linker`] for the whole
//! server, one compiled [`InstancePre`](wasmtime::component::InstancePre) per
//! plugin, and worker threads that own each route's instances (one for the
//! `route` model, one per core for the `connection` model).
//!
//! Why threads rather than async calls from tokio tasks: a synchronous call
//! into a component from the thread that owns its store skips the fiber that
//! async calls need, which is the larger part of the crossing cost, and a
//! blocking WASI call made by a guest cannot stall tokio's workers. Events
//! reach a worker through a bounded queue; it drains everything queued
//! before it sleeps again, so a busy route is never woken once per message.
//!
//! The generated bindings stay inside this module: the rest of the host
//! speaks to a plugin in its own types (`Request`, `CloseInfo`,
//! `ConnectOutcome`).

mod batch;
mod bindings;
mod cache;
mod connect;
mod handle;
mod imports;
mod instances;
mod limits;
mod quarantine;
mod queue;
mod requests;
mod state_calls;
mod stdio;
mod store;
mod timers;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{
    Config as EngineConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
};

use bindings::{Plugin, PluginPre};
pub use cache::CodeSource;
use cache::CompileCache;
pub(crate) use handle::{ConnectOutcome, PluginHandle, Request};
use store::HostState;

use crate::config::{RouteConfig, StartupConfig, defaults};
use crate::metrics::RouteMetrics;
use crate::pubsub::Topics;
use crate::state::State;

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary: how every string a plugin hands over is cut to its
/// bound.
pub(crate) fn cut(text: &str, max: usize) -> &str {
    &text[..text.floor_char_boundary(max)]
}

/// Why a connection ended, as its plugin hears it in a close event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CloseInfo {
    /// The WebSocket close code, or the host's own (1006, 1001, 1009, 1013).
    pub(crate) code: u16,
    /// The close reason; may be empty.
    pub(crate) reason: String,
}

/// How often the engine's epoch advances; call deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why a plugin could not be made ready to serve.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The wasmtime engine could not be set up.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    /// The plugin file could not be read.
    #[error("cannot read plugin {plugin}: {source}")]
    Read {
        /// The plugin's name or path.
        plugin: String,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The file is not a valid WebAssembly component.
    #[error("plugin {plugin} is not a valid WebAssembly component: {reason}")]
    Compile {
        /// The plugin's name or path.
        plugin: String,
        /// The compiler's explanation.
        reason: String,
    },
    /// The component does not fit berth's world (a missing export, a wrong type,
    /// an import berth does not provide).
    #[error("plugin {plugin} does not implement the berth:plugin world: {reason}")]
    World {
        /// The plugin's name or path.
        plugin: String,
        /// What does not fit.
        reason: String,
    },
    /// The component failed while starting (its start code trapped).
    #[error("plugin {plugin} failed to start: {reason}")]
    Instantiate {
        /// The plugin's name or path.
        plugin: String,
        /// The trap or error.
        reason: String,
    },
    /// The route's thread could not be started.
    #[error("cannot start the thread for route {route}: {source}")]
    Thread {
        /// The route's path.
        route: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Advances the engine's epoch on a timer until dropped.
struct EpochTicker {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("berth-epoch".into())
            .spawn(move || {
                // The sender is never used: dropping it ends the wait at once.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(EPOCH_TICK)
                {
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A plugin compiled and checked against the world, ready to instantiate.
pub(crate) struct Compiled {
    name: String,
    hash: blake3::Hash,
    pre: PluginPre<HostState>,
}

/// What the engine is built with: the instance pool's size and each
/// instance's memory cap, and where compiled plugins are cached.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Instances alive at once (`max-instances`).
    pub max_instances: u32,
    /// One instance's linear memory cap, in bytes (`max-memory`).
    pub max_memory: u64,
    /// Where compiled plugins are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_instances: defaults::MAX_INSTANCES,
            max_memory: defaults::MAX_MEMORY,
            cache_dir: None,
        }
    }
}

impl From<&StartupConfig> for EngineSettings {
    fn from(config: &StartupConfig) -> Self {
        EngineSettings {
            max_instances: config.max_instances,
            max_memory: config.max_memory,
            cache_dir: config.cache_dir.clone(),
        }
    }
}

/// A route's workers: the handle sessions use, and the threads to wait for at shutdown.
pub(crate) struct RouteWorkers {
    /// Where sessions send this route's events.
    pub(crate) handle: PluginHandle,
    /// The threads that own the route's instances.
    pub(crate) threads: Vec<JoinHandle<()>>,
}

/// The engine, the linker and the epoch ticker shared by every route.
pub(crate) struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: CompileCache,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Sets up the engine (component model, epoch interruption, an instance
    /// pool sized by `settings`) and the linker (WASI p2 and berth's host
    /// interface).
    pub(crate) fn new(settings: &EngineSettings) -> Result<Runtime, RuntimeError> {
        let engine_err = |e: wasmtime::Error| RuntimeError::Engine(format!("{e:#}"));
        let engine = match Engine::new(&engine_config(settings, true)) {
            Ok(engine) => engine,
            Err(error) => {
                // Some hosts cap virtual memory too tightly for the pool's
                // reservation; instances are then allocated on demand.
                tracing::warn!(
                    "instance pool unavailable ({error:#}); allocating instances on demand"
                );
                Engine::new(&engine_config(settings, false)).map_err(engine_err)?
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_err)?;
        Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(engine_err)?;
        let ticker =
            EpochTicker::start(engine.clone()).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        let cache = CompileCache::open(&engine, settings.cache_dir.as_deref());
        Ok(Runtime {
            cache,
            engine,
            linker,
            _ticker: ticker,
        })
    }

    /// Compiles a plugin (or loads it from the compile cache) and checks it
    /// against the world. `hash` is the content hash of `bytes`; `name` names
    /// the plugin in errors. Takes milliseconds to seconds: call it off the
    /// async worker threads.
    pub(crate) fn compile(
        &self,
        name: &str,
        bytes: &[u8],
        hash: &blake3::Hash,
    ) -> Result<(Compiled, CodeSource), RuntimeError> {
        let (component, origin) = self
            .cache
            .component(&self.engine, hash, bytes)
            .map_err(|e| RuntimeError::Compile {
                plugin: name.to_string(),
                reason: one_line(&e),
            })?;
        let world_err = |e: wasmtime::Error| RuntimeError::World {
            plugin: name.to_string(),
            reason: one_line(&e),
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(world_err)?;
        let pre = PluginPre::new(instance_pre).map_err(world_err)?;
        let compiled = Compiled {
            name: name.to_string(),
            hash: *hash,
            pre,
        };
        Ok((compiled, origin))
    }

    /// Starts the workers that serve `route` with `plugin`; `runtime` runs
    /// their timers, `topics` carries their topics, and they count their
    /// calls and failures in `metrics`.
    pub(crate) fn spawn_route(
        &self,
        runtime: &tokio::runtime::Handle,
        topics: &Arc<Topics>,
        state: &Arc<State>,
        route: Arc<RouteConfig>,
        plugin: Arc<Compiled>,
        metrics: Arc<RouteMetrics>,
    ) -> Result<RouteWorkers, RuntimeError> {
        instances::spawn(&self.engine, runtime, topics, state, route, plugin, metrics)
    }
}

/// Compiles `bytes` (or loads them from the compile cache in `cache_dir`) and
/// links them against berth's host exactly as serving would, without running
/// anything: the final word on whether berth can serve a plugin. It also leaves
/// the compiled code in the cache, so the first `serve` of the file is quick.
pub fn link_check(
    name: &str,
    bytes: &[u8],
    cache_dir: Option<PathBuf>,
) -> Result<CodeSource, RuntimeError> {
    let settings = EngineSettings {
        cache_dir,
        ..EngineSettings::default()
    };
    let runtime = Runtime::new(&settings)?;
    let (_, origin) = runtime.compile(name, bytes, &blake3::hash(bytes))?;
    Ok(origin)
}

/// An error and its causes on one line: wasmtime's messages can span several
/// (a parse error prints the bytes it found as a list), and a log line or a
/// terminal error should not.
pub(super) fn one_line(error: &wasmtime::Error) -> String {
    format!("{error:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The engine settings. With `pooling`, instances come from a pool sized from
/// the settings rather than wasmtime's defaults (which reserve terabytes of
/// address space): `max-instances` slots, each memory capped at `max-memory`.
fn engine_config(settings: &EngineSettings, pooling: bool) -> EngineConfig {
    let mut engine = EngineConfig::new();
    engine.wasm_component_model(true).epoch_interruption(true);
    // Reserve what a memory may reach, not 4 GiB each: many small instances.
    engine.memory_reservation(settings.max_memory);
    engine.memory_guard_size(64 << 10);
    if pooling {
        let instances = settings.max_instances;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(instances)
            // A component holds a few core instances (the program, plus the
            // shims that wire imports); language runtimes hold more.
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(8))
            .total_stacks(0)
            .total_gc_heaps(0)
            .max_memory_size(usize::try_from(settings.max_memory).unwrap_or(usize::MAX));
        engine.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    engine
}

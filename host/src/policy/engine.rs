//! The wasmtime engine every policy runs in, tuned for a fresh sandbox per evaluation,
//! and the cache that compiles each module once per content digest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::evaluate::Pre;
use super::evaluate::Sandbox;
use super::module::{LoadError, LoadedPolicy, ModuleRef, PolicyDigest};
use super::{bindings, bindings_v01};

/// How often the epoch advances while evaluations run: the resolution of deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// With no evaluation in flight for this many ticks the ticker parks (an idle proxy
/// costs no CPU); the next evaluation wakes it.
const IDLE_TICKS_BEFORE_PARKING: u32 = 50;

/// Sizes of the instance pool, fixed for the engine's lifetime.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The largest linear memory any policy may be given (per-endpoint limits are at most this).
    pub max_memory_bytes: usize,
    /// How many evaluations can be in flight at once across all endpoints.
    pub concurrent_evaluations: u32,
    /// Where every loaded module is kept by digest (`<digest>.wasm`) for `audit replay`.
    pub module_store: Option<std::path::PathBuf>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_memory_bytes: 64 << 20,
            concurrent_evaluations: 256,
            module_store: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("could not configure the WebAssembly engine: {0}")]
    Config(String),
}

/// A handle to the policy engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    wasmtime: wasmtime::Engine,
    linker: Linker<Sandbox>,
    options: EngineOptions,
    /// Compiled, pre-instantiated modules by content digest. Kept for the process's
    /// lifetime: modules are few, and replaying an old verdict needs the old module.
    compiled: Mutex<HashMap<PolicyDigest, Pre>>,
    ticker: Arc<Ticker>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(options: EngineOptions) -> Result<Self, EngineError> {
        let wasmtime = wasmtime::Engine::new(&config(&options))
            .map_err(|e| EngineError::Config(format!("{e:#}")))?;

        let mut linker = Linker::new(&wasmtime);
        // WASI interfaces are linked so that components built with a WASI toolchain (Rust
        // std, Python, JavaScript) instantiate; the context behind them is empty.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| EngineError::Config(format!("{e:#}")))?;
        bindings::Policy::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| EngineError::Config(format!("{e:#}")))?;
        // The 0.1.0 contract imports the same `settings` function, and its own types.
        bindings_v01::sigward::policy::types::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| EngineError::Config(format!("{e:#}")))?;

        let ticker = Ticker::spawn(wasmtime.weak());
        Ok(Self {
            inner: Arc::new(Inner {
                wasmtime,
                linker,
                options,
                compiled: Mutex::default(),
                ticker,
            }),
        })
    }

    /// Keep the epoch advancing (deadlines firing) until the guard is dropped: held for
    /// the length of each evaluation.
    pub(crate) fn ticking(&self) -> Ticking<'_> {
        self.inner.ticker.enter()
    }

    /// How many times the epoch has advanced since the engine started. It stands still
    /// while no evaluation runs.
    pub fn epoch_ticks(&self) -> u64 {
        self.inner.ticker.ticks.load(Ordering::Relaxed)
    }

    pub fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    /// Whether a module with this digest is already compiled.
    pub fn is_compiled(&self, digest: &PolicyDigest) -> bool {
        self.lock_compiled().contains_key(digest)
    }

    /// How many distinct modules have been compiled.
    pub fn compiled_count(&self) -> usize {
        self.lock_compiled().len()
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.wasmtime
    }

    /// Read, compile (once per digest) and pre-instantiate a policy module, checking that
    /// it implements the `sigward:policy` world.
    pub fn load(&self, module: &ModuleRef) -> Result<Arc<LoadedPolicy>, LoadError> {
        let bytes = module.read()?;
        self.load_bytes(module.clone(), &bytes)
    }

    /// [`Engine::load`] for bytes already in hand.
    pub fn load_bytes(
        &self,
        source: ModuleRef,
        bytes: &[u8],
    ) -> Result<Arc<LoadedPolicy>, LoadError> {
        let name = source.name();
        let digest = PolicyDigest::of(bytes);
        let cached = self.lock_compiled().get(&digest).cloned();
        let pre = match cached {
            Some(pre) => pre,
            None => {
                // Compiling takes milliseconds to seconds: never hold the lock meanwhile.
                let component = Component::new(&self.inner.wasmtime, bytes).map_err(|e| {
                    LoadError::Compile {
                        name: name.clone(),
                        message: one_line(&e),
                    }
                })?;
                let instance_pre = self.inner.linker.instantiate_pre(&component).map_err(|e| {
                    LoadError::NotAPolicy {
                        name: name.clone(),
                        message: one_line(&e),
                    }
                })?;
                let pre = Pre::new(instance_pre).map_err(|e| LoadError::NotAPolicy {
                    name: name.clone(),
                    message: one_line(&e),
                })?;
                if let Some(store) = &self.inner.options.module_store
                    && let Err(error) = crate::modules::store(store, &digest.to_string(), bytes)
                {
                    tracing::warn!(
                        policy = %name,
                        %digest,
                        store = %store.display(),
                        %error,
                        "could not keep the module for audit replay"
                    );
                }
                self.lock_compiled()
                    .entry(digest.clone())
                    .or_insert(pre)
                    .clone()
            }
        };
        Ok(Arc::new(LoadedPolicy {
            name,
            source,
            digest,
            pre,
            engine: self.clone(),
        }))
    }

    fn lock_compiled(&self) -> std::sync::MutexGuard<'_, HashMap<PolicyDigest, Pre>> {
        // A panic while holding this lock cannot leave the map half-updated (single insert).
        self.inner
            .compiled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The settings that make a fresh instance per evaluation cost microseconds, not tens of
/// them (measured in ../shared/WASMTIME-NOTES.md and by `sigward policy bench`).
fn config(options: &EngineOptions) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    let slots = options.concurrent_evaluations.max(1);
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(8))
        .total_memories(slots)
        .total_tables(slots.saturating_mul(2))
        .max_memory_size(options.max_memory_bytes)
        // Without pagemap_scan, keeping memory resident memsets the whole kept range on
        // every deallocation; with it only dirty pages are reset.
        .pagemap_scan(Enabled::Yes)
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10);

    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .consume_fuel(true)
        // Explicit bounds checks instead of guard pages and signal handlers: together
        // these remove an mprotect pair per evaluation for guests whose allocator grows.
        .signals_based_traps(false)
        .memory_guard_size(0)
        .memory_reservation(options.max_memory_bytes as u64);
    config
}

/// The thread that advances the engine's epoch every [`EPOCH_TICK`] while evaluations
/// are in flight, and parks when there have been none for a while: a wall-clock deadline
/// only needs the clock to move while something is being timed. It holds only a weak
/// reference to the engine and ends soon after the engine is dropped.
struct Ticker {
    in_flight: AtomicUsize,
    ticks: AtomicU64,
    thread: OnceLock<std::thread::Thread>,
}

/// One evaluation in flight (see [`Engine::ticking`]).
pub(crate) struct Ticking<'a>(&'a Ticker);

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Ticker {
    fn spawn(engine: wasmtime::EngineWeak) -> Arc<Self> {
        let ticker = Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            ticks: AtomicU64::new(0),
            thread: OnceLock::new(),
        });
        let weak = Arc::downgrade(&ticker);
        let spawned = std::thread::Builder::new()
            .name("sigward-epoch".into())
            .spawn(move || Self::run(&engine, &weak));
        match spawned {
            Ok(handle) => {
                let _ = ticker.thread.set(handle.thread().clone());
            }
            // Without a ticker deadlines never fire; fuel still bounds every evaluation.
            Err(e) => {
                tracing::error!(error = %e, "could not start the policy deadline ticker; only fuel limits evaluations")
            }
        }
        ticker
    }

    fn enter(&self) -> Ticking<'_> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(thread) = self.thread.get()
        {
            // Cheap when the ticker is running; wakes it when parked. A wake that
            // arrives before it parks makes that park return at once: none is lost.
            thread.unpark();
        }
        Ticking(self)
    }

    fn run(engine: &wasmtime::EngineWeak, ticker: &std::sync::Weak<Self>) {
        let mut idle = 0u32;
        loop {
            let (Some(engine), Some(ticker)) = (engine.upgrade(), ticker.upgrade()) else {
                return;
            };
            if ticker.in_flight.load(Ordering::Acquire) > 0 {
                idle = 0;
            } else {
                idle = idle.saturating_add(1);
            }
            if idle > IDLE_TICKS_BEFORE_PARKING {
                drop((engine, ticker));
                // Bounded, so that a dropped engine's ticker still ends.
                std::thread::park_timeout(Duration::from_secs(1));
                continue;
            }
            engine.increment_epoch();
            ticker.ticks.fetch_add(1, Ordering::Relaxed);
            drop((engine, ticker));
            std::thread::sleep(EPOCH_TICK);
        }
    }
}

/// wasmtime's errors can span lines (byte dumps); messages here are one line each.
fn one_line(error: &wasmtime::Error) -> String {
    format!("{error:#}")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

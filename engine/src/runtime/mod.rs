//! The WASM runtime: the only code that sees wasmtime.
//!
//! One [`Runtime`] holds one wasmtime `Engine` (epoch interruption on, a ticker thread driving
//! it) and one `Linker` with the host services. A [`Module`] is compiled once — from the on-disk
//! cache when possible — checked against the ABI, and kept as an `InstancePre`, so that a fresh
//! [`NodeInstance`] after a crash costs an instantiation, not a compile.

pub mod abi;
pub mod cache;
pub mod instance;
pub mod limits;
pub mod manifest;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::{Config, Engine, InstancePre, Linker, OptLevel, Store};

pub use instance::NodeInstance;
pub use limits::Limits;
pub use manifest::ModuleInfo;

use crate::host::{self, Clock, HostState};
use crate::state::NodeHandles;
use cache::DiskCache;

pub use crate::host::sandbox::TICK;
pub(crate) use crate::host::sandbox::ticks;

/// A node failed to run a message, or to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node `{node}`: {kind}")]
pub struct NodeError {
    pub node: String,
    pub kind: NodeErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeErrorKind {
    #[error("deadline of {0:?} exceeded")]
    Deadline(Duration),
    #[error("out of memory: the module exceeded its cap of {cap_mb} MiB")]
    OutOfMemory { cap_mb: usize },
    #[error("trap: {0}")]
    Trap(String),
    /// The node returned an `Err`: an outcome, not a crash.
    #[error("{0}")]
    Guest(String),
    #[error("config rejected: {message}")]
    Config { field: String, message: String },
    #[error("init failed: {0}")]
    Init(String),
    #[error("ABI violation: {0}")]
    Abi(String),
    #[error("disabled after {0} consecutive crashes")]
    Disabled(u32),
}

impl NodeErrorKind {
    /// The kind as a metric label: `error` (the node returned one), `trap`, `deadline`,
    /// `memory`, `abi`, `config`, `init`, `disabled`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Deadline(_) => "deadline",
            Self::OutOfMemory { .. } => "memory",
            Self::Trap(_) => "trap",
            Self::Guest(_) => "error",
            Self::Config { .. } => "config",
            Self::Init(_) => "init",
            Self::Abi(_) => "abi",
            Self::Disabled(_) => "disabled",
        }
    }

    /// A crash leaves the instance unusable: it is replaced, and the crash counts towards
    /// disabling the node.
    pub fn is_crash(&self) -> bool {
        matches!(self, Self::Deadline(_) | Self::OutOfMemory { .. } | Self::Trap(_) | Self::Abi(_))
    }
}

/// A module could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot read {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("not a valid WebAssembly module: {0}")]
    Compile(String),
    #[error("refused: {0}")]
    Contract(String),
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
}

/// A compiled, checked module, ready to instantiate.
pub struct Module {
    /// Where it came from, for messages.
    pub source: PathBuf,
    /// SHA-256 of its bytes.
    pub hash: String,
    /// Its manifest, capabilities and config schema.
    pub info: ModuleInfo,
    pre: InstancePre<HostState>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module").field("source", &self.source).field("hash", &self.hash).finish()
    }
}

/// A node of a chain, as the runtime starts it: its module, its config, its limits and the
/// connector the chain grants it.
#[derive(Debug)]
pub struct RuleNode {
    pub module: Arc<Module>,
    /// The node's config as JSON, handed to `sluice_init`.
    pub config: Vec<u8>,
    pub limits: Limits,
    /// The connector the chain grants this node's actions (`"connector"` on the node).
    pub connector: Option<sluice_connectors::Granted>,
}

/// What an instance gets from where it runs: the node it runs as (for logs and errors), that
/// node's state, and the clock.
pub struct HostEnv {
    pub node: Arc<str>,
    pub state: NodeHandles,
    pub clock: Clock,
}

impl HostEnv {
    pub fn new(node: impl Into<Arc<str>>, state: NodeHandles, clock: Clock) -> Self {
        HostEnv { node: node.into(), state, clock }
    }

    /// Empty state and the system clock: a check, a test, a bench.
    pub fn scratch(node: impl Into<Arc<str>>) -> Self {
        Self::new(node, NodeHandles::default(), Clock::System)
    }
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<DiskCache>,
    modules: Mutex<HashMap<String, Arc<Module>>>,
    /// (module hash, config, limits) whose `init` passed on a scratch instance: see
    /// [`Runtime::check_config`].
    checked: Mutex<HashSet<(String, Vec<u8>, Limits)>>,
}

impl Runtime {
    /// A runtime caching compiled modules in `cache_dir` (`None`: no disk cache).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, ModuleError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.cranelift_opt_level(OptLevel::Speed);
        let engine = Engine::new(&config).map_err(|e| ModuleError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker).map_err(|e| ModuleError::Engine(format!("{e:#}")))?;
        start_ticker(&engine);
        let cache = cache_dir.map(|dir| DiskCache::new(dir, &engine));
        Ok(Runtime { engine, linker, cache, modules: Mutex::new(HashMap::new()), checked: Mutex::default() })
    }

    /// A runtime with the default on-disk cache.
    pub fn with_default_cache() -> Result<Self, ModuleError> {
        Self::new(cache::default_dir())
    }

    /// Loads the module at `path` (compiled once per content hash, in memory and on disk).
    pub fn load_module(&self, path: &Path) -> Result<Arc<Module>, ModuleError> {
        let bytes =
            std::fs::read(path).map_err(|e| ModuleError::Io { path: path.to_path_buf(), message: e.to_string() })?;
        self.load_module_bytes(path, &bytes)
    }

    /// Loads a module from bytes (`.wasm` or `.wat` text); `source` only names it in messages.
    pub fn load_module_bytes(&self, source: &Path, bytes: &[u8]) -> Result<Arc<Module>, ModuleError> {
        let hash = cache::content_hash(bytes);
        if let Some(module) = self.modules.lock().unwrap_or_else(|p| p.into_inner()).get(&hash) {
            return Ok(module.clone());
        }
        let compiled = match &self.cache {
            Some(cache) if bytes.starts_with(b"\0asm") => cache.load_or_compile(&self.engine, &hash, bytes),
            _ => wasmtime::Module::new(&self.engine, bytes),
        }
        .map_err(|e| ModuleError::Compile(format!("{e:#}")))?;
        // The version first: a module built for another ABI is told so, not that its imports
        // differ from this one's.
        let schema = probe(&self.engine, &compiled)?;
        abi::check(&compiled).map_err(ModuleError::Contract)?;
        let manifest = manifest::read_manifest(bytes).map_err(ModuleError::Contract)?;
        let imports = compiled.imports().filter(|i| i.module() == abi::IMPORT_MODULE).map(|i| i.name());
        let info = ModuleInfo::new(manifest, imports, schema).map_err(ModuleError::Contract)?;
        let pre = self.linker.instantiate_pre(&compiled).map_err(|e| ModuleError::Contract(e.to_string()))?;
        let module = Arc::new(Module { source: source.to_path_buf(), hash: hash.clone(), info, pre });
        self.modules.lock().unwrap_or_else(|p| p.into_inner()).insert(hash, module.clone());
        Ok(module)
    }

    /// A fresh instance of `rule` (its module, initialised with its config, under its limits,
    /// granted its connector), running where `env` says.
    pub fn instantiate(&self, rule: &RuleNode, env: HostEnv) -> Result<NodeInstance, NodeError> {
        self.start(&rule.module, &rule.config, rule.limits, env, rule.connector.clone())
    }

    /// A fresh instance of a module outside any chain (tests, benches): initialised with
    /// `config`, under `limits`, with no connector.
    pub fn instantiate_module(
        &self,
        module: &Module,
        config: &[u8],
        limits: Limits,
        env: HostEnv,
    ) -> Result<NodeInstance, NodeError> {
        self.start(module, config, limits, env, None)
    }

    fn start(
        &self,
        module: &Module,
        config: &[u8],
        limits: Limits,
        env: HostEnv,
        action: Option<sluice_connectors::Granted>,
    ) -> Result<NodeInstance, NodeError> {
        let mut host = HostState::new(env.node, limits.memory_bytes, env.state, env.clock);
        host.action.granted = action;
        NodeInstance::new(&self.engine, &module.pre, host, config, limits)
    }

    /// Runs `init` with `config` on a scratch instance (empty state, no connector): what loading
    /// a chain checks of each node. `init` sees nothing but these, so a (module, config, limits)
    /// that passed once passes again and is not run twice — a reload that keeps a node, or a
    /// chain loaded again, costs no second `init` of it (a script node compiles its script there).
    pub fn check_config(
        &self,
        module: &Module,
        node: Arc<str>,
        config: &[u8],
        limits: Limits,
    ) -> Result<(), NodeError> {
        let key = (module.hash.clone(), config.to_vec(), limits);
        if self.checked.lock().unwrap_or_else(|p| p.into_inner()).contains(&key) {
            return Ok(());
        }
        self.instantiate_module(module, config, limits, HostEnv::scratch(node))?;
        self.checked.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
        Ok(())
    }
}

/// Calls `sluice_abi_version` on a scratch instance whose imports all trap (they are not
/// checked yet), then, when the module exports it, `sluice_config_schema`, whose JSON Schema it
/// returns. A module without the version export is left to [`abi::check`] to refuse.
fn probe(engine: &Engine, module: &wasmtime::Module) -> Result<Option<serde_json::Value>, ModuleError> {
    if module.get_export("sluice_abi_version").is_none() {
        return Ok(None);
    }
    // The largest cap a node may ask for: the node's own cap applies to its real instances.
    let host = HostState::new("abi-check".into(), limits::MAX_MEMORY, NodeHandles::default(), Clock::System);
    let mut store = Store::new(engine, host);
    store.limiter(|h| &mut h.limiter);
    store.set_epoch_deadline(ticks(Duration::from_secs(5)));
    let mut linker = Linker::new(engine);
    let (instance, version) = (|| {
        linker.define_unknown_imports_as_traps(module)?;
        let instance = linker.instantiate(&mut store, module)?;
        let f = instance.get_typed_func::<(), u32>(&mut store, "sluice_abi_version")?;
        Ok::<_, wasmtime::Error>((instance, f.call(&mut store, ())?))
    })()
    .map_err(|e| ModuleError::Contract(format!("sluice_abi_version failed: {e}")))?;
    if version != abi::ABI_VERSION {
        return Err(ModuleError::Contract(format!(
            "module speaks ABI version {version}; this engine speaks version {} (rebuild it against a matching \
             sluice-sdk)",
            abi::ABI_VERSION
        )));
    }
    config_schema(&mut store, &instance).map_err(|e| ModuleError::Contract(format!("{}: {e}", manifest::SCHEMA_EXPORT)))
}

/// Calls `sluice_config_schema() -> i64` (`ptr << 32 | len` of JSON in the guest's memory), if
/// the module exports it.
fn config_schema(
    store: &mut Store<HostState>,
    instance: &wasmtime::Instance,
) -> Result<Option<serde_json::Value>, String> {
    let Some(export) = instance.get_func(&mut *store, manifest::SCHEMA_EXPORT) else { return Ok(None) };
    let f = export.typed::<(), i64>(&*store).map_err(|e| format!("wrong type: {e}"))?;
    let packed = f.call(&mut *store, ()).map_err(|e| format!("failed: {e}"))? as u64;
    let (ptr, len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
    let memory = instance.get_memory(&mut *store, "memory").ok_or("the module exports no `memory`")?;
    let bytes = memory
        .data(&*store)
        .get(ptr..ptr.saturating_add(len))
        .ok_or_else(|| format!("returned {ptr}+{len}, outside the module's memory"))?;
    serde_json::from_slice(bytes).map(Some).map_err(|e| format!("returned JSON that does not parse: {e}"))
}

/// Advances the engine's epoch every [`TICK`] while the engine lives.
fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new().name("sluice-epoch".into()).spawn(move || {
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(TICK);
        }
    });
    if let Err(err) = spawned {
        tracing::error!(%err, "cannot start the epoch ticker: deadlines will not fire");
    }
}

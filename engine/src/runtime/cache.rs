//! Compiled modules cached on disk by content hash.
//!
//! Compiling a rule with Cranelift takes tens of milliseconds (a JavaScript engine module,
//! seconds); loading the serialized artifact takes about one. The key is the SHA-256 of the wasm
//! bytes plus the engine's compatibility hash (wasmtime version and compilation settings), so an
//! artifact is only ever loaded into an engine that produced an identical one.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::{Engine, Module};

/// SHA-256 of the module bytes, hex.
pub use sluice_core::content_hash;

/// Where compiled modules are kept: `$SLUICE_CACHE_DIR`, else `$XDG_CACHE_HOME/sluice/modules`,
/// else `~/.cache/sluice/modules`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("sluice").join("modules"))
}

#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
    engine_key: String,
}

impl DiskCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        DiskCache { dir, engine_key: format!("{:016x}", h.finish()) }
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}-{}.cwasm", self.engine_key))
    }

    /// Compiles `bytes`, or loads the artifact a previous run left. Cache trouble (an unwritable
    /// directory, a corrupt file) only costs a compile: it never fails the load.
    pub fn load_or_compile(&self, engine: &Engine, hash: &str, bytes: &[u8]) -> wasmtime::Result<Module> {
        let path = self.path(hash);
        if path.exists() {
            // SAFETY: the file's name carries the content hash and this engine's compatibility
            // hash, and it is only written by `store` below from `Module::serialize` of the same
            // engine configuration; wasmtime additionally checks the artifact's header.
            match unsafe { Module::deserialize_file(engine, &path) } {
                Ok(module) => return Ok(module),
                Err(err) => tracing::warn!(path = %path.display(), %err, "ignoring unusable cached module"),
            }
        }
        let module = Module::new(engine, bytes)?;
        if let Err(err) = store(&path, &module) {
            tracing::debug!(path = %path.display(), %err, "could not cache compiled module");
        }
        Ok(module)
    }
}

fn store(path: &Path, module: &Module) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Unique per call, not only per process: two threads compiling the same module at once
    // (two workers, a reload) must not write into one temp file and rename it half-written.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("{}-{n}.tmp", std::process::id()));
    let bytes = module.serialize().map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

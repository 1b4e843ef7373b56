//! Safe wrappers over the host's services: the only way a guest reaches the outside.
//!
//! Inside wasm each call crosses to the engine; natively (in `cargo test`) it goes to the
//! [`crate::testing`] harness, which plays the host. There is no WASI: a guest has no files,
//! sockets, threads or system clock of its own — use [`clock::now_ms`], not `SystemTime::now`.

/// Log lines, shown by the engine with the node's id.
pub mod log {
    /// Severity, as the ABI numbers it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    pub enum Level {
        Trace = 0,
        Debug = 1,
        Info = 2,
        Warn = 3,
        Error = 4,
    }

    pub fn log(level: Level, text: &str) {
        #[cfg(target_arch = "wasm32")]
        // SAFETY: pointer and length describe a live string.
        unsafe {
            crate::abi::imports::log(level as u32, text.as_ptr(), text.len())
        }
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::native::log(level, text)
    }

    pub fn debug(text: &str) {
        log(Level::Debug, text)
    }
    pub fn info(text: &str) {
        log(Level::Info, text)
    }
    pub fn warn(text: &str) {
        log(Level::Warn, text)
    }
    pub fn error(text: &str) {
        log(Level::Error, text)
    }
}

/// Processing time, owned by the host (the guest has no clock of its own).
pub mod clock {
    /// Milliseconds since the Unix epoch, as the host sees them.
    pub fn now_ms() -> i64 {
        #[cfg(target_arch = "wasm32")]
        // SAFETY: a plain call with no arguments.
        unsafe {
            crate::abi::imports::now_ms()
        }
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::native::now_ms()
    }
}

/// Keyed state of this node, kept by the host: it outlives the module instance (a trap, a hot
/// reload), and is scoped to the node's id.
pub mod state {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    pub fn get(key: &[u8]) -> Option<Vec<u8>> {
        #[cfg(target_arch = "wasm32")]
        {
            // SAFETY: pointer and length describe a live slice; `take_value` writes exactly the
            // `len` bytes announced by `state_get` into a buffer of that size.
            unsafe {
                let len = crate::abi::imports::state_get(key.as_ptr(), key.len());
                if len < 0 {
                    return None;
                }
                let mut value = vec![0u8; len as usize];
                crate::abi::imports::take_value(value.as_mut_ptr());
                Some(value)
            }
        }
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::native::state_get(key)
    }

    pub fn put(key: &[u8], value: &[u8]) {
        #[cfg(target_arch = "wasm32")]
        // SAFETY: both pointer/length pairs describe live slices.
        unsafe {
            crate::abi::imports::state_put(key.as_ptr(), key.len(), value.as_ptr(), value.len())
        }
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::native::state_put(key, value)
    }

    pub fn delete(key: &[u8]) {
        #[cfg(target_arch = "wasm32")]
        // SAFETY: pointer and length describe a live slice.
        unsafe {
            crate::abi::imports::state_delete(key.as_ptr(), key.len())
        }
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::native::state_delete(key)
    }

    /// Reads a JSON-encoded value; `Err` if it is there but does not decode as `T`.
    pub fn get_json<T: DeserializeOwned>(key: &str) -> crate::Result<Option<T>> {
        match get(key.as_bytes()) {
            None => Ok(None),
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        }
    }

    pub fn put_json<T: Serialize>(key: &str, value: &T) -> crate::Result<()> {
        put(key.as_bytes(), &serde_json::to_vec(value)?);
        Ok(())
    }
}

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

/// Windows kept by the host: declare them in `init`, add events in `on_msg`, get the result in
/// [`crate::Node::on_window`] when the watermark closes them. The event's own time (`msg.ts()`)
/// decides its windows; the watermark the source stamped on the incoming message decides
/// lateness.
pub mod window {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use crate::windows::{Mode, WindowKind, WindowSpec};
    use crate::{Error, Result};

    /// A window this node declared.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Window {
        handle: i32,
    }

    /// What adding an event did.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Added {
        Accepted,
        /// All of the event's windows had closed: route the message to `Late` (or drop it).
        Late,
    }

    /// Declares a window; see [`Window::tumbling`] and friends.
    #[derive(Debug, Clone)]
    pub struct WindowBuilder {
        spec: WindowSpec,
    }

    impl Window {
        fn builder(name: &str, kind: WindowKind) -> WindowBuilder {
            WindowBuilder {
                spec: WindowSpec { name: name.into(), kind, grace_ms: 0, mode: Mode::Aggregate, early_updates: false },
            }
        }

        /// Fixed, non-overlapping windows of `size_ms`.
        pub fn tumbling(name: &str, size_ms: u64) -> WindowBuilder {
            Self::builder(name, WindowKind::Tumbling { size_ms })
        }

        /// Windows of `size_ms` starting every `advance_ms` (an event lands in several).
        pub fn hopping(name: &str, size_ms: u64, advance_ms: u64) -> WindowBuilder {
            Self::builder(name, WindowKind::Hopping { size_ms, advance_ms })
        }

        /// Per-key sessions that close after `gap_ms` without events.
        pub fn session(name: &str, gap_ms: u64) -> WindowBuilder {
            Self::builder(name, WindowKind::Session { gap_ms })
        }

        /// A window of the kind a config names (`{"type": "tumbling", "sizeMs": …}` …).
        pub fn of_kind(name: &str, kind: WindowKind) -> WindowBuilder {
            Self::builder(name, kind)
        }

        /// Adds a number: the host keeps count, sum, avg, min, max, first, last and stddev.
        pub fn add(&self, key: &str, ts: i64, value: f64) -> Result<Added> {
            status(backend::add(self.handle, key, ts, value))
        }

        /// Adds an item to a group-collect window: all items come back on close.
        pub fn collect<T: Serialize>(&self, key: &str, ts: i64, item: &T) -> Result<Added> {
            status(backend::item(self.handle, key, ts, 0, &serde_json::to_vec(item)?))
        }

        /// Adds an item to the left side of a join window.
        pub fn join_left<T: Serialize>(&self, key: &str, ts: i64, item: &T) -> Result<Added> {
            status(backend::item(self.handle, key, ts, 0, &serde_json::to_vec(item)?))
        }

        /// Adds an item to the right side of a join window.
        pub fn join_right<T: Serialize>(&self, key: &str, ts: i64, item: &T) -> Result<Added> {
            status(backend::item(self.handle, key, ts, 1, &serde_json::to_vec(item)?))
        }

        /// Updates the node's own accumulator in each window of the event (`None` in a new
        /// window). On close, [`crate::ClosedWindow::folds`] holds it (a merged session: one per
        /// part, to merge in `on_window`).
        pub fn fold<A: Serialize + DeserializeOwned>(
            &self,
            key: &str,
            ts: i64,
            mut update: impl FnMut(Option<A>) -> A,
        ) -> Result<Added> {
            let Some(current) = backend::fold_get(self.handle, key, ts)? else {
                return Ok(Added::Late);
            };
            let current: Vec<Option<A>> = serde_json::from_slice(&current)?;
            let next: Vec<A> = current.into_iter().map(&mut update).collect();
            status(backend::fold_put(self.handle, key, ts, &serde_json::to_vec(&next)?))
        }
    }

    impl WindowBuilder {
        /// How long after its end a window still takes late-arriving events.
        pub fn grace_ms(mut self, grace: u64) -> Self {
            self.spec.grace_ms = grace;
            self
        }
        /// Keep every item ([`Window::collect`]).
        pub fn collect(mut self) -> Self {
            self.spec.mode = Mode::Collect;
            self
        }
        /// Keep items of two sides ([`Window::join_left`], [`Window::join_right`]).
        pub fn join(mut self) -> Self {
            self.spec.mode = Mode::Join;
            self
        }
        /// Keep the node's own accumulator ([`Window::fold`]).
        pub fn fold(mut self) -> Self {
            self.spec.mode = Mode::Fold;
            self
        }
        /// Also call `on_window` (with `early: true`) after every event.
        pub fn early_updates(mut self) -> Self {
            self.spec.early_updates = true;
            self
        }
        /// Declares the window (in `init`). Declaring it again with the same definition — after
        /// a restart or a reload — reattaches its state; a different definition is an error.
        pub fn define(self) -> Result<Window> {
            self.spec.validate().map_err(Error::new)?;
            let handle = backend::define(&serde_json::to_vec(&self.spec)?)?;
            Ok(Window { handle })
        }
    }

    fn status(code: Result<i32>) -> Result<Added> {
        match code? {
            0 => Ok(Added::Accepted),
            _ => Ok(Added::Late),
        }
    }

    /// The watermark stamped on the message being handled (`i64::MIN` before any event).
    pub fn watermark() -> i64 {
        backend::watermark()
    }

    #[cfg(target_arch = "wasm32")]
    mod backend {
        use crate::abi::imports as raw;
        use crate::{Error, Result};

        fn error(code: i64) -> Error {
            let text = crate::abi::imports::take_staged((-code) as usize);
            Error::new(String::from_utf8_lossy(&text).into_owned())
        }

        fn check(code: i32) -> Result<i32> {
            if code < 0 { Err(error(code as i64)) } else { Ok(code) }
        }

        pub fn define(spec: &[u8]) -> Result<i32> {
            // SAFETY: pointer and length describe a live slice.
            check(unsafe { raw::window_define(spec.as_ptr(), spec.len()) })
        }
        pub fn add(h: i32, key: &str, ts: i64, v: f64) -> Result<i32> {
            // SAFETY: pointer and length describe a live string.
            check(unsafe { raw::window_add(h, key.as_ptr(), key.len(), ts, v) })
        }
        pub fn item(h: i32, key: &str, ts: i64, side: i32, item: &[u8]) -> Result<i32> {
            // SAFETY: both pointer/length pairs describe live slices.
            check(unsafe { raw::window_item(h, key.as_ptr(), key.len(), ts, side, item.as_ptr(), item.len()) })
        }
        pub fn fold_get(h: i32, key: &str, ts: i64) -> Result<Option<Vec<u8>>> {
            // SAFETY: pointer and length describe a live string.
            let code = unsafe { raw::window_fold_get(h, key.as_ptr(), key.len(), ts) };
            match code {
                i64::MIN..=-2 => Err(error(code + 1)),
                -1 => Ok(None),
                len => Ok(Some(crate::abi::imports::take_staged(len as usize))),
            }
        }
        pub fn fold_put(h: i32, key: &str, ts: i64, vals: &[u8]) -> Result<i32> {
            // SAFETY: both pointer/length pairs describe live slices.
            check(unsafe { raw::window_fold_put(h, key.as_ptr(), key.len(), ts, vals.as_ptr(), vals.len()) })
        }
        pub fn watermark() -> i64 {
            // SAFETY: a plain call.
            unsafe { raw::watermark() }
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod backend {
        pub use crate::testing::native::{
            window_add as add, window_define as define, window_fold_get as fold_get, window_fold_put as fold_put,
            window_item as item, window_watermark as watermark,
        };
    }
}

/// Tables: keyed latest values shared by the chain's nodes by name (a device registry fed by one
/// node, looked up by another to enrich events).
pub mod table {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    pub fn get<T: DeserializeOwned>(table: &str, key: &str) -> crate::Result<Option<T>> {
        #[cfg(target_arch = "wasm32")]
        let raw = {
            // SAFETY: both pointer/length pairs describe live strings.
            let len = unsafe { crate::abi::imports::table_get(table.as_ptr(), table.len(), key.as_ptr(), key.len()) };
            (len >= 0).then(|| crate::abi::imports::take_staged(len as usize))
        };
        #[cfg(not(target_arch = "wasm32"))]
        let raw = crate::testing::native::table_get(table, key);
        match raw {
            None => Ok(None),
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        }
    }

    pub fn put<T: Serialize>(table: &str, key: &str, value: &T) -> crate::Result<()> {
        let bytes = serde_json::to_vec(value)?;
        #[cfg(target_arch = "wasm32")]
        // SAFETY: all three pointer/length pairs describe live slices.
        unsafe {
            crate::abi::imports::table_put(
                table.as_ptr(),
                table.len(),
                key.as_ptr(),
                key.len(),
                bytes.as_ptr(),
                bytes.len(),
            )
        };
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::native::table_put(table, key, bytes);
        Ok(())
    }

    pub fn delete(table: &str, key: &str) {
        #[cfg(target_arch = "wasm32")]
        // SAFETY: both pointer/length pairs describe live strings.
        unsafe {
            crate::abi::imports::table_delete(table.as_ptr(), table.len(), key.as_ptr(), key.len())
        };
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::native::table_delete(table, key);
    }
}

/// Telemetry history kept by the host (ABI.md §13b): per series name (`timeseries` for what a
/// chain's save-timeseries nodes write), entity and key, the points saved, bounded per key. One
/// node appends (`table-writer` with `series`), another queries (`get-telemetry`); the types and
/// the query semantics are in [`crate::series`].
pub mod series {
    use crate::series::{Answer, KeyPoint, Query};

    /// Saves `points` of `entity` (an originator, `DEVICE/name`) in series `name`; the host
    /// evicts the oldest points of a key past its bound.
    pub fn append(name: &str, entity: &str, points: &[KeyPoint]) -> crate::Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let bytes = serde_json::to_vec(points)?;
        #[cfg(target_arch = "wasm32")]
        let result =
            {
                // SAFETY: all three pointer/length pairs describe live slices.
                let n = unsafe {
                    crate::abi::imports::series_append(
                        name.as_ptr(),
                        name.len(),
                        entity.as_ptr(),
                        entity.len(),
                        bytes.as_ptr(),
                        bytes.len(),
                    )
                };
                match n {
                    0.. => Ok(()),
                    n => Err(String::from_utf8_lossy(&crate::abi::imports::take_staged(n.unsigned_abs() as usize))
                        .into_owned()),
                }
            };
        #[cfg(not(target_arch = "wasm32"))]
        let result = crate::testing::native::series_append(name, entity, &bytes);
        result.map_err(|e| crate::Error::new(format!("series `{name}`: {e}")))
    }

    /// Reads `entity`'s keys of series `name` as `query` asks.
    pub fn query(name: &str, entity: &str, query: &Query) -> crate::Result<Answer> {
        let bytes = serde_json::to_vec(query)?;
        #[cfg(target_arch = "wasm32")]
        let result = {
            // SAFETY: all three pointer/length pairs describe live slices.
            let n = unsafe {
                crate::abi::imports::series_query(
                    name.as_ptr(),
                    name.len(),
                    entity.as_ptr(),
                    entity.len(),
                    bytes.as_ptr(),
                    bytes.len(),
                )
            };
            let staged = crate::abi::imports::take_staged(n.unsigned_abs() as usize);
            if n >= 0 { Ok(staged) } else { Err(String::from_utf8_lossy(&staged).into_owned()) }
        };
        #[cfg(not(target_arch = "wasm32"))]
        let result = crate::testing::native::series_query(name, entity, &bytes);
        let answer = result.map_err(|e| crate::Error::new(format!("series `{name}`: {e}")))?;
        Ok(serde_json::from_slice(&answer)?)
    }
}

/// Processing-time timers: `set(key, at_ms)` asks for [`crate::Node::on_timer`] once the host's
/// clock reaches `at_ms` (a key set again moves its timer). Timers are kept by the host with the
/// node's state, so they survive crashes, reloads and restarts.
pub mod timer {
    pub fn set(key: &str, at_ms: i64) {
        #[cfg(target_arch = "wasm32")]
        // SAFETY: pointer and length describe a live string.
        unsafe {
            crate::abi::imports::timer_set(key.as_ptr(), key.len(), at_ms)
        };
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::native::timer_set(key, at_ms);
    }

    pub fn cancel(key: &str) {
        #[cfg(target_arch = "wasm32")]
        // SAFETY: pointer and length describe a live string.
        unsafe {
            crate::abi::imports::timer_cancel(key.as_ptr(), key.len())
        };
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::native::timer_cancel(key);
    }
}

/// Actions: the node's call to the connector its chain granted it (`"connector": NAME` on the
/// node in the chain file; the chain's `connectors` say what NAME is — a Kafka producer, an MQTT
/// client, an HTTP client, or a file while testing). The node builds the request; the host
/// delivers it and answers:
///
/// | connector kind | request | answer |
/// |---|---|---|
/// | Kafka | `{"topic", "key"?, "headers"?: {..}, "value"}` | `{"partition", "offset"}` |
/// | MQTT | `{"topic", "qos"?, "retain"?, "payload"}` | `{}` |
/// | HTTP | `{"method", "url", "headers"?: {..}, "body"?}` | `{"status", "headers", "body"}` |
/// | file | any of the above | `{"written": true}` (the request is appended as a JSON line) |
///
/// A node without a connector, or a connector that fails, gets `Err` with the host's reason —
/// returned from `on_msg`, it routes the message to `Failure`. The call blocks the node until
/// the host answers (that is what makes "acked when delivered" hold).
pub mod action {
    use serde_json::Value;

    pub fn call(request: &Value) -> crate::Result<Value> {
        let bytes = serde_json::to_vec(request)?;
        #[cfg(target_arch = "wasm32")]
        let answer: Result<Vec<u8>, String> = {
            // SAFETY: pointer and length describe a live buffer.
            let r = unsafe { crate::abi::imports::action_call(bytes.as_ptr(), bytes.len()) };
            if r >= 0 {
                Ok(crate::abi::imports::take_staged(r as usize))
            } else {
                Err(String::from_utf8_lossy(&crate::abi::imports::take_staged((-r - 1) as usize)).into_owned())
            }
        };
        #[cfg(not(target_arch = "wasm32"))]
        let answer = crate::testing::native::action_call(&bytes);
        match answer {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
            Err(reason) => Err(crate::Error::new(reason)),
        }
    }
}

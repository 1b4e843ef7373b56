//! The native test harness: run a node with plain `cargo test`, no wasm, no engine.
//!
//! It plays the engine's part exactly where a rule author can observe it: the config goes through
//! the same parser as at load, an `Err` sends the incoming message to `Failure` with
//! `metadata.error`, a forwarded message is the input unchanged, and the host services (clock,
//! state, log) answer from the driver. The engine's own tests run the same nodes in wasmtime and
//! check that both agree.
//!
//! ```
//! use sluice_sdk::prelude::*;
//! use sluice_sdk::testing::TestDriver;
//!
//! #[derive(Deserialize)]
//! struct Config { min: f64 }
//!
//! #[filter]
//! fn hot(msg: &Msg, cfg: &Config) -> Result<bool> {
//!     Ok(msg.number("temperature").is_some_and(|t| t > cfg.min))
//! }
//!
//! let mut driver = TestDriver::filter(hot, Config { min: 20.0 });
//! let out = driver.send(Msg::telemetry("T-1", json!({"temperature": "21"}))).unwrap();
//! assert_eq!(out.relations(), ["True"]);
//! ```

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::ConfigError;
use crate::host::log::Level;
use crate::{Msg, Node, Output, Outputs, Result, relation};

type Handler = Box<dyn FnMut(Msg, &mut Outputs) -> Result<()>>;

/// Drives one node natively, as the engine would drive its wasm build.
pub struct TestDriver {
    handler: Handler,
    host: native::NativeHost,
}

/// What one message produced: `(relation, message)` pairs in emission order.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub outputs: Vec<(String, Msg)>,
}

impl Outcome {
    /// The relations, in order.
    pub fn relations(&self) -> Vec<&str> {
        self.outputs.iter().map(|(r, _)| r.as_str()).collect()
    }

    /// The messages, in order.
    pub fn messages(&self) -> Vec<&Msg> {
        self.outputs.iter().map(|(_, m)| m).collect()
    }

    /// The single output, if there is exactly one.
    pub fn single(&self) -> Option<&(String, Msg)> {
        match self.outputs.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

impl TestDriver {
    fn with_handler(handler: Handler) -> Self {
        TestDriver { handler, host: native::NativeHost::default() }
    }

    /// A `#[filter]` function with its config.
    pub fn filter<C: 'static>(f: fn(&Msg, &C) -> Result<bool>, config: C) -> Self {
        Self::with_handler(Box::new(move |msg, out| {
            crate::node::filter_outputs(f(&msg, &config)?, out);
            Ok(())
        }))
    }

    /// A `#[transform]` function with its config.
    pub fn transform<C: 'static>(f: fn(Msg, &C) -> Result<Msg>, config: C) -> Self {
        Self::with_handler(Box::new(move |msg, out| {
            crate::node::transform_outputs(f(msg, &config)?, out);
            Ok(())
        }))
    }

    /// A [`Node`] built from a typed config.
    pub fn node<N: Node>(config: N::Config) -> Result<Self> {
        let mut driver = Self::with_handler(Box::new(|_, _| Ok(())));
        let mut node = driver.host.enter(|| N::init(config))?;
        driver.handler = Box::new(move |msg, out| node.on_msg(msg, out));
        Ok(driver)
    }

    /// A [`Node`] built from config JSON, parsed exactly as at load: a bad config gives the
    /// same [`ConfigError`] (with the field's path) the engine reports.
    pub fn node_from_json<N: Node>(config: &str) -> std::result::Result<Self, ConfigError> {
        let parsed = crate::config::parse::<N::Config>(config.as_bytes())?;
        Self::node::<N>(parsed).map_err(|err| ConfigError { field: String::new(), message: err.to_string() })
    }

    /// Sets the host clock (`clock::now_ms`) for the following messages.
    pub fn at(mut self, now_ms: i64) -> Self {
        self.host.now_ms = Some(now_ms);
        self
    }

    /// Sets the host clock in place.
    pub fn set_time(&mut self, now_ms: i64) {
        self.host.now_ms = Some(now_ms);
    }

    /// Sends one message through the node.
    pub fn send(&mut self, msg: Msg) -> Result<Outcome> {
        let mut out = Outputs::new();
        let handler = &mut self.handler;
        let result = self.host.enter(|| handler(msg.clone(), &mut out));
        let outputs = match result {
            Ok(()) => out
                .drain()
                .enumerate()
                .map(|(n, (relation, output))| match output {
                    Output::Forward => (relation, msg.clone()),
                    Output::Msg(mut m) => {
                        if m.id.is_empty() {
                            m.id = crate::derived_id(&msg.id, n);
                        }
                        (relation, m)
                    }
                })
                .collect(),
            Err(err) => vec![(relation::FAILURE.to_string(), msg.with_meta("error", err.message()))],
        };
        Ok(Outcome { outputs })
    }

    /// Sends a message given as JSON (a full TbMsg).
    pub fn send_json(&mut self, msg: Value) -> Result<Outcome> {
        self.send(serde_json::from_value(msg)?)
    }

    /// Log lines the node wrote, in order.
    pub fn logs(&self) -> &[(Level, String)] {
        &self.host.logs
    }

    /// The node's state as the host holds it.
    pub fn state(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.host.state
    }
}

/// The host's side natively: what `crate::host` calls when not compiled to wasm.
pub(crate) mod native {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use crate::host::log::Level;

    #[derive(Debug, Default)]
    pub(crate) struct NativeHost {
        pub now_ms: Option<i64>,
        pub state: BTreeMap<Vec<u8>, Vec<u8>>,
        pub logs: Vec<(Level, String)>,
    }

    thread_local! {
        static CURRENT: RefCell<Option<NativeHost>> = const { RefCell::new(None) };
    }

    impl NativeHost {
        /// Runs `f` with this host answering the node's host calls.
        pub fn enter<T>(&mut self, f: impl FnOnce() -> T) -> T {
            CURRENT.with(|c| *c.borrow_mut() = Some(std::mem::take(self)));
            let result = f();
            CURRENT.with(|c| *self = c.borrow_mut().take().unwrap_or_default());
            result
        }
    }

    fn with<T>(f: impl FnOnce(&mut NativeHost) -> T) -> Option<T> {
        CURRENT.with(|c| c.borrow_mut().as_mut().map(f))
    }

    pub fn log(level: Level, text: &str) {
        if with(|h| h.logs.push((level, text.to_string()))).is_none() {
            eprintln!("[{level:?}] {text}");
        }
    }

    pub fn now_ms() -> i64 {
        with(|h| h.now_ms).flatten().unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map(|d| d.as_millis() as i64).unwrap_or(0)
        })
    }

    pub fn state_get(key: &[u8]) -> Option<Vec<u8>> {
        with(|h| h.state.get(key).cloned()).flatten()
    }

    pub fn state_put(key: &[u8], value: &[u8]) {
        with(|h| h.state.insert(key.to_vec(), value.to_vec()));
    }

    pub fn state_delete(key: &[u8]) {
        with(|h| h.state.remove(key));
    }
}

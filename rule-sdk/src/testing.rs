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
//! #[derive(Deserialize, JsonSchema)]
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

use crate::ClosedWindow;
use crate::config::ConfigError;
use crate::host::log::Level;
use crate::{Msg, Node, Output, Outputs, Result, relation};

type Handler = Box<dyn FnMut(Msg, &mut Outputs) -> Result<()>>;
type WindowHandler = Box<dyn FnMut(ClosedWindow, &mut Outputs) -> Result<()>>;
type TimerHandler = Box<dyn FnMut(crate::windows::Timer, &mut Outputs) -> Result<()>>;

/// Drives one node natively, as the engine would drive its wasm build.
///
/// Event time is each message's `ts`; the watermark stamped on a message is the greatest `ts`
/// sent so far minus the lateness ([`TestDriver::with_lateness`]), as a single-partition source
/// would stamp it. Windows that the watermark closes are handed to `on_window` right after the
/// message, and their outputs are part of that message's [`Outcome`]; [`TestDriver::flush`] closes
/// the rest, as the end of a finite input does.
pub struct TestDriver {
    handler: Handler,
    on_window: Option<WindowHandler>,
    on_timer: Option<TimerHandler>,
    host: native::NativeHost,
    node_id: String,
    lateness: i64,
    max_ts: Option<i64>,
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
        TestDriver {
            handler,
            on_window: None,
            on_timer: None,
            host: native::NativeHost::default(),
            node_id: "node".into(),
            lateness: 0,
            max_ts: None,
        }
    }

    /// The node's id (it prefixes window ids, and so the ids of window results).
    pub fn named(mut self, id: &str) -> Self {
        self.node_id = id.into();
        self
    }

    /// How far the watermark trails the greatest `ts` sent.
    pub fn with_lateness(mut self, ms: i64) -> Self {
        self.lateness = ms;
        self
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
        let node = std::rc::Rc::new(std::cell::RefCell::new(driver.host.enter(|| N::init(config))?));
        let (for_windows, for_timers) = (node.clone(), node.clone());
        driver.handler = Box::new(move |msg, out| node.borrow_mut().on_msg(msg, out));
        driver.on_window = Some(Box::new(move |closed, out| for_windows.borrow_mut().on_window(closed, out)));
        driver.on_timer = Some(Box::new(move |timer, out| for_timers.borrow_mut().on_timer(timer, out)));
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

    /// Answers the node's actions with `respond` (a stand-in for the connector: an HTTP server,
    /// a broker) instead of the file connector's `{"written": true}`. `Err(reason)` plays a
    /// failed delivery.
    pub fn with_actions(mut self, respond: impl FnMut(&Value) -> std::result::Result<Value, String> + 'static) -> Self {
        self.host.responder = native::Responder(Some(Box::new(respond)));
        self
    }

    /// Every action request the node made so far, in order.
    pub fn actions(&self) -> &[Value] {
        &self.host.actions
    }

    /// Sets the host clock in place.
    pub fn set_time(&mut self, now_ms: i64) {
        self.host.now_ms = Some(now_ms);
    }

    /// Sends one message through the node.
    pub fn send(&mut self, msg: Msg) -> Result<Outcome> {
        let max_ts = self.max_ts.map_or(msg.ts(), |m| m.max(msg.ts()));
        self.max_ts = Some(max_ts);
        let watermark = max_ts.saturating_sub(self.lateness);
        self.host.watermark = watermark;
        let mut out = Outputs::new();
        let handler = &mut self.handler;
        let result = self.host.enter(|| handler(msg.clone(), &mut out));
        let mut outputs = match result {
            Ok(()) => out
                .drain()
                .enumerate()
                .map(|(n, (relation, output))| match output {
                    Output::Forward => (relation, msg.clone()),
                    Output::Msg(mut m) => {
                        if m.id().is_empty() {
                            m.set_id(crate::derived_id(msg.id(), n));
                        }
                        (relation, m)
                    }
                })
                .collect(),
            Err(err) => vec![(relation::FAILURE.to_string(), msg.with_meta("error", err.message()))],
        };
        outputs.extend(self.fire(watermark)?);
        Ok(Outcome { outputs })
    }

    /// Moves the host clock to `now_ms` and fires the timers that came due, in time order.
    pub fn advance_to(&mut self, now_ms: i64) -> Result<Outcome> {
        self.host.now_ms = Some(now_ms);
        let mut due: Vec<(i64, String)> =
            self.host.timers.iter().filter(|(_, at)| **at <= now_ms).map(|(k, at)| (*at, k.clone())).collect();
        due.sort();
        let mut outputs = Vec::new();
        for (at, key) in due {
            self.host.timers.remove(&key);
            let timer =
                crate::windows::Timer { id: format!("{}/timer/{key}/{at}", self.node_id), key, at, now: now_ms };
            let parent = timer.id.clone();
            let Some(on_timer) = self.on_timer.as_mut() else { break };
            let mut out = Outputs::new();
            self.host.enter(|| on_timer(timer, &mut out))?;
            for (n, (relation, output)) in out.drain().enumerate() {
                match output {
                    Output::Forward => crate::bail!("a timer has no incoming message to forward"),
                    Output::Msg(mut m) => {
                        if m.id().is_empty() {
                            m.set_id(crate::derived_id(&parent, n));
                        }
                        outputs.push((relation, m));
                    }
                }
            }
        }
        Ok(Outcome { outputs })
    }

    /// Closes every open window, as the end of a finite input does; returns their outputs.
    pub fn flush(&mut self) -> Result<Outcome> {
        Ok(Outcome { outputs: self.fire(i64::MAX)? })
    }

    /// Early updates the last message caused, then windows the watermark closed.
    fn fire(&mut self, watermark: i64) -> Result<Vec<(String, Msg)>> {
        let mut closed = std::mem::take(&mut self.host.early);
        for store in &mut self.host.windows {
            closed.extend(store.due(watermark));
        }
        let mut outputs = Vec::new();
        let Some(on_window) = self.on_window.as_mut() else { return Ok(outputs) };
        for c in closed {
            let window = ClosedWindow::new(&self.node_id, c);
            let parent = window.id.clone();
            let mut out = Outputs::new();
            match self.host.enter(|| on_window(window, &mut out)) {
                Ok(()) => {
                    for (n, (relation, output)) in out.drain().enumerate() {
                        match output {
                            Output::Forward => crate::bail!("a closed window has no incoming message to forward"),
                            Output::Msg(mut m) => {
                                if m.id().is_empty() {
                                    m.set_id(crate::derived_id(&parent, n));
                                }
                                outputs.push((relation, m));
                            }
                        }
                    }
                }
                Err(err) => return Err(err),
            }
        }
        Ok(outputs)
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

    /// Bounds the telemetry histories as the host's `[state]` settings would.
    pub fn with_series_limits(mut self, limits: crate::series::Limits) -> Self {
        self.host.series_limits = limits;
        self
    }

    /// Saves points as another node of the chain would (a save-timeseries `table-writer`).
    pub fn put_series(&mut self, name: &str, entity: &str, points: &[crate::series::KeyPoint]) {
        let limits = self.host.series_limits;
        let keys = self.host.series.entry((name.to_string(), entity.to_string())).or_default();
        for p in points {
            keys.entry(p.key.clone()).or_default().insert(p.ts, p.value.clone(), &limits);
        }
    }

    /// Every point the host holds of `key` of `entity` in series `name`, oldest first.
    pub fn series(&self, name: &str, entity: &str, key: &str) -> Vec<crate::series::Point> {
        let all = crate::series::Query {
            keys: vec![key.to_string()],
            start_ts: i64::MIN,
            end_ts: i64::MAX,
            limit: usize::MAX,
            order: crate::series::Order::Asc,
            aggregation: crate::series::Aggregation::None,
        };
        let keys = self.host.series.get(&(name.to_string(), entity.to_string()));
        keys.and_then(|k| k.get(key)).map(|h| h.query(&all)).unwrap_or_default()
    }

    /// Writes a table entry as another node of the chain would (tables are shared by name).
    pub fn put_table<T: serde::Serialize>(&mut self, table: &str, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value)?;
        self.host.tables.entry(table.to_string()).or_default().insert(key.to_string(), bytes);
        Ok(())
    }

    /// A table entry as the node left it (`None` when absent or not JSON).
    pub fn table(&self, table: &str, key: &str) -> Option<Value> {
        let bytes = self.host.tables.get(table)?.get(key)?;
        serde_json::from_slice(bytes).ok()
    }
}

/// The host's side natively: what `crate::host` calls when not compiled to wasm.
pub(crate) mod native {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use crate::host::log::Level;
    use crate::windows::{Added, Closed, Side, WindowSpec, WindowStore};
    use crate::{Error, Result};

    #[derive(Debug, Default)]
    pub(crate) struct NativeHost {
        pub now_ms: Option<i64>,
        pub state: BTreeMap<Vec<u8>, Vec<u8>>,
        pub logs: Vec<(Level, String)>,
        pub watermark: i64,
        pub windows: Vec<WindowStore>,
        pub early: Vec<Closed>,
        pub tables: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
        /// Telemetry histories: (series, entity) → key → points, bounded by `series_limits`.
        pub series: BTreeMap<(String, String), BTreeMap<String, crate::series::History>>,
        pub series_limits: crate::series::Limits,
        pub timers: BTreeMap<String, i64>,
        /// Every action request the node made, in order.
        pub actions: Vec<serde_json::Value>,
        pub responder: Responder,
    }

    /// How the native host answers actions (default: as a file connector, `{"written": true}`).
    /// A stand-in connector: request → answer, or the reason it failed.
    pub(crate) type Respond = Box<dyn FnMut(&serde_json::Value) -> Result<serde_json::Value, String>>;

    #[derive(Default)]
    pub(crate) struct Responder(pub Option<Respond>);

    impl std::fmt::Debug for Responder {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(if self.0.is_some() { "Responder(custom)" } else { "Responder(file)" })
        }
    }

    pub fn action_call(request: &[u8]) -> Result<Vec<u8>, String> {
        let request: serde_json::Value =
            serde_json::from_slice(request).map_err(|e| format!("action request is not JSON: {e}"))?;
        let answer = with(|h| {
            h.actions.push(request.clone());
            match &mut h.responder.0 {
                Some(respond) => respond(&request),
                None => Ok(serde_json::json!({"written": true})),
            }
        });
        let answer = answer.unwrap_or_else(|| Err("actions need a TestDriver".into()))?;
        serde_json::to_vec(&answer).map_err(|e| format!("the answer cannot be serialized: {e}"))
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

    fn host<T>(f: impl FnOnce(&mut NativeHost) -> Result<T>) -> Result<T> {
        with(f).unwrap_or_else(|| Err(Error::new("windows and tables need a TestDriver")))
    }

    fn store(h: &mut NativeHost, handle: i32) -> Result<&mut WindowStore> {
        h.windows.get_mut(handle as usize).ok_or_else(|| Error::new(format!("no window with handle {handle}")))
    }

    fn landed(h: &mut NativeHost, handle: i32, key: &str, added: Added) -> i32 {
        match added {
            Added::Late => 1,
            Added::Windows(windows) => {
                let store = &h.windows[handle as usize];
                if store.spec.early_updates {
                    let early: Vec<_> = windows.iter().filter_map(|(start, _)| store.peek(key, *start)).collect();
                    h.early.extend(early);
                }
                0
            }
        }
    }

    pub fn window_define(spec: &[u8]) -> Result<i32> {
        let spec: WindowSpec = serde_json::from_slice(spec)?;
        host(|h| {
            if let Some(i) = h.windows.iter().position(|w| w.spec.name == spec.name) {
                if h.windows[i].spec != spec {
                    crate::bail!("window `{}` is already defined differently", spec.name);
                }
                return Ok(i as i32);
            }
            h.windows.push(WindowStore::new(spec));
            Ok(h.windows.len() as i32 - 1)
        })
    }

    pub fn window_add(handle: i32, key: &str, ts: i64, value: f64) -> Result<i32> {
        host(|h| {
            let wm = h.watermark;
            let added = store(h, handle)?.add_value(key, ts, wm, value);
            Ok(landed(h, handle, key, added))
        })
    }

    pub fn window_item(handle: i32, key: &str, ts: i64, side: i32, item: &[u8]) -> Result<i32> {
        let item: serde_json::Value = serde_json::from_slice(item)?;
        let side = if side == 0 { Side::Left } else { Side::Right };
        host(|h| {
            let wm = h.watermark;
            let added = store(h, handle)?.add_item(key, ts, wm, side, &item);
            Ok(landed(h, handle, key, added))
        })
    }

    pub fn window_fold_get(handle: i32, key: &str, ts: i64) -> Result<Option<Vec<u8>>> {
        host(|h| {
            let wm = h.watermark;
            match store(h, handle)?.folds(key, ts, wm) {
                None => Ok(None),
                Some(folds) => Ok(Some(serde_json::to_vec(&folds)?)),
            }
        })
    }

    pub fn window_fold_put(handle: i32, key: &str, ts: i64, values: &[u8]) -> Result<i32> {
        let values: Vec<serde_json::Value> = serde_json::from_slice(values)?;
        host(|h| {
            let wm = h.watermark;
            let added = store(h, handle)?.put_folds(key, ts, wm, values);
            Ok(landed(h, handle, key, added))
        })
    }

    pub fn window_watermark() -> i64 {
        with(|h| h.watermark).unwrap_or(i64::MIN)
    }

    pub fn table_get(table: &str, key: &str) -> Option<Vec<u8>> {
        with(|h| h.tables.get(table).and_then(|t| t.get(key)).cloned()).flatten()
    }

    pub fn table_put(table: &str, key: &str, value: Vec<u8>) {
        with(|h| h.tables.entry(table.to_string()).or_default().insert(key.to_string(), value));
    }

    pub fn timer_set(key: &str, at: i64) {
        with(|h| h.timers.insert(key.to_string(), at));
    }

    pub fn timer_cancel(key: &str) {
        with(|h| h.timers.remove(key));
    }

    pub fn table_delete(table: &str, key: &str) {
        with(|h| h.tables.get_mut(table).map(|t| t.remove(key)));
    }

    pub fn series_append(name: &str, entity: &str, points: &[u8]) -> Result<(), String> {
        let points: Vec<crate::series::KeyPoint> =
            serde_json::from_slice(points).map_err(|e| format!("points are not a JSON list of points: {e}"))?;
        with(|h| {
            let limits = h.series_limits;
            let keys = h.series.entry((name.to_string(), entity.to_string())).or_default();
            for p in points {
                keys.entry(p.key).or_default().insert(p.ts, p.value, &limits);
            }
        })
        .ok_or_else(|| "series need a TestDriver".to_string())
    }

    pub fn series_query(name: &str, entity: &str, query: &[u8]) -> Result<Vec<u8>, String> {
        let query: crate::series::Query =
            serde_json::from_slice(query).map_err(|e| format!("query is not a series query: {e}"))?;
        let answer = with(|h| {
            let mut answer = crate::series::Answer::new();
            if let Some(keys) = h.series.get(&(name.to_string(), entity.to_string())) {
                for key in &query.keys {
                    let points = keys.get(key).map(|history| history.query(&query)).unwrap_or_default();
                    if !points.is_empty() {
                        answer.insert(key.clone(), points);
                    }
                }
            }
            answer
        })
        .ok_or_else(|| "series need a TestDriver".to_string())?;
        serde_json::to_vec(&answer).map_err(|e| format!("the answer cannot be serialized: {e}"))
    }
}

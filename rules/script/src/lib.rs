//! Script: runs ThingsBoard JavaScript filter, switch, transform and generator bodies unchanged,
//! sandboxed in this module by the pure-Rust JavaScript engine boa — so imported ThingsBoard
//! chains run as they are.
//!
//! Config: `{"mode": "filter", "script": "return msg.temperature > 20;"}`
//! - `mode` (required): what the body is, and so how it is wrapped and what it must return.
//!   ThingsBoard wraps bodies as functions, and so does this node:
//!   - `filter`: `function Filter(msg, metadata, msgType) { BODY }` returns a boolean: the
//!     message, unchanged, goes on `True` or `False`.
//!   - `switch`: `function Switch(msg, metadata, msgType) { BODY }` returns an array of relation
//!     names (or one name as a string): the message, unchanged, goes on each (once per name; an
//!     empty array sends it nowhere).
//!   - `transform`: `function Transform(msg, metadata, msgType) { BODY }` returns
//!     `{msg, metadata, msgType}`, or an array of such objects: each is a message on `Success`
//!     (one output keeps the incoming id; several get `<id>:<n>`; an empty array sends nothing).
//!     A field left out keeps the incoming message's (as in ThingsBoard), as does an empty
//!     `msgType`; the originator and `ts` are kept.
//!   - `generator`: `function Generate(prevMsg, prevMetadata, prevMsgType) { BODY }` returns
//!     `{msg, metadata, msgType}`, run every `periodMs` of processing time (the first after one
//!     period, as ThingsBoard's generator node), each a new message from `originator` on `Success`
//!     with `ts` = the time it was generated. The first call gets `{}`, `{}` and `""`; each next
//!     one the previous result. A left-out `msgType` keeps the previous one
//!     (`POST_TELEMETRY_REQUEST` at first). The count and the previous message are kept in the
//!     node's state. A generator takes no incoming messages (they go to `Failure`).
//! - `script` (required): the function body, ThingsBoard's `jsScript`, exactly as exported.
//!   In it `msg` is the message data (an object for telemetry), `metadata` an object of strings
//!   and `msgType` a string. It is compiled once, at load: a syntax error refuses the chain,
//!   naming `script`, with the engine's message. Returned metadata values are made strings
//!   (numbers and booleans as JavaScript prints them, objects as JSON; `null` and `undefined`
//!   drop the key).
//! - `lang` (default `"js"`): `"js"`, or `"tbel"` for ThingsBoard's TBEL bodies. TBEL is not
//!   JavaScript, but the bodies ThingsBoard ships and most users write are JavaScript as well,
//!   except for the Java methods TBEL lets them call on strings, lists and maps. So a `tbel` body
//!   runs as JavaScript with those methods defined (non-enumerable, so `JSON.stringify` and
//!   `for … in` do not see them): strings' `equals`, `equalsIgnoreCase`, `isEmpty`, `contains`;
//!   arrays' `size`, `isEmpty`, `add`, `get`, `contains`; objects' `put`, `containsKey`; and the
//!   global `toFixed(value, digits)`. TBEL-only syntax (`foreach`, `def`, `[:]` and `[k: v]` maps)
//!   is not supported: it does not compile and refuses the chain, naming `config.script`, saying
//!   which TBEL construct it met and where (`sluice import thingsboard` does not emit such bodies:
//!   it turns those nodes into placeholders).
//! - `periodMs` (generator only, required there, > 0): milliseconds between messages.
//! - `count` (generator only, default 0): how many messages to generate in all; 0 is unlimited.
//! - `originator` (generator only, required there): `{"entityType": "DEVICE", "name": "…"}` (and
//!   an optional `id`), the sender of the generated messages.
//!
//! A script that throws, or returns the wrong type, sends the incoming message to `Failure` with
//! the JavaScript error in `metadata.error` (for a generator the failure is logged and the next
//! period tries again). A script that runs forever is cut by the engine's per-message deadline
//! (the node's `limits.deadlineMs`, 200 ms by default) and also ends on `Failure`.
//!
//! Generator example (ThingsBoard's solar module simulator):
//! `{"mode": "generator", "periodMs": 5000, "count": 0, "originator": {"entityType": "DEVICE",
//! "name": "Module 1"}, "script": "var msg = { power: 5, name: \"Module 1\", panel: \"Panel 1\"};
//! return { msg: msg, metadata: {}, msgType: \"POST_TELEMETRY_REQUEST\" };"}`
use std::cell::Cell;
use std::rc::Rc;

use boa_engine::ast::scope::Scope;
use boa_engine::context::time::JsInstant;
use boa_engine::context::{Clock, ContextBuilder};
use boa_engine::module::IdleModuleLoader;
use boa_engine::parser::Parser;
use boa_engine::{Context, JsError, JsObject, JsString, JsValue, Source};
use sluice_sdk::prelude::*;
use sluice_sdk::{derived_id, msg_type};

mod tbel;

/// What the script is, as ThingsBoard's node types: filter, switch, transform or generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Filter,
    Switch,
    Transform,
    Generator,
}

/// The language of the body: JavaScript, or ThingsBoard's TBEL run as JavaScript with its helper
/// methods (see the crate docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    Js,
    Tbel,
}

/// TBEL's Java-style helpers, defined once per engine before a `tbel` body is compiled.
/// `defineProperty` leaves them non-enumerable, so they never show up in the data.
const TBEL_PRELUDE: &str = r#"(function () {
  function def(proto, name, f) { Object.defineProperty(proto, name, { value: f, writable: true, configurable: true }); }
  def(String.prototype, 'equals', function (o) { return String(this) === String(o); });
  def(String.prototype, 'equalsIgnoreCase', function (o) { return String(this).toLowerCase() === String(o).toLowerCase(); });
  def(String.prototype, 'isEmpty', function () { return String(this).length === 0; });
  def(String.prototype, 'contains', function (s) { return String(this).indexOf(s) >= 0; });
  def(Array.prototype, 'size', function () { return this.length; });
  def(Array.prototype, 'isEmpty', function () { return this.length === 0; });
  def(Array.prototype, 'add', function (x) { this.push(x); return true; });
  def(Array.prototype, 'get', function (i) { return this[i]; });
  def(Array.prototype, 'contains', function (x) { return this.indexOf(x) >= 0; });
  def(Object.prototype, 'put', function (k, v) { var old = this[k]; this[k] = v; return old; });
  def(Object.prototype, 'containsKey', function (k) { return Object.prototype.hasOwnProperty.call(this, k); });
  globalThis.toFixed = function (value, digits) { return parseFloat(Number(value).toFixed(digits)); };
})();"#;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub mode: Mode,
    /// The function body (ThingsBoard's `jsScript`, or `tbelScript` with `lang: tbel`).
    pub script: String,
    /// JavaScript (default) or TBEL.
    #[serde(default)]
    pub lang: Lang,
    /// Generator: milliseconds between messages.
    #[serde(default)]
    pub period_ms: Option<u64>,
    /// Generator: messages to generate in all (0 or absent: unlimited).
    #[serde(default)]
    pub count: Option<u64>,
    /// Generator: who the generated messages come from.
    #[serde(default)]
    pub originator: Option<Originator>,
}

/// The state key of a generator: how many it generated, and the last one.
const GENERATOR_STATE: &str = "generator";
/// The timer key of a generator.
const GENERATOR_TIMER: &str = "generate";

/// A running script node: one JavaScript engine, the body compiled once into a function.
pub struct Script {
    mode: Mode,
    ctx: Context,
    function: JsObject,
    generator: Option<Generator>,
}

struct Generator {
    period_ms: i64,
    /// 0: unlimited.
    count: u64,
    originator: Originator,
}

/// What a generator keeps between runs (and restarts).
#[derive(Debug, Default, Serialize, Deserialize)]
struct GeneratorState {
    generated: u64,
    prev: Option<Generated>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Generated {
    data: Value,
    metadata: Metadata,
    msg_type: String,
}

/// The engine's clock, fed by the host's (there is no system clock in wasm32-unknown-unknown).
/// `Date.now()` and `new Date()` read it; kept monotonic for the engine's own timing.
#[derive(Default)]
struct HostClock {
    last_ms: Cell<i64>,
}

impl Clock for HostClock {
    fn now(&self) -> JsInstant {
        let now = clock::now_ms().max(self.last_ms.get()).max(0);
        self.last_ms.set(now);
        JsInstant::new((now / 1000) as u64, ((now % 1000) * 1_000_000) as u32)
    }

    fn system_time_millis(&self) -> i64 {
        clock::now_ms()
    }
}

/// The text of a JavaScript error: `TypeError: …` for errors, the value itself for anything else
/// that was thrown.
fn js_error(err: JsError, ctx: &mut Context) -> Error {
    match err.try_native(ctx) {
        Ok(native) if native.message().trim().is_empty() => Error::new(native.kind().to_string()),
        Ok(native) => Error::new(format!("{}: {}", native.kind(), native.message().trim())),
        Err(_) => Error::new(format!("uncaught {}", err)),
    }
}

/// A JavaScript value as JSON: integral numbers as integers (as `JSON.stringify` prints them),
/// `undefined` as `None`.
fn to_json(value: &JsValue, ctx: &mut Context) -> Result<Option<Value>> {
    let json = value.to_json(ctx).map_err(|e| js_error(e, ctx))?;
    Ok(json.map(integers))
}

fn integers(value: Value) -> Value {
    const SAFE: f64 = 9_007_199_254_740_992.0; // 2^53
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < SAFE => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(integers).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, integers(v))).collect()),
        other => other,
    }
}

/// A returned `metadata` object as a string map, as ThingsBoard converts it.
fn metadata_of(value: Value) -> Result<Metadata> {
    let Value::Object(map) = value else {
        bail!("`metadata` must be an object of strings, got {}", sluice_sdk::json_kind(&value));
    };
    Ok(map
        .into_iter()
        .filter_map(|(k, v)| {
            let text = match v {
                Value::Null => return None,
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => other.to_string(),
            };
            Some((k, text))
        })
        .collect())
}

/// What a JavaScript value is, for errors (`undefined` is not JSON, so not a [`Value`]).
fn js_type(value: &JsValue) -> String {
    if value.is_undefined() {
        "undefined".into()
    } else if value.as_object().is_some_and(|o| o.is_array()) {
        "an array".into()
    } else {
        format!("{} {}", value.type_of(), value.display())
    }
}

/// One `{msg, metadata, msgType}` result: a field left out (or `undefined`) keeps `base`'s.
fn unbind(result: Value, base: (&Value, &Metadata, &str)) -> Result<(Value, Metadata, String)> {
    let Value::Object(mut fields) = result else {
        bail!("the script must return {{msg, metadata, msgType}}, got {}", sluice_sdk::json_kind(&result));
    };
    let data = fields.remove("msg").unwrap_or_else(|| base.0.clone());
    let metadata = match fields.remove("metadata") {
        Some(m) => metadata_of(m)?,
        None => base.1.clone(),
    };
    let msg_type = match fields.remove("msgType") {
        None | Some(Value::Null) => base.2.to_string(),
        Some(Value::String(t)) if t.is_empty() => base.2.to_string(),
        Some(Value::String(t)) => t,
        Some(other) => bail!("`msgType` must be a string, got {}", sluice_sdk::json_kind(&other)),
    };
    Ok((data, metadata, msg_type))
}

impl Script {
    /// Calls the compiled function with `(data, metadata, type)`.
    fn call(&mut self, data: &Value, metadata: &Metadata, msg_type: &str) -> Result<JsValue> {
        let ctx = &mut self.ctx;
        let data = JsValue::from_json(data, ctx).map_err(|e| js_error(e, ctx))?;
        let meta = JsObject::with_object_proto(ctx.intrinsics());
        for (k, v) in metadata {
            meta.create_data_property_or_throw(JsString::from(k.as_str()), JsString::from(v.as_str()), ctx)
                .map_err(|e| js_error(e, ctx))?;
        }
        let args = [data, meta.into(), JsString::from(msg_type).into()];
        self.function.call(&JsValue::undefined(), &args, ctx).map_err(|e| js_error(e, ctx))
    }

    fn filter(&mut self, msg: &Msg, out: &mut Outputs) -> Result<()> {
        let result = self.call(msg.data(), msg.metadata(), msg.msg_type())?;
        match result.as_boolean() {
            Some(keep) => sluice_sdk::node::filter_outputs(keep, out),
            None => bail!("a filter script must return a boolean, got {}", js_type(&result)),
        }
        Ok(())
    }

    fn switch(&mut self, msg: &Msg, out: &mut Outputs) -> Result<()> {
        let result = self.call(msg.data(), msg.metadata(), msg.msg_type())?;
        let wrong =
            || Error::new(format!("a switch script must return an array of relation names, got {}", js_type(&result)));
        let relations = match to_json(&result, &mut self.ctx)? {
            Some(Value::String(one)) => vec![one],
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(relation) => Ok(relation),
                    other => bail!(
                        "a switch script must return relation names (strings), got {}",
                        sluice_sdk::json_kind(&other)
                    ),
                })
                .collect::<Result<Vec<_>>>()?,
            _ => return Err(wrong()),
        };
        let mut seen = Vec::with_capacity(relations.len());
        for relation in relations {
            if !seen.contains(&relation) {
                out.forward(relation.as_str());
                seen.push(relation);
            }
        }
        Ok(())
    }

    fn transform(&mut self, mut msg: Msg, out: &mut Outputs) -> Result<()> {
        let result = self.call(msg.data(), msg.metadata(), msg.msg_type())?;
        let results = match to_json(&result, &mut self.ctx)? {
            Some(Value::Array(items)) => items,
            Some(one @ Value::Object(_)) => vec![one],
            _ => bail!(
                "a transform script must return {{msg, metadata, msgType}} or an array of them, got {}",
                js_type(&result)
            ),
        };
        let mut built = results
            .into_iter()
            .map(|result| unbind(result, (msg.data(), msg.metadata(), msg.msg_type())))
            .collect::<Result<Vec<_>>>()?;
        if built.len() == 1 {
            // One output is the incoming message, changed in place: only what the script changed
            // goes back.
            let (data, metadata, msg_type) = built.pop().expect("one result");
            if data != *msg.data() {
                msg.set_data(data);
            }
            if metadata != *msg.metadata() {
                msg.set_metadata(metadata);
            }
            if msg_type != msg.msg_type() {
                msg.set_msg_type(msg_type);
            }
            out.emit(relation::SUCCESS, msg);
            return Ok(());
        }
        for (n, (data, metadata, msg_type)) in built.into_iter().enumerate() {
            let mut m =
                Msg::new(msg_type, msg.originator().clone(), data).with_id(derived_id(msg.id(), n)).with_ts(msg.ts());
            m.set_metadata(metadata);
            out.emit(relation::SUCCESS, m);
        }
        Ok(())
    }
}

/// Compiles `body` into a function `name(params) { body }`, as ThingsBoard wraps it. The header
/// shares the body's first line, so an error's line number is the body's. The wrapper is parsed
/// first to check it is still one function: a body with a stray `}` cannot close it early and
/// run code outside it.
fn compile(ctx: &mut Context, name: &str, params: &str, body: &str) -> Result<JsObject> {
    let source = format!("(function {name}({params}) {{ {body}\n}})");
    let parsed = Parser::new(Source::from_bytes(&source))
        .parse_script(&Scope::new_global(), ctx.interner_mut())
        .map_err(|e| Error::new(format!("SyntaxError: {e}")))?;
    if parsed.statements().len() != 1 {
        bail!("SyntaxError: unbalanced braces: the body closes its function early");
    }
    let value = ctx.eval(Source::from_bytes(&source)).map_err(|e| js_error(e, ctx))?;
    match value.as_callable() {
        Some(function) => Ok(function),
        None => bail!("SyntaxError: the body does not make a function"),
    }
}

/// Runs ThingsBoard JavaScript/TBEL filter, switch, transform and generator bodies.
#[node(relations = [any])]
impl Node for Script {
    type Config = Config;

    fn init(cfg: Config) -> Result<Self> {
        let generator = match cfg.mode {
            Mode::Generator => {
                let period_ms = match cfg.period_ms {
                    Some(p) if p > 0 && p <= i64::MAX as u64 => p as i64,
                    Some(_) => bail_config!("periodMs", "must be greater than 0"),
                    None => bail_config!("periodMs", "required for mode `generator`"),
                };
                let Some(originator) = cfg.originator else {
                    bail_config!("originator", "required for mode `generator`")
                };
                Some(Generator { period_ms, count: cfg.count.unwrap_or(0), originator })
            }
            _ => {
                for (field, set) in [
                    ("periodMs", cfg.period_ms.is_some()),
                    ("count", cfg.count.is_some()),
                    ("originator", cfg.originator.is_some()),
                ] {
                    if set {
                        bail_config!(format!("{field}"), "only for mode `generator`");
                    }
                }
                None
            }
        };
        let mut ctx = ContextBuilder::new()
            .clock(Rc::new(HostClock::default()))
            .module_loader(Rc::new(IdleModuleLoader))
            .build()
            .map_err(|e| Error::new(format!("cannot start the JavaScript engine: {e}")))?;
        if cfg.lang == Lang::Tbel {
            ctx.eval(Source::from_bytes(TBEL_PRELUDE)).map_err(|e| js_error(e, &mut ctx))?;
        }
        let (name, params) = match cfg.mode {
            Mode::Filter => ("Filter", "msg, metadata, msgType"),
            Mode::Switch => ("Switch", "msg, metadata, msgType"),
            Mode::Transform => ("Transform", "msg, metadata, msgType"),
            Mode::Generator => ("Generate", "prevMsg, prevMetadata, prevMsgType"),
        };
        let function = compile(&mut ctx, name, params, &cfg.script).map_err(|e| match tbel::find(&cfg.script) {
            Some(construct) => Error::new(format!(
                "config field `script`: TBEL syntax is not supported (bodies run as JavaScript, with TBEL's \
                 helper methods): {construct}; rewrite it in JavaScript ({})",
                e.message()
            )),
            None => Error::new(format!("config field `script`: {}", e.message())),
        })?;
        if let Some(g) = &generator {
            let state: GeneratorState = state::get_json(GENERATOR_STATE)?.unwrap_or_default();
            if g.count == 0 || state.generated < g.count {
                timer::set(GENERATOR_TIMER, clock::now_ms().saturating_add(g.period_ms));
            }
        }
        Ok(Script { mode: cfg.mode, ctx, function, generator })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        match self.mode {
            Mode::Filter => self.filter(&msg, out),
            Mode::Switch => self.switch(&msg, out),
            Mode::Transform => self.transform(msg, out),
            Mode::Generator => bail!("a generator takes no incoming messages"),
        }
    }

    fn on_timer(&mut self, timer: Timer, out: &mut Outputs) -> Result<()> {
        let Some(g) = &self.generator else { return Ok(()) };
        let (count, period_ms, originator) = (g.count, g.period_ms, g.originator.clone());
        let mut state: GeneratorState = state::get_json(GENERATOR_STATE)?.unwrap_or_default();
        if count > 0 && state.generated >= count {
            timer::cancel(GENERATOR_TIMER);
            return Ok(());
        }
        // Armed first, so that a failing script is tried again next period (as in ThingsBoard).
        let due = timer.at.saturating_add(period_ms);
        timer::set(GENERATOR_TIMER, if due > timer.now { due } else { timer.now.saturating_add(period_ms) });
        let empty = Value::Object(Default::default());
        let (prev_data, prev_meta, prev_type) = match &state.prev {
            Some(p) => (&p.data, &p.metadata, p.msg_type.as_str()),
            None => (&empty, &Metadata::new(), ""),
        };
        let (prev_data, prev_meta, prev_type) = (prev_data.clone(), prev_meta.clone(), prev_type.to_string());
        let result = self.call(&prev_data, &prev_meta, &prev_type)?;
        let fallback_type = if prev_type.is_empty() { msg_type::POST_TELEMETRY_REQUEST } else { prev_type.as_str() };
        let (data, metadata, msg_type) = match to_json(&result, &mut self.ctx)? {
            Some(one @ Value::Object(_)) => unbind(one, (&prev_data, &prev_meta, fallback_type))?,
            _ => bail!("a generator script must return {{msg, metadata, msgType}}, got {}", js_type(&result)),
        };
        state.generated += 1;
        state.prev = Some(Generated { data: data.clone(), metadata: metadata.clone(), msg_type: msg_type.clone() });
        state::put_json(GENERATOR_STATE, &state)?;
        if count > 0 && state.generated >= count {
            timer::cancel(GENERATOR_TIMER);
        }
        let mut generated = Msg::new(msg_type, originator, data).with_ts(timer.now);
        generated.set_metadata(metadata);
        out.emit(relation::SUCCESS, generated);
        Ok(())
    }
}

/// getrandom's `custom` backend (selected by `rules/.cargo/config.toml` for wasm32): boa's
/// `Math.random` seeds its generator from here once. wasm32-unknown-unknown has no entropy
/// source, so this is SplitMix64 seeded from the host clock: fine for simulators, not for secrets.
#[cfg(target_arch = "wasm32")]
mod entropy {
    use std::sync::atomic::{AtomicU64, Ordering};

    static STATE: AtomicU64 = AtomicU64::new(0);

    fn next() -> u64 {
        let mut s = STATE.load(Ordering::Relaxed);
        if s == 0 {
            s = (sluice_sdk::clock::now_ms() as u64) ^ 0x5DEE_CE66_D1CE_4E5B;
        }
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        STATE.store(s, Ordering::Relaxed);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// SAFETY: getrandom declares this symbol and calls it with `dest` valid for writes of `len`
    /// bytes (possibly uninitialised: it is only written, never read). It is defined once.
    #[unsafe(no_mangle)]
    unsafe extern "Rust" fn __getrandom_v03_custom(dest: *mut u8, len: usize) -> Result<(), getrandom::Error> {
        let mut i = 0;
        while i < len {
            for byte in next().to_le_bytes() {
                if i == len {
                    break;
                }
                // SAFETY: `i < len`, and `dest` is valid for `len` byte writes (see above).
                unsafe { dest.add(i).write(byte) };
                i += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::{Outcome, TestDriver};

    fn node(config: Value) -> TestDriver {
        TestDriver::node_from_json::<Script>(&config.to_string()).unwrap_or_else(|e| panic!("{config}: {e}"))
    }

    fn mode(mode: &str, script: &str) -> TestDriver {
        node(json!({"mode": mode, "script": script}))
    }

    fn config_error(config: Value) -> sluice_sdk::config::ConfigError {
        match TestDriver::node_from_json::<Script>(&config.to_string()) {
            Ok(_) => panic!("accepted {config}"),
            Err(e) => e,
        }
    }

    fn thermometer(temperature: Value) -> Msg {
        Msg::telemetry("T-1", json!({ "temperature": temperature }))
            .with_id("m1")
            .with_ts(1_700_000_000_000)
            .with_meta("deviceType", "thermostat")
    }

    fn error_of(out: &Outcome) -> &str {
        match out.single() {
            Some((relation, msg)) if relation == "Failure" => msg.meta("error").unwrap_or_default(),
            _ => panic!("expected one Failure, got {out:?}"),
        }
    }

    // ---- filter ----

    #[test]
    fn filter_routes_on_the_boolean_with_the_message_unchanged() -> Result<()> {
        let mut d = mode("filter", "return msg.temperature > 20;");
        let hot = thermometer(json!(21.5));
        let out = d.send(hot.clone())?;
        assert_eq!(out.relations(), ["True"]);
        assert_eq!(out.messages(), [&hot]);
        assert_eq!(d.send(thermometer(json!(20)))?.relations(), ["False"]);
        // JavaScript compares a numeric string as a number, as ThingsBoard does.
        assert_eq!(d.send(thermometer(json!("33")))?.relations(), ["True"]);
        assert_eq!(d.send(thermometer(json!("7")))?.relations(), ["False"]);
        // Missing or null: `undefined > 20` and `null > 20` are false.
        assert_eq!(d.send(Msg::telemetry("T-1", json!({})))?.relations(), ["False"]);
        assert_eq!(d.send(thermometer(Value::Null))?.relations(), ["False"]);
        Ok(())
    }

    #[test]
    fn filter_bodies_of_the_thingsboard_fixtures() -> Result<()> {
        // tbdocs-create_clear_alarms…: "Under Threshold".
        let mut d = mode("filter", "return msg.temperature < -40 || msg.temperature > 80;");
        let relations: Vec<_> = [-41, -40, 25, 80, 81]
            .into_iter()
            .map(|t| d.send(thermometer(json!(t))).map(|o| o.relations()[0].to_string()))
            .collect::<Result<_>>()?;
        assert_eq!(relations, ["True", "False", "False", "False", "True"]);
        // tb-v3.0-demo-root_rule_chain: "Is Thermostat?" (both versions).
        let mut d = mode("filter", r#"return metadata["deviceType"] === "thermostat";"#);
        assert_eq!(d.send(thermometer(json!(1)))?.relations(), ["True"]);
        assert_eq!(d.send(Msg::telemetry("x", json!({})).with_meta("deviceType", "meter"))?.relations(), ["False"]);
        let mut d = mode("filter", r#"return msg.id.entityType === "DEVICE" && msg.type === "thermostat";"#);
        let created = Msg::new(
            "ENTITY_CREATED",
            Originator::device("T"),
            json!({"id": {"entityType": "DEVICE"}, "type": "thermostat"}),
        );
        assert_eq!(d.send(created)?.relations(), ["True"]);
        let asset = Msg::new(
            "ENTITY_CREATED",
            Originator::asset("A"),
            json!({"id": {"entityType": "ASSET"}, "type": "thermostat"}),
        );
        assert_eq!(d.send(asset)?.relations(), ["False"]);
        // tb-monitoring-rule_chain: "Test JS script", which ignores the message.
        let body = "var test = {\n    a: 'a',\n    b: 'b'\n};\n\nreturn test.a === 'a' && test.b === 'b';";
        assert_eq!(mode("filter", body).send(thermometer(json!(0)))?.relations(), ["True"]);
        Ok(())
    }

    #[test]
    fn tbel_bodies_run_with_tbel_helpers() -> Result<()> {
        // tb-monitoring-rule_chain: "Test TBEL script" calls Java's String.equals.
        let body = "var a = \"a\";\nvar b = \"b\";\nreturn a.equals(\"a\") && b.equals(\"b\");";
        let tbel = |mode: &str, body: &str| node(json!({"mode": mode, "script": body, "lang": "tbel"}));
        assert_eq!(tbel("filter", body).send(thermometer(json!(0)))?.relations(), ["True"]);
        // As plain JavaScript the same body is a TypeError.
        assert_eq!(mode("filter", body).send(thermometer(json!(0)))?.relations(), ["Failure"]);
        // The helpers do not leak into the data.
        let body = "var l = []; l.add(msg.temperature); msg.list = l; msg.n = l.size(); msg.has = msg.containsKey('n');\n\
                    msg.f = toFixed(1.23456, 2); return {msg: msg, metadata: metadata, msgType: msgType};";
        let out = tbel("transform", body).send(thermometer(json!(21)))?;
        assert_eq!(out.messages()[0].data(), &json!({"temperature": 21, "list": [21], "n": 1, "has": true, "f": 1.23}));
        assert!(config_error(json!({"mode": "filter", "script": "return true;", "lang": "mvel"})).field == "lang");
        Ok(())
    }

    #[test]
    fn arguments_are_data_string_metadata_and_type() -> Result<()> {
        let body = r#"return typeof metadata.deviceType === "string" && msgType === "POST_TELEMETRY_REQUEST"
            && typeof msg === "object" && !Array.isArray(msg);"#;
        assert_eq!(mode("filter", body).send(thermometer(json!(1)))?.relations(), ["True"]);
        // Data that is not an object arrives as what it is.
        let mut d = mode("filter", "return Array.isArray(msg) && msg.length === 2 && msg[1] === 'b';");
        assert_eq!(d.send(Msg::telemetry("x", json!(["a", "b"])))?.relations(), ["True"]);
        assert_eq!(d.send(Msg::telemetry("x", json!("ab")))?.relations(), ["False"]);
        Ok(())
    }

    #[test]
    fn date_reads_the_host_clock() -> Result<()> {
        let mut d = mode("filter", "return Date.now() === 1700000000123 && new Date().getUTCFullYear() === 2023;")
            .at(1_700_000_000_123);
        assert_eq!(d.send(thermometer(json!(1)))?.relations(), ["True"]);
        d.set_time(1_700_000_000_124);
        assert_eq!(d.send(thermometer(json!(1)))?.relations(), ["False"]);
        Ok(())
    }

    #[test]
    fn a_wrong_return_type_or_an_exception_is_a_failure() -> Result<()> {
        let out = mode("filter", "return 1;").send(thermometer(json!(1)))?;
        assert_eq!(error_of(&out), "a filter script must return a boolean, got number 1");
        let out = mode("filter", "return 'true';").send(thermometer(json!(1)))?;
        assert!(error_of(&out).contains("must return a boolean, got string"), "{out:?}");
        let out = mode("filter", "").send(thermometer(json!(1)))?;
        assert_eq!(error_of(&out), "a filter script must return a boolean, got undefined");
        let out = mode("filter", "throw new Error('sensor offline');").send(thermometer(json!(1)))?;
        assert_eq!(error_of(&out), "Error: sensor offline");
        let out = mode("filter", "throw 'plain';").send(thermometer(json!(1)))?;
        assert!(error_of(&out).contains("plain"), "{out:?}");
        let out = mode("filter", "return msg.missing.deeper > 1;").send(thermometer(json!(1)))?;
        assert!(error_of(&out).starts_with("TypeError"), "{out:?}");
        // The failing message is the incoming one, with the error added; the node keeps going.
        let mut d = mode("filter", "if (msg.temperature === 0) throw new RangeError('zero'); return true;");
        let out = d.send(thermometer(json!(0)))?;
        assert_eq!(out.messages()[0].data(), &json!({"temperature": 0}));
        assert_eq!(error_of(&out), "RangeError: zero");
        assert_eq!(d.send(thermometer(json!(1)))?.relations(), ["True"]);
        Ok(())
    }

    // ---- switch ----

    /// tb-v3.0-demo-thermostat_alarms: "Check Alarms".
    const CHECK_ALARMS: &str = r#"var relations = [];
if(metadata["ss_alarmTemperature"] === "true"){
    if(msg.temperature > metadata["ss_thresholdTemperature"]){
        relations.push("NewTempAlarm");
    } else {
        relations.push("ClearTempAlarm");
    }
}
if(metadata["ss_alarmHumidity"] === "true"){
    if(msg.humidity < metadata["ss_thresholdHumidity"]){
        relations.push("NewHumidityAlarm");
    } else {
        relations.push("ClearHumidityAlarm");
    }
}

return relations;"#;

    #[test]
    fn switch_sends_the_message_on_each_relation() -> Result<()> {
        let mut d = mode("switch", CHECK_ALARMS);
        let reading = |t: f64, h: f64| {
            Msg::telemetry("T-1", json!({"temperature": t, "humidity": h}))
                .with_meta("ss_alarmTemperature", "true")
                .with_meta("ss_thresholdTemperature", "30")
                .with_meta("ss_alarmHumidity", "true")
                .with_meta("ss_thresholdHumidity", "40")
        };
        let msg = reading(35.0, 20.0);
        let out = d.send(msg.clone())?;
        assert_eq!(out.relations(), ["NewTempAlarm", "NewHumidityAlarm"]);
        assert_eq!(out.messages(), [&msg, &msg]);
        assert_eq!(d.send(reading(30.0, 40.0))?.relations(), ["ClearTempAlarm", "ClearHumidityAlarm"]);
        // No alarm configured: an empty array sends the message nowhere.
        assert!(d.send(Msg::telemetry("T-1", json!({"temperature": 99})))?.outputs.is_empty());
        Ok(())
    }

    #[test]
    fn switch_of_the_delta_temperature_fixture() -> Result<()> {
        let body = "function nextRelation(metadata, msg){\n\tif(metadata.deviceType === 'indoor thermometer'){\n\t\treturn ['indoor'];\n\t}else if(metadata.deviceType === 'outdoor thermometer')\n\t\treturn ['outdoor'];\n}\n\nreturn nextRelation(metadata, msg);";
        let mut d = mode("switch", body);
        let from = |t: &str| Msg::telemetry("th", json!({"temperature": 20})).with_meta("deviceType", t);
        assert_eq!(d.send(from("indoor thermometer"))?.relations(), ["indoor"]);
        assert_eq!(d.send(from("outdoor thermometer"))?.relations(), ["outdoor"]);
        // Neither: the function returns undefined, which is not a list of relations.
        let out = d.send(from("barometer"))?;
        assert_eq!(error_of(&out), "a switch script must return an array of relation names, got undefined");
        Ok(())
    }

    #[test]
    fn switch_takes_one_string_and_drops_repeats() -> Result<()> {
        assert_eq!(mode("switch", "return 'Other';").send(thermometer(json!(1)))?.relations(), ["Other"]);
        let out = mode("switch", "return ['a', 'b', 'a'];").send(thermometer(json!(1)))?;
        assert_eq!(out.relations(), ["a", "b"]);
        let out = mode("switch", "return ['a', 2];").send(thermometer(json!(1)))?;
        assert_eq!(error_of(&out), "a switch script must return relation names (strings), got a number");
        let out = mode("switch", "return {a: 1};").send(thermometer(json!(1)))?;
        assert!(error_of(&out).starts_with("a switch script must return an array"), "{out:?}");
        Ok(())
    }

    // ---- transform ----

    #[test]
    fn identity_transform_keeps_the_message() -> Result<()> {
        let mut d = mode("transform", "return {msg: msg, metadata: metadata, msgType: msgType};");
        let msg =
            Msg::telemetry("T-1", json!({"temperature": 21.5, "n": 3, "s": "33", "nested": {"a": [1, null, true]}}))
                .with_id("m1")
                .with_ts(42)
                .with_meta("deviceType", "thermostat");
        let out = d.send(msg.clone())?;
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(out.messages(), [&msg]);
        Ok(())
    }

    #[test]
    fn fahrenheit_to_celsius_fixture() -> Result<()> {
        let body = "function precisionRound(number, precision) {\n  var factor = Math.pow(10, precision);\n  return Math.round(number * factor) / factor;\n}\n\nif (typeof msg.temperature !== 'undefined'){\n    msg.temperature = precisionRound((msg.temperature -32) * 5 / 9, 2);\n}\n\nreturn {msg: msg, metadata: metadata, msgType: msgType};";
        let mut d = mode("transform", body);
        // (212 - 32) * 5 / 9 = 100; (98.6 - 32) * 5 / 9 = 37; (50 - 32) * 5 / 9 = 10; 0 °F = -17.78 °C.
        for (f, c) in
            [(json!(212), json!(100)), (json!(98.6), json!(37)), (json!(50), json!(10)), (json!(0), json!(-17.78))]
        {
            let out = d.send(thermometer(f.clone()))?;
            assert_eq!(out.messages()[0].data(), &json!({ "temperature": c }), "{f} °F");
        }
        let untouched = Msg::telemetry("T", json!({"humidity": 50})).with_id("m2");
        assert_eq!(d.send(untouched.clone())?.messages(), [&untouched]);
        Ok(())
    }

    #[test]
    fn delta_temperature_and_telegram_fixtures() -> Result<()> {
        let delta = "var newMsg = {};\n\nnewMsg.deltaTemperature = parseFloat(Math.abs(metadata.indoorTemperature - metadata.outdoorTemperature).toFixed(2));\n\nreturn {\n\tmsg: newMsg,\n\tmetadata: metadata,\n\tmsgType: msgType\n};";
        let msg = Msg::telemetry("th", json!({}))
            .with_meta("indoorTemperature", "20.25")
            .with_meta("outdoorTemperature", "25.5");
        let out = mode("transform", delta).send(msg.clone())?;
        assert_eq!(out.messages()[0].data(), &json!({"deltaTemperature": 5.25}));
        assert_eq!(out.messages()[0].metadata(), msg.metadata());

        let telegram = "var newMsg = {};\nnewMsg.text = '\"' + msg.name + '\"' + \" alarm was created for device: \" + '\"' + metadata.deviceName + '\"';\nnewMsg.chat_id = 337878729; //has to be replaced by the actual chat id\nreturn {msg: newMsg, metadata: metadata, msgType: msgType};";
        let alarm = Msg::new("ALARM", Originator::device("T-1"), json!({"name": "High Temperature"}))
            .with_meta("deviceName", "T-1");
        let out = mode("transform", telegram).send(alarm)?;
        let expected =
            json!({"text": "\"High Temperature\" alarm was created for device: \"T-1\"", "chat_id": 337878729});
        assert_eq!(out.messages()[0].data(), &expected);
        assert_eq!(out.messages()[0].msg_type(), "ALARM");

        let fetch = "var newMsg = {\n    \"outsideTemp\": msg.main.temp,\n    \"outsideMaxTemp\": msg.main.temp_max,\n    \"outsideMinTemp\": msg.main.temp_min,\n    \"outsideHumidity\": msg.main.humidity,\n};\n\n\nreturn {msg: newMsg, metadata: metadata, msgType: msgType};";
        let weather =
            Msg::telemetry("w", json!({"main": {"temp": 281.5, "temp_max": 283, "temp_min": 280.1, "humidity": 81}}));
        let out = mode("transform", fetch).send(weather)?;
        let expected =
            json!({"outsideTemp": 281.5, "outsideMaxTemp": 283, "outsideMinTemp": 280.1, "outsideHumidity": 81});
        assert_eq!(out.messages()[0].data(), &expected);
        Ok(())
    }

    #[test]
    fn transform_fields_left_out_keep_the_incoming_ones() -> Result<()> {
        let msg = thermometer(json!(1));
        let out = mode("transform", "return {msg: {a: 1}};").send(msg.clone())?;
        let m = out.messages()[0];
        assert_eq!((m.id(), m.ts(), m.originator()), ("m1", msg.ts(), msg.originator()));
        assert_eq!(
            (m.data(), m.metadata(), m.msg_type()),
            (&json!({"a": 1}), msg.metadata(), "POST_TELEMETRY_REQUEST")
        );
        let out = mode("transform", "return {metadata: {}, msgType: ''};").send(msg.clone())?;
        let m = out.messages()[0];
        assert_eq!((m.data(), m.metadata().len(), m.msg_type()), (msg.data(), 0, "POST_TELEMETRY_REQUEST"));
        let out = mode("transform", "return {msg: null, msgType: 'CUSTOM'};").send(msg)?;
        assert_eq!((out.messages()[0].data(), out.messages()[0].msg_type()), (&Value::Null, "CUSTOM"));
        Ok(())
    }

    #[test]
    fn returned_metadata_is_made_strings() -> Result<()> {
        let body = "metadata.count = 5; metadata.ratio = 0.5; metadata.ok = true; metadata.gone = null; \
                    metadata.obj = {a: 1}; metadata.deviceType = undefined; return {msg: msg, metadata: metadata};";
        let out = mode("transform", body).send(thermometer(json!(1)))?;
        let expected: Metadata = [("count", "5"), ("ratio", "0.5"), ("ok", "true"), ("obj", r#"{"a":1}"#)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(out.messages()[0].metadata(), &expected);
        Ok(())
    }

    #[test]
    fn computed_whole_numbers_stay_integers() -> Result<()> {
        let out = mode("transform", "return {msg: {x: 1.5 * 2, y: 0.1 + 0.2, big: 2e20, nan: NaN}};")
            .send(thermometer(json!(1)))?;
        let data = out.messages()[0].data();
        assert!(data["x"].is_i64(), "{data}");
        assert_eq!(data["x"], json!(3));
        assert_eq!(data["y"].as_f64(), Some(0.1 + 0.2));
        assert_eq!(data["big"].as_f64(), Some(2e20));
        assert_eq!(data["nan"], Value::Null, "JSON has no NaN");
        Ok(())
    }

    #[test]
    fn transform_to_several_messages_derives_their_ids() -> Result<()> {
        let body =
            "return [{msg: {t: msg.temperature}, msgType: 'A'}, {msg: {t: msg.temperature * 2}, metadata: {k: 'v'}}];";
        let out = mode("transform", body).send(thermometer(json!(4)))?;
        assert_eq!(out.relations(), ["Success", "Success"]);
        let m = out.messages();
        assert_eq!((m[0].id(), m[0].data(), m[0].msg_type()), ("m1:0", &json!({"t": 4}), "A"));
        assert_eq!((m[1].id(), m[1].data(), m[1].msg_type()), ("m1:1", &json!({"t": 8}), "POST_TELEMETRY_REQUEST"));
        assert_eq!(m[1].meta("k"), Some("v"));
        assert!(mode("transform", "return [];").send(thermometer(json!(4)))?.outputs.is_empty());
        Ok(())
    }

    #[test]
    fn transform_wrong_results_fail() -> Result<()> {
        let out = mode("transform", "return 5;").send(thermometer(json!(1)))?;
        assert_eq!(
            error_of(&out),
            "a transform script must return {msg, metadata, msgType} or an array of them, got number 5"
        );
        let out = mode("transform", "return {msg: msg, msgType: 7};").send(thermometer(json!(1)))?;
        assert_eq!(error_of(&out), "`msgType` must be a string, got a number");
        let out = mode("transform", "return {msg: msg, metadata: 'x'};").send(thermometer(json!(1)))?;
        assert_eq!(error_of(&out), "`metadata` must be an object of strings, got a string");
        let out = mode("transform", "return [{msg: 1}, 2];").send(thermometer(json!(1)))?;
        assert_eq!(error_of(&out), "the script must return {msg, metadata, msgType}, got a number");
        let out = mode("transform", "var a = {}; a.self = a; return {msg: a};").send(thermometer(json!(1)))?;
        assert!(error_of(&out).contains("cyclic"), "{out:?}");
        Ok(())
    }

    // ---- generator ----

    const SOLAR_MODULE_1: &str = "var msg = { power: 5, name: \"Module 1\", panel: \"Panel 1\"};\nvar metadata = {};\nvar msgType = \"POST_TELEMETRY_REQUEST\";\n\nreturn { msg: msg, metadata: metadata, msgType: msgType };";

    /// Far beyond the real clock the first timer was set from.
    const LATER: i64 = 4_000_000_000_000;

    fn generator(script: &str, period_ms: u64, count: u64) -> TestDriver {
        node(json!({"mode": "generator", "script": script, "periodMs": period_ms, "count": count,
                    "originator": {"entityType": "DEVICE", "name": "Module 1"}}))
    }

    #[test]
    fn generator_runs_the_solar_simulator_body_count_times() -> Result<()> {
        let mut d = generator(SOLAR_MODULE_1, 5000, 3);
        let mut generated = Vec::new();
        for k in 0..5 {
            generated.extend(d.advance_to(LATER + k * 5000)?.outputs);
        }
        assert_eq!(generated.len(), 3, "count 3: {generated:?}");
        for (k, (relation, m)) in generated.iter().enumerate() {
            assert_eq!(relation, "Success");
            assert_eq!(m.data(), &json!({"power": 5, "name": "Module 1", "panel": "Panel 1"}));
            assert_eq!((m.msg_type(), m.originator()), ("POST_TELEMETRY_REQUEST", &Originator::device("Module 1")));
            assert!(m.metadata().is_empty());
            assert_eq!(m.ts(), LATER + k as i64 * 5000);
        }
        // Ids derive from the timer's: deterministic on replay.
        assert_eq!(generated[1].1.id(), format!("node/timer/generate/{}:0", LATER + 5000));
        let kept: GeneratorState = serde_json::from_slice(&d.state()[GENERATOR_STATE.as_bytes()])?;
        assert_eq!(kept.generated, 3);
        Ok(())
    }

    #[test]
    fn generator_first_message_comes_one_period_after_init() -> Result<()> {
        let mut d = node(json!({"mode": "generator", "script": SOLAR_MODULE_1, "periodMs": 1000,
                                "originator": {"entityType": "DEVICE", "name": "M"}}));
        let started = clock::now_ms();
        assert!(d.advance_to(started - 1)?.outputs.is_empty());
        assert_eq!(d.advance_to(started + 1500)?.outputs.len(), 1);
        Ok(())
    }

    #[test]
    fn generator_hands_each_call_the_previous_message() -> Result<()> {
        let body = "var n = (prevMsg.n || 0) + 1;\nreturn {msg: {n: n}, metadata: {seq: n, prev: prevMetadata.seq}, msgType: prevMsgType === '' ? 'FIRST' : 'NEXT'};";
        let mut d = generator(body, 10, 0);
        let mut generated = Vec::new();
        for k in 0..3 {
            generated.extend(d.advance_to(LATER + k * 10)?.outputs.into_iter().map(|(_, m)| m));
        }
        let seen: Vec<_> = generated
            .iter()
            .map(|m| (m.data()["n"].clone(), m.meta("prev").map(str::to_string), m.msg_type()))
            .collect();
        assert_eq!(
            seen,
            [
                (json!(1), None, "FIRST"),
                (json!(2), Some("1".to_string()), "NEXT"),
                (json!(3), Some("2".to_string()), "NEXT")
            ]
        );
        Ok(())
    }

    #[test]
    fn generator_of_the_thermometer_emulator_uses_math_random() -> Result<()> {
        let body = "var msg = {\n    temperature: (20 + 5*Math.random()).toFixed(1)\n};\n\nreturn {\n    msg: msg, metadata: {deviceType: \"indoor thermometer\"}, msgType:\"POST_TELEMETRY_REQUEST\"\n    };\n";
        let mut d = generator(body, 1000, 0);
        for k in 0..5 {
            let out = d.advance_to(LATER + k * 1000)?;
            let m = out.messages()[0];
            let t: f64 = m.data()["temperature"].as_str().expect("toFixed gives a string").parse()?;
            assert!((20.0..=25.0).contains(&t), "{t}");
            assert_eq!(m.meta("deviceType"), Some("indoor thermometer"));
        }
        Ok(())
    }

    #[test]
    fn a_failing_generator_tries_again_next_period() -> Result<()> {
        let body = "if (!globalThis.failedOnce) { globalThis.failedOnce = true; throw new Error('warming up'); }\nreturn {msg: {ok: 1}};";
        let mut d = generator(body, 100, 2);
        let err = d.advance_to(LATER).unwrap_err();
        assert_eq!(err.message(), "Error: warming up");
        let out = d.advance_to(LATER + 100)?;
        assert_eq!(out.messages()[0].data(), &json!({"ok": 1}));
        assert_eq!(out.messages()[0].msg_type(), "POST_TELEMETRY_REQUEST", "the default type of a first message");
        assert_eq!(d.advance_to(LATER + 200)?.outputs.len(), 1);
        assert!(d.advance_to(LATER + 300)?.outputs.is_empty(), "two generated: done");
        Ok(())
    }

    #[test]
    fn generator_wrong_result_and_incoming_messages_fail() -> Result<()> {
        let mut d = generator("return [1];", 100, 0);
        let err = d.advance_to(LATER).unwrap_err();
        assert_eq!(err.message(), "a generator script must return {msg, metadata, msgType}, got an array");
        let out = d.send(thermometer(json!(1)))?;
        assert_eq!(error_of(&out), "a generator takes no incoming messages");
        Ok(())
    }

    // ---- config ----

    #[test]
    fn a_syntax_error_names_the_script_field() {
        let err = config_error(json!({"mode": "filter", "script": "var t = msg.temperature;\nreturn t >;"}));
        // The position is the body's own (line 2, column 11).
        assert_eq!(
            err.message,
            "config field `script`: SyntaxError: unexpected token ';', primary expression at line 2, col 11"
        );
        let err = config_error(json!({"mode": "transform", "script": "return {msg: msg"}));
        assert!(err.message.starts_with("config field `script`: SyntaxError"), "{err}");
        // Closing the wrapper early does not escape it.
        let err = config_error(json!({"mode": "filter", "script": "return true; }); (function() {"}));
        assert_eq!(
            err.message,
            "config field `script`: SyntaxError: unbalanced braces: the body closes its function early"
        );
    }

    #[test]
    fn tbel_only_syntax_is_named_as_unsupported() {
        let body = "var sum = 0;\nforeach (v : msg.values) { sum += v; }\nreturn sum > 10;";
        for lang in ["tbel", "js"] {
            let err = config_error(json!({"mode": "filter", "script": body, "lang": lang}));
            assert!(
                err.message.starts_with("config field `script`: TBEL syntax is not supported")
                    && err
                        .message
                        .contains("`foreach` (TBEL's loop; JavaScript writes `for (var x of list)`) at line 2")
                    && err.message.contains("SyntaxError"),
                "{err}"
            );
        }
        let err =
            config_error(json!({"mode": "transform", "lang": "tbel", "script": "var m = [:];\nreturn {msg: m};"}));
        assert!(err.message.contains("`[:]`") && err.message.contains("at line 1"), "{err}");
        // A plain JavaScript error stays one.
        let err = config_error(json!({"mode": "filter", "lang": "tbel", "script": "return t >;"}));
        assert!(err.message.starts_with("config field `script`: SyntaxError"), "{err}");
    }

    #[test]
    fn bad_configs_name_the_field() {
        assert_eq!(config_error(json!({"mode": "map", "script": "return 1;"})).field, "mode");
        assert_eq!(config_error(json!({"script": "return true;"})).field, "mode");
        assert_eq!(config_error(json!({"mode": "filter"})).field, "script");
        assert_eq!(config_error(json!({"mode": "filter", "script": 5})).field, "script");
        assert_eq!(config_error(json!({"mode": "filter", "script": "", "jsScript": ""})).field, "jsScript");
        assert_eq!(config_error(json!({"mode": "filter", "script": "", "period_ms": 5})).field, "period_ms");
        let generator_with = |extra: Value| {
            let mut config = json!({"mode": "generator", "script": SOLAR_MODULE_1, "periodMs": 1000,
                                    "originator": {"entityType": "DEVICE", "name": "M"}});
            for (k, v) in extra.as_object().unwrap() {
                if v.is_null() {
                    config.as_object_mut().unwrap().remove(k);
                } else {
                    config[k] = v.clone();
                }
            }
            config_error(config)
        };
        assert_eq!(
            generator_with(json!({"periodMs": null})).message,
            "config field `periodMs`: required for mode `generator`"
        );
        assert_eq!(generator_with(json!({"periodMs": 0})).message, "config field `periodMs`: must be greater than 0");
        assert_eq!(generator_with(json!({"periodMs": -5})).field, "periodMs");
        assert_eq!(generator_with(json!({"periodMs": "5s"})).field, "periodMs");
        assert_eq!(generator_with(json!({"count": -1})).field, "count");
        assert_eq!(
            generator_with(json!({"originator": null})).message,
            "config field `originator`: required for mode `generator`"
        );
        assert_eq!(generator_with(json!({"originator": {"entityType": "DEVICE"}})).field, "originator.name");
        assert_eq!(generator_with(json!({"originator": {"type": "DEVICE", "name": "x"}})).field, "originator.type");
        for field in ["periodMs", "count", "originator"] {
            let mut config = json!({"mode": "transform", "script": "return {};"});
            config[field] = if field == "originator" { json!({"entityType": "DEVICE", "name": "M"}) } else { json!(1) };
            let err = config_error(config);
            assert_eq!(err.message, format!("config field `{field}`: only for mode `generator`"));
        }
    }
}

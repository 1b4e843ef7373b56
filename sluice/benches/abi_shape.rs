//! ABI v2's shape, measured before choosing it (issue 16, item 4): a guest gets a *handle* to the
//! host's message and reads only the fields it uses through host calls — as a core module with
//! plain imports, or as a component (`wasmtime::component::bindgen!`, a `message` resource).
//!
//! The same rule everywhere (the wind-zones station filter): read the type, the timestamp,
//! metadata `deviceType` and `data.windSpeed` as a number; forward on `True` or `False`. Per case:
//! - `core/*`: `abi_shape/core-guest`, a core module importing `sluice::{msg_type, msg_meta,
//!   msg_number, msg_ts, forward}`; the host keeps the message in a `Vec` indexed by the handle;
//! - `component/*`: `abi_shape/component-guest` (wit-bindgen, `abi_shape/wit/rule.wit`) made a
//!   component by `wit-component`; the host keeps the message in a `ResourceTable` and lends it to
//!   the export as a `borrow<message>`;
//! - `engine/*`: the engine as built, through `sluice`'s own `Runtime`: an SDK `#[filter]`
//!   (`rules/attribute-filter` with `chains/wind-zones.json`'s config) reading the message through
//!   the SDK's lazy `Msg`, and `noop-wat`, a hand-written module that only forwards (the bare
//!   crossing). Before ABI v2 these were the `v1/*` cases: the message's JSON copied in and parsed.
//!
//! For core and component, `rule` is the whole rule, `ts` one string-free read, `forward` the bare
//! crossing with one output and no field read, `empty` an export that takes the handle and returns.
//! Every iteration puts the message into the host's table, calls, and takes it back out (moved, not
//! cloned), as a v2 worker would per message. `ping` calls an export with no argument and no result;
//! `component/rule-no-table` keeps the messages in a `Vec` behind `Resource::new_borrow`; `table/*`
//! is the host tables alone. The numbers and the decision: `docs/design/message-path-v2.md`.
//!
//! `cargo bench -p sluice --features abi-shape-bench --bench abi_shape` (the guests are built first, for
//! wasm32-unknown-unknown).

use std::collections::BTreeMap;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::Deserialize;
use serde_json::Value;
use sluice::runtime::{HostEnv, Limits, Runtime};
use wasmtime::component::{Component, HasSelf, Resource, ResourceTable};
use wasmtime::{Caller, Config, Engine, Instance, Linker, Memory, Module, OptLevel, Store, TypedFunc};

/// The one message every case handles.
const MESSAGE: &str = r#"{"id":"m1","ts":1700000000000,"type":"POST_TELEMETRY_REQUEST","originator":{"entityType":"DEVICE","name":"WS-1"},"metadata":{"deviceType":"WeatherStation","cs_geoZone":"Zone 3","ts":"1700000000000"},"data":{"windSpeed":"33.5"}}"#;

/// Generous: the epoch never advances in this bench (no ticker), but the check runs as in the engine.
const DEADLINE_TICKS: u64 = 1_000_000;

/// The host-side message: parsed once, read in place by the accessors.
#[derive(Debug, Clone, Deserialize)]
#[allow(dead_code, reason = "id and originator: kept as v2 would keep them; this rule does not read them")]
pub struct Message {
    pub id: String,
    pub ts: i64,
    #[serde(rename = "type")]
    pub msg_type: String,
    #[serde(deserialize_with = "originator_name")]
    pub originator: String,
    pub metadata: BTreeMap<String, String>,
    pub data: Value,
}

fn originator_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    struct Originator {
        name: String,
    }
    Ok(Originator::deserialize(d)?.name)
}

impl Message {
    fn parse(json: &str) -> Message {
        serde_json::from_str(json).expect("the bench message")
    }

    /// The field at a dotted path (`data.windSpeed`, `ts`) as a number; a numeric string counts.
    fn number(&self, path: &str) -> Option<f64> {
        let mut parts = path.split('.');
        let value = match parts.next()? {
            "ts" => return Some(self.ts as f64),
            "metadata" => return self.metadata.get(parts.next()?)?.parse().ok(),
            "data" => parts.try_fold(&self.data, |v, key| v.get(key))?,
            _ => return None,
        };
        match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }
}

/// What the rule answered: `Some(true)` for `True`.
fn relation(name: &[u8]) -> wasmtime::Result<bool> {
    match name {
        b"True" => Ok(true),
        b"False" => Ok(false),
        other => Err(wasmtime::Error::msg(format!("unknown relation {:?}", String::from_utf8_lossy(other)))),
    }
}

fn engine() -> Engine {
    // As `sluice::runtime::Runtime::new`, plus the component model.
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.cranelift_opt_level(OptLevel::Speed);
    config.wasm_component_model(true);
    Engine::new(&config).expect("engine")
}

// ---------------------------------------------------------------------------------------------
// core: a core module, plain imports, handles into a Vec.

#[derive(Default)]
struct CoreHost {
    memory: Option<Memory>,
    messages: Vec<Message>,
    forwarded: Option<bool>,
}

/// The guest's memory and the host state.
fn split<'a>(caller: &'a mut Caller<'_, CoreHost>) -> wasmtime::Result<(&'a mut [u8], &'a mut CoreHost)> {
    let memory = caller.data().memory.ok_or_else(|| wasmtime::Error::msg("guest memory not bound"))?;
    Ok(memory.data_and_store_mut(caller))
}

fn range(memory: &[u8], ptr: u32, len: u32) -> wasmtime::Result<std::ops::Range<usize>> {
    let (start, end) = (ptr as usize, ptr as usize + len as usize);
    if end > memory.len() {
        return Err(wasmtime::Error::msg(format!("guest passed an out-of-bounds slice {ptr}+{len}")));
    }
    Ok(start..end)
}

fn guest_str(memory: &[u8], ptr: u32, len: u32) -> wasmtime::Result<&str> {
    Ok(std::str::from_utf8(&memory[range(memory, ptr, len)?])?)
}

fn message(host: &CoreHost, handle: u32) -> wasmtime::Result<&Message> {
    host.messages.get(handle as usize).ok_or_else(|| wasmtime::Error::msg(format!("no message {handle}")))
}

/// Copies up to `cap` bytes of `value` to `dst`; the value's full length (the guest retries with a
/// bigger buffer when it is larger than `cap`).
fn write(memory: &mut [u8], dst: u32, cap: u32, value: &str) -> wasmtime::Result<i32> {
    let n = value.len().min(cap as usize);
    let dst = range(memory, dst, n as u32)?;
    memory[dst].copy_from_slice(&value.as_bytes()[..n]);
    Ok(value.len() as i32)
}

fn core_linker(engine: &Engine) -> Linker<CoreHost> {
    let mut linker = Linker::new(engine);
    linker
        .func_wrap("sluice", "msg_type", |mut caller: Caller<'_, CoreHost>, h: u32, dst: u32, cap: u32| {
            let (memory, host) = split(&mut caller)?;
            write(memory, dst, cap, &message(host, h)?.msg_type)
        })
        .unwrap()
        .func_wrap(
            "sluice",
            "msg_meta",
            |mut caller: Caller<'_, CoreHost>, h: u32, key: u32, key_len: u32, dst: u32, cap: u32| {
                let (memory, host) = split(&mut caller)?;
                let value = message(host, h)?.metadata.get(guest_str(memory, key, key_len)?);
                match value {
                    Some(v) => write(memory, dst, cap, v),
                    None => Ok(-1),
                }
            },
        )
        .unwrap()
        .func_wrap("sluice", "msg_number", |mut caller: Caller<'_, CoreHost>, h: u32, path: u32, path_len: u32| {
            let (memory, host) = split(&mut caller)?;
            Ok(message(host, h)?.number(guest_str(memory, path, path_len)?).unwrap_or(f64::NAN))
        })
        .unwrap()
        .func_wrap("sluice", "msg_ts", |caller: Caller<'_, CoreHost>, h: u32| Ok(message(caller.data(), h)?.ts))
        .unwrap()
        .func_wrap("sluice", "forward", |mut caller: Caller<'_, CoreHost>, _h: u32, rel: u32, rel_len: u32| {
            let (memory, host) = split(&mut caller)?;
            host.forwarded = Some(relation(&memory[range(memory, rel, rel_len)?])?);
            Ok(())
        })
        .unwrap();
    linker
}

struct CoreCase {
    store: Store<CoreHost>,
    exports: [(&'static str, TypedFunc<u32, u32>); 4],
    ping: TypedFunc<(), ()>,
}

impl CoreCase {
    fn new(engine: &Engine, wasm: &[u8]) -> CoreCase {
        let module = Module::new(engine, wasm).expect("core module");
        let mut store = Store::new(engine, CoreHost::default());
        store.set_epoch_deadline(DEADLINE_TICKS);
        let instance: Instance = core_linker(engine).instantiate(&mut store, &module).expect("instantiate");
        store.data_mut().memory = instance.get_memory(&mut store, "memory");
        let mut export = |name: &'static str| instance.get_typed_func::<u32, u32>(&mut store, name).expect(name);
        let exports = [
            ("rule", export("on_msg")),
            ("ts", export("on_msg_ts")),
            ("forward", export("on_msg_forward")),
            ("empty", export("on_msg_empty")),
        ];
        let ping = instance.get_typed_func(&mut store, "ping").expect("ping");
        CoreCase { store, exports, ping }
    }

    /// One message through `f`: into the table, the call, back out.
    fn call(&mut self, f: &TypedFunc<u32, u32>, msg: Message) -> (Message, Option<bool>) {
        let host = self.store.data_mut();
        host.forwarded = None;
        host.messages.push(msg);
        let handle = (host.messages.len() - 1) as u32;
        self.store.set_epoch_deadline(DEADLINE_TICKS);
        let status = f.call(&mut self.store, handle).expect("on_msg");
        assert_eq!(status, 0);
        let host = self.store.data_mut();
        (host.messages.pop().expect("the message"), host.forwarded)
    }

    fn ping(&mut self) {
        self.store.set_epoch_deadline(DEADLINE_TICKS);
        self.ping.call(&mut self.store, ()).expect("ping");
    }
}

// ---------------------------------------------------------------------------------------------
// component: the same through `abi_shape/wit/rule.wit`.

mod component {
    wasmtime::component::bindgen!({
        path: "benches/abi_shape/wit",
        world: "rule",
        with: { "sluice:bench/types.message": super::Message },
        imports: { default: trappable },
    });
}

use component::sluice::bench::types::{Host as TypesHost, HostMessage};

#[derive(Default)]
struct ComponentHost {
    table: ResourceTable,
    /// `Some`: the messages are kept here instead of in `table`, a resource's rep being the index
    /// (`Resource::new_borrow(rep)`): what the table itself costs.
    vec: Option<Vec<Message>>,
    forwarded: Option<bool>,
}

impl ComponentHost {
    fn message(&self, m: &Resource<Message>) -> wasmtime::Result<&Message> {
        match &self.vec {
            Some(vec) => vec.get(m.rep() as usize).ok_or_else(|| wasmtime::Error::msg("no such message")),
            None => Ok(self.table.get(m)?),
        }
    }
}

impl TypesHost for ComponentHost {}

impl HostMessage for ComponentHost {
    fn msg_type(&mut self, m: Resource<Message>) -> wasmtime::Result<String> {
        Ok(self.message(&m)?.msg_type.clone())
    }

    fn meta(&mut self, m: Resource<Message>, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.message(&m)?.metadata.get(&key).cloned())
    }

    fn number(&mut self, m: Resource<Message>, path: String) -> wasmtime::Result<Option<f64>> {
        Ok(self.message(&m)?.number(&path))
    }

    fn ts(&mut self, m: Resource<Message>) -> wasmtime::Result<i64> {
        Ok(self.message(&m)?.ts)
    }

    fn drop(&mut self, m: Resource<Message>) -> wasmtime::Result<()> {
        // Only borrows are lent to the guest: it never owns a message, so never drops one.
        self.table.delete(m)?;
        Ok(())
    }
}

impl component::RuleImports for ComponentHost {
    fn forward(&mut self, name: String) -> wasmtime::Result<()> {
        self.forwarded = Some(relation(name.as_bytes())?);
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Export {
    Rule,
    Ts,
    Forward,
    Empty,
}

struct ComponentCase {
    store: Store<ComponentHost>,
    rule: component::Rule,
}

impl ComponentCase {
    /// `with_table`: keep the messages in a `ResourceTable` (else in a `Vec`, see `ComponentHost`).
    fn new(engine: &Engine, core_wasm: &[u8], with_table: bool) -> ComponentCase {
        // `wasm-tools component new`, as a library.
        let wasm = wit_component::ComponentEncoder::default()
            .module(core_wasm)
            .expect("wit-bindgen's component type section")
            .validate(true)
            .encode()
            .expect("encode the component");
        let component = Component::new(engine, &wasm).expect("component");
        let mut linker = wasmtime::component::Linker::new(engine);
        component::Rule::add_to_linker::<_, HasSelf<_>>(&mut linker, |h| h).expect("linker");
        let host = ComponentHost { vec: (!with_table).then(Vec::new), ..ComponentHost::default() };
        let mut store = Store::new(engine, host);
        store.set_epoch_deadline(DEADLINE_TICKS);
        let rule = component::Rule::instantiate(&mut store, &component, &linker).expect("instantiate");
        ComponentCase { store, rule }
    }

    /// One message through `export`: into the table, the call (lent as a borrow), back out.
    fn call(&mut self, export: Export, msg: Message) -> (Message, Option<bool>) {
        let host = self.store.data_mut();
        host.forwarded = None;
        let (own, lent) = match &mut host.vec {
            Some(vec) => {
                vec.push(msg);
                (None, Resource::new_borrow(vec.len() as u32 - 1))
            }
            None => {
                let own = host.table.push(msg).expect("table");
                let rep = own.rep();
                (Some(own), Resource::new_borrow(rep))
            }
        };
        self.store.set_epoch_deadline(DEADLINE_TICKS);
        let answer = match export {
            Export::Rule => self.rule.call_on_msg(&mut self.store, lent),
            Export::Ts => self.rule.call_on_msg_ts(&mut self.store, lent),
            Export::Forward => self.rule.call_on_msg_forward(&mut self.store, lent),
            Export::Empty => self.rule.call_on_msg_empty(&mut self.store, lent),
        };
        answer.expect("on-msg").expect("the rule's answer");
        let host = self.store.data_mut();
        let msg = match own {
            Some(own) => host.table.delete(own).expect("the message"),
            None => host.vec.as_mut().and_then(Vec::pop).expect("the message"),
        };
        (msg, host.forwarded)
    }

    fn ping(&mut self) {
        self.store.set_epoch_deadline(DEADLINE_TICKS);
        self.rule.call_ping(&mut self.store).expect("ping");
    }
}

// ---------------------------------------------------------------------------------------------

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guests = sluice::toolchain::build(&root.join("benches/abi_shape")).expect("build the abi_shape guests");
    let read = |name: &str| std::fs::read(guests.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let engine = engine();
    let mut core = CoreCase::new(&engine, &read("abi_shape_core_guest.wasm"));
    let component_wasm = read("abi_shape_component_guest.wasm");
    let mut comp = ComponentCase::new(&engine, &component_wasm, true);
    let mut comp_vec = ComponentCase::new(&engine, &component_wasm, false);

    // Both answer as the rule should, before anything is timed.
    let station = Message::parse(MESSAGE);
    let mut other = station.clone();
    other.metadata.insert("deviceType".into(), "Thermometer".into());
    let rule = core.exports[0].1.clone();
    for (msg, expected) in [(station.clone(), true), (other, false)] {
        assert_eq!(core.call(&rule, msg.clone()).1, Some(expected), "core");
        assert_eq!(comp.call(Export::Rule, msg.clone()).1, Some(expected), "component");
        assert_eq!(comp_vec.call(Export::Rule, msg).1, Some(expected), "component, no table");
    }

    let mut group = c.benchmark_group("abi-shape");
    group.throughput(Throughput::Elements(1));
    let mut msg = Some(station);
    for (name, f) in core.exports.clone() {
        group.bench_function(format!("core/{name}"), |b| {
            b.iter(|| {
                let (back, answer) = core.call(&f, msg.take().unwrap());
                msg = Some(back);
                answer
            })
        });
    }
    group.bench_function("core/ping", |b| b.iter(|| core.ping()));
    let exports = [("rule", Export::Rule), ("ts", Export::Ts), ("forward", Export::Forward), ("empty", Export::Empty)];
    for (name, export) in exports {
        group.bench_function(format!("component/{name}"), |b| {
            b.iter(|| {
                let (back, answer) = comp.call(export, msg.take().unwrap());
                msg = Some(back);
                answer
            })
        });
    }
    group.bench_function("component/rule-no-table", |b| {
        b.iter(|| {
            let (back, answer) = comp_vec.call(Export::Rule, msg.take().unwrap());
            msg = Some(back);
            answer
        })
    });
    group.bench_function("component/ping", |b| b.iter(|| comp.ping()));

    // The host tables alone (in every core/component message case above): in and out again.
    let mut vec = Vec::new();
    group.bench_function("table/vec", |b| {
        b.iter(|| {
            vec.push(msg.take().unwrap());
            msg = vec.pop();
        })
    });
    let mut table = ResourceTable::new();
    group.bench_function("table/resource-table", |b| {
        b.iter(|| {
            let own = table.push(msg.take().unwrap()).unwrap();
            msg = Some(table.delete(own).unwrap());
        })
    });

    // The engine as built (ABI v2 since issue 16): its `Runtime`, and the real SDK rule reading
    // the message through the lazy `Msg` view. Recorded in the design doc as `v1/*` before v2.
    let filter = sluice::toolchain::build(&root.join("../rules/attribute-filter")).expect("build attribute-filter");
    let rt = Runtime::new(None).expect("runtime");
    let input: std::sync::Arc<sluice::message::Message> = std::sync::Arc::new(
        serde_json::from_str::<sluice_sdk::TbMsg>(MESSAGE).expect("the bench message parses").into(),
    );
    let wind_zones =
        r#"{"equals": {"deviceType": "WeatherStation"}, "present": ["cs_geoZone"], "dataPresent": ["windSpeed"]}"#;
    let v1 = [
        ("engine/noop-wat", NOOP_WAT.as_bytes().to_vec(), "null"),
        ("engine/attribute-filter", std::fs::read(filter.join("attribute_filter.wasm")).expect("module"), wind_zones),
    ];
    for (name, wasm, config) in v1 {
        let module = rt.load_module_bytes(Path::new(name), &wasm).expect("module");
        let mut instance = rt
            .instantiate_module(&module, config.as_bytes(), Limits::default(), HostEnv::scratch(name))
            .expect("instance");
        let mut outputs = Vec::new();
        instance.call(&input, &mut outputs).expect("call");
        assert_eq!(outputs.iter().map(|(rel, _)| rel.as_ref()).collect::<Vec<_>>(), ["True"], "{name}");
        group.bench_function(name, |b| b.iter(|| instance.call(&input, &mut outputs).expect("call")));
    }
    group.finish();
}

/// The bare engine crossing (as in `benches/chain.rs`): `forward(h, "True")`.
const NOOP_WAT: &str = r#"(module
  (import "sluice" "forward" (func $forward (param i32 i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "True")
  (func (export "sluice_abi_version") (result i32) i32.const 2)
  (func (export "sluice_reserve") (param i32) (result i32) i32.const 1024)
  (func (export "sluice_init") (param i32) (result i32) i32.const 0)
  (func (export "sluice_on_msg") (param $h i32) (result i32)
    (call $forward (local.get $h) (i32.const 16) (i32.const 4))
    i32.const 0))"#;

criterion_group!(benches, bench);
criterion_main!(benches);

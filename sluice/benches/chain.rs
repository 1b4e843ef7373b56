//! What a message costs in Sluice, against a plain native Rust loop doing the same work.
//!
//! - `call/noop-wat`: the bare ABI crossing: call with the message's handle, `forward` — a
//!   hand-written module that reads nothing;
//! - `call/noop-sdk`: an SDK `#[filter]` returning `true` (the SDK's glue and lazy `Msg`);
//! - `call/check-fields`: a filter that reads two data fields and a metadata key;
//! - `call/script-filter`, `call/script-transform`: ThingsBoard JavaScript bodies in the `script`
//!   node (boa inside the module), against `check-fields` as the Rust baseline;
//! - `3-node/wasm-chain`: json-decoder → check-fields → rename-keys on one worker (routing
//!   included), from the input's JSON (the source's parse is in the lap);
//! - `3-node/native`: the same work as one plain Rust function (the baseline);
//! - `windows-10k-keys`: a 10 s tumbling average over 10,000 keys, both ways.
//!
//! The process uses the `sluice` binary's allocator (mimalloc), for both sides.
//! Guests are built from `rules/` first (`sluice rules build rules`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use serde_json::{Map, Value, json};
use sluice::chain::Loader;
use sluice::flow::worker::Worker;
use sluice::flow::{Ack, Envelope, Sinks};
use sluice::runtime::{HostEnv, Limits, Runtime};
use sluice_sdk::{Originator, TbMsg};

/// The rule modules: built from `rules/`, or those in `SLUICE_BENCH_MODULES` (another commit's
/// build, for a before/after in one sitting).
fn modules() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLUICE_BENCH_MODULES") {
        return PathBuf::from(dir);
    }
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    sluice::toolchain::build(&rules).expect("build the rules")
}

/// An uplink as a gateway forwards it: ~150 bytes of payload JSON in `data.payload`.
fn uplink() -> TbMsg {
    let payload =
        json!({"deviceName": "Thermometer-42", "deviceType": "Thermometer", "temp": 21.5, "hum": 40, "battery": 97});
    TbMsg::new("UPLINK", Originator::device("gateway-1"), json!({ "payload": payload.to_string() }))
        .with_id("0f5e4c1a-3b7d-4a8e-9c2f-6d1e8b7a5c43")
        .with_ts(1_700_000_000_000)
}

fn telemetry() -> TbMsg {
    TbMsg::telemetry("Thermometer-42", json!({"temp": 21.5, "hum": 40, "battery": 97}))
        .with_id("0f5e4c1a-3b7d-4a8e-9c2f-6d1e8b7a5c43")
        .with_meta("deviceType", "Thermometer")
        .with_ts(1_700_000_000_000)
}

const NOOP_WAT: &str = r#"(module
  (import "sluice" "forward" (func $forward (param i32 i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "Success")
  (func (export "sluice_abi_version") (result i32) i32.const 2)
  (func (export "sluice_reserve") (param i32) (result i32) i32.const 1024)
  (func (export "sluice_init") (param i32) (result i32) i32.const 0)
  (func (export "sluice_on_msg") (param $h i32) (result i32)
    (call $forward (local.get $h) (i32.const 16) (i32.const 7))
    i32.const 0))"#;

fn bench_calls(c: &mut Criterion) {
    let modules = modules();
    let rt = Runtime::new(None).expect("runtime");
    let mut group = c.benchmark_group("call");
    group.throughput(Throughput::Elements(1));
    let msg = Arc::new(telemetry().into());
    let script = || std::fs::read(modules.join("script.wasm")).unwrap();
    let cases: [(&str, Vec<u8>, Value); 5] = [
        ("noop-wat", NOOP_WAT.as_bytes().to_vec(), Value::Null),
        ("noop-sdk", std::fs::read(modules.join("noop.wasm")).unwrap(), Value::Null),
        (
            "check-fields",
            std::fs::read(modules.join("check_fields.wasm")).unwrap(),
            json!({"messageNames": ["temp", "hum"], "metadataNames": ["deviceType"]}),
        ),
        // ThingsBoard JavaScript bodies in boa, inside the module: against check-fields, the
        // same kind of decision in Rust.
        ("script-filter", script(), json!({"mode": "filter", "script": "return msg.temp > 20;"})),
        (
            "script-transform",
            script(),
            json!({"mode": "transform",
                   "script": "msg.temp = Math.round((msg.temp - 32) * 5 / 9 * 100) / 100;\nreturn {msg: msg, metadata: metadata, msgType: msgType};"}),
        ),
    ];
    for (name, bytes, config) in cases {
        let module = rt.load_module_bytes(Path::new(name), &bytes).expect("module");
        let config = serde_json::to_vec(&config).unwrap();
        let mut instance =
            rt.instantiate_module(&module, &config, Limits::default(), HostEnv::scratch(name)).expect("instance");
        let mut outputs = Vec::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                instance.call(&msg, &mut outputs).expect("call");
                assert_eq!(outputs.len(), 1);
            })
        });
    }
    group.finish();
}

fn bench_chain(c: &mut Criterion) {
    let modules = modules();
    let rt = Arc::new(Runtime::new(None).expect("runtime"));
    let dir = tempfile::tempdir().unwrap();
    let chain_path = dir.path().join("chain.json");
    let chain = json!({
        "entry": "decode",
        "nodes": [
            {"id": "decode", "module": "json-decoder"},
            {"id": "check", "module": "check-fields", "config": {"messageNames": ["temp"], "metadataNames": ["deviceType"]}},
            {"id": "rename", "module": "rename-keys", "config": {"renameKeysMapping": {"temp": "temperature", "hum": "humidity"}}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "decode", "to": "check", "relation": "Success"},
            {"from": "check", "to": "rename", "relation": "True"},
            {"from": "rename", "to": "out", "relation": "Success"}
        ]
    });
    std::fs::write(&chain_path, chain.to_string()).unwrap();
    let chain = Arc::new(Loader::new(&rt, vec![modules]).load(&chain_path).expect("chain"));
    let mut worker = Worker::standalone(rt, chain, Sinks::default());
    let input: bytes::Bytes = serde_json::to_vec(&uplink()).unwrap().into();
    let key = Envelope::key_of("DEVICE", "gateway-1");

    let mut group = c.benchmark_group("3-node");
    group.throughput(Throughput::Elements(1));
    // The source's parse is part of the lap, as the native chain's is.
    group.bench_function("wasm-chain", |b| {
        b.iter(|| {
            let msg: TbMsg = serde_json::from_slice(&input).expect("input parses");
            worker.process(Envelope::new(Arc::new(msg.into()), key, Ack::none()))
        })
    });
    let stats = worker.into_stats();
    // (When a filter skips this benchmark, nothing ran.)
    if stats.node("decode").received > 0 {
        assert!(stats.output > 0 && stats.node("out").received == stats.output, "the chain must reach the sink");
    }
    group.bench_function("native", |b| b.iter(|| native_chain(&input).expect("native")));
    group.finish();
}

/// The 3-node chain's work as plain Rust: decode the payload into telemetry, keep it if it has
/// `temp` and a `deviceType`, rename keys, serialize.
fn native_chain(input: &[u8]) -> Option<Vec<u8>> {
    let uplink: TbMsg = serde_json::from_slice(input).ok()?;
    let Value::Object(mut payload) = serde_json::from_str::<Value>(uplink.data["payload"].as_str()?).ok()? else {
        return None;
    };
    let Some(Value::String(device)) = payload.remove("deviceName") else { return None };
    let device_type = match payload.remove("deviceType") {
        Some(Value::String(t)) => Some(t),
        _ => None,
    };
    let mut msg = TbMsg::telemetry(&device, Value::Null).with_ts(uplink.ts).with_id(format!("{}:0", uplink.id));
    msg.metadata = uplink.metadata.clone();
    msg.metadata.insert("deviceName".into(), device);
    if let Some(t) = device_type {
        msg.metadata.insert("deviceType".into(), t);
    }
    msg.metadata.insert("ts".into(), uplink.ts.to_string());
    if !(payload.get("temp").is_some_and(|v| !v.is_null()) && msg.metadata.contains_key("deviceType")) {
        return None;
    }
    let mut data = Map::new();
    for (k, v) in payload {
        let k = match k.as_str() {
            "temp" => "temperature".to_string(),
            "hum" => "humidity".to_string(),
            _ => k,
        };
        data.insert(k, v);
    }
    msg.data = Value::Object(data);
    serde_json::to_vec(&msg).ok()
}

/// Windowed aggregation with 10,000 keys: average of a value per key over 10 s tumbling windows,
/// one event per millisecond — every window closes and emits 10,000 results.
fn bench_windows(c: &mut Criterion) {
    const KEYS: usize = 10_000;
    let modules = modules();
    let rt = Arc::new(Runtime::new(None).expect("runtime"));
    let dir = tempfile::tempdir().unwrap();
    let chain_path = dir.path().join("chain.json");
    let chain = json!({
        "entry": "avg",
        "nodes": [
            {"id": "avg", "module": "window-aggregate", "config": {
                "key": "originator", "value": "data.v",
                "window": {"type": "tumbling", "sizeMs": 10000}, "graceMs": 0,
                "aggregates": ["avg", "count"]}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [{"from": "avg", "to": "out", "relation": "Success"}]
    });
    std::fs::write(&chain_path, chain.to_string()).unwrap();
    let chain = Arc::new(Loader::new(&rt, vec![modules]).load(&chain_path).expect("chain"));
    let inputs: Vec<(bytes::Bytes, i64)> = (0..100_000)
        .map(|i| {
            let ts = 1_700_000_000_000 + i as i64;
            let msg = TbMsg::telemetry(format!("sensor-{}", i % KEYS), json!({"v": (i % 97) as f64 * 0.5}))
                .with_id(format!("m{i}"))
                .with_ts(ts);
            (serde_json::to_vec(&msg).unwrap().into(), ts)
        })
        .collect();

    let mut group = c.benchmark_group("windows-10k-keys");
    group.throughput(Throughput::Elements(1));
    // Each lap is a fresh start over the same 100,000 events (event time only moves forward
    // within a lap); starting a worker or a map is not timed.
    group.bench_function("wasm-chain", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = std::time::Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let mut worker = Worker::standalone(rt.clone(), chain.clone(), Sinks::default());
                let lap = (iters - done).min(inputs.len() as u64) as usize;
                let start = std::time::Instant::now();
                for (bytes, ts) in &inputs[..lap] {
                    let msg: TbMsg = serde_json::from_slice(bytes).expect("input parses");
                    worker.process(Envelope::new(Arc::new(msg.into()), 0, Ack::none()).with_watermark(*ts));
                }
                elapsed += start.elapsed();
                assert!(lap < 20_000 || worker.into_stats().node("avg").windows_fired > 0, "windows must close");
                done += lap as u64;
            }
            elapsed
        })
    });
    group.bench_function("native", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = std::time::Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let mut native = NativeWindows::default();
                let lap = (iters - done).min(inputs.len() as u64) as usize;
                let start = std::time::Instant::now();
                for (msg, ts) in &inputs[..lap] {
                    native.process(msg, *ts);
                }
                elapsed += start.elapsed();
                done += lap as u64;
            }
            elapsed
        })
    });
    group.finish();
}

/// The same work natively: parse, key and value, a hash map of per-key running sums per window,
/// and on close one result message per key, serialized.
#[derive(Default)]
struct NativeWindows {
    open: std::collections::HashMap<(String, i64), (u64, f64)>,
    next_close: Option<i64>,
    emitted: u64,
}

impl NativeWindows {
    fn process(&mut self, bytes: &[u8], watermark: i64) {
        let msg: TbMsg = serde_json::from_slice(bytes).unwrap();
        let value = msg.number("v").unwrap();
        let start = msg.ts.div_euclid(10_000) * 10_000;
        if start + 10_000 > watermark {
            let slot = self.open.entry((msg.originator.name.clone(), start)).or_default();
            slot.0 += 1;
            slot.1 += value;
        }
        let close = self.next_close.get_or_insert(start + 10_000);
        if watermark >= *close {
            let due: Vec<_> = self.open.keys().filter(|(_, s)| s + 10_000 <= watermark).cloned().collect();
            for key in due {
                let (n, sum) = self.open.remove(&key).unwrap();
                let result = TbMsg::new(
                    "WINDOW_AGGREGATE",
                    Originator::asset(&key.0),
                    json!({"avg": sum / n as f64, "count": n}),
                )
                .with_ts(key.1);
                self.emitted += serde_json::to_vec(&result).unwrap().len() as u64;
            }
            *close += 10_000;
        }
    }
}

criterion_group!(benches, bench_calls, bench_chain, bench_windows);
criterion_main!(benches);

//! Windows as host functions, through the engine: closing by watermark, late events, chained
//! windows (module sums → panel deviation), and a module swapped while its windows are open.

use std::sync::Arc;

use serde_json::{Value, json};
use sluice::chain::Loader;
use sluice::flow::{Ack, Envelope, Pipeline, PipelineConfig, Sinks};
use sluice::sinks::jsonl::SinkItem;
use sluice::state::StateStore;
use sluice_sdk::{Originator, TbMsg};

use crate::support::{ChainDir, modules, run_chain, runtime};

fn reading(zone: &str, ts: i64, v: f64) -> TbMsg {
    TbMsg::telemetry("station", json!({ "v": v })).with_meta("zone", zone).with_ts(ts).with_id(format!("m{ts}"))
}

fn zone_average(late: Value) -> Value {
    json!({
        "entry": "avg",
        "nodes": [
            {"id": "avg", "module": "window-aggregate", "config": {
                "key": "metadata.zone", "value": "data.v",
                "window": {"type": "tumbling", "sizeMs": 10000}, "graceMs": 2000,
                "aggregates": ["avg", "count"], "late": late}},
            {"id": "out", "sink": "output"},
            {"id": "late", "sink": "output"}
        ],
        "connections": [
            {"from": "avg", "to": "out", "relation": "Success"},
            {"from": "avg", "to": "late", "relation": "Late"}
        ]
    })
}

#[test]
fn windows_close_by_watermark_and_late_events_go_to_late() {
    let msgs = [
        reading("A", 1_000, 1.0),
        reading("A", 5_000, 3.0),
        reading("A", 13_000, 10.0), // watermark 13 000 ≥ 10 000 + 2 000: [0, 10 000) closes
        reading("A", 9_000, 100.0), // its window closed: late
        reading("A", 11_000, 5.0),  // out of order, but its window [10 000, 20 000) is open
    ];
    let ran = run_chain(&zone_average(json!("Late")), &msgs, 1);
    let out: Vec<(String, Value)> = ran.output.iter().map(|m| (m.msg_type.clone(), m.data.clone())).collect();
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0].0, "WINDOW_AGGREGATE");
    assert_eq!((&out[0].1["avg"], &out[0].1["count"], &out[0].1["windowStart"]), (&json!(2.0), &json!(2), &json!(0)));
    assert_eq!(ran.output[1].id, "m9000", "the late message itself, on Late");
    assert_eq!((&out[2].1["avg"], &out[2].1["count"]), (&json!(7.5), &json!(2)));
    assert_eq!(ran.output[0].originator, Originator::asset("A"));
    assert_eq!(ran.output[0].id, "avg/aggregate/A/0:0", "deterministic id from node, window, key, start");
    let avg = ran.stats.node("avg");
    assert_eq!(avg.late, 1);
    assert_eq!(avg.outputs.get("Late"), Some(&1));
    assert_eq!(ran.stats.node("late").received, 1);
    assert_eq!(ran.acked, 5);
}

#[test]
fn late_events_can_be_dropped_and_are_still_counted() {
    let msgs = [reading("A", 1_000, 1.0), reading("A", 20_000, 1.0), reading("A", 2_000, 1.0)];
    let ran = run_chain(&zone_average(Value::Null), &msgs, 1);
    assert_eq!(ran.output.len(), 2, "two window results, the late event dropped");
    assert_eq!(ran.stats.node("avg").late, 1);
}

/// `../shared/DESIGN.md`, scenario 2: module sums 30, 30, 21 → avg 27, deviation 4.24 → module 3
/// scores 1.41 and is flagged; 1 and 2 (0.71) are not.
#[test]
fn the_solar_worked_example() {
    let chain = json!({
        "entry": "modules",
        "nodes": [
            {"id": "modules", "module": "window-aggregate", "config": {
                "key": "originator", "value": "data.power",
                "window": {"type": "tumbling", "sizeMs": 10000}, "graceMs": 1000,
                "aggregates": ["count", "sum", "avg"], "keep": ["data.panel"]}},
            {"id": "panel", "module": "group-deviation", "config": {
                "group": "data.panel", "member": "originator", "value": "data.sum",
                "window": {"type": "tumbling", "sizeMs": 10000}, "graceMs": 1000, "thresholdSigma": 1.0}},
            {"id": "anomalies", "sink": "output"}
        ],
        "connections": [
            {"from": "modules", "to": "panel", "relation": "Success"},
            {"from": "panel", "to": "anomalies", "relation": "Anomaly"}
        ]
    });
    let power = |module: &str, ts: i64, p: f64| {
        TbMsg::telemetry(module, json!({"power": p, "panel": "P1"})).with_ts(ts).with_id(format!("{module}@{ts}"))
    };
    let msgs = [
        power("M1", 1_000, 10.0),
        power("M2", 1_500, 15.0),
        power("M3", 2_000, 21.0),
        power("M1", 6_000, 20.0),
        power("M2", 7_000, 15.0),
        power("M1", 25_000, 1.0), // closes [0, 10 000) for the modules, then for the panel
    ];
    let ran = run_chain(&chain, &msgs, 2);
    assert_eq!(ran.output.len(), 1, "{:?}", ran.output);
    let anomaly = &ran.output[0];
    assert_eq!(anomaly.originator.name, "M3");
    let z = anomaly.data["z"].as_f64().unwrap();
    assert!((z - 6.0 / 18f64.sqrt()).abs() < 1e-12, "{z}");
    assert!((anomaly.data["deviation"].as_f64().unwrap() - 18f64.sqrt()).abs() < 1e-12);
    assert_eq!(anomaly.data["groupAvg"], json!(27.0));
}

/// The same bytes with a custom section appended: a different module (another content hash) that
/// behaves the same — what a rebuilt rule looks like.
fn rebuilt(wasm: &[u8]) -> Vec<u8> {
    let name = b"sluice-test-rebuild";
    let payload = b"2";
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.push((1 + name.len() + payload.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(payload);
    out
}

fn drive(pipeline: &Pipeline, msgs: &[TbMsg], watermark: &mut i64) {
    for msg in msgs {
        *watermark = (*watermark).max(msg.ts);
        let key = Envelope::key_of(&msg.originator.entity_type, &msg.originator.name);
        let env = Envelope::new(std::sync::Arc::new(msg.clone().into()), key, Ack::none()).with_watermark(*watermark);
        pipeline.send_blocking(env).unwrap();
    }
}

#[test]
fn swapping_a_module_keeps_its_open_windows() {
    let dir = ChainDir::new();
    let original = std::fs::read(modules().join("window_aggregate.wasm")).unwrap();
    dir.write_bytes("v1.wasm", &original);
    dir.write_bytes("v2.wasm", &rebuilt(&original));
    let chain_with = |module: &str| {
        let mut c = zone_average(json!("Late"));
        c["nodes"][0]["module"] = json!(module);
        c
    };
    let msgs: Vec<TbMsg> = (0..400).map(|i| reading(["A", "B", "C"][i % 3], i as i64 * 97, (i % 17) as f64)).collect();
    let (first, second) = msgs.split_at(150);

    let run = |swap: bool| {
        let runtime = runtime();
        let loader = Loader::new(&runtime, vec![modules().to_path_buf()]);
        let v1 = Arc::new(loader.load(&dir.write_json("v1.json", &chain_with("v1.wasm"))).unwrap());
        let v2 = Arc::new(loader.load(&dir.write_json("v2.json", &chain_with("v2.wasm"))).unwrap());
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let config = PipelineConfig { workers: 2, queue: 8, ..PipelineConfig::default() };
        let pipeline = Pipeline::start(
            runtime.clone(),
            v1.clone(),
            StateStore::default(),
            Sinks { output: Some(tx), ..Default::default() },
            config,
        )
        .unwrap();
        let collector = std::thread::spawn(move || {
            rx.into_iter()
                .flat_map(SinkItem::into_msgs)
                .map(|(bytes, _)| serde_json::to_value(&*bytes).unwrap().to_string())
                .collect::<Vec<_>>()
        });
        let mut watermark = i64::MIN;
        drive(&pipeline, first, &mut watermark);
        if swap {
            assert_ne!(
                (match &v1.nodes[0].kind {
                    sluice::chain::NodeKind::Rule(r) => r.module.hash.clone(),
                    _ => unreachable!(),
                }),
                (match &v2.nodes[0].kind {
                    sluice::chain::NodeKind::Rule(r) => r.module.hash.clone(),
                    _ => unreachable!(),
                }),
            );
            pipeline.reload(v2);
        }
        drive(&pipeline, second, &mut watermark);
        let stats = pipeline.shutdown();
        let mut out = collector.join().unwrap();
        out.sort();
        (out, stats)
    };
    let (swapped, stats) = run(true);
    let (straight, _) = run(false);
    assert_eq!(swapped.len(), 12, "4 windows × 3 zones");
    assert_eq!(swapped, straight);
    assert_eq!(stats.node("avg").received, 400);
}

fn event(kind: &str, device: &str, ts: i64, data: Value) -> TbMsg {
    TbMsg::new(kind, Originator::device(device), data).with_ts(ts).with_id(format!("{kind}-{ts}"))
}

fn features_chain() -> Value {
    json!({
        "entry": "f",
        "nodes": [{"id": "f", "module": "features"}, {"id": "out", "sink": "output"}],
        "connections": [
            {"from": "f", "to": "out", "relation": "Success"},
            {"from": "f", "to": "out", "relation": "Failure"}
        ]
    })
}

/// Tables (enrichment), a windowed join, a guest fold and early updates, through wasm. Expected
/// outputs are worked out by hand from the inputs.
#[test]
fn tables_joins_folds_and_early_updates() {
    let msgs = [
        event("REGISTER", "d1", 0, json!({"region": "north"})),
        event("ACCESS", "d1", 100, json!({"door": "A", "user": "u1"})),
        event("ACCESS", "d1", 200, json!({"door": "A", "user": "u2"})),
        event("ACCESS", "d1", 300, json!({"door": "A", "user": "u1"})),
        event("ALARM", "d9", 400, json!({"door": "A", "alarm": "forced"})),
        event("ACCESS", "d2", 500, json!({"door": "A", "user": "u9"})),
        event("ACCESS", "d1", 1500, json!({"door": "B", "user": "u3"})),
    ];
    let ran = run_chain(&features_chain(), &msgs, 1);
    let summary: Vec<String> = ran
        .output
        .iter()
        .map(|m| match m.msg_type.as_str() {
            _ if m.meta("error").is_some() => format!("{} {}", m.msg_type, m.meta("error").unwrap_or("")),
            "ACCESS" => format!("ACCESS {} {}", m.id, m.meta("region").unwrap_or("-")),
            "JOINED" => format!("JOINED {} {} {}", m.data["door"], m.data["user"], m.data["alarm"]),
            "DISTINCT" => format!("DISTINCT {} {}", m.data["start"], m.data["users"]),
            "COUNT" => format!("COUNT {} {} early={}", m.data["start"], m.data["count"], m.data["early"]),
            other => format!("{other} {}", m.meta("error").unwrap_or("")),
        })
        .collect();
    let expected = [
        "ACCESS ACCESS-100 north",
        "COUNT 0 1 early=true",
        "ACCESS ACCESS-200 north",
        "COUNT 0 2 early=true",
        "ACCESS ACCESS-300 north",
        "COUNT 0 3 early=true",
        "ACCESS unknown device d2",
        "ACCESS ACCESS-1500 north",
        "COUNT 1000 1 early=true",
        // ts 1500 moved the watermark past 1000: the [0, 1000) windows close (join, fold, count).
        "JOINED \"A\" \"u1\" \"forced\"",
        "JOINED \"A\" \"u2\" \"forced\"",
        "JOINED \"A\" \"u1\" \"forced\"",
        "DISTINCT 0 [\"u1\",\"u2\"]",
        "COUNT 0 3 early=false",
        // End of input: [1000, 2000).
        "DISTINCT 1000 [\"u3\"]",
        "COUNT 1000 1 early=false",
    ];
    assert_eq!(summary, expected);
}

/// A processing-time timer fires once the host clock reaches it, from a tick — with no message.
#[test]
fn processing_time_timers_fire_on_ticks() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let dir = ChainDir::new();
    let path = dir.write_json("chain.json", &features_chain());
    let runtime = runtime();
    let chain = Arc::new(Loader::new(&runtime, vec![modules().to_path_buf()]).load(&path).unwrap());
    let now = Arc::new(AtomicI64::new(1_000));
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    let config = PipelineConfig {
        workers: 1,
        clock: sluice::host::Clock::Manual(now.clone()),
        tick: std::time::Duration::from_millis(5),
        ..PipelineConfig::default()
    };
    let pipeline = Pipeline::start(
        runtime.clone(),
        chain,
        StateStore::default(),
        Sinks { output: Some(tx), ..Default::default() },
        config,
    )
    .unwrap();
    let arm = event("ARM", "d1", 0, json!({"after": 500}));
    pipeline.send_blocking(Envelope::new(std::sync::Arc::new(arm.clone().into()), 1, Ack::none())).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(rx.try_recv().is_err(), "not due yet at 1 000");
    now.store(1_600, Ordering::SeqCst);
    let fired = rx.recv_timeout(std::time::Duration::from_secs(5)).expect("the timer fires on a tick");
    let [(bytes, _)]: [_; 1] = fired.into_msgs().try_into().unwrap_or_else(|_| panic!("expected one message"));
    let timeout: TbMsg = bytes.to_tb();
    assert_eq!(timeout.msg_type, "TIMEOUT");
    assert_eq!(timeout.originator.name, "d1");
    assert_eq!(timeout.data, json!({"at": 1_500, "now": 1_600}));
    assert_eq!(timeout.id, "f/timer/d1/1500:0");
    let stats = pipeline.shutdown();
    assert_eq!(stats.node("f").timers_fired, 1);
}

//! Wasm builds of the timers nodes (deduplicate, delay, generator), run in the engine.
//!
//! Deduplication runs on event time, through `support::run_node` (windows flushed at the end).
//! Delay and generator run on processing time: [`Timed`] runs a chain on a pipeline whose clock
//! the test sets by hand (a 5 ms tick), and waits for what the clock should release. Like `sluice
//! run`, it starts every rule node once against the pipeline's state before the first message,
//! so a generator arms its first timer with no input at all. The `sluice run` tests at the end
//! use the real binary and the real clock, and check that a finite run waits for pending timers.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::chain::NodeKind;
use sluice::flow::{Ack, AckCounter, Envelope, Pipeline, PipelineConfig, Sinks};
use sluice::host::Clock;
use sluice::sinks::jsonl::SinkItem;
use sluice_sdk::{Metadata, Originator, TbMsg};

use crate::support;

fn reading(device: &str, ts: i64, id: &str, t: f64) -> TbMsg {
    TbMsg::telemetry(device, json!({ "t": t })).with_ts(ts).with_id(id).with_meta("seq", id)
}

fn one_node(module: &str, config: Value, relations: &[&str]) -> Value {
    json!({
        "entry": "node",
        "nodes": [{"id": "node", "module": module, "config": config}, {"id": "out", "sink": "output"}],
        "connections": relations.iter().map(|r| json!({"from": "node", "to": "out", "relation": r})).collect::<Vec<_>>()
    })
}

/// A chain running on a pipeline with a hand-set clock.
struct Timed {
    pipeline: Pipeline,
    now: Arc<AtomicI64>,
    out: Arc<Mutex<Vec<TbMsg>>>,
    collector: std::thread::JoinHandle<()>,
    acks: Arc<AckCounter>,
    sent: u64,
}

impl Timed {
    fn start(chain: &Value, now: i64) -> Timed {
        let chain = Arc::new(support::load_chain(chain).unwrap_or_else(|e| panic!("chain does not load: {e}")));
        let now = Arc::new(AtomicI64::new(now));
        let clock = Clock::Manual(now.clone());
        let state = sluice::state::StateStore::default();
        let runtime = support::runtime();
        // As `sluice run` does before reading its input: a generator arms its first timer here.
        for node in &chain.nodes {
            if let NodeKind::Rule(rule) = &node.kind {
                let handles = state.node(&node.id);
                let env = sluice::runtime::HostEnv::new(node.id.as_str(), handles, clock.clone());
                let started = runtime.instantiate(rule, env);
                started.unwrap_or_else(|e| panic!("node {} does not start: {e}", node.id));
            }
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let config =
            PipelineConfig { workers: 1, queue: 4, clock, tick: Duration::from_millis(5), ..PipelineConfig::default() };
        let pipeline = Pipeline::start(runtime, chain, state, Sinks { output: Some(tx), ..Default::default() }, config)
            .expect("pipeline");
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let collector = std::thread::spawn(move || {
            for (bytes, _ack) in rx.into_iter().flat_map(SinkItem::into_msgs) {
                sink.lock().unwrap().push(bytes.to_tb());
            }
        });
        Timed { pipeline, now, out, collector, acks: Arc::new(AckCounter::default()), sent: 0 }
    }

    fn send(&mut self, msg: &TbMsg) {
        let key = Envelope::key_of(&msg.originator.entity_type, &msg.originator.name);
        let bytes = std::sync::Arc::new(msg.clone().into());
        let envelope = Envelope::new(bytes, key, Ack::new(self.acks.clone(), self.sent)).with_watermark(msg.ts);
        self.pipeline.send_blocking(envelope).expect("send");
        self.sent += 1;
    }

    fn set_time(&self, ms: i64) {
        self.now.store(ms, Ordering::SeqCst);
    }

    fn outputs(&self) -> Vec<TbMsg> {
        self.out.lock().unwrap().clone()
    }

    /// Lets the engine tick for a while, then returns what came out so far.
    fn settle(&self) -> Vec<TbMsg> {
        std::thread::sleep(Duration::from_millis(100));
        self.outputs()
    }

    /// Waits until at least `n` messages came out (fails after 10 s), then lets the engine tick
    /// a little more so that an extra one would show.
    fn wait_for(&self, n: usize) -> Vec<TbMsg> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.outputs().len() < n {
            assert!(Instant::now() < deadline, "waited 10 s for {n} outputs; got {:?}", self.outputs());
            std::thread::sleep(Duration::from_millis(2));
        }
        self.settle()
    }

    fn stop(self) -> Vec<TbMsg> {
        self.pipeline.shutdown();
        self.collector.join().expect("collector");
        Arc::try_unwrap(self.out).map(|m| m.into_inner().unwrap()).unwrap_or_default()
    }
}

// ---------------------------------------------------------------- deduplicate

/// A: a1 (100), a2 (500), a3 (1200), a4 (1999); B: b1 (300). Windows of 1000 ms: A has [0, 1000)
/// = {a1, a2} and [1000, 2000) = {a3, a4}; B has {b1}. a3's watermark closes the first windows
/// (A before B: the host closes them in key order); the end of the input closes the last one.
fn dedup_input() -> Vec<TbMsg> {
    vec![
        reading("A", 100, "a1", 1.0),
        reading("A", 500, "a2", 2.0),
        reading("B", 300, "b1", 3.0),
        reading("A", 1_200, "a3", 4.0),
        reading("A", 1_999, "a4", 5.0),
    ]
}

fn ids(msgs: &[TbMsg]) -> Vec<&str> {
    msgs.iter().map(|m| m.id.as_str()).collect()
}

#[test]
fn deduplicate_first_and_last_pass_one_message_per_window_unchanged() {
    let input = dedup_input();
    let first = support::run_node("deduplicate", json!({"intervalMs": 1000}), &input, &["Success"]);
    assert_eq!(ids(&first["Success"]), ["a1", "b1", "a3"]);
    assert_eq!(first["Success"][0], input[0], "unchanged: id, ts, metadata, data");
    let last = support::run_node("deduplicate", json!({"intervalMs": 1000, "strategy": "last"}), &input, &["Success"]);
    assert_eq!(ids(&last["Success"]), ["a2", "b1", "a4"]);
    assert_eq!(last["Success"][2], input[4]);
}

#[test]
fn deduplicate_all_packs_like_thingsboard() {
    let config = json!({"intervalMs": 1000, "strategy": "all", "outMsgType": "PACKED"});
    let out = support::run_node("deduplicate", config, &dedup_input(), &["Success"]);
    let pack = |id: &str, device: &str, ts: i64, items: Value| TbMsg {
        id: id.into(),
        ts,
        msg_type: "PACKED".into(),
        originator: Originator::device(device),
        metadata: Metadata::from([("ts".to_string(), ts.to_string())]),
        data: items,
    };
    let item = |t: f64, seq: &str| json!({"msg": {"t": t}, "metadata": {"seq": seq}});
    assert_eq!(
        out["Success"],
        [
            pack("node/pack/A/0:0", "A", 100, json!([item(1.0, "a1"), item(2.0, "a2")])),
            pack("node/pack/B/0:0", "B", 300, json!([item(3.0, "b1")])),
            pack("node/pack/A/1000:0", "A", 1_200, json!([item(4.0, "a3"), item(5.0, "a4")])),
        ]
    );
}

#[test]
fn deduplicate_overflow_fails_and_late_goes_to_late() {
    let input = [
        reading("A", 100, "x1", 1.0),
        reading("A", 200, "x2", 2.0), // a second message in [0, 1000): over maxPendingMsgs 1
        reading("A", 5_000, "x3", 3.0), // closes [0, 1000)
        reading("A", 50, "x4", 4.0),  // its window closed: late
    ];
    let config = json!({"intervalMs": 1000, "maxPendingMsgs": 1});
    let out = support::run_node("deduplicate", config, &input, &["Success", "Failure", "Late"]);
    assert_eq!(ids(&out["Success"]), ["x1", "x3"]);
    assert_eq!(ids(&out["Failure"]), ["x2"]);
    assert_eq!(
        out["Failure"][0].meta("error"),
        Some("deduplication: maxPendingMsgs (1) reached for key `A` in the window starting at 0")
    );
    assert_eq!(out["Late"], [input[3].clone()]);
}

#[test]
fn deduplicate_bad_configs_name_node_and_field() {
    let err = support::node_config_error("deduplicate", json!({"intervalMs": 10, "strategy": "middle"}));
    assert!(err.contains("node `node`") && err.contains("config.strategy"), "{err}");
    let err = support::node_config_error("deduplicate", json!({"intervalMs": 0}));
    assert!(err.contains("node `node`") && err.contains("intervalMs"), "{err}");
    let err = support::node_config_error("deduplicate", json!({"strategy": "first"}));
    assert!(err.contains("config.intervalMs"), "{err}");
}

// ---------------------------------------------------------------- delay

#[test]
fn delay_holds_messages_until_the_clock_passes_the_period() {
    let chain = one_node("delay", json!({"periodMs": 1000}), &["Success", "Failure"]);
    let mut run = Timed::start(&chain, 1_000_000);
    let (m1, m2) = (reading("T-1", 5, "m1", 21.5), reading("T-2", 6, "m2", 22.0));
    run.send(&m1);
    run.send(&m2);
    assert!(run.settle().is_empty(), "held");
    run.set_time(1_000_999);
    assert!(run.settle().is_empty(), "999 ms is not enough");
    run.set_time(1_001_000);
    // Due together: fired in key (id) order, unchanged.
    assert_eq!(run.wait_for(2), [m1, m2]);
    run.set_time(2_000_000);
    assert_eq!(run.stop().len(), 2, "released once");
}

#[test]
fn delay_overflow_goes_to_failure_at_once() {
    let chain = one_node("delay", json!({"periodMs": 500, "maxPendingMsgs": 1}), &["Success", "Failure"]);
    let mut run = Timed::start(&chain, 0);
    let (held, refused) = (reading("T-1", 1, "held", 1.0), reading("T-1", 2, "refused", 2.0));
    run.send(&held);
    run.send(&refused);
    let out = run.wait_for(1);
    assert_eq!(ids(&out), ["refused"]);
    assert_eq!(out[0].meta("error"), Some("delay: 1 messages already pending (maxPendingMsgs is 1)"));
    run.set_time(500);
    assert_eq!(ids(&run.wait_for(2)), ["refused", "held"]);
    run.stop();
}

#[test]
fn delay_bad_configs_name_node_and_field() {
    let err = support::node_config_error("delay", json!({"periodMs": 10, "maxPendingMsgs": 0}));
    assert!(err.contains("node `node`") && err.contains("maxPendingMsgs"), "{err}");
    let err = support::node_config_error("delay", json!({"periodInSeconds": 5}));
    assert!(err.contains("node `node`") && err.contains("periodInSeconds"), "{err}");
}

// ---------------------------------------------------------------- generator

fn generated(node: &str, i: u64, ts: i64, data: Value) -> TbMsg {
    let mut msg = TbMsg::telemetry("Module 1", data).with_ts(ts).with_id(format!("{node}/generator:{i}"));
    msg.metadata = Metadata::from([("deviceType".to_string(), "solar".to_string())]);
    msg
}

#[test]
fn generator_starts_by_itself_and_emits_exactly_count() {
    let config = json!({"periodMs": 1000, "count": 3,
        "originator": {"entityType": "DEVICE", "name": "Module 1"}, "metadata": {"deviceType": "solar"},
        "data": {"panel": "Panel 1", "power": {"sequence": [30, 31]}, "energy": {"linear": {"start": 10, "step": 5}}},
        "tsStartMs": 1_700_000_000_000_i64, "tsStepMs": 5000});
    let chain = json!({"entry": "gen", "nodes": [{"id": "gen", "module": "generator", "config": config},
        {"id": "out", "sink": "output"}], "connections": [{"from": "gen", "to": "out", "relation": "Success"}]});
    // No input at all. Started at 1 000 000: messages due at 1 001 000, 1 002 000, 1 003 000.
    let run = Timed::start(&chain, 1_000_000);
    assert!(run.settle().is_empty());
    run.set_time(1_000_999);
    assert!(run.settle().is_empty(), "one period after the start");
    let expected = [
        generated("gen", 0, 1_700_000_000_000, json!({"panel": "Panel 1", "power": 30, "energy": 10})),
        generated("gen", 1, 1_700_000_005_000, json!({"panel": "Panel 1", "power": 31, "energy": 15})),
        generated("gen", 2, 1_700_000_010_000, json!({"panel": "Panel 1", "power": 30, "energy": 20})),
    ];
    run.set_time(1_001_000);
    assert_eq!(run.wait_for(1), expected[..1]);
    run.set_time(1_002_000);
    assert_eq!(run.wait_for(2), expected[..2]);
    run.set_time(1_010_000);
    assert_eq!(run.wait_for(3), expected);
    run.set_time(2_000_000);
    assert_eq!(run.stop(), expected, "count reached: nothing more");
}

/// The solar sample's three module simulators (tbdocs-solar_module_simulator.json) as three
/// generator nodes in one chain, none of them fed.
#[test]
fn generator_three_solar_module_simulators() {
    let module = |n: u32, power: Value| {
        json!({"id": format!("m{n}"), "module": "generator", "config": {
            "periodMs": 5000, "count": 2, "originator": {"entityType": "DEVICE", "name": format!("Module {n}")},
            "data": {"name": format!("Module {n}"), "panel": "Panel 1", "power": {"sequence": power}},
            "tsStartMs": 0, "tsStepMs": 5000}})
    };
    let connections: Vec<Value> =
        (1..=3).map(|n| json!({"from": format!("m{n}"), "to": "out", "relation": "Success"})).collect();
    let chain = json!({"entry": "m1",
        "nodes": [module(1, json!([5, 6])), module(2, json!([5, 4])), module(3, json!([3.5, 3])), {"id": "out", "sink": "output"}],
        "connections": connections});
    let run = Timed::start(&chain, 0);
    run.set_time(10_000); // both messages of every module are due
    let mut got: Vec<(String, i64, Value)> =
        run.wait_for(6).into_iter().map(|m| (m.id, m.ts, m.data["power"].clone())).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let expected = [
        ("m1/generator:0", 0, json!(5)),
        ("m1/generator:1", 5000, json!(6)),
        ("m2/generator:0", 0, json!(5)),
        ("m2/generator:1", 5000, json!(4)),
        ("m3/generator:0", 0, json!(3.5)),
        ("m3/generator:1", 5000, json!(3)),
    ]
    .map(|(id, ts, p)| (id.to_string(), ts, p));
    assert_eq!(got, expected);
    assert_eq!(run.stop().len(), 6);
}

#[test]
fn generator_bad_configs_name_node_and_field() {
    let err = support::node_config_error(
        "generator",
        json!({"originator": {"entityType": "DEVICE", "name": "G"}, "data": {"power": {"sequence": []}}}),
    );
    assert!(err.contains("node `node`") && err.contains("data.power.sequence"), "{err}");
    let err = support::node_config_error("generator", json!({"periodMs": 10}));
    assert!(err.contains("node `node`") && err.contains("config.originator"), "{err}");
}

// ---------------------------------------------------------------- `sluice run`, real clock

fn run_cli(chain: &Value, input: &[TbMsg]) -> (Vec<TbMsg>, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let (chain_path, input_path, output) =
        (dir.path().join("chain.json"), dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    std::fs::write(&chain_path, chain.to_string()).unwrap();
    let lines: String = input.iter().map(|m| serde_json::to_string(m).unwrap() + "\n").collect();
    std::fs::write(&input_path, lines).unwrap();
    let started = Instant::now();
    let out = support::sluice(&[
        "run",
        "--chain",
        chain_path.to_str().unwrap(),
        "--input",
        input_path.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--no-state",
    ]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", support::stderr(&out));
    let text = std::fs::read_to_string(&output).unwrap();
    (text.lines().map(|l| serde_json::from_str(l).expect("a message")).collect(), took)
}

#[test]
fn sluice_run_with_no_input_waits_for_a_finite_generator() {
    let config = json!({"periodMs": 20, "count": 3, "originator": {"entityType": "DEVICE", "name": "G"},
        "data": {"i": {"linear": {"start": 0, "step": 1}}}, "tsStartMs": 1000, "tsStepMs": 10});
    let chain = json!({"entry": "gen", "nodes": [{"id": "gen", "module": "generator", "config": config},
        {"id": "out", "sink": "output"}], "connections": [{"from": "gen", "to": "out", "relation": "Success"}]});
    let (out, _) = run_cli(&chain, &[]);
    let got: Vec<(&str, i64, &Value)> = out.iter().map(|m| (m.id.as_str(), m.ts, &m.data)).collect();
    assert_eq!(
        got,
        [
            ("gen/generator:0", 1000, &json!({"i": 0})),
            ("gen/generator:1", 1010, &json!({"i": 1})),
            ("gen/generator:2", 1020, &json!({"i": 2})),
        ]
    );
}

#[test]
fn sluice_run_waits_for_delayed_messages() {
    let chain = one_node("delay", json!({"periodMs": 300}), &["Success"]);
    let input = [reading("T-1", 1, "d1", 1.0), reading("T-2", 2, "d2", 2.0)];
    let (mut out, took) = run_cli(&chain, &input);
    out.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(out, input, "both released, unchanged");
    assert!(took >= Duration::from_millis(300), "the run ended before the delay: {took:?}");
}

// ---------------------------------------------------------------- device profile

/// A thermostat reports 31 once and goes quiet: ThingsBoard's periodic check
/// (`TbDeviceProfileNode.harvestAlarms` → `AlarmRuleState.eval(ts, data)`: `duration + (ts -
/// lastEventTs) > required`) raises "High Temperature" without a new message. Through the engine:
/// the node's host timer fires once the 10 s are exceeded, the alarm carrying the reading's
/// metadata (`lastMsgMetaData`) and starting at the reading's time (`dataSnapshot.getTs()`).
#[test]
fn device_profile_raises_a_duration_alarm_on_time() {
    let above = json!([{"key": {"type": "TIME_SERIES", "key": "t"}, "valueType": "NUMERIC",
        "predicate": {"type": "NUMERIC", "operation": "GREATER", "value": {"defaultValue": 30}}}]);
    let config = json!({"alarms": [{"alarmType": "High Temperature", "createRules": {"CRITICAL":
        {"condition": {"condition": above, "spec": {"type": "DURATION", "unit": "SECONDS", "predicate": {"defaultValue": 10}}}}}}]});
    let chain = one_node("device-profile", config, &["Alarm Created"]);
    let mut run = Timed::start(&chain, 1_000_000);
    run.send(&reading("T-1", 5_000, "r1", 31.0));
    assert!(run.settle().is_empty());
    run.set_time(1_010_000);
    assert!(run.settle().is_empty(), "10 s is not more than 10 s");
    run.set_time(1_010_100);
    let out = run.wait_for(1);
    assert_eq!(out[0].msg_type, "ALARM");
    assert_eq!(out[0].originator.name, "T-1");
    assert_eq!(out[0].data["severity"], "CRITICAL");
    assert_eq!(out[0].data["startTs"], 5_000);
    assert_eq!(out[0].meta("seq"), Some("r1"));
    run.set_time(1_100_000);
    assert_eq!(run.stop().len(), 1, "raised once");
}

//! The flight recorder (`sluice::flow::recorder`): each node's last events with what came in,
//! what went out on which relation and the error; failures kept apart so that normal traffic
//! does not push them out; bodies cut at `maxBodyBytes`; nothing kept for a node or a chain file
//! that opts out.

use std::sync::Arc;

use serde_json::{Value, json};
use sluice::chain::Loader;
use sluice::core::Ack;
use sluice::flow::recorder::Recorder;
use sluice::flow::{Envelope, PipelineConfig, RunStats};
use sluice_sdk::TbMsg;

use crate::support::{ChainDir, modules, runtime, start_to_channel};

/// Runs `msgs` through `chain` (2 workers); returns the recorder, as JSON per node on request.
fn run(chain: &Value, msgs: Vec<TbMsg>) -> (Recorder, RunStats, ChainDir) {
    let dir = ChainDir::new();
    let path = dir.write_json("chain.json", chain);
    let chain = Arc::new(Loader::new(&runtime(), vec![modules().to_path_buf()]).load(&path).expect("loads"));
    let (pipeline, rx) = start_to_channel(&chain, PipelineConfig { workers: 2, queue: 4, ..Default::default() });
    let sink = std::thread::spawn(move || rx.into_iter().count());
    let recorder = pipeline.recorder();
    for (i, msg) in msgs.into_iter().enumerate() {
        let msg = msg.with_ts(1_000 + i as i64).with_id(format!("m{i}"));
        let key = Envelope::key_of(&msg.originator.entity_type, &msg.originator.name);
        pipeline.send_blocking(Envelope::new(Arc::new(msg.into()), key, Ack::none())).expect("taken");
    }
    let stats = pipeline.shutdown();
    sink.join().expect("sink");
    (recorder, stats, dir)
}

fn events(recorder: &Recorder, node: &str) -> Value {
    serde_json::to_value(recorder.events(node).unwrap_or_else(|| panic!("`{node}` is recorded"))).unwrap()
}

fn decode_chain(record: Value) -> Value {
    let mut chain = json!({
        "entry": "check",
        "nodes": [
            {"id": "check", "module": "check-fields", "config": {"messageNames": ["payload"]}},
            {"id": "decode", "module": "json-decoder"},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "check", "to": "decode", "relation": "True"},
            {"from": "decode", "to": "out", "relation": "Success"}
        ]
    });
    if !record.is_null() {
        chain["record"] = record;
    }
    chain
}

fn good(i: usize) -> TbMsg {
    TbMsg::telemetry(format!("dev-{}", i % 5), json!({"payload": json!({"deviceName": "D", "t": i}).to_string()}))
}

#[test]
fn a_node_keeps_its_last_calls_with_their_outputs_and_a_rare_failure_stays() {
    // One failure first, then far more normal traffic than a ring holds.
    let mut msgs = vec![TbMsg::telemetry("dev-0", json!({"payload": "{not json"}))];
    msgs.extend((1..=500).map(good));
    msgs.push(TbMsg::telemetry("dev-1", json!({"no": "payload"})));
    let (recorder, _, _dir) = run(&decode_chain(json!({"events": 10})), msgs);

    let check = events(&recorder, "check");
    let list = check["events"].as_array().unwrap();
    assert!(list.len() <= 20 && list.len() >= 10, "10 per worker: {}", list.len());
    // Newest first within a worker (two workers run at once: their newest events interleave by
    // time): the last message had no payload, so it went out on `False`.
    let worker = list.iter().find(|e| e["input"]["id"] == "m501").expect("the last message recorded")["worker"].clone();
    let mine: Vec<&Value> = list.iter().filter(|e| e["worker"] == worker).collect();
    assert!(mine.windows(2).all(|w| w[0]["seq"].as_u64() > w[1]["seq"].as_u64()), "newest first: {mine:?}");
    let newest = mine[0];
    assert_eq!(newest["input"]["id"], "m501", "{newest}");
    assert_eq!(newest["outputs"][0]["relation"], "False");
    assert_eq!(newest["outputs"][0]["msg"]["id"], "m501", "a forward is the same message");
    assert_eq!(newest["handed"], "message");
    assert!(newest["durationUs"].is_u64() && newest["atMs"].is_i64(), "{newest}");

    let decode = events(&recorder, "decode");
    assert!(decode["events"].as_array().unwrap().iter().all(|e| e["error"].is_null()), "the failure was pushed out");
    let failures = decode["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{decode}");
    assert_eq!(failures[0]["input"]["id"], "m0");
    assert_eq!(failures[0]["outputs"][0]["relation"], "Failure");
    assert!(failures[0]["error"].as_str().unwrap().contains("decode"), "{}", failures[0]);
}

#[test]
fn bodies_past_the_limit_are_cut() {
    let long = "x".repeat(500);
    let msgs = vec![TbMsg::telemetry("dev-0", json!({"payload": json!({"deviceName": "D", "s": long}).to_string()}))];
    let (recorder, _, _dir) = run(&decode_chain(json!({"maxBodyBytes": 64})), msgs);
    let check = events(&recorder, "check");
    let input = &check["events"][0]["input"];
    assert_eq!(input["truncated"].as_str().unwrap().len(), 64, "{input}");
    assert!(input["bytes"].as_u64().unwrap() > 500, "{input}");
}

#[test]
fn a_node_or_a_chain_that_opts_out_keeps_nothing() {
    let mut chain = decode_chain(Value::Null);
    chain["nodes"][1]["record"] = json!(false);
    let (recorder, stats, _dir) = run(&chain, (0..20).map(good).collect());
    assert!(recorder.events("check").is_some());
    assert!(recorder.events("decode").is_none(), "`record: false` on the node");
    // Not recorded, still timed: every call in the latency histogram.
    assert_eq!(stats.node("decode").latency.buckets.iter().sum::<u64>(), 20);

    let (recorder, _, _dir) = run(&decode_chain(json!({"enabled": false})), (0..20).map(good).collect());
    assert!(recorder.events("check").is_none() && recorder.events("decode").is_none(), "off for the chain file");
}

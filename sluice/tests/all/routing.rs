//! Relation routing, as ThingsBoard does it: every output goes down every connection with its
//! relation; what no connection takes is counted; per-originator order holds across workers.

use std::collections::BTreeMap;

use serde_json::json;
use sluice_sdk::TbMsg;

use crate::support::{ChainDir, run_chain};

#[test]
fn an_output_goes_down_every_matching_connection() {
    let chain = json!({
        "entry": "check",
        "nodes": [
            {"id": "check", "module": "check-fields", "config": {"messageNames": ["t"]}},
            {"id": "a", "module": "rename-keys", "config": {"renameKeysMapping": {"t": "a"}}},
            {"id": "b", "module": "rename-keys", "config": {"renameKeysMapping": {"t": "b"}}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "check", "to": "a", "relation": "True"},
            {"from": "check", "to": "b", "relation": "True"},
            {"from": "a", "to": "out", "relation": "Success"},
            {"from": "b", "to": "out", "relation": "Success"}
        ]
    });
    let ran = run_chain(&chain, &[TbMsg::telemetry("d", json!({"t": 1})).with_id("m")], 1);
    let data: Vec<_> = ran.output.iter().map(|m| m.data.clone()).collect();
    assert_eq!(data, [json!({"a": 1}), json!({"b": 1})]);
    assert_eq!(ran.acked, 1);
}

#[test]
fn unconnected_outputs_are_counted_as_dropped() {
    let chain = json!({
        "entry": "check",
        "nodes": [
            {"id": "check", "module": "check-fields", "config": {"messageNames": ["t"]}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [{"from": "check", "to": "out", "relation": "True"}]
    });
    let msgs =
        [TbMsg::telemetry("d", json!({"t": 1})), TbMsg::telemetry("d", json!({})), TbMsg::telemetry("d", json!({}))];
    let ran = run_chain(&chain, &msgs, 2);
    assert_eq!(ran.output.len(), 1);
    let check = ran.stats.node("check");
    assert_eq!(check.dropped, BTreeMap::from([("False".to_string(), 2)]));
    assert_eq!(ran.acked, 3, "dropped messages are acked too: they are done");
}

#[test]
fn failures_without_a_connection_are_counted() {
    let chain = json!({
        "entry": "decode",
        "nodes": [{"id": "decode", "module": "json-decoder"}, {"id": "out", "sink": "output"}],
        "connections": [{"from": "decode", "to": "out", "relation": "Success"}]
    });
    let ran = run_chain(&chain, &[TbMsg::telemetry("d", json!({"payload": "not json"}))], 1);
    let decode = ran.stats.node("decode");
    assert_eq!((decode.failures, decode.unhandled_failures), (1, 1));
    assert!(ran.output.is_empty());
}

#[test]
fn a_nested_chain_hands_back_what_it_leaves_unconnected() {
    let dir = ChainDir::new();
    dir.write_json(
        "inner.json",
        &json!({
            "entry": "check",
            "nodes": [
                {"id": "check", "module": "check-fields", "config": {"messageNames": ["t"]}},
                {"id": "rename", "module": "rename-keys", "config": {"renameKeysMapping": {"t": "temperature"}}}
            ],
            "connections": [{"from": "check", "to": "rename", "relation": "True"}]
        }),
    );
    let outer = json!({
        "entry": "sub",
        "nodes": [
            {"id": "sub", "chain": "inner.json"},
            {"id": "out", "sink": "output"},
            {"id": "rejected", "sink": "output"}
        ],
        "connections": [
            {"from": "sub", "to": "out", "relation": "Success"},
            {"from": "sub", "to": "rejected", "relation": "False"}
        ]
    });
    let chain = dir.load("outer.json", &outer).expect("loads");
    assert!(chain.find("sub/check").is_some(), "nested ids are qualified");
    let path = dir.dir.path().join("outer.json");
    let msgs =
        [TbMsg::telemetry("d", json!({"t": 5})).with_id("1"), TbMsg::telemetry("d", json!({"h": 1})).with_id("2")];
    let ran = crate::support::run_chain_file(&path, &msgs, 1);
    assert_eq!(ran.output.len(), 2);
    assert_eq!(ran.output[0].data, json!({"temperature": 5}));
    assert_eq!(ran.output[1].id, "2");
    assert_eq!(ran.stats.node("rejected").received, 1);
    assert_eq!(ran.stats.node("sub/rename").received, 1);
}

#[test]
fn per_originator_order_holds_across_workers() {
    let chain = json!({
        "entry": "count",
        "nodes": [
            {"id": "count", "module": "counter", "config": {"relation": "Counted"}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [{"from": "count", "to": "out", "relation": "Counted"}]
    });
    let devices = 8;
    let per_device = 200;
    let msgs: Vec<TbMsg> = (0..per_device)
        .flat_map(|i| (0..devices).map(move |d| TbMsg::telemetry(format!("dev-{d}"), json!({"seq": i}))))
        .collect();
    let ran = run_chain(&chain, &msgs, 2);
    assert_eq!(ran.output.len(), devices * per_device);
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    for m in &ran.output {
        let seq = m.data["seq"].as_u64().unwrap();
        let expected = next.entry(m.originator.name.clone()).or_insert(0);
        assert_eq!(seq, *expected, "{} out of order", m.originator.name);
        // The counter's state is per originator and sees messages in order too.
        assert_eq!(m.meta("count"), Some((seq + 1).to_string().as_str()));
        *expected += 1;
    }
    assert_eq!(ran.acked, (devices * per_device) as u64);
}

#[test]
fn a_bounded_cycle_stops_at_max_hops() {
    let chain = json!({
        "entry": "a",
        "maxHops": 5,
        "nodes": [
            {"id": "a", "module": "rename-keys", "config": {"renameKeysMapping": {"x": "y"}}},
            {"id": "b", "module": "rename-keys", "config": {"renameKeysMapping": {"y": "x"}}}
        ],
        "connections": [
            {"from": "a", "to": "b", "relation": "Success"},
            {"from": "b", "to": "a", "relation": "Success"}
        ]
    });
    let ran = run_chain(&chain, &[TbMsg::telemetry("d", json!({"x": 1}))], 1);
    let visits = ran.stats.node("a").received + ran.stats.node("b").received;
    assert_eq!(visits, 5);
    assert_eq!(ran.stats.node("a").hop_limit + ran.stats.node("b").hop_limit, 1);
    assert_eq!(ran.acked, 1);
}

//! Wasm builds of the action nodes, run in the engine against a `file` connector (what the
//! connector receives is what a broker would), and their config errors at load.

use serde_json::{Value, json};
use sluice_sdk::TbMsg;

use crate::support::{load_chain, node_config_error, run_chain};

/// A chain granting `module` a file connector writing to `path`; every relation to the output.
fn action_chain(module: &str, config: Value, path: &std::path::Path) -> Value {
    json!({
        "entry": "act",
        "connectors": {"sink": {"type": "file", "path": path}},
        "nodes": [
            {"id": "act", "module": module, "connector": "sink", "config": config},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "act", "to": "out", "relation": "Success"},
            {"from": "act", "to": "out", "relation": "Failure"}
        ]
    })
}

fn requests(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let line: Value = serde_json::from_str(l).unwrap();
            assert_eq!(line["connector"], "sink");
            assert_eq!(line["node"], "act");
            line["request"].clone()
        })
        .collect()
}

fn reading(device: &str, ts: i64, speed: f64) -> TbMsg {
    TbMsg::telemetry(device, json!({"windSpeed": speed}))
        .with_meta("deviceName", device)
        .with_ts(ts)
        .with_id(format!("{device}-{ts}"))
}

#[test]
fn kafka_action_produces_each_message_and_reports_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kafka.jsonl");
    let chain = action_chain("kafka-action", json!({"topic": "wind-${deviceName}", "key": "${deviceName}"}), &path);
    let out = run_chain(&chain, &[reading("WS-1", 1, 3.5), reading("WS-2", 2, 4.0)]);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|m| m.meta("topic").unwrap().starts_with("wind-WS-")));
    assert_eq!(
        requests(&path),
        [
            json!({"topic": "wind-WS-1", "key": "WS-1", "headers": {}, "value": {"windSpeed": 3.5}}),
            json!({"topic": "wind-WS-2", "key": "WS-2", "headers": {}, "value": {"windSpeed": 4.0}}),
        ]
    );
}

#[test]
fn mqtt_action_publishes_gateway_telemetry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mqtt.jsonl");
    let chain =
        action_chain("mqtt-action", json!({"topic": "v1/gateway/telemetry", "payload": "gateway-telemetry"}), &path);
    let out = run_chain(&chain, &[reading("WS-1", 7, 3.5)]);
    assert_eq!(out.len(), 1);
    assert_eq!(
        requests(&path),
        [json!({"topic": "v1/gateway/telemetry", "qos": 1, "retain": false,
                "payload": {"WS-1": [{"ts": 7, "values": {"windSpeed": 3.5}}]}})]
    );
}

#[test]
fn rest_action_without_an_http_answer_fails_the_message_with_the_reason() {
    // A file connector answers `{"written": true}`: no HTTP status, so the REST node cannot
    // tell success — the message goes to Failure with the reason, the run goes on.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rest.jsonl");
    let chain = action_chain("rest-action", json!({"url": "http://tb/api/v1/${deviceName}/telemetry"}), &path);
    let out = run_chain(&chain, &[reading("WS-1", 7, 3.5)]);
    assert_eq!(out.len(), 1);
    assert!(out[0].meta("error").unwrap().contains("status"), "{:?}", out[0].metadata);
    assert_eq!(requests(&path)[0]["url"], "http://tb/api/v1/WS-1/telemetry");
}

#[test]
fn an_action_node_without_its_connector_fails_at_load() {
    // Naming an undeclared connector: a load error on the node's `connector` field.
    let dir = tempfile::tempdir().unwrap();
    let mut chain = action_chain("kafka-action", json!({"topic": "t"}), &dir.path().join("x.jsonl"));
    chain["nodes"][0]["connector"] = json!("kafka");
    let err = load_chain(&chain).unwrap_err().to_string();
    assert!(err.contains("node `act`") && err.contains("connector") && err.contains("`kafka`"), "{err}");
    // No connector at all: the module imports `action_call`, so that is a load error too.
    chain["nodes"][0].as_object_mut().unwrap().remove("connector");
    let err = load_chain(&chain).unwrap_err().to_string();
    assert!(
        err.contains(
            "node `act`: field `connector`: node `act` (kafka-action) calls actions but is granted no connector"
        ),
        "{err}"
    );
}

#[test]
fn bad_action_configs_name_node_and_field() {
    for (module, config, field) in [
        ("kafka-action", json!({}), "topic"),
        ("kafka-action", json!({"topic": "t", "value": "body"}), "value"),
        ("mqtt-action", json!({"topic": "t", "qos": 3}), "qos"),
        ("mqtt-action", json!({"topic": "t-${"}), "topic"),
        ("rest-action", json!({"method": "FETCH", "url": "/x"}), "method"),
        ("rest-action", json!({"mode": "thingsboard-asset-telemetry", "username": "u"}), "password"),
    ] {
        let err = node_config_error(module, config.clone());
        assert!(err.contains("node `node`") && err.contains(field), "{module} {config}: {err}");
    }
}

/// ThingsBoard's `TbMqttNode.onMsg` publishes `msg.getData()`, the data as JSON text: a string
/// data keeps its quotes (`"on"`), unless `parseToPlainText` (`JacksonUtil.toPlainText`).
#[test]
fn mqtt_action_publishes_a_string_data_json_encoded() {
    let dir = tempfile::tempdir().unwrap();
    let msg = TbMsg::telemetry("D-1", json!("on")).with_id("s");
    let path = dir.path().join("mqtt.jsonl");
    run_chain(&action_chain("mqtt-action", json!({"topic": "cmd"}), &path), std::slice::from_ref(&msg));
    assert_eq!(requests(&path)[0]["payload"], json!("\"on\""));
    let path = dir.path().join("plain.jsonl");
    run_chain(&action_chain("mqtt-action", json!({"topic": "cmd", "parseToPlainText": true}), &path), &[msg]);
    assert_eq!(requests(&path)[0]["payload"], json!("on"));
}

//! Wasm builds of the script nodes, run in the engine: ThingsBoard JavaScript bodies, unchanged,
//! in boa compiled into the module.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Value, json};
use sluice_sdk::{Originator, TbMsg};

use crate::support::{self, node_config_error, run_chain, run_node};

fn thermometer(id: &str, ts: i64, temperature: Value) -> TbMsg {
    TbMsg::telemetry("T-1", json!({ "temperature": temperature }))
        .with_id(id)
        .with_ts(ts)
        .with_meta("deviceType", "thermostat")
}

fn ids(msgs: &[TbMsg]) -> Vec<&str> {
    msgs.iter().map(|m| m.id.as_str()).collect()
}

#[test]
fn filter_routes_on_the_script_result() {
    let msgs = [
        thermometer("hot", 1, json!(21.5)),
        thermometer("edge", 2, json!(20)),
        thermometer("string", 3, json!("33")),
        TbMsg::telemetry("T-1", json!({})).with_id("missing").with_ts(4),
    ];
    let out = run_node(
        "script",
        json!({"mode": "filter", "script": "return msg.temperature > 20;"}),
        &msgs,
        &["True", "False"],
    );
    assert_eq!(ids(&out["True"]), ["hot", "string"]);
    assert_eq!(ids(&out["False"]), ["edge", "missing"]);
    assert_eq!(out["True"][0], msgs[0], "forwarded unchanged");
}

#[test]
fn switch_runs_the_thermostat_alarms_body() {
    let body = "var relations = [];\nif(metadata[\"ss_alarmTemperature\"] === \"true\"){\n    if(msg.temperature > metadata[\"ss_thresholdTemperature\"]){\n        relations.push(\"NewTempAlarm\");\n    } else {\n        relations.push(\"ClearTempAlarm\");\n    }\n}\nif(metadata[\"ss_alarmHumidity\"] === \"true\"){\n    if(msg.humidity < metadata[\"ss_thresholdHumidity\"]){\n        relations.push(\"NewHumidityAlarm\");\n    } else {\n        relations.push(\"ClearHumidityAlarm\");\n    }\n}\n\nreturn relations;";
    let reading = |id: &str, t: f64, h: f64| {
        TbMsg::telemetry("T-1", json!({"temperature": t, "humidity": h}))
            .with_id(id)
            .with_meta("ss_alarmTemperature", "true")
            .with_meta("ss_thresholdTemperature", "30")
            .with_meta("ss_alarmHumidity", "true")
            .with_meta("ss_thresholdHumidity", "40")
    };
    let msgs = [reading("hot-dry", 35.0, 20.0), reading("ok", 25.0, 50.0), thermometer("unconfigured", 3, json!(99))];
    let relations = ["NewTempAlarm", "ClearTempAlarm", "NewHumidityAlarm", "ClearHumidityAlarm"];
    let out = run_node("script", json!({"mode": "switch", "script": body}), &msgs, &relations);
    assert_eq!(ids(&out["NewTempAlarm"]), ["hot-dry"]);
    assert_eq!(ids(&out["NewHumidityAlarm"]), ["hot-dry"]);
    assert_eq!(ids(&out["ClearTempAlarm"]), ["ok"]);
    assert_eq!(ids(&out["ClearHumidityAlarm"]), ["ok"]);
    assert_eq!(out["NewTempAlarm"][0], msgs[0]);
}

#[test]
fn transform_runs_the_fahrenheit_body_and_splits_arrays() {
    let body = "function precisionRound(number, precision) {\n  var factor = Math.pow(10, precision);\n  return Math.round(number * factor) / factor;\n}\n\nif (typeof msg.temperature !== 'undefined'){\n    msg.temperature = precisionRound((msg.temperature -32) * 5 / 9, 2);\n}\n\nreturn {msg: msg, metadata: metadata, msgType: msgType};";
    let msgs = [thermometer("a", 1, json!(212)), thermometer("b", 2, json!(98.6)), thermometer("c", 3, json!(0))];
    let out = run_node("script", json!({"mode": "transform", "script": body}), &msgs, &["Success"]);
    let celsius: Vec<_> = out["Success"].iter().map(|m| (m.id.as_str(), m.data["temperature"].clone())).collect();
    // (212 − 32)·5/9 = 100, (98.6 − 32)·5/9 = 37, (0 − 32)·5/9 = −17.78 (rounded to 2 places).
    assert_eq!(celsius, [("a", json!(100)), ("b", json!(37)), ("c", json!(-17.78))]);
    assert_eq!(out["Success"][0].metadata, msgs[0].metadata);

    let split =
        "return [{msg: {t: msg.temperature}, metadata: {n: 1}}, {msg: {t: msg.temperature + 1}, msgType: 'NEXT'}];";
    let out = run_node("script", json!({"mode": "transform", "script": split}), &msgs[..1], &["Success"]);
    let got: Vec<_> = out["Success"].iter().map(|m| (m.id.as_str(), m.data.clone(), m.msg_type.as_str())).collect();
    assert_eq!(got, [("a:0", json!({"t": 212}), "POST_TELEMETRY_REQUEST"), ("a:1", json!({"t": 213}), "NEXT")]);
    assert_eq!(out["Success"][0].meta("n"), Some("1"), "metadata values become strings");
}

#[test]
fn a_throwing_script_fails_the_message_and_the_node_goes_on() {
    let body = "if (msg.temperature < 0) throw new RangeError('below zero: ' + msg.temperature); return true;";
    let msgs = [thermometer("cold", 1, json!(-5)), thermometer("warm", 2, json!(5))];
    let out = run_node("script", json!({"mode": "filter", "script": body}), &msgs, &["True", "Failure"]);
    assert_eq!(ids(&out["Failure"]), ["cold"]);
    assert_eq!(out["Failure"][0].meta("error"), Some("RangeError: below zero: -5"));
    assert_eq!(ids(&out["True"]), ["warm"]);
    let out = run_node("script", json!({"mode": "filter", "script": "return 'yes';"}), &msgs[..1], &["Failure"]);
    assert_eq!(out["Failure"][0].meta("error"), Some("a filter script must return a boolean, got string \"yes\""));
}

#[test]
fn an_infinite_loop_is_cut_by_the_deadline_and_the_next_message_runs() {
    let chain = json!({
        "entry": "node",
        "nodes": [
            {"id": "node", "module": "script", "limits": {"deadlineMs": 100},
             "config": {"mode": "filter", "script": "while (msg.spin) {}\nreturn true;"}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "node", "to": "out", "relation": "True"},
            {"from": "node", "to": "out", "relation": "Failure"}
        ]
    });
    let msgs = [
        TbMsg::telemetry("T-1", json!({"spin": true})).with_id("spin"),
        TbMsg::telemetry("T-1", json!({"spin": false})).with_id("next"),
    ];
    let started = Instant::now();
    let out = run_chain(&chain, &msgs);
    assert_eq!(ids(&out), ["spin", "next"]);
    let error = out[0].meta("error").unwrap_or_default();
    assert!(error.contains("deadline of 100ms exceeded"), "{error}");
    assert_eq!(out[1].meta("error"), None, "a fresh instance handles the next message");
    assert!(started.elapsed().as_secs() < 30, "took {:?}", started.elapsed());
}

#[test]
fn a_syntax_error_refuses_the_chain_naming_the_script() {
    let err = node_config_error("script", json!({"mode": "filter", "script": "var t = msg.temperature;\nreturn t >;"}));
    assert!(err.contains("node `node`"), "{err}");
    assert!(err.contains("field `config.script`: config rejected: SyntaxError"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn bad_configs_name_the_field() {
    let err = node_config_error("script", json!({"mode": "map", "script": "return true;"}));
    assert!(err.contains("node `node`") && err.contains("config.mode"), "{err}");
    let err = node_config_error(
        "script",
        json!({"mode": "generator", "script": "return {};",
                                                 "originator": {"entityType": "DEVICE", "name": "M"}}),
    );
    assert!(
        err.contains("node `node`")
            && err.contains("field `config.periodMs`: config rejected: required for mode `generator`"),
        "{err}"
    );
    let err = node_config_error("script", json!({"mode": "filter", "script": "return true;", "periodMs": 5}));
    assert!(err.contains("field `config.periodMs`: config rejected: only for mode `generator`"), "{err}");
}

/// The solar module simulator's three generators (tbdocs-solar_module_simulator.json, bodies as
/// exported) and a thermometer emulator (Math.random), run by `sluice run` on an empty input: the
/// run lasts while their timers are pending, so until each has generated its `count`.
#[test]
fn generators_run_the_solar_simulator_bodies_until_their_count() {
    let module = |name: &str, power: &str| {
        format!(
            "var msg = {{ power: {power}, name: \"{name}\", panel: \"Panel 1\"}};\nvar metadata = {{}};\nvar msgType = \"POST_TELEMETRY_REQUEST\";\n\nreturn {{ msg: msg, metadata: metadata, msgType: msgType }};"
        )
    };
    let thermometer = "var msg = {\n    temperature: (20 + 5*Math.random()).toFixed(1)\n};\n\nreturn {\n    msg: msg, metadata: {deviceType: \"indoor thermometer\"}, msgType:\"POST_TELEMETRY_REQUEST\"\n    };\n";
    let generator = |id: &str, device: &str, script: String, count: u64| {
        json!({"id": id, "module": "script", "config": {"mode": "generator", "script": script, "periodMs": 50,
               "count": count, "originator": {"entityType": "DEVICE", "name": device}}})
    };
    let connections: Vec<Value> =
        ["m1", "m2", "m3", "t"].iter().map(|n| json!({"from": n, "to": "out", "relation": "Success"})).collect();
    let chain = json!({
        "entry": "m1",
        "nodes": [
            generator("m1", "Module 1", module("Module 1", "5"), 3),
            generator("m2", "Module 2", module("Module 2", "5"), 3),
            generator("m3", "Module 3", module("Module 3", "3.5"), 3),
            generator("t", "Indoor", thermometer.to_string(), 2),
            {"id": "out", "sink": "output"}
        ],
        "connections": connections
    });
    let dir = tempfile::tempdir().unwrap();
    let (chain_path, input, output) =
        (dir.path().join("chain.json"), dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    std::fs::write(&chain_path, chain.to_string()).unwrap();
    std::fs::write(&input, "").unwrap();
    let out = support::sluice(&[
        "run",
        "--chain",
        chain_path.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--no-state",
    ]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    let lines = std::fs::read_to_string(&output).unwrap();
    let msgs: Vec<TbMsg> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut per_device: BTreeMap<String, Vec<&TbMsg>> = BTreeMap::new();
    for m in &msgs {
        per_device.entry(m.originator.name.clone()).or_default().push(m);
    }
    let counts: BTreeMap<&str, usize> = per_device.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
    assert_eq!(counts, BTreeMap::from([("Indoor", 2), ("Module 1", 3), ("Module 2", 3), ("Module 3", 3)]));
    for m in &per_device["Module 3"] {
        assert_eq!(m.data, json!({"power": 3.5, "name": "Module 3", "panel": "Panel 1"}));
        assert_eq!((m.msg_type.as_str(), &m.originator), ("POST_TELEMETRY_REQUEST", &Originator::device("Module 3")));
        assert!(m.id.starts_with("m3/timer/generate/"), "{}", m.id);
    }
    for m in &per_device["Indoor"] {
        let t: f64 = m.data["temperature"].as_str().unwrap().parse().unwrap();
        assert!((20.0..=25.0).contains(&t), "{t}");
        assert_eq!(m.meta("deviceType"), Some("indoor thermometer"));
    }
}

//! The rules that stand for ThingsBoard's math, delta, alarm and device profile nodes, built to
//! wasm and run in the engine, and their import. Every expected output is worked out from
//! ThingsBoard's node source (the class and method are named at each test), not from Sluice.

use std::path::Path;

use serde_json::{Value, json};
use sluice_sdk::TbMsg;

use crate::support::{node_config_error, run_chain, run_node, sluice, stderr};

const T0: i64 = 1_700_000_000_000;

fn reading(id: &str, device: &str, ts: i64, data: Value) -> TbMsg {
    TbMsg::telemetry(device, data).with_id(id).with_ts(ts).with_meta("deviceName", device)
}

fn ids(msgs: &[TbMsg]) -> Vec<&str> {
    msgs.iter().map(|m| m.id.as_str()).collect()
}

/// A ThingsBoard export with the given nodes chained in order on `relations[i]` (node i → i+1).
fn export(nodes: &[(&str, Value)], relations: &[&str]) -> Value {
    let nodes: Vec<Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, (class, cfg))| {
            json!({"type": format!("org.thingsboard.rule.engine.{class}"), "name": format!("{class} {i}"),
                   "debugMode": false, "configuration": cfg})
        })
        .collect();
    let connections: Vec<Value> =
        relations.iter().enumerate().map(|(i, r)| json!({"fromIndex": i, "toIndex": i + 1, "type": r})).collect();
    json!({"ruleChain": {"name": "issue 20"},
           "metadata": {"firstNodeIndex": 0, "nodes": nodes, "connections": connections}})
}

/// `sluice import thingsboard` of `export` into `dir`; the report and the one chain written.
fn import(dir: &Path, export: &Value) -> (String, Value) {
    let file = dir.join("export.json");
    std::fs::write(&file, export.to_string()).unwrap();
    let out = dir.join("chains");
    let result = sluice(&["import", "thingsboard", file.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(result.status.success(), "{}", stderr(&result));
    let chain = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"));
    let chain: Value = serde_json::from_slice(&std::fs::read(chain.unwrap()).unwrap()).unwrap();
    (String::from_utf8_lossy(&result.stdout).into_owned(), chain)
}

/// The chain's node running `module`.
fn node_of<'a>(chain: &'a Value, module: &str) -> &'a Value {
    chain["nodes"].as_array().unwrap().iter().find(|n| n["module"] == module).unwrap_or_else(|| panic!("{chain:#}"))
}

/// `TbMathNode.calculateResult` (ADD; CUSTOM through exp4j), `TbMathArgumentValue.fromMessageBody`
/// (numbers, numeric strings, `defaultValue`), `addToBody` / `addToMeta` with `toDoubleValue`
/// (`BigDecimal.valueOf(v).setScale(p, HALF_UP)`) and `toIntValue` (`(long)` cast).
#[test]
fn math_computes_and_stores_as_tb_math_node() {
    let msgs = [
        reading("a", "M-1", T0, json!({"a": 1.333, "b": "1.342"})),
        reading("b", "M-1", T0, json!({"a": 2})),
        reading("c", "M-1", T0, json!({"a": "x", "b": 1})),
        reading("d", "M-1", T0, json!("not an object")),
    ];
    let add = json!({"operation": "ADD",
        "arguments": [{"name": "a", "type": "MESSAGE_BODY", "key": "a"},
                      {"name": "b", "type": "MESSAGE_BODY", "key": "b", "defaultValue": 0.5}],
        "result": {"type": "MESSAGE_BODY", "key": "sum", "resultValuePrecision": 2}});
    let out = run_node("math", add, &msgs, &["Success", "Failure"]);
    assert_eq!(ids(&out["Success"]), ["a", "b"]);
    // 1.333 + 1.342 = 2.675 → HALF_UP at 2 decimals: 2.68; 2 + default 0.5 = 2.5.
    assert_eq!(out["Success"][0].data["sum"], json!(2.68));
    assert_eq!(out["Success"][1].data["sum"], json!(2.5));
    assert_eq!(ids(&out["Failure"]), ["c", "d"]);
    assert_eq!(out["Failure"][0].meta("error"), Some("Can't convert value 'x' to double!"));
    assert_eq!(out["Failure"][1].meta("error"), Some("Message body is not a JSON object!"));

    // Fahrenheit to Celsius, the node's own example, into metadata as an integer (precision 0).
    let custom = json!({"operation": "CUSTOM", "customFunction": "(x - 32) / 1.8",
        "arguments": [{"name": "x", "type": "MESSAGE_METADATA", "key": "f"}],
        "result": {"type": "MESSAGE_METADATA", "key": "c", "resultValuePrecision": 0}});
    let msg = reading("f", "M-1", T0, json!({})).with_meta("f", "99.5");
    let out = run_node("math", custom, &[msg], &["Success"]);
    // (99.5 - 32) / 1.8 = 37.5 → (long) 37.
    assert_eq!(out["Success"][0].meta("c"), Some("37"));
}

/// `TbMathNode.updateMsgAndDb` TIME_SERIES: the value is saved for the originator and, with
/// `addToMetadata`, added to the metadata as `Double.toString` writes it; the next message reads
/// the saved value back (`resolveArguments` TIME_SERIES → `findLatest`).
#[test]
fn math_accumulates_a_total_in_the_time_series_table() {
    let msgs = [
        reading("1", "W-1", T0, json!({"delta": 1.25})),
        reading("2", "W-1", T0 + 1, json!({"delta": 2})),
        reading("3", "W-2", T0 + 2, json!({"delta": 4})),
    ];
    let total = json!({"operation": "ADD",
        "arguments": [{"name": "t", "type": "TIME_SERIES", "key": "total", "defaultValue": 0},
                      {"name": "d", "type": "MESSAGE_BODY", "key": "delta"}],
        "result": {"type": "TIME_SERIES", "key": "total", "resultValuePrecision": 2, "addToMetadata": true}});
    let out = run_node("math", total, &msgs, &["Success"]);
    let totals: Vec<_> = out["Success"].iter().map(|m| m.meta("total").unwrap()).collect();
    assert_eq!(totals, ["1.25", "3.25", "4.0"]);
}

#[test]
fn math_bad_configs_name_the_field() {
    let result = json!({"type": "MESSAGE_BODY", "key": "r"});
    let err = node_config_error("math", json!({"operation": "ADD", "arguments": [], "result": result}));
    assert!(err.contains("config.arguments"), "{err}");
    let err = node_config_error(
        "math",
        json!({"operation": "CUSTOM", "customFunction": "2 +", "arguments": [], "result": result}),
    );
    assert!(err.contains("config.customFunction"), "{err}");
    let err = node_config_error("math", json!({"operation": "LOG", "arguments": [], "result": {"type": "DB"}}));
    assert!(err.contains("config.result"), "{err}");
}

/// A ThingsBoard export with a math node imports to `math` with the same configuration, and the
/// imported chain runs.
#[test]
fn tb_math_node_imports_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let math = json!({"operation": "CUSTOM", "customFunction": "(x - 32) / 1.8",
        "arguments": [{"name": "x", "type": "MESSAGE_BODY", "key": "temperature", "attributeScope": null, "defaultValue": null}],
        "result": {"type": "MESSAGE_BODY", "attributeScope": "SERVER_SCOPE", "key": "celsius",
                   "resultValuePrecision": 1, "addToBody": false, "addToMetadata": false}});
    let (report, chain) = import(dir.path(), &export(&[("math.TbMathNode", math)], &[]));
    assert!(report.contains(" 0 placeholders"), "{report}");
    let node = node_of(&chain, "math");
    assert_eq!(node["config"]["customFunction"], "(x - 32) / 1.8");
    let mut chain = chain.clone();
    let id = node["id"].clone();
    chain["nodes"].as_array_mut().unwrap().push(json!({"id": "out", "sink": "output"}));
    chain["connections"].as_array_mut().unwrap().push(json!({"from": id, "to": "out", "relation": "Success"}));
    let out = run_chain(&chain, &[reading("t", "T-1", T0, json!({"temperature": 212}))]);
    assert_eq!(out[0].data["celsius"], json!(100.0));
}

/// `CalculateDeltaNode.onMsg`: per originator, delta = current − previous (0 first), written as a
/// long when whole (`stripTrailingZeros().scale() <= 0`), period from the previous `ts`; a
/// message without the key or not `POST_TELEMETRY_REQUEST` → `Other`; a negative delta with
/// `tellFailureIfDeltaIsNegative` → `Failure`, unchanged, its value still cached.
#[test]
fn calculate_delta_routes_as_calculate_delta_node() {
    let msgs = [
        reading("a1", "A", T0, json!({"pulseCounter": 100})),
        reading("b1", "B", T0 + 10, json!({"pulseCounter": 7})),
        reading("a2", "A", T0 + 60_000, json!({"pulseCounter": 112.5})),
        reading("x", "A", T0 + 61_000, json!({"other": 1})),
        TbMsg::attributes("A", json!({"pulseCounter": 1})).with_id("attr").with_ts(T0),
        reading("a3", "A", T0 + 120_000, json!({"pulseCounter": 110})),
        reading("a4", "A", T0 + 180_000, json!({"pulseCounter": 111})),
    ];
    let cfg = json!({"inputValueKey": "pulseCounter", "outputValueKey": "delta", "useCache": true,
                     "addPeriodBetweenMsgs": true, "periodValueKey": "periodInMs", "round": null,
                     "tellFailureIfDeltaIsNegative": true});
    let out = run_node("calculate-delta", cfg, &msgs, &["Success", "Other", "Failure"]);
    assert_eq!(ids(&out["Success"]), ["a1", "b1", "a2", "a4"]);
    let got: Vec<_> = out["Success"].iter().map(|m| (m.data["delta"].clone(), m.data["periodInMs"].clone())).collect();
    assert_eq!(
        got,
        [(json!(0), json!(0)), (json!(0), json!(0)), (json!(12.5), json!(60_000)), (json!(1), json!(60_000))]
    );
    assert_eq!(ids(&out["Other"]), ["x", "attr"]);
    assert_eq!(ids(&out["Failure"]), ["a3"]);
    assert_eq!(out["Failure"][0].data, json!({"pulseCounter": 110}));
}

/// A `CalculateDeltaNode` imports to `calculate-delta` with its configuration, `Other` kept.
#[test]
fn calculate_delta_node_imports() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = json!({"inputValueKey": "kwh", "outputValueKey": "kwhDelta", "useCache": true, "addPeriodBetweenMsgs": false,
                     "periodValueKey": "periodInMs", "round": 2, "tellFailureIfDeltaIsNegative": false});
    let (report, chain) = import(
        dir.path(),
        &export(&[("metadata.CalculateDeltaNode", cfg.clone()), ("action.TbLogNode", json!({}))], &["Other"]),
    );
    assert!(report.contains(" 0 placeholders"), "{report}");
    assert_eq!(node_of(&chain, "calculate-delta")["config"], cfg);
    assert!(chain["connections"].as_array().unwrap().iter().any(|c| c["relation"] == "Other"), "{chain:#}");
}

/// A threshold in front of `create-alarm` (on `Anomaly`) and `clear-alarm` (on `Normal`), every
/// alarm relation to the output.
fn alarm_chain() -> Value {
    json!({
        "entry": "hot",
        "nodes": [
            {"id": "hot", "module": "threshold", "config": {"value": "data.temperature", "op": ">", "threshold": 25}},
            {"id": "create", "module": "create-alarm", "config": {"alarmType": "High Temperature", "severity": "MAJOR",
                "propagate": true, "details": {"temperature": "$[temperature]"}}},
            {"id": "clear", "module": "clear-alarm", "config": {"alarmType": "High Temperature"}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "hot", "to": "create", "relation": "Anomaly"},
            {"from": "hot", "to": "clear", "relation": "Normal"},
            {"from": "create", "to": "out", "relation": "Created"},
            {"from": "create", "to": "out", "relation": "Updated"},
            {"from": "clear", "to": "out", "relation": "Cleared"},
            {"from": "clear", "to": "out", "relation": "False"}
        ]
    })
}

/// `TbCreateAlarmNode.processAlarm`: no active alarm of the type → `createNewAlarm` (startTs =
/// endTs = `getMetaDataTs`, `Created`, metadata `isNewAlarm`); an active one → `updateAlarm`
/// (`Updated`, `isExistingAlarm`, same alarm). `TbClearAlarmNode.processAlarm`: an alarm not
/// cleared → `clearAlarm` (`Cleared`, status `CLEARED_UNACK`, `isClearedAlarm`); none → `False`
/// with the message unchanged. After a clear, the next anomaly creates a new alarm.
/// `TbAbstractAlarmNode.toAlarmMsg`: type `ALARM`, data = the alarm.
#[test]
fn alarms_are_created_updated_and_cleared_as_thingsboard() {
    let msgs = [
        reading("n0", "T-1", T0, json!({"temperature": 20})),
        reading("h1", "T-1", T0 + 1000, json!({"temperature": 30})),
        reading("h2", "T-1", T0 + 2000, json!({"temperature": 31})),
        reading("other", "T-2", T0 + 2500, json!({"temperature": 40})),
        reading("n1", "T-1", T0 + 3000, json!({"temperature": 20})),
        reading("h3", "T-1", T0 + 4000, json!({"temperature": 32})),
    ];
    let out = run_chain(&alarm_chain(), &msgs);
    let summary: Vec<(String, String, String, String)> = out
        .iter()
        .map(|m| {
            let flag =
                ["isNewAlarm", "isExistingAlarm", "isClearedAlarm"].into_iter().find(|f| m.meta(f) == Some("true"));
            (
                m.msg_type.clone(),
                flag.unwrap_or("-").to_string(),
                m.data["status"].as_str().unwrap_or("-").to_string(),
                m.data["id"]["id"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    let row = |t: &str, f: &str, s: &str, id: &str| (t.to_string(), f.to_string(), s.to_string(), id.to_string());
    assert_eq!(
        summary,
        [
            row("POST_TELEMETRY_REQUEST", "-", "-", "-"),
            row("ALARM", "isNewAlarm", "ACTIVE_UNACK", "alarm:h1"),
            row("ALARM", "isExistingAlarm", "ACTIVE_UNACK", "alarm:h1"),
            row("ALARM", "isNewAlarm", "ACTIVE_UNACK", "alarm:other"),
            row("ALARM", "isClearedAlarm", "CLEARED_UNACK", "alarm:h1"),
            row("ALARM", "isNewAlarm", "ACTIVE_UNACK", "alarm:h3"),
        ]
    );
    assert_eq!(out[0].id, "n0");
    let updated = &out[2].data;
    assert_eq!((updated["startTs"].as_i64(), updated["endTs"].as_i64()), (Some(T0 + 1000), Some(T0 + 2000)));
    assert_eq!(updated["severity"], "MAJOR");
    assert_eq!(updated["details"], json!({"temperature": "31"}));
    assert_eq!(updated["originator"]["name"], "T-1");
    assert_eq!(out[2].meta("propagate"), Some("true"));
    let cleared = &out[4].data;
    assert_eq!((cleared["clearTs"].as_i64(), cleared["endTs"].as_i64()), (Some(T0 + 3000), Some(T0 + 3000)));
}

/// `TbCreateAlarmNode` / `TbClearAlarmNode` import to `create-alarm` / `clear-alarm` (no longer
/// placeholders): ThingsBoard's default details script keeps the previous details; another
/// script runs in a `script` node in front.
#[test]
fn alarm_nodes_import() {
    let dir = tempfile::tempdir().unwrap();
    let default_js = "var details = {};\nif (metadata.prevAlarmDetails) {\n    details = JSON.parse(metadata.prevAlarmDetails);\n    //remove prevAlarmDetails from metadata\n    delete metadata.prevAlarmDetails;\n    //now metadata is the same as it comes IN this rule node\n}\n\n\nreturn details;";
    let create = json!({"alarmType": "High Temperature", "severity": "CRITICAL", "propagate": false,
        "useMessageAlarmData": false, "overwriteAlarmDetails": false, "dynamicSeverity": false,
        "relationTypes": [], "alarmDetailsBuildJs": default_js});
    let clear =
        json!({"alarmType": "High Temperature", "alarmDetailsBuildJs": "return {was: msg.status, type: msgType};"});
    let (report, chain) = import(
        dir.path(),
        &export(
            &[
                ("action.TbCreateAlarmNode", create),
                ("action.TbClearAlarmNode", clear),
                ("action.TbLogNode", json!({})),
            ],
            &["Created", "Cleared"],
        ),
    );
    assert!(report.contains(" 0 placeholders"), "{report}");
    assert_eq!(node_of(&chain, "create-alarm")["config"]["keepPreviousDetails"], true);
    assert_eq!(node_of(&chain, "clear-alarm")["config"]["detailsFromMetadata"], "alarmDetails");
    assert!(
        node_of(&chain, "script")["config"]["script"]
            .as_str()
            .unwrap()
            .contains("return {was: msg.status, type: msgType};")
    );
    // The imported chain runs: create, then clear — on `Created`, the message is the alarm
    // (`toAlarmMsg`), which the details script reads.
    let msgs = [reading("h", "T-1", T0, json!({"temperature": 30}))];
    let mut chain = chain.clone();
    let log = chain["nodes"].as_array().unwrap().iter().find(|n| n["module"] == "log").unwrap()["id"].clone();
    chain["nodes"].as_array_mut().unwrap().push(json!({"id": "out", "sink": "output"}));
    chain["connections"].as_array_mut().unwrap().push(json!({"from": log, "to": "out", "relation": "Success"}));
    let out = run_chain(&chain, &msgs);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].data["status"], "CLEARED_UNACK");
    assert_eq!(out[0].data["details"], json!({"was": "ACTIVE_UNACK", "type": "ALARM"}));
}

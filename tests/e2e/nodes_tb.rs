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

/// High Temperature: CRITICAL while `temperature > 30` for more than 10 s (DURATION); cleared
/// when `temperature <= 25`.
fn duration_profile() -> Value {
    json!({"alarms": [{"id": "ht", "alarmType": "High Temperature", "propagate": false,
        "createRules": {"CRITICAL": {"condition": {
            "condition": [{"key": {"type": "TIME_SERIES", "key": "temperature"}, "valueType": "NUMERIC",
                "predicate": {"type": "NUMERIC", "operation": "GREATER", "value": {"defaultValue": 30}}}],
            "spec": {"type": "DURATION", "unit": "SECONDS", "predicate": {"defaultValue": 10}}},
            "alarmDetails": "Temperature is ${temperature}"}},
        "clearRule": {"condition": {
            "condition": [{"key": {"type": "TIME_SERIES", "key": "temperature"}, "valueType": "NUMERIC",
                "predicate": {"type": "NUMERIC", "operation": "LESS_OR_EQUAL", "value": {"defaultValue": 25}}}],
            "spec": {"type": "SIMPLE"}}}}]})
}

fn profile_chain(with_success: bool) -> Value {
    let mut connections = vec![
        json!({"from": "profile", "to": "out", "relation": "Alarm Created"}),
        json!({"from": "profile", "to": "out", "relation": "Alarm Updated"}),
        json!({"from": "profile", "to": "out", "relation": "Alarm Severity Updated"}),
        json!({"from": "profile", "to": "out", "relation": "Alarm Cleared"}),
    ];
    if with_success {
        connections.push(json!({"from": "profile", "to": "out", "relation": "Success"}));
    }
    json!({"entry": "profile",
           "nodes": [{"id": "profile", "module": "device-profile", "config": duration_profile()},
                     {"id": "out", "sink": "output"}],
           "connections": connections})
}

/// `AlarmRuleState.evalDuration`: the condition's time is summed from the first reading that met
/// it and must be *greater* than 10 s; `AlarmState.createOrClearAlarms` / `calculateAlarmResult`
/// / `pushMsg`: `Alarm Created`, then `Alarm Updated` (same severity), and the clear rule →
/// `Alarm Cleared`; every message also on `Success`, unchanged.
#[test]
fn device_profile_duration_alarm_as_thingsboard() {
    let t = |id: &str, dt: i64, v: f64| reading(id, "T-1", T0 + dt, json!({"temperature": v}));
    let msgs = [
        t("a", 0, 31.0),
        t("b", 5_000, 32.0),
        t("c", 10_000, 33.0), // 10 s: not more than 10 s
        t("d", 10_500, 34.0), // 10.5 s → created
        t("e", 12_000, 35.0), // updated
        t("f", 13_000, 28.0), // neither: the DURATION rule resets, the clear rule does not hold
        t("g", 14_000, 20.0), // cleared
    ];
    let out = run_chain(&profile_chain(true), &msgs);
    let seen: Vec<(String, String)> = out
        .iter()
        .map(|m| {
            (
                m.id.clone(),
                if m.msg_type == "ALARM" { m.data["status"].as_str().unwrap().to_string() } else { "-".into() },
            )
        })
        .collect();
    let row = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        seen,
        [
            row("a", "-"),
            row("b", "-"),
            row("c", "-"),
            row("d", "-"),
            row("d:1", "ACTIVE_UNACK"),
            row("e", "-"),
            row("e:1", "ACTIVE_UNACK"),
            row("f", "-"),
            row("g", "-"),
            row("g:1", "CLEARED_UNACK"),
        ]
    );
    let (created, updated, cleared) = (&out[4], &out[6], &out[9]);
    assert_eq!(created.meta("isNewAlarm"), Some("true"));
    assert_eq!(created.meta("alarmConditionDuration"), Some("10500"));
    assert_eq!(created.data["details"], json!({"data": "Temperature is 34.0"}));
    assert_eq!(updated.meta("isExistingAlarm"), Some("true"));
    assert_eq!(cleared.meta("isClearedAlarm"), Some("true"));
    for alarm in [created, updated, cleared] {
        assert_eq!(alarm.data["id"]["id"], "alarm:d");
        assert_eq!(alarm.data["startTs"].as_i64(), Some(T0 + 10_500));
    }
}

/// An export whose entry is `TbDeviceProfileNode` (ThingsBoard 3.2+ root chains) imports to a
/// `device-profile` that passes every message on `Success`.
#[test]
fn device_profile_node_imports_as_a_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = json!({"persistAlarmRulesState": false, "fetchAlarmRulesStateOnStart": false});
    let (report, chain) = import(
        dir.path(),
        &export(&[("profile.TbDeviceProfileNode", cfg), ("action.TbLogNode", json!({}))], &["Success"]),
    );
    assert!(report.contains(" 0 placeholders"), "{report}");
    assert!(report.contains("passes every message on Success"), "{report}");
    assert_eq!(node_of(&chain, "device-profile")["config"], json!({}));
    let mut chain = chain.clone();
    let log = node_of(&chain, "log")["id"].clone();
    chain["nodes"].as_array_mut().unwrap().push(json!({"id": "out", "sink": "output"}));
    chain["connections"].as_array_mut().unwrap().push(json!({"from": log, "to": "out", "relation": "Success"}));
    let msgs = [reading("1", "T-1", T0, json!({"temperature": 99})), reading("2", "T-2", T0, json!({"t": 1}))];
    let out = run_chain(&chain, &msgs);
    assert_eq!(out, msgs);
}

/// ThingsBoard's own demo thermostat profile, as `DefaultSystemDataLoaderService.loadDemoData`
/// builds it, in the JSON shape of a device profile export (`GET /api/deviceProfile/{id}`):
/// "High Temperature" MAJOR when the attribute `temperatureAlarmFlag` is true and
/// `temperature > 25`, cleared when `temperature <= 25`; "Low Humidity" MINOR when
/// `humidityAlarmFlag` is true and `humidity < 60`, cleared when `humidity >= 60`. (The thresholds' dynamic values,
/// `CURRENT_DEVICE` attributes the test never sets, fall back to the default value there too.)
fn thermostat_profile_export() -> Value {
    let filter = |kind: &str, key: &str, value_type: &str, predicate: Value| json!({"key": {"type": kind, "key": key}, "valueType": value_type, "value": null, "predicate": predicate});
    let numeric = |op: &str, v: f64, attr: &str| {
        json!({"type": "NUMERIC", "operation": op, "value": {"defaultValue": v, "userValue": null,
               "dynamicValue": {"sourceType": "CURRENT_DEVICE", "sourceAttribute": attr, "inherit": false}}})
    };
    let flag = |attr: &str| {
        filter(
            "ATTRIBUTE",
            attr,
            "BOOLEAN",
            json!({"type": "BOOLEAN", "operation": "EQUAL",
            "value": {"defaultValue": true, "userValue": null, "dynamicValue": null}}),
        )
    };
    let rule = |filters: Vec<Value>, details: &str| {
        json!({"condition": {"condition": filters, "spec": {"type": "SIMPLE"}}, "schedule": null,
               "alarmDetails": details, "dashboardId": null})
    };
    let temp = "Current temperature = ${temperature}";
    let hum = "Current humidity = ${humidity}";
    json!({
        "id": {"entityType": "DEVICE_PROFILE", "id": "b5f1e0a0-0000-11eb-8000-000000000001"},
        "name": "thermostat", "description": "Thermostat device profile", "type": "DEFAULT",
        "transportType": "DEFAULT", "provisionType": "DISABLED", "default": false,
        "profileData": {
            "configuration": {"type": "DEFAULT"}, "transportConfiguration": {"type": "DEFAULT"},
            "provisionConfiguration": {"type": "DISABLED", "provisionDeviceSecret": null},
            "alarms": [
                {"id": "highTemperatureAlarmID", "alarmType": "High Temperature",
                 "createRules": {"MAJOR": rule(vec![flag("temperatureAlarmFlag"),
                     filter("TIME_SERIES", "temperature", "NUMERIC", numeric("GREATER", 25.0, "temperatureAlarmThreshold"))], temp)},
                 "clearRule": rule(vec![filter("TIME_SERIES", "temperature", "NUMERIC",
                     numeric("LESS_OR_EQUAL", 25.0, "temperatureAlarmThreshold"))], temp),
                 "propagate": false, "propagateToOwner": false, "propagateToTenant": false, "propagateRelationTypes": null},
                {"id": "lowHumidityAlarmID", "alarmType": "Low Humidity",
                 "createRules": {"MINOR": rule(vec![flag("humidityAlarmFlag"),
                     filter("TIME_SERIES", "humidity", "NUMERIC", numeric("LESS", 60.0, "humidityAlarmThreshold"))], hum)},
                 "clearRule": rule(vec![filter("TIME_SERIES", "humidity", "NUMERIC",
                     numeric("GREATER_OR_EQUAL", 60.0, "humidityAlarmThreshold"))], hum),
                 "propagate": false, "propagateToOwner": false, "propagateToTenant": false, "propagateRelationTypes": null}
            ]
        }
    })
}

/// `sluice import thingsboard` of ThingsBoard's demo thermostat chain with `--profiles profiles`
/// into `out`.
fn import_thermostat_chain(profiles: &Path, out: &Path) -> std::process::Output {
    let export = crate::support::repo().join("tests/fixtures/thingsboard/tb-v3-demo-thermostat_rule_chain.json");
    let (export, profiles, out) = (export.to_str().unwrap(), profiles.to_str().unwrap(), out.to_str().unwrap());
    sluice(&["import", "thingsboard", export, "--profiles", profiles, "--out", out])
}

/// `sluice import thingsboard --profiles`: ThingsBoard's demo thermostat chain (whose entry is
/// `TbDeviceProfileNode`) with the demo thermostat profile. As `TbDeviceProfileNode` evaluates
/// the rules of the device's own profile (`DeviceProfileCache`) with `DeviceState` /
/// `AlarmState.createOrClearAlarms`: a thermostat raises "High Temperature" (MAJOR) once its
/// flag attribute is set and `temperature` > 25, updates it, and clears it at <= 25; "Low
/// Humidity" (MINOR) at `humidity` < 60; a device of another profile raises nothing.
#[test]
fn device_profile_alarms_from_a_profile_export() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("thermostat-profile.json");
    std::fs::write(&profiles, serde_json::to_string_pretty(&thermostat_profile_export()).unwrap()).unwrap();
    let out = dir.path().join("chains");
    let result = import_thermostat_chain(&profiles, &out);
    assert!(result.status.success(), "{}", stderr(&result));
    let report = String::from_utf8_lossy(&result.stdout);
    assert!(report.contains("ThingsBoard device profiles (1): thermostat (2 alarm rule(s))"), "{report}");
    assert!(report.contains("alarm rules of the device profile(s) thermostat (--profiles)"), "{report}");
    let file = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"));
    let mut chain: Value = serde_json::from_slice(&std::fs::read(file.unwrap()).unwrap()).unwrap();
    // The alarms leave through an output; the demo chain sends them nowhere.
    let profile_id = node_of(&chain, "device-profile")["id"].clone();
    chain["nodes"].as_array_mut().unwrap().push(json!({"id": "alarms", "sink": "output"}));
    for relation in ["Alarm Created", "Alarm Updated", "Alarm Severity Updated", "Alarm Cleared"] {
        chain["connections"]
            .as_array_mut()
            .unwrap()
            .push(json!({"from": profile_id, "to": "alarms", "relation": relation}));
    }
    let thermostat = |id: &str, dt: i64, data: Value| {
        reading(id, "Thermostat T1", T0 + dt, data).with_meta("deviceType", "thermostat")
    };
    let mut flags = thermostat("a", 0, json!({"temperatureAlarmFlag": true, "humidityAlarmFlag": true}));
    flags.msg_type = "POST_ATTRIBUTES_REQUEST".into();
    let msgs = [
        flags,
        thermostat("b", 1_000, json!({"temperature": 30, "humidity": 70})),
        thermostat("c", 2_000, json!({"temperature": 26, "humidity": 40})),
        reading("d", "Meter M1", T0 + 2_500, json!({"temperature": 99, "humidity": 1}))
            .with_meta("deviceType", "meter"),
        thermostat("e", 3_000, json!({"temperature": 20})),
    ];
    let alarms: Vec<TbMsg> = run_chain(&chain, &msgs).into_iter().filter(|m| m.msg_type == "ALARM").collect();
    let seen: Vec<(&str, &str, &str, &str)> = alarms
        .iter()
        .map(|m| {
            (
                m.data["type"].as_str().unwrap(),
                m.data["severity"].as_str().unwrap(),
                m.data["status"].as_str().unwrap(),
                m.data["details"]["data"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("High Temperature", "MAJOR", "ACTIVE_UNACK", "Current temperature = 30"),
            ("High Temperature", "MAJOR", "ACTIVE_UNACK", "Current temperature = 26"),
            ("Low Humidity", "MINOR", "ACTIVE_UNACK", "Current humidity = 40"),
            ("High Temperature", "MAJOR", "CLEARED_UNACK", "Current temperature = 20"),
        ],
        "{alarms:#?}"
    );
    assert!(alarms.iter().all(|m| m.originator.name == "Thermostat T1"));
    assert_eq!(alarms[0].meta("isNewAlarm"), Some("true"));
    assert_eq!(alarms[1].meta("isExistingAlarm"), Some("true"));
    assert_eq!(alarms[3].meta("isClearedAlarm"), Some("true"));
}

/// A file that is not a device profile export is refused, naming the file, the entry and the
/// field; nothing is written.
#[test]
fn a_bad_profile_export_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles.json");
    std::fs::write(
        &profiles,
        json!([thermostat_profile_export(), {"name": "meter", "profileData": {"alarms": {}}}]).to_string(),
    )
    .unwrap();
    let out = dir.path().join("chains");
    let result = import_thermostat_chain(&profiles, &out);
    assert!(!result.status.success());
    let err = stderr(&result);
    assert!(
        err.contains(&format!(
            "{}: [1]: field `profileData.alarms`: device profile \"meter\": `alarms` must be a list",
            profiles.display()
        )),
        "{err}"
    );
    assert!(!out.exists());
}

/// The acceptance test of issue 20: `sluice run` as an HTTP service with a state dir; a DURATION
/// alarm is raised and updated, the service is killed with SIGKILL, and after the restart the
/// alarm is updated and cleared with the same identity (`AlarmState.calculateAlarmResult` finds
/// the current alarm; here it is in the checkpointed `alarms` table and the rule state in the
/// node's keyed state).
#[test]
fn a_device_profile_alarm_survives_kill_9() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let port = crate::tansu::free_port();
    crate::kafka::write(
        dir.path(),
        "tokens.json",
        r#"{"TOKEN-1": {"deviceName": "T-1", "deviceType": "Thermometer"}}"#,
    );
    let chain = crate::kafka::write(dir.path(), "chain.json", &profile_chain(false).to_string());
    let config = |out: &str| crate::support::http_service_config(dir.path(), port, out, "");
    let post = |dt: i64, v: f64| {
        crate::support::post_telemetry(port, &json!({"ts": T0 + dt, "values": {"temperature": v}}).to_string());
    };
    let alarms = |name: &str| -> Vec<Value> {
        std::fs::read_to_string(dir.path().join(name))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let first = crate::kafka::Service::start(dir.path(), &chain, &config("before"), "state");
    first.wait_for_log("HTTP device API listening", Duration::from_secs(60));
    post(0, 31.0);
    post(6_000, 32.0);
    post(11_000, 33.0); // 11 s > 10 s: created
    post(12_000, 34.0); // updated
    // Past a checkpoint (every second), then SIGKILL.
    std::thread::sleep(Duration::from_millis(2_500));
    drop(first);
    let before = alarms("before.jsonl");
    assert_eq!(before.len(), 2, "{before:#?}");
    assert_eq!(
        (before[0]["metadata"]["isNewAlarm"].as_str(), before[1]["metadata"]["isExistingAlarm"].as_str()),
        (Some("true"), Some("true"))
    );
    let id = before[0]["data"]["id"]["id"].clone();
    assert_eq!(before[1]["data"]["id"]["id"], id);

    let second = crate::kafka::Service::start(dir.path(), &chain, &config("after"), "state");
    second.wait_for_log("HTTP device API listening", Duration::from_secs(60));
    post(13_000, 35.0); // the same alarm: updated, not created
    post(14_000, 20.0); // cleared
    let deadline = Instant::now() + Duration::from_secs(30);
    while alarms("after.jsonl").len() < 2 {
        assert!(Instant::now() < deadline, "{}", second.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    second.stop_ok();
    let after = alarms("after.jsonl");
    assert_eq!(after.len(), 2, "{after:#?}");
    assert_eq!(after[0]["metadata"]["isExistingAlarm"], "true");
    assert_eq!(after[1]["metadata"]["isClearedAlarm"], "true");
    assert_eq!(after[1]["data"]["status"], "CLEARED_UNACK");
    for alarm in &after {
        assert_eq!(alarm["data"]["id"]["id"], id);
        assert_eq!(alarm["data"]["startTs"].as_i64(), Some(T0 + 11_000));
    }
}

/// A subscriber on `broker` to `filters`; returns once the broker acknowledged the
/// subscriptions, with a channel of what arrives (topic, payload as JSON).
fn subscriber(broker: &crate::brokers::Mosquitto, filters: &[&str]) -> std::sync::mpsc::Receiver<(String, Value)> {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let mut options = MqttOptions::new("rpc-device", "127.0.0.1", broker.port);
    options.set_keep_alive(std::time::Duration::from_secs(30));
    let (client, mut connection) = Client::new(options, 100);
    for filter in filters {
        client.subscribe(*filter, QoS::AtLeastOnce).unwrap();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let (subscribed_tx, subscribed) = std::sync::mpsc::channel();
    let mut acks = filters.len();
    std::thread::spawn(move || {
        let _client = client;
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    acks -= 1;
                    if acks == 0 {
                        let _ = subscribed_tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let payload = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    if tx.send((p.topic.clone(), payload)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    subscribed.recv_timeout(std::time::Duration::from_secs(30)).expect("subscribed");
    rx
}

/// A one-node chain: `module` with `config`, granted an MQTT connector at `url`, `Success` and
/// `Failure` to the output.
fn mqtt_chain(module: &str, config: Value, url: &str) -> Value {
    json!({
        "entry": "rpc",
        "connectors": {"mqtt": {"type": "mqtt", "url": url, "timeoutMs": 2000, "retries": 0}},
        "nodes": [
            {"id": "rpc", "module": module, "connector": "mqtt", "config": config},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "rpc", "to": "out", "relation": "Success"},
            {"from": "rpc", "to": "out", "relation": "Failure"}
        ]
    })
}

fn rpc_msg(id: &str, msg_type: &str, device: &str, data: Value) -> TbMsg {
    let mut msg = TbMsg::telemetry(device, data).with_id(id).with_ts(T0);
    msg.msg_type = msg_type.into();
    msg
}

/// `TbSendRPCRequestNode.onMsg`: `method` and `params` (and `requestId`) from the data, the
/// device gets `{"method", "params"}` (ThingsBoard's `JsonMqttAdaptor.convertToDevicePublish`);
/// a one-way send → `Success` with data `{}` (`processRpcResponse`, `EMPTY_JSON_OBJECT`); no
/// `params` → `Failure`, `Params are not present in the message!`, nothing published. In
/// gateway mode the gateway gets `{"device", "data": {"id", "method", "params"}}` on
/// `v1/gateway/rpc` (`convertToGatewayPublish`). Run in wasm against mosquitto.
#[test]
fn rpc_request_publishes_to_the_device_and_the_gateway_through_mosquitto() {
    let broker = crate::brokers::Mosquitto::start();
    let received = subscriber(&broker, &["v1/devices/+/rpc/request/+", "v1/gateway/rpc"]);
    let msgs = [
        rpc_msg(
            "r1",
            "RPC_CALL_FROM_SERVER_TO_DEVICE",
            "Valve-7",
            json!({"method": "setOpen", "params": {"open": true}, "requestId": 42}),
        ),
        rpc_msg("r2", "RPC_CALL_FROM_SERVER_TO_DEVICE", "Valve-7", json!({"method": "reboot"})),
    ];
    let out = run_chain(&mqtt_chain("rpc-request", json!({}), &broker.url()), &msgs);
    assert_eq!(out.len(), 2, "{out:?}");
    let (ok, failed) = (out.iter().find(|m| m.id == "r1").unwrap(), out.iter().find(|m| m.id == "r2").unwrap());
    assert_eq!((ok.data.clone(), ok.meta("requestId")), (json!({}), Some("42")));
    assert_eq!(failed.meta("error"), Some("Params are not present in the message!"));
    let got = received.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(
        got,
        ("v1/devices/Valve-7/rpc/request/42".to_string(), json!({"method": "setOpen", "params": {"open": true}}))
    );

    let msg = rpc_msg(
        "g1",
        "RPC_CALL_FROM_SERVER_TO_DEVICE",
        "Pump 3",
        json!({"method": "stop", "params": 5, "requestId": 7}),
    );
    let out = run_chain(&mqtt_chain("rpc-request", json!({"mode": "gateway"}), &broker.url()), &[msg]);
    assert_eq!(out[0].data, json!({}));
    let got = received.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(
        got,
        ("v1/gateway/rpc".to_string(), json!({"device": "Pump 3", "data": {"id": 7, "method": "stop", "params": 5}}))
    );
    assert!(received.try_recv().is_err(), "nothing else was published");
}

/// `TbSendRPCReplyNode.onMsg`: the `requestId` metadata names the request, `msg.getData()` is
/// the reply; the message goes on unchanged on `Success`; no request id → `Failure`, `Request
/// id is not present in the metadata!`. Run in wasm against mosquitto.
#[test]
fn rpc_reply_answers_the_device_through_mosquitto() {
    let broker = crate::brokers::Mosquitto::start();
    let received = subscriber(&broker, &["v1/devices/+/rpc/response/+"]);
    let msgs = [
        rpc_msg("a1", "TO_SERVER_RPC_REQUEST", "Thermostat-1", json!({"time": T0})).with_meta("requestId", "17"),
        rpc_msg("a2", "TO_SERVER_RPC_REQUEST", "Thermostat-1", json!({"time": T0})),
    ];
    let out = run_chain(&mqtt_chain("rpc-reply", json!({}), &broker.url()), &msgs);
    let ok = out.iter().find(|m| m.id == "a1").unwrap();
    assert_eq!((ok.data.clone(), ok.meta("error")), (json!({"time": T0}), None));
    let failed = out.iter().find(|m| m.id == "a2").unwrap();
    assert_eq!(failed.meta("error"), Some("Request id is not present in the metadata!"));
    let got = received.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(got, ("v1/devices/Thermostat-1/rpc/response/17".to_string(), json!({"time": T0})));
    assert!(received.try_recv().is_err(), "nothing else was published");
}

/// No broker: the connector's failure (no connection / no PUBACK before `timeoutMs`) sends the
/// request on `Failure` with the reason — ThingsBoard's `TIMEOUT` / `NO_ACTIVE_CONNECTION`.
#[test]
fn rpc_request_without_a_broker_fails_with_the_reason() {
    let port = crate::brokers::free_port();
    let mut chain = mqtt_chain("rpc-request", json!({}), &format!("mqtt://127.0.0.1:{port}"));
    chain["connectors"]["mqtt"]["timeoutMs"] = json!(300);
    let msg = rpc_msg("t1", "RPC_CALL_FROM_SERVER_TO_DEVICE", "D", json!({"method": "m", "params": {}}));
    let out = run_chain(&chain, &[msg]);
    assert_eq!(out.len(), 1);
    assert!(out[0].meta("error").is_some_and(|e| !e.is_empty()), "{:?}", out[0].metadata);
    assert_eq!(out[0].data, json!({"method": "m", "params": {}}), "the request itself goes on Failure");
}

/// ThingsBoard exports with the RPC nodes import to `rpc-request` / `rpc-reply` with an MQTT
/// connector from `${MQTT_URL}`, the request's `timeoutInSeconds` as its timeout, and notes.
#[test]
fn tb_rpc_nodes_import_with_an_mqtt_connector() {
    let dir = tempfile::tempdir().unwrap();
    let request = json!({"timeoutInSeconds": 60});
    let (report, chain) = import(dir.path(), &export(&[("rpc.TbSendRPCRequestNode", request)], &[]));
    assert!(report.contains(" 0 placeholders"), "{report}");
    assert!(report.contains("one-way only"), "{report}");
    let node = node_of(&chain, "rpc-request");
    let connector = &chain["connectors"][node["connector"].as_str().unwrap()];
    assert_eq!(connector["url"], "${MQTT_URL:-mqtt://localhost:1883}");
    assert_eq!(connector["timeoutMs"], 60_000);

    let dir = tempfile::tempdir().unwrap();
    let reply = json!({"serviceIdMetaDataAttribute": "serviceId", "sessionIdMetaDataAttribute": "sessionId",
                       "requestIdMetaDataAttribute": "requestId"});
    let (report, chain) = import(dir.path(), &export(&[("rpc.TbSendRPCReplyNode", reply)], &[]));
    assert!(report.contains(" 0 placeholders"), "{report}");
    assert_eq!(node_of(&chain, "rpc-reply")["config"], json!({}));
}

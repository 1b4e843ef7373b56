//! Telemetry history and `get-telemetry` (ThingsBoard's `TbGetTelemetryNode`): a chain saves a
//! device's telemetry (`table-writer` with `series`, what save-timeseries imports to) and reads
//! intervals of it back, built to wasm and run in the engine. Every expected value is worked out
//! from ThingsBoard's source (class and method named at each test), not from Sluice's output.

use serde_json::{Value, json};
use sluice_sdk::TbMsg;

use crate::support::{run_chain, sluice, stderr};

const T0: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;

fn reading(id: &str, device: &str, ts: i64, data: Value) -> TbMsg {
    TbMsg::telemetry(device, data).with_id(id).with_ts(ts).with_meta("deviceName", device)
}

/// Save (table `timeseries` + history `timeseries`, as an imported save-timeseries node) →
/// `Success` → get-telemetry with `query` → output.
fn save_then_query(query: Value) -> Value {
    json!({
        "entry": "save",
        "nodes": [
            {"id": "save", "module": "table-writer",
             "config": {"table": "timeseries", "merge": true, "series": "timeseries"}},
            {"id": "query", "module": "get-telemetry", "config": query},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "save", "to": "query", "relation": "Success"},
            {"from": "query", "to": "out", "relation": "Success"}
        ]
    })
}

/// th-1 reports a temperature every minute from T0 (20, 21.5, "23", 22, 24.5, 19); th-2, a
/// millisecond later each time, 100. ThingsBoard types them as `JsonConverter.parseValues` does:
/// 20, 22, 19 and 100 are longs, "23" a long too (type cast), 21.5 and 24.5 doubles.
fn readings() -> Vec<TbMsg> {
    let temps = [json!(20), json!(21.5), json!("23"), json!(22), json!(24.5), json!(19)];
    let mut msgs = Vec::new();
    for (i, t) in temps.into_iter().enumerate() {
        let ts = T0 + i as i64 * MIN;
        msgs.push(reading(&format!("a{i}"), "th-1", ts, json!({"temperature": t})));
        msgs.push(reading(&format!("b{i}"), "th-2", ts + 1, json!({"temperature": 100})));
    }
    msgs
}

/// The metadata `temperature` of the output of message `id`.
fn answer(out: &[TbMsg], id: &str) -> Option<String> {
    let msg = out.iter().find(|m| m.id == id).unwrap_or_else(|| panic!("no output for {id}: {out:#?}"));
    msg.meta("temperature").map(str::to_string)
}

/// `TbGetTelemetryNode.getInterval`: [ts - 5 min, ts - 0) of the sixth reading (now = its event
/// time, T0 + 5 min) is [T0, T0 + 5 min): the first five readings, not the sixth (end exclusive;
/// it was saved just before). `buildQueries`: FIRST = ASC limit 1, LAST = DESC limit 1;
/// `updateMetadata`/`processSingle`: `getValueAsString` as a JSON string.
#[test]
fn first_and_last_read_the_ends_of_the_interval() {
    let interval = json!({"latestTsKeyNames": ["temperature"], "startInterval": 5, "startIntervalTimeUnit": "MINUTES",
                          "endInterval": 0, "endIntervalTimeUnit": "MINUTES"});
    let mut first = interval.clone();
    first["fetchMode"] = json!("FIRST");
    let out = run_chain(&save_then_query(first), &readings());
    assert_eq!(answer(&out, "a5").as_deref(), Some("\"20\""));
    // The first reading's own interval [T0 - 5 min, T0) holds nothing: metadata unchanged.
    assert_eq!(answer(&out, "a0"), None);
    let mut last = interval;
    last["fetchMode"] = json!("LAST");
    let out = run_chain(&save_then_query(last), &readings());
    assert_eq!(answer(&out, "a5").as_deref(), Some("\"24.5\""));
    // Each device reads its own history.
    assert_eq!(answer(&out, "b5").as_deref(), Some("\"100\""));
}

/// ALL, `orderBy` DESC, `limit` 3: the three newest of [T0, T0 + 5 min) as
/// `processArray`/`buildNode` write them — longs and doubles as JSON numbers.
#[test]
fn all_reads_points_in_order_up_to_the_limit() {
    let cfg = json!({"latestTsKeyNames": ["temperature"], "fetchMode": "ALL", "orderBy": "DESC", "limit": 3,
                     "aggregation": "NONE", "startInterval": 300, "startIntervalTimeUnit": "SECONDS",
                     "endInterval": 0, "endIntervalTimeUnit": "SECONDS"});
    let out = run_chain(&save_then_query(cfg), &readings());
    let expected = format!(
        r#"[{{"ts":{},"value":24.5}},{{"ts":{},"value":22}},{{"ts":{},"value":23}}]"#,
        T0 + 4 * MIN,
        T0 + 3 * MIN,
        T0 + 2 * MIN
    );
    assert_eq!(answer(&out, "a5"), Some(expected));
}

/// ALL with an aggregation: `buildQueries` asks for one step of `endTs - startTs`, so one value
/// over [T0, T0 + 5 min) at its middle, T0 + 2.5 min (`AbstractChunkedAggregationTimeseriesDao.
/// findAllAsync`), computed as `TsKvEntity`'s aggregate constructors do over longs 20, 23, 22 and
/// doubles 21.5, 24.5: AVG (65 + 46) / 5 = 22.2; SUM with a double present 111.0; MIN/MAX over
/// both kinds as doubles 20.0 / 24.5; COUNT 5 (a long).
#[test]
fn an_aggregation_spans_the_whole_interval() {
    let mid = T0 + 150_000;
    for (aggregation, value) in [("AVG", "22.2"), ("SUM", "111.0"), ("MIN", "20.0"), ("MAX", "24.5"), ("COUNT", "5")] {
        let cfg = json!({"latestTsKeyNames": ["temperature"], "fetchMode": "ALL", "orderBy": "ASC", "limit": 1000,
                         "aggregation": aggregation, "startInterval": 5, "startIntervalTimeUnit": "MINUTES",
                         "endInterval": 0, "endIntervalTimeUnit": "MINUTES"});
        let out = run_chain(&save_then_query(cfg), &readings());
        assert_eq!(answer(&out, "a5"), Some(format!(r#"[{{"ts":{mid},"value":{value}}}]"#)), "{aggregation}");
    }
}

/// A ThingsBoard export: save timeseries → get telemetry (`useMetadataIntervalPatterns`, the
/// interval from metadata `from`/`to`, LAST). The import maps save-timeseries to a table-writer
/// that also keeps the history (TTL noted: the bound is kept instead) and TbGetTelemetryNode to
/// `get-telemetry`; the imported chain runs.
#[test]
fn tb_get_telemetry_node_imports_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let save = json!({"defaultTTL": 3600});
    let get = json!({"latestTsKeyNames": ["temperature"], "fetchMode": "LAST", "orderBy": "INVALID", "aggregation": "SUM",
                     "limit": 1000, "startInterval": 2, "startIntervalTimeUnit": "MINUTES", "endInterval": 1,
                     "endIntervalTimeUnit": "MINUTES", "useMetadataIntervalPatterns": true,
                     "startIntervalPattern": "${from}", "endIntervalPattern": "${to}"});
    let nodes = json!([
        {"type": "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode", "name": "Save", "configuration": save},
        {"type": "org.thingsboard.rule.engine.metadata.TbGetTelemetryNode", "name": "History", "configuration": get}
    ]);
    let export = json!({"ruleChain": {"name": "history"}, "metadata": {"firstNodeIndex": 0, "nodes": nodes,
                        "connections": [{"fromIndex": 0, "toIndex": 1, "type": "Success"}]}});
    let file = dir.path().join("export.json");
    std::fs::write(&file, export.to_string()).unwrap();
    let out_dir = dir.path().join("chains");
    let result = sluice(&["import", "thingsboard", file.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    assert!(result.status.success(), "{}", stderr(&result));
    let report = String::from_utf8_lossy(&result.stdout).into_owned();
    assert!(report.contains(" 0 placeholders"), "{report}");
    assert!(report.contains("TTL 3600 s is not kept: the telemetry history keeps the newest points"), "{report}");
    assert!(report.contains("the interval is measured from each message's ts"), "{report}");
    let path = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"));
    let mut chain: Value = serde_json::from_slice(&std::fs::read(path.unwrap()).unwrap()).unwrap();
    let node =
        |module: &str| chain["nodes"].as_array().unwrap().iter().find(|n| n["module"] == module).cloned().unwrap();
    assert_eq!(node("table-writer")["config"], json!({"table": "timeseries", "merge": true, "series": "timeseries"}));
    let get_node = node("get-telemetry");
    // LAST ignores orderBy and aggregation (`TbGetTelemetryNode.init`): not carried over.
    assert!(get_node["config"].get("orderBy").is_none() && get_node["config"].get("aggregation").is_none());
    let id = get_node["id"].clone();
    chain["nodes"].as_array_mut().unwrap().push(json!({"id": "history-out", "sink": "output"}));
    chain["connections"].as_array_mut().unwrap().push(json!({"from": id, "to": "history-out", "relation": "Success"}));
    // The last reading asks for [T0 + 1 min, T0 + 3 min): LAST is the reading at T0 + 2 min.
    let mut msgs = readings();
    let last = msgs.len() - 2;
    msgs[last] =
        msgs[last].clone().with_meta("from", (T0 + MIN).to_string()).with_meta("to", (T0 + 3 * MIN).to_string());
    let out = run_chain(&chain, &msgs);
    let asked: Vec<&TbMsg> = out.iter().filter(|m| m.id == "a5" && m.meta("temperature").is_some()).collect();
    assert_eq!(asked.len(), 1, "{out:#?}");
    assert_eq!(asked[0].meta("temperature"), Some("\"23\""));
    // Readings without the metadata fail the query as ThingsBoard's `checkPattern` does.
    assert!(out.iter().all(|m| m.id == "a5" || m.meta("temperature").is_none()));
}

/// The history survives a restart with a state dir, and its bound (`[state] seriesMaxPoints = 3`)
/// evicts the oldest points: an HTTP service saves th-1's readings 1, 2, 3, 4 (one a minute) and
/// reads ALL of the hour before each; it is stopped and started again, and the fifth reading
/// reads what the first run saved. `TbGetTelemetryNode` (ALL, ASC) over [now - 1 h, now).
#[test]
fn the_history_survives_a_restart_and_keeps_its_bound() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let port = crate::tansu::free_port();
    crate::kafka::write(
        dir.path(),
        "tokens.json",
        r#"{"TOKEN-1": {"deviceName": "th-1", "deviceType": "Thermometer"}}"#,
    );
    let query = json!({"latestTsKeyNames": ["temperature"], "fetchMode": "ALL", "orderBy": "ASC", "limit": 1000,
                       "aggregation": "NONE", "startInterval": 1, "startIntervalTimeUnit": "HOURS",
                       "endInterval": 0, "endIntervalTimeUnit": "HOURS"});
    let chain = crate::kafka::write(dir.path(), "chain.json", &save_then_query(query).to_string());
    let config =
        |out: &str| crate::support::http_service_config(dir.path(), port, out, "\n[state]\nseriesMaxPoints = 3\n");
    let post = |i: i64| {
        let body = json!({"ts": T0 + i * MIN, "values": {"temperature": i + 1}}).to_string();
        crate::support::post_telemetry(port, &body);
    };
    let answers = |name: &str| -> Vec<String> {
        std::fs::read_to_string(dir.path().join(name))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["metadata"]["temperature"].as_str().unwrap_or("").to_string()
            })
            .collect()
    };
    let point = |i: i64| format!(r#"{{"ts":{},"value":{}}}"#, T0 + i * MIN, i + 1);
    let wait_for = |name: &str, n: usize, service: &crate::kafka::Service| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while answers(name).len() < n {
            assert!(Instant::now() < deadline, "{}", service.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    let first = crate::kafka::Service::start(dir.path(), &chain, &config("before"), "state");
    first.wait_for_log("HTTP device API listening", Duration::from_secs(60));
    for i in 0..4 {
        post(i);
    }
    wait_for("before.jsonl", 4, &first);
    std::thread::sleep(Duration::from_millis(2_500)); // past a checkpoint
    first.stop_ok();
    // Each reading sees the ones before it; the fourth, after 4 saves with a bound of 3, no
    // longer the first (evicted) — only readings 2 and 3 (its own is at `now`, excluded).
    assert_eq!(
        answers("before.jsonl"),
        [
            "".to_string(),
            format!("[{}]", point(0)),
            format!("[{},{}]", point(0), point(1)),
            format!("[{},{}]", point(1), point(2))
        ]
    );

    let second = crate::kafka::Service::start(dir.path(), &chain, &config("after"), "state");
    second.wait_for_log("HTTP device API listening", Duration::from_secs(60));
    post(4);
    wait_for("after.jsonl", 1, &second);
    second.stop_ok();
    // Restored 2, 3, 4; the fifth saved evicts 2: readings 3 and 4, saved before the restart.
    assert_eq!(answers("after.jsonl"), [format!("[{},{}]", point(2), point(3))]);
}

/// A version-0 export (`fetchMode` ALL with `orderBy` "" and `aggregation` null, no `limit`)
/// imports as `TbGetTelemetryNode.upgrade` upgrades it — ASC, NONE, 1000 — and loads; an unknown
/// fetch mode becomes LAST, with a note.
#[test]
fn an_old_get_telemetry_config_is_upgraded_on_import() {
    let dir = tempfile::tempdir().unwrap();
    let node = |name: &str, cfg: Value| json!({"type": "org.thingsboard.rule.engine.metadata.TbGetTelemetryNode", "name": name, "configuration": cfg});
    let all = json!({"latestTsKeyNames": ["t"], "fetchMode": "ALL", "orderBy": "", "aggregation": null,
                     "startInterval": 2, "startIntervalTimeUnit": "MINUTES", "endInterval": 1,
                     "endIntervalTimeUnit": "MINUTES"});
    let odd = json!({"latestTsKeyNames": ["t"], "fetchMode": "SOMETIMES", "orderBy": "ASC", "aggregation": "SUM"});
    let export = json!({"ruleChain": {"name": "old"}, "metadata": {"firstNodeIndex": 0,
        "nodes": [node("All", all), node("Odd", odd)], "connections": [{"fromIndex": 0, "toIndex": 1, "type": "Success"}]}});
    let file = dir.path().join("export.json");
    std::fs::write(&file, export.to_string()).unwrap();
    let out_dir = dir.path().join("chains");
    let result = sluice(&["import", "thingsboard", file.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    assert!(result.status.success(), "{}", stderr(&result));
    let report = String::from_utf8_lossy(&result.stdout).into_owned();
    assert!(report.contains("fetchMode `SOMETIMES` is not FIRST, LAST or ALL: LAST"), "{report}");
    let path = out_dir.join("old.json");
    let chain: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let configs: Vec<&Value> = chain["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["module"] == "get-telemetry")
        .map(|n| &n["config"])
        .collect();
    assert_eq!(configs[0]["orderBy"], "ASC");
    assert!(configs[0].get("aggregation").is_none() && configs[0].get("limit").is_none(), "{:#}", configs[0]);
    assert_eq!(configs[1], &json!({"latestTsKeyNames": ["t"], "fetchMode": "LAST"}));
    crate::support::load_chain(&chain).unwrap_or_else(|e| panic!("{e}"));
}

//! Wasm builds of the enrich nodes, run in the engine: `table-writer`, `originator-attributes`,
//! `change-originator` and `log`, alone and chained (a device registry and door events arriving on
//! one input, split by `check-fields`, the registry feeding the table the events are enriched
//! from). Expected messages are written out by hand.

use serde_json::{Value, json};
use sluice_sdk::{Originator, TbMsg};

use crate::support::{modules, node_config_error, run_chain, run_node, sluice_bin};

const T0: i64 = 1_700_000_000_000;

/// A registry message: `door` is at `site`/`region`.
fn registry(id: &str, ts: i64, door: &str, site: &str, region: &str) -> TbMsg {
    TbMsg::new(
        "REGISTER",
        Originator::device("registry"),
        json!({"deviceId": door, "location": {"site": site, "region": region}}),
    )
    .with_id(id)
    .with_ts(ts)
}

/// A door event from `door` itself.
fn event(id: &str, ts: i64, door: &str, open: bool) -> TbMsg {
    TbMsg::telemetry(door, json!({"open": open})).with_id(id).with_ts(ts).with_meta("deviceType", "Door")
}

fn error_of(msg: &TbMsg) -> &str {
    msg.meta("error").unwrap_or_default()
}

/// The registry and the events on one input: `check-fields` sends messages carrying `deviceId`
/// (registry entries) to `table-writer`, the rest (events) to `originator-attributes`, which reads
/// the table the writer keeps. Both go on to the output, as do failures of the lookup.
fn registry_chain(attributes: Value) -> Value {
    json!({
        "entry": "split",
        "nodes": [
            {"id": "split", "module": "check-fields", "config": {"messageNames": ["deviceId"]}},
            {"id": "registry", "module": "table-writer",
             "config": {"table": "devices", "key": "data.deviceId", "fields": ["location"], "merge": true}},
            {"id": "enrich", "module": "originator-attributes", "config": attributes},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "split", "to": "registry", "relation": "True"},
            {"from": "split", "to": "enrich", "relation": "False"},
            {"from": "registry", "to": "out", "relation": "Success"},
            {"from": "enrich", "to": "out", "relation": "Success"},
            {"from": "enrich", "to": "out", "relation": "Failure"}
        ]
    })
}

#[test]
fn registry_then_events_are_enriched_with_the_region() {
    let chain = registry_chain(json!({"table": "devices", "attributes": {"location.region": "region",
                                      "location.site": "site"}, "prefix": "cs_"}));
    let input = [
        event("e0", T0, "door-7", true), // before its registration: nothing to add yet
        registry("r1", T0 + 1, "door-7", "HQ", "north"),
        registry("r2", T0 + 2, "door-9", "Annex", "south"),
        event("e1", T0 + 3, "door-7", false),
        event("e2", T0 + 4, "door-9", true),
        event("e3", T0 + 5, "door-404", true),          // not in the registry
        registry("r3", T0 + 6, "door-7", "HQ", "west"), // moved: merged over the old entry
        event("e4", T0 + 7, "door-7", true),
    ];
    let out = run_chain(&chain, &input);
    let enriched = |m: TbMsg, site: &str, region: &str| m.with_meta("cs_site", site).with_meta("cs_region", region);
    let expected = vec![
        event("e0", T0, "door-7", true),
        input[1].clone(),
        input[2].clone(),
        enriched(event("e1", T0 + 3, "door-7", false), "HQ", "north"),
        enriched(event("e2", T0 + 4, "door-9", true), "Annex", "south"),
        event("e3", T0 + 5, "door-404", true),
        input[6].clone(),
        enriched(event("e4", T0 + 7, "door-7", true), "HQ", "west"),
    ];
    assert_eq!(out, expected);
}

#[test]
fn an_event_whose_device_is_not_in_the_table_fails_when_asked_to() {
    let chain = registry_chain(json!({"table": "devices", "attributes": {"location.region": "region"},
                                      "tellFailureIfAbsent": true}));
    let input = [
        registry("r1", T0, "door-7", "HQ", "north"),
        event("e1", T0 + 1, "door-7", true),
        event("e2", T0 + 2, "door-404", true),
    ];
    let out = run_chain(&chain, &input);
    assert_eq!(out.len(), 3, "{out:#?}");
    assert_eq!(out[0], input[0]);
    assert_eq!(out[1], event("e1", T0 + 1, "door-7", true).with_meta("region", "north"));
    assert_eq!(out[2].id, "e2");
    assert_eq!(error_of(&out[2]), "`door-404` is not in table `devices`");
}

#[test]
fn table_writer_forwards_on_success_and_fails_without_a_key() {
    let input = [
        registry("r1", T0, "door-7", "HQ", "north"),
        TbMsg::new("REGISTER", Originator::device("registry"), json!({"x": 1})).with_id("r2"),
    ];
    let out =
        run_node("table-writer", json!({"table": "devices", "key": "data.deviceId"}), &input, &["Success", "Failure"]);
    assert_eq!(out["Success"], [input[0].clone()]);
    assert_eq!(out["Failure"].len(), 1);
    assert_eq!(out["Failure"][0].id, "r2");
    assert!(error_of(&out["Failure"][0]).contains("data.deviceId"), "{:?}", out["Failure"][0]);
}

#[test]
fn table_writer_delete_removes_the_entry() {
    let chain = json!({
        "entry": "split",
        "nodes": [
            {"id": "split", "module": "check-fields", "config": {"messageNames": ["deviceId"]}},
            {"id": "registry", "module": "table-writer",
             "config": {"table": "devices", "key": "data.deviceId", "delete": {"field": "data.op", "equals": "delete"}}},
            {"id": "enrich", "module": "originator-attributes",
             "config": {"table": "devices", "attributes": ["location.site"], "to": "data"}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "split", "to": "registry", "relation": "True"},
            {"from": "split", "to": "enrich", "relation": "False"},
            {"from": "enrich", "to": "out", "relation": "Success"}
        ]
    });
    let removal = TbMsg::new("REGISTER", Originator::device("registry"), json!({"deviceId": "door-7", "op": "delete"}));
    let input = [
        registry("r1", T0, "door-7", "HQ", "north"),
        event("e1", T0 + 1, "door-7", true),
        removal.with_id("r2").with_ts(T0 + 2),
        event("e2", T0 + 3, "door-7", false),
    ];
    let out = run_chain(&chain, &input);
    let mut e1 = event("e1", T0 + 1, "door-7", true);
    e1.data = json!({"open": true, "location.site": "HQ"});
    assert_eq!(out, [e1, event("e2", T0 + 3, "door-7", false)]);
}

#[test]
fn originator_attributes_without_an_entry_passes_unchanged() {
    let input = [event("e1", T0, "door-7", true)];
    let config = json!({"table": "devices", "attributes": ["region"]});
    let out = run_node("originator-attributes", config, &input, &["Success", "Failure"]);
    assert_eq!(out["Success"], input);
    assert!(out["Failure"].is_empty());
}

/// Enrich, re-key to the region's asset keeping the door in metadata, log, output.
#[test]
fn events_are_re_keyed_to_their_region_asset() {
    let chain = json!({
        "entry": "split",
        "nodes": [
            {"id": "split", "module": "check-fields", "config": {"messageNames": ["deviceId"]}},
            {"id": "registry", "module": "table-writer", "config": {"table": "devices", "key": "data.deviceId"}},
            {"id": "enrich", "module": "originator-attributes",
             "config": {"table": "devices", "attributes": {"location.region": "region"}, "prefix": "cs_"}},
            {"id": "rekey", "module": "change-originator",
             "config": {"entityType": "ASSET", "name": "region-${cs_region}", "keepOriginal": "door"}},
            {"id": "trace", "module": "log", "config": {"message": "${door} -> region-${cs_region}"}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "split", "to": "registry", "relation": "True"},
            {"from": "split", "to": "enrich", "relation": "False"},
            {"from": "enrich", "to": "rekey", "relation": "Success"},
            {"from": "rekey", "to": "trace", "relation": "Success"},
            {"from": "rekey", "to": "out", "relation": "Failure"},
            {"from": "trace", "to": "out", "relation": "Success"}
        ]
    });
    let input = [
        registry("r1", T0, "door-7", "HQ", "north"),
        event("e1", T0 + 1, "door-7", true),
        event("e2", T0 + 2, "door-404", false),
    ];
    let out = run_chain(&chain, &input);
    let mut e1 = event("e1", T0 + 1, "door-7", true)
        .with_meta("cs_region", "north")
        .with_meta("door", "door-7")
        .with_meta("doorType", "DEVICE");
    e1.originator = Originator::asset("region-north");
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(out[0], e1);
    // The unknown door has no region: the placeholder is named.
    assert_eq!(out[1].originator, Originator::device("door-404"));
    assert_eq!(error_of(&out[1]), "template placeholder ${cs_region}: metadata has no `cs_region`");
}

#[test]
fn change_originator_fails_naming_the_missing_value() {
    let with_zone = TbMsg::telemetry("WS-1", json!({"windSpeed": 33})).with_id("m1").with_meta("cs_geoZone", "A");
    let without = TbMsg::telemetry("WS-2", json!({"windSpeed": 30})).with_id("m2");
    let config = json!({"entityType": "ASSET", "name": "${cs_geoZone}", "keepOriginal": "originalOriginator"});
    let out = run_node("change-originator", config, &[with_zone.clone(), without], &["Success", "Failure"]);
    let mut expected = with_zone.with_meta("originalOriginator", "WS-1").with_meta("originalOriginatorType", "DEVICE");
    expected.originator = Originator::asset("A");
    assert_eq!(out["Success"], [expected]);
    assert_eq!(out["Failure"].len(), 1);
    assert_eq!(out["Failure"][0].originator, Originator::device("WS-2"));
    assert!(error_of(&out["Failure"][0]).contains("${cs_geoZone}"));
}

#[test]
fn log_forwards_every_message_unchanged() {
    let input = [
        TbMsg::telemetry("WS-1", json!({"windSpeed": 33})).with_id("m1").with_meta("deviceName", "WS-1"),
        TbMsg::telemetry("WS-2", json!({})).with_id("m2"), // template values missing: still forwarded
    ];
    let config = json!({"level": "warn", "message": "wind ${deviceName}: $[windSpeed]"});
    let out = run_node("log", config, &input, &["Success", "Failure"]);
    assert_eq!(out["Success"], input);
    assert!(out["Failure"].is_empty());
}

/// The `sluice` binary shows the lines (default filter `info`: the debug node's are hidden).
#[test]
fn log_lines_reach_the_engine_log() {
    let dir = tempfile::tempdir().unwrap();
    let chain = json!({
        "entry": "wind",
        "nodes": [
            {"id": "wind", "module": "log", "config": {"message": "wind ${deviceName}: $[windSpeed]"}},
            {"id": "quiet", "module": "log", "config": {"level": "debug"}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "wind", "to": "quiet", "relation": "Success"},
            {"from": "quiet", "to": "out", "relation": "Success"}
        ]
    });
    let input = [
        TbMsg::telemetry("WS-1", json!({"windSpeed": "33"})).with_id("m1").with_ts(T0).with_meta("deviceName", "WS-1"),
        TbMsg::telemetry("WS-2", json!({})).with_id("m2").with_ts(T0 + 1).with_meta("deviceName", "WS-2"),
    ];
    let (chain_path, in_path, out_path) =
        (dir.path().join("chain.json"), dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    std::fs::write(&chain_path, chain.to_string()).unwrap();
    let lines: Vec<String> = input.iter().map(|m| serde_json::to_string(m).unwrap()).collect();
    std::fs::write(&in_path, lines.join("\n") + "\n").unwrap();
    let run = std::process::Command::new(sluice_bin())
        .args(["run", "--no-state", "--workers", "1"])
        .arg("--chain")
        .arg(&chain_path)
        .arg("--input")
        .arg(&in_path)
        .arg("--output")
        .arg(&out_path)
        .env("SLUICE_MODULES", modules())
        .env_remove("SLUICE_LOG")
        .output()
        .unwrap();
    let stderr = without_colours(&String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{stderr}");
    let written: Vec<TbMsg> =
        std::fs::read_to_string(&out_path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(written, input);
    let guest: Vec<&str> = stderr.lines().filter(|l| l.contains("node=\"wind\"")).collect();
    assert!(guest.iter().any(|l| l.contains("INFO") && l.contains("wind WS-1: 33")), "{stderr}");
    let missing = "log template: template placeholder $[windSpeed]: data has no `windSpeed`";
    assert!(guest.iter().any(|l| l.contains("INFO") && l.contains(missing)), "{stderr}");
    assert!(!stderr.contains("\"id\":\"m1\""), "the debug node's lines are filtered out: {stderr}");
}

/// The log text without its ANSI colour sequences (`ESC [ … m`).
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Type errors name `config.<field>` (serde's path); semantic checks in `init` say
/// ``config field `<field>` ``.
#[test]
fn bad_configs_name_node_and_field() {
    let cases = [
        ("table-writer", json!({"key": "data.deviceId"}), "table"),
        ("table-writer", json!({"table": "devices", "fields": []}), "fields"),
        ("originator-attributes", json!({"table": "devices", "attributes": ["region"], "to": "server"}), "to"),
        ("originator-attributes", json!({"table": "devices", "attributes": {"a": "x", "b": "x"}}), "attributes.b"),
        ("change-originator", json!({"entityType": "ASSET"}), "name"),
        ("change-originator", json!({"name": "${open"}), "name"),
        ("log", json!({"level": "verbose"}), "level"),
        ("log", json!({"message": "$[open"}), "message"),
    ];
    for (module, config, field) in cases {
        let error = node_config_error(module, config.clone());
        assert!(error.contains("node `node`"), "{module} {config}: {error}");
        let named =
            error.contains(&format!("field `config.{field}`")) || error.contains(&format!("config field `{field}`"));
        assert!(named, "{module} {config}: {error}");
    }
}

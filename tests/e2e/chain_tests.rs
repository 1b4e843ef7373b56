//! `sluice test`: chain test files run by the binary — what it prints for a pass, a broken
//! expectation (the step and the field) and a test that cannot run; the JUnit report; YAML;
//! and virtual processing time (an hour of delay, a day of hourly windows, in no real time).

use std::path::Path;

use serde_json::json;

use crate::support::{sluice, stderr};

/// A chain: temperatures above 20 pass, hourly averages per device to the output, and a
/// one-hour delay to a second path (`held`) into the same output.
fn write_chain(dir: &Path) {
    let chain = json!({
        "entry": "hot",
        "eventTime": {"from": "ts", "latenessMs": 0},
        "nodes": [
            {"id": "hot", "module": "attribute-filter", "config": {"dataPresent": ["temperature"]}},
            {"id": "hourly", "module": "window-aggregate", "config": {
                "window": {"type": "tumbling", "sizeMs": 3_600_000},
                "key": "originator", "value": "data.temperature", "aggregates": ["avg", "count"],
                "late": "Late"}},
            {"id": "held", "module": "delay", "config": {"periodMs": 3_600_000}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "hot", "to": "hourly", "relation": "True"},
            {"from": "hot", "to": "held", "relation": "False"},
            {"from": "hourly", "to": "out", "relation": "Success"},
            {"from": "held", "to": "out", "relation": "Success"}
        ]
    });
    std::fs::write(dir.join("chain.json"), serde_json::to_string_pretty(&chain).unwrap()).unwrap();
}

fn reading(ts: i64, device: &str, temperature: f64) -> serde_json::Value {
    json!({"ts": ts, "deviceName": device, "deviceType": "Thermometer", "temperature": temperature})
}

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR;

#[test]
fn a_broken_expectation_fails_naming_the_step_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    write_chain(dir.path());
    // Averages by hand: T-1 in the first hour 20 and 30 → 25; T-1 in the second hour 10.
    let sends = json!({"send": [reading(T0 + 1, "T-1", 20.0), reading(T0 + 2_000_000, "T-1", 30.0),
        reading(T0 + HOUR + 5, "T-1", 10.0)]});
    let tests = json!({
        "chain": "chain.json",
        "tests": [
            {"name": "hourly averages", "steps": [
                sends,
                {"expect": {"sink": "output", "messages": [{"data": {"avg": 25, "count": 2}, "originator": {"name": "T-1"}}]}},
                {"endOfInput": true},
                {"expect": {"sink": "output", "messages": [{"data": {"avg": 10, "count": 1}}]}}
            ]},
            {"name": "a wrong average", "steps": [
                sends,
                {"expect": {"node": "hourly", "relation": "Success", "messages": [{"data": {"avg": 26}}]}}
            ]},
            {"name": "a node that is not there", "steps": [
                {"expect": {"node": "nope", "relation": "True", "count": 0}}
            ]}
        ]
    });
    std::fs::write(dir.path().join("hourly.test.json"), serde_json::to_string_pretty(&tests).unwrap()).unwrap();
    let junit = dir.path().join("junit.xml");
    let out = sluice(&["test", dir.path().to_str().unwrap(), "--junit", junit.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}{}", stderr(&out));
    assert!(report.contains("ok    ") && report.contains("› hourly averages"), "{report}");
    assert!(report.contains("FAIL  ") && report.contains("› a wrong average"), "{report}");
    let diff = "step 2 (expect node hourly on Success): message 1 of 1: `data.avg`: expected 26, got 25";
    assert!(report.contains(diff), "{report}");
    assert!(report.contains("found: {"), "the message found is shown: {report}");
    assert!(
        report.contains("ERROR ") && report.contains("no node `nope` in the chain (nodes: hot, hourly, held, out)"),
        "{report}"
    );
    assert!(report.contains("1 passed, 1 failed, 1 could not run"), "{report}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(r#"tests="3" failures="1" errors="1""#), "{xml}");
    assert!(xml.contains("expected 26, got 25"), "{xml}");
}

#[test]
fn processing_time_is_virtual_an_hour_of_delay_takes_no_time() {
    let dir = tempfile::tempdir().unwrap();
    write_chain(dir.path());
    // YAML, as an author may write it. A reading without a temperature is held for an hour.
    let yaml = format!(
        r#"chain: chain.json
tests:
  - name: a held reading leaves after exactly one hour
    startMs: {T0}
    steps:
      - send: {{ts: {T0}, deviceName: H-1, deviceType: Hygrometer, humidity: 40}}
      - expect: {{node: hot, relation: "False", count: 1}}
      - advanceMs: 3599999
      - expect: {{sink: output, count: 0}}
      - expect: {{state: held, key: pending, value: 1}}
      - advanceMs: 1
      - expect: {{sink: output, messages: [{{originator: {{name: H-1}}, data: {{humidity: 40}}}}]}}
      - expect: {{state: held, key: pending, value: 0}}
"#
    );
    std::fs::write(dir.path().join("held.test.yaml"), yaml).unwrap();
    let out = sluice(&["test", dir.path().join("held.test.yaml").to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}{}", stderr(&out));
    assert!(report.contains("1 passed, 0 failed"), "{report}");
}

#[test]
fn late_readings_are_counted_and_a_bad_test_file_is_located() {
    let dir = tempfile::tempdir().unwrap();
    write_chain(dir.path());
    let tests = json!({
        "chain": "chain.json",
        "tests": [{"name": "a reading for a closed hour is late", "steps": [
            {"send": [reading(T0 + 10, "T-1", 21.0), reading(T0 + HOUR + 10, "T-1", 22.0), reading(T0 + 20, "T-1", 99.0)]},
            {"expect": {"node": "hourly", "late": 1}},
            {"expect": {"node": "hourly", "relation": "Late", "messages": [{"data": {"temperature": 99}}]}},
            {"expect": {"sink": "output", "messages": [{"data": {"avg": 21, "count": 1}}]}}
        ]}]
    });
    std::fs::write(dir.path().join("late.test.json"), tests.to_string()).unwrap();
    let out = sluice(&["test", dir.path().join("late.test.json").to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}{}", stderr(&out));

    let bad = json!({"chain": "chain.json", "tests": [{"name": "x", "steps": [{"expect": {"sink": "output", "mesages": []}}]}]});
    std::fs::write(dir.path().join("bad.test.json"), bad.to_string()).unwrap();
    let out = sluice(&["test", dir.path().join("bad.test.json").to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("`tests[0].steps[0].expect.mesages`: unknown field `mesages`"), "{report}");
}

/// The README's example test file passes, as written, beside the shipped chains.
#[test]
fn the_readme_example_passes() {
    let readme = std::fs::read_to_string(crate::support::repo().join("README.md")).unwrap();
    let section = readme.split("## Testing a chain").nth(1).expect("README has \"Testing a chain\"");
    let example = section.split("```json\n").nth(1).and_then(|s| s.split("```").next()).expect("a JSON example");
    let chain = crate::support::repo().join("chains").join("wind-zones.json");
    let example = example.replace("\"../wind-zones.json\"", &serde_json::to_string(&chain).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("readme.test.json");
    std::fs::write(&file, example).unwrap();
    let out = sluice(&["test", file.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}{}", stderr(&out));
    assert!(report.contains("1 passed, 0 failed"), "{report}");
}

/// `chains/tests/test.schema.json`, which the shipped test files name for editors, is what
/// `sluice schema --tests` prints.
#[test]
fn the_test_file_schema_is_current() {
    let out = sluice(&["schema", "--tests"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shipped = std::fs::read_to_string(crate::support::repo().join("chains/tests/test.schema.json")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        shipped,
        "regenerate: sluice schema --tests > chains/tests/test.schema.json"
    );
}

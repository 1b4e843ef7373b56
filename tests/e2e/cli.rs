//! The `sluice` binary, as a user runs it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::{modules, repo, sluice, sluice_bin, stderr};

/// One uplink of the generated workload, with what the chain must make of it — derived from the
/// generator's parameters, not from running any node.
struct Case {
    line: Value,
    expected: Vec<Value>,
}

/// The `uplink-to-telemetry` chain's workload: thermometers, hygrometers (filtered out), payloads
/// without a device name (→ Failure, written out), thermometers without a type (filtered out),
/// and batched `telemetry: [{ts, values}]` payloads.
fn workload(n: usize) -> Vec<Case> {
    (0..n)
        .map(|k| {
            let id = format!("u-{k}");
            let ts = 1_700_000_000_000i64 + k as i64 * 100;
            let device = format!("T-{}", k % 13);
            let gateway = format!("gw-{}", k % 3);
            let temp = (k % 400) as f64 / 10.0 - 5.0;
            let hum = (k % 70) as i64 + 20;
            let decoded = |n: usize, ts: i64, data: Value| {
                json!({"id": format!("{id}:{n}"), "ts": ts, "type": "POST_TELEMETRY_REQUEST",
                       "originator": {"entityType": "DEVICE", "name": device},
                       "metadata": {"deviceName": device, "deviceType": "Thermometer", "ts": ts.to_string()},
                       "data": data})
            };
            let (payload, expected) = match k % 6 {
                0..=2 => (
                    json!({"deviceName": device, "deviceType": "Thermometer", "temp": temp, "hum": hum}),
                    vec![decoded(0, ts, json!({"temperature": temp, "humidity": hum}))],
                ),
                3 => (json!({"deviceName": format!("H-{k}"), "deviceType": "Hygrometer", "hum": hum}), vec![]),
                4 if k % 12 == 4 => (json!({"temp": temp}), vec![Value::Null]), // failure, filled below
                4 => (json!({"deviceName": device, "temp": temp}), vec![]),
                _ => (
                    json!({"deviceName": device, "deviceType": "Thermometer",
                           "telemetry": [{"ts": ts - 50, "values": {"temp": temp}}, {"ts": ts, "values": {"hum": hum}}]}),
                    vec![decoded(0, ts - 50, json!({"temperature": temp}))],
                ),
            };
            let line = json!({"id": id, "ts": ts, "type": "UPLINK",
                              "originator": {"entityType": "DEVICE", "name": gateway},
                              "data": {"payload": payload.to_string()}});
            let expected = expected
                .into_iter()
                .map(|e| {
                    if e.is_null() {
                        let mut failed = line.clone();
                        failed["metadata"] = json!({"error": "payload has no `deviceName`"});
                        failed
                    } else {
                        e
                    }
                })
                .collect();
            Case { line, expected }
        })
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn read_values(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|l| serde_json::from_str(l).expect("output line is JSON")).collect()
}

/// Asserts two multisets of messages are equal, showing only what differs.
fn assert_same_messages(actual: Vec<Value>, expected: Vec<Value>) {
    let (actual, expected) = (sorted(actual), sorted(expected));
    let missing: Vec<_> = expected.iter().filter(|e| !actual.contains(e)).take(3).collect();
    let extra: Vec<_> = actual.iter().filter(|a| !expected.contains(a)).take(3).collect();
    assert!(
        actual == expected,
        "{} actual vs {} expected lines\nmissing: {missing:#?}\nunexpected: {extra:#?}",
        actual.len(),
        expected.len()
    );
}

fn sorted(mut values: Vec<Value>) -> Vec<String> {
    let mut out: Vec<String> = values.drain(..).map(|v| v.to_string()).collect();
    out.sort();
    out
}

#[test]
fn the_demo_chain_matches_an_independent_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let cases = workload(3000);
    let (input, output, stats) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"), dir.path().join("s.json"));
    write_lines(&input, &cases.iter().map(|c| c.line.to_string()).collect::<Vec<_>>());
    let chain = repo().join("chains/uplink-to-telemetry.json");
    let out = sluice(&[
        "run",
        "--chain",
        chain.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--stats",
        stats.to_str().unwrap(),
        "--workers",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected: Vec<Value> = cases.iter().flat_map(|c| c.expected.clone()).collect();
    let actual = read_values(&output);
    assert_same_messages(actual.clone(), expected);
    // Order holds per incoming originator (the gateway, k % 3): messages are partitioned by the
    // originator they arrive with, and one worker runs each partition in order.
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for m in &actual {
        let id = m["id"].as_str().unwrap();
        let k: u64 = id.trim_start_matches("u-").split(':').next().unwrap().parse().unwrap();
        if let Some(prev) = last.insert(k % 3, k) {
            assert!(prev < k, "gateway gw-{}: u-{k} written after u-{prev}", k % 3);
        }
    }
    let stats: Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(stats["messages"], 3000);
    assert_eq!(stats["acked"], 3000);
    assert_eq!(stats["malformed"], 0);
}

fn thermometer_chain(dir: &Path) -> std::path::PathBuf {
    let chain = json!({
        "entry": "check",
        "nodes": [
            {"id": "check", "module": "check-fields", "config": {"messageNames": ["temperature"]}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [{"from": "check", "to": "out", "relation": "True"}]
    });
    let path = dir.join("chain.json");
    std::fs::write(&path, chain.to_string()).unwrap();
    path
}

const MIXED_INPUT: &[&str] = &[
    r#"{"ts": 1000, "deviceName": "T-1", "deviceType": "Thermometer", "temperature": "21.5"}"#,
    r#"{"ts": 2000, "deviceName": "T-2", "temperature": 19}"#,
    r#"{"ts": 3000, "deviceName": "T-1", "temperature": oops}"#,
    r#""#,
    r#"{"ts": 5000, "temperature": 30}"#,
    r#"{"id": "full", "ts": 6000, "type": "POST_TELEMETRY_REQUEST", "originator": {"entityType": "DEVICE", "name": "T-3"}, "metadata": {}, "data": {"temperature": 1}}"#,
];

#[test]
fn malformed_lines_are_reported_by_number_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let chain = thermometer_chain(dir.path());
    let input = dir.path().join("in.jsonl");
    write_lines(&input, &MIXED_INPUT.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let output = dir.path().join("out.jsonl");
    let stats = dir.path().join("stats.json");
    let out = sluice(&[
        "run",
        "--chain",
        chain.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--stats",
        stats.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("line 3: not JSON"), "{err}");
    assert!(err.contains("line 5: neither a message"), "{err}");
    let produced = read_values(&output);
    let names: Vec<_> = sorted(produced.iter().map(|m| m["originator"]["name"].clone()).collect());
    assert_eq!(names, ["\"T-1\"", "\"T-2\"", "\"T-3\""]);
    let t1 = produced.iter().find(|m| m["originator"]["name"] == "T-1").unwrap();
    assert_eq!(t1["type"], "POST_TELEMETRY_REQUEST");
    assert_eq!(t1["ts"], 1000);
    assert_eq!(t1["metadata"], json!({"deviceName": "T-1", "deviceType": "Thermometer", "ts": "1000"}));
    assert_eq!(t1["data"], json!({"temperature": "21.5"}));
    let stats: Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(
        (stats["lines"].as_u64(), stats["messages"].as_u64(), stats["malformed"].as_u64()),
        (Some(6), Some(3), Some(2))
    );
}

/// Flat JSON, read through the chain's `input.originator`: each record a message from
/// `{panel}/{module}`, its fields as data; a record without the module is malformed, named.
#[test]
fn flat_records_become_messages_named_by_the_chains_template() {
    let dir = tempfile::tempdir().unwrap();
    let chain = dir.path().join("flat.json");
    let spec = json!({"entry": "out", "input": {"originator": "${panel}/${module}"},
                      "nodes": [{"id": "out", "sink": "output"}]});
    std::fs::write(&chain, spec.to_string()).unwrap();
    let records: Vec<Value> = (0..40)
        .map(|k| {
            json!({"ts": 1_700_000_000_000i64 + k, "panel": format!("Panel {:04}", k % 4),
                        "module": format!("Module {}", k % 3), "power": 300.0 + k as f64 / 4.0})
        })
        .collect();
    let mut lines: Vec<String> = records.iter().map(Value::to_string).collect();
    lines.insert(7, json!({"ts": 1, "panel": "Panel 0009", "power": 1.0}).to_string());
    let input = dir.path().join("in.jsonl");
    write_lines(&input, &lines);
    let output = dir.path().join("out.jsonl");
    let out = sluice(&[
        "run",
        "--chain",
        chain.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("line 8: no `module`, which the chain's `input.originator` names"), "{err}");
    let mut produced = read_values(&output);
    produced.sort_by_key(|m| m["ts"].as_i64());
    assert_eq!(produced.len(), records.len());
    for (msg, record) in produced.iter().zip(&records) {
        let name = format!("{}/{}", record["panel"].as_str().unwrap(), record["module"].as_str().unwrap());
        assert_eq!(msg["originator"], json!({"entityType": "DEVICE", "name": name}));
        assert_eq!((&msg["type"], &msg["ts"]), (&json!("POST_TELEMETRY_REQUEST"), &record["ts"]));
        let mut data = record.clone();
        data.as_object_mut().unwrap().remove("ts");
        assert_eq!(msg["data"], data);
    }
}

#[test]
fn strict_stops_at_the_first_malformed_line() {
    let dir = tempfile::tempdir().unwrap();
    let chain = thermometer_chain(dir.path());
    let input = dir.path().join("in.jsonl");
    write_lines(&input, &MIXED_INPUT.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let output = dir.path().join("out.jsonl");
    let out = sluice(&[
        "run",
        "--strict",
        "--chain",
        chain.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("stopped at the first malformed line (--strict)") && err.contains("line 3"), "{err}");
    assert_eq!(read_values(&output).len(), 2, "lines before the bad one are processed");
}

#[test]
fn stdin_to_stdout() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let chain = thermometer_chain(dir.path());
    let mut child = Command::new(sluice_bin())
        .args(["run", "--chain", chain.to_str().unwrap()])
        .env("SLUICE_MODULES", modules())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(MIXED_INPUT[0].as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["originator"]["name"], "T-1");
}

#[test]
fn validate_reports_each_chain() {
    let dir = tempfile::tempdir().unwrap();
    let good = thermometer_chain(dir.path());
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"entry": "a", "nodes": [{"id": "a", "module": "check-fields", "config": {"messageNames": 3}}]}"#,
    )
    .unwrap();
    let out = sluice(&["validate", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = sluice(&["validate", good.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}: node `a`: field `config.messageNames`", bad.display())), "{err}");
    let shipped = repo().join("chains/uplink-to-telemetry.json");
    assert!(sluice(&["validate", shipped.to_str().unwrap()]).status.success());
}

/// `sluice rules build rules` from the repository root — a relative path, as the scripts call
/// it — puts the modules in `rules/target/…`, where chains find them (not in a nested
/// `rules/rules/target`).
#[test]
fn building_rules_by_relative_path_puts_modules_where_chains_look() {
    let out = Command::new(sluice_bin()).current_dir(repo()).args(["rules", "build", "rules"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!repo().join("rules/rules").exists(), "modules went into a nested rules/rules/target");
    assert!(repo().join("rules/target/wasm32-unknown-unknown/release/window_aggregate.wasm").is_file());
    let missing = Command::new(sluice_bin()).args(["rules", "build", "/nonexistent/rules"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("rule directory /nonexistent/rules"), "{}", stderr(&missing));
}

/// `sluice rules new` gives a crate that tests natively, builds to wasm and runs in the engine.
#[test]
fn a_scaffolded_rule_tests_builds_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = sluice(&["rules", "new", "my-threshold", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let crate_dir = dir.path().join("my-threshold");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let test = Command::new(&cargo)
        .current_dir(&crate_dir)
        .args(["test", "--quiet"])
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(test.status.success(), "{}", String::from_utf8_lossy(&test.stderr));
    assert!(String::from_utf8_lossy(&test.stdout).contains("3 passed"));
    let build = sluice(&["rules", "build", crate_dir.to_str().unwrap()]);
    assert!(build.status.success(), "{}", stderr(&build));
    assert!(crate_dir.join("target/wasm32-unknown-unknown/release/my_threshold.wasm").is_file());
    // The command `rules new` printed, run in the crate: it leaves no state (`data/`) there.
    let hint = "sluice run --chain chain.json --input input.jsonl --no-state";
    assert!(stderr(&out).contains(hint), "{}", stderr(&out));
    let output = crate_dir.join("out.jsonl");
    let run = Command::new(sluice_bin())
        .current_dir(&crate_dir)
        .args(hint.split(' ').skip(1))
        .args(["--output", output.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(!crate_dir.join("data").exists(), "`sluice run` left its state in the crate");
    // input.jsonl: T-1 at 25 (above 20), T-2 at "18", T-1 at 21.5 (above 20).
    let temps: Vec<_> = read_values(&output).iter().map(|m| m["data"]["temperature"].clone()).collect();
    assert_eq!(sorted(temps), ["21.5", "25"]);
    // The chain test it comes with passes, in the crate, against the module just built.
    assert!(stderr(&out).contains("sluice test chain.test.json"), "{}", stderr(&out));
    let test = Command::new(sluice_bin()).current_dir(&crate_dir).args(["test", "chain.test.json"]).output().unwrap();
    let report = String::from_utf8_lossy(&test.stdout);
    assert!(test.status.success(), "{report}{}", stderr(&test));
    assert!(report.contains("2 passed, 0 failed"), "{report}");
}

/// A one-node chain (a threshold on `data.value`) into the output, written to `dir`.
fn threshold_chain(dir: &Path) -> std::path::PathBuf {
    let chain = dir.join("chain.json");
    let spec = json!({
        "entry": "f",
        "nodes": [
            {"id": "f", "module": "threshold", "config": {"value": "data.value", "op": ">", "threshold": 100}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [{"from": "f", "to": "out", "relation": "Anomaly"}, {"from": "f", "to": "out", "relation": "Normal"}]
    });
    std::fs::write(&chain, spec.to_string()).unwrap();
    chain
}

/// `--log-format json`: every log line on stderr is one JSON object with its level and message
/// (and the event's fields beside them), for a log shipper; the run itself is unchanged.
#[test]
fn logs_can_be_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    let out = sluice(&[
        "--log-format",
        "json",
        "run",
        "--chain",
        threshold_chain(dir.path()).to_str().unwrap(),
        "--input",
        repo().join("examples/threshold-anomaly/input.jsonl").to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--no-state",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let logs: Vec<Value> = stderr(&out)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!logs.is_empty(), "no JSON log line:\n{}", stderr(&out));
    for log in &logs {
        assert!(log["level"].is_string() && log["message"].is_string() && log["timestamp"].is_string(), "{log}");
    }
    assert!(logs.iter().any(|l| l["level"] == "INFO"), "{logs:?}");
    assert!(std::fs::metadata(&output).unwrap().len() > 0);
}

/// A file run shows its progress when stderr is a terminal (here a pseudo-terminal from
/// util-linux's `script`), and nothing of it when it is not.
#[test]
fn a_file_run_shows_progress_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let lines: String = (0..20_000)
        .map(|i| format!("{}\n", json!({"ts": i, "deviceName": format!("s{}", i % 7), "value": i % 150})))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let chain = threshold_chain(dir.path());
    let command = format!(
        "{} run --chain {} --input {} --output /dev/null --no-state",
        sluice_bin().display(),
        chain.display(),
        input.display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("SLUICE_MODULES", modules())
        .output()
        .expect("util-linux script");
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{terminal}");
    assert!(terminal.contains(" lines, ") && terminal.contains("msgs/s"), "no progress on the terminal:\n{terminal}");

    let out = sluice(&[
        "run",
        "--chain",
        chain.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        "/dev/null",
        "--no-state",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("msgs/s"), "progress drawn on a pipe:\n{}", stderr(&out));
}

/// `sluice fmt` rewrites a chain in its canonical form (and `--check` says which files are not),
/// keeping what the chain means; `sluice diff` says what changed in chain terms.
#[test]
fn fmt_makes_a_chain_canonical_and_diff_speaks_in_nodes_and_connections() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chain.json");
    // Hand-written: keys in any order, everything on a few lines, connections unsorted.
    let written = r#"{"nodes": [{"config": {"threshold": 100, "op": ">", "value": "data.t"}, "module": "threshold", "id": "f"},
        {"sink": "output", "id": "out"}], "connections": [{"relation": "Normal", "to": "out", "from": "f"},
        {"from": "f", "relation": "Anomaly", "to": "out"}], "entry": "f"}"#;
    std::fs::write(&file, written).unwrap();
    let path = file.to_str().unwrap();

    let out = sluice(&["fmt", "--check", path]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not canonical"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written, "--check changes nothing");
    let out = sluice(&["fmt", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let canonical = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        canonical,
        "{\n  \"entry\": \"f\",\n  \"nodes\": [\n    \
         {\"id\": \"f\", \"module\": \"threshold\", \"config\": {\"op\": \">\", \"threshold\": 100, \"value\": \"data.t\"}},\n    \
         {\"id\": \"out\", \"sink\": \"output\"}\n  ],\n  \"connections\": [\n    \
         {\"from\": \"f\", \"to\": \"out\", \"relation\": \"Anomaly\"},\n    \
         {\"from\": \"f\", \"to\": \"out\", \"relation\": \"Normal\"}\n  ]\n}\n"
    );
    let before: Value = serde_json::from_str(written).unwrap();
    let after: Value = serde_json::from_str(&canonical).unwrap();
    assert_eq!(before["nodes"], after["nodes"]);
    assert_eq!(sluice(&["fmt", "--check", path]).status.code(), Some(0));

    // A changed threshold, a node added and connected, one connection gone.
    let edited = dir.path().join("edited.json");
    let mut spec = after.clone();
    spec["nodes"][0]["config"]["threshold"] = json!(120);
    spec["nodes"].as_array_mut().unwrap().push(json!({"id": "log", "module": "log"}));
    spec["connections"] = json!([
        {"from": "f", "to": "out", "relation": "Anomaly"},
        {"from": "f", "to": "log", "relation": "Anomaly"}
    ]);
    std::fs::write(&edited, spec.to_string()).unwrap();
    let out = sluice(&["diff", path, edited.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "~ node `f`: config.threshold: 100 → 120\n+ node `log` (log)\n\
         + connection f -[Anomaly]-> log\n- connection f -[Normal]-> out\n"
    );
    let out = sluice(&["diff", path, path]);
    assert_eq!((out.status.code(), out.stdout.is_empty()), (Some(0), true));

    // Not a chain: refused with the file and the place, nothing written.
    std::fs::write(&file, r#"{"entry": "f", "nodes": [{"id": "f", "modul": "x"}]}"#).unwrap();
    let out = sluice(&["fmt", path]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("chain.json") && stderr(&out).contains("modul"), "{}", stderr(&out));
}

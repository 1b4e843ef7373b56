//! Actions against servers that are slow, failing or gone, through the `sluice` binary: nothing
//! is lost and nothing crashes. Time a node spends waiting for a server is not the node's CPU
//! deadline; a call that fails for good sends its message to `Failure` with the reason; a
//! server that keeps failing opens the connector's circuit; every request carries an
//! idempotency key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};

use crate::seeds::{example, number, read_jsonl, tumbling};
use crate::support::{modules, repo, sluice_bin, stderr};
use crate::thingsboard::{Faults, start_thingsboard_with};

/// What one run left: the process, its output lines and its `--stats`.
struct Run {
    result: Output,
    output: Vec<Value>,
    stats: Value,
}

impl Run {
    fn node(&self, id: &str) -> &Value {
        &self.stats["stats"]["nodes"][id]
    }
}

/// `sluice run --chain CHAIN --input INPUT` with `--stats`, no state, two workers unless
/// `extra` says.
fn run(chain: &Path, input: &Path, dir: &Path, env: &[(&str, &str)], extra: &[&str]) -> Run {
    let (output, stats) = (dir.join("output.jsonl"), dir.join("stats.json"));
    let mut cmd = Command::new(sluice_bin());
    cmd.args(["run", "--chain", chain.to_str().unwrap(), "--input", input.to_str().unwrap()])
        .args(["--output", output.to_str().unwrap(), "--stats", stats.to_str().unwrap()])
        .arg("--no-state")
        .args(if extra.contains(&"--workers") { &[][..] } else { &["--workers", "2"][..] })
        .args(extra)
        .env("SLUICE_MODULES", modules())
        .env("SLUICE_CACHE_DIR", repo().join("target").join("sluice-module-cache"))
        .env("SLUICE_OUT", dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let result = cmd.output().expect("run sluice");
    let stats = std::fs::read(&stats).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
    Run { output: read_jsonl(&output), result, stats }
}

/// The wind-zones seed chain with its ThingsBoard node's `Failure` going to the output too, so
/// that a test can read what failed and why. `policy`: keys merged into the connector.
fn wind_zones_with_failures(dir: &Path, policy: Value) -> std::path::PathBuf {
    let mut chain: Value =
        serde_json::from_slice(&std::fs::read(repo().join("chains/wind-zones.json")).unwrap()).unwrap();
    chain.as_object_mut().unwrap().remove("$schema");
    for (k, v) in policy.as_object().unwrap() {
        chain["connectors"]["thingsboard"][k] = v.clone();
    }
    chain["connections"]
        .as_array_mut()
        .unwrap()
        .push(json!({"from": "to-thingsboard", "to": "out", "relation": "Failure"}));
    let path = dir.join("wind-zones.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&chain).unwrap()).unwrap();
    path
}

/// Zone → window start → (count, avg) of the wind-zones example, computed from its input.
fn expected_wind_windows() -> BTreeMap<(String, i64), (u64, f64)> {
    let events = example("wind-zones").into_iter().map(|m| {
        let md = &m["metadata"];
        let kept = (md["deviceType"] == "WeatherStation" && md.get("cs_geoZone").is_some())
            .then(|| number(&m["data"]["windSpeed"]).map(|v| (md["cs_geoZone"].as_str().unwrap().to_string(), v)))
            .flatten();
        (m["ts"].as_i64().unwrap(), kept)
    });
    let (windows, _late) = tumbling(events, 10_000, 2_000, 0);
    windows.into_iter().map(|(k, v)| (k, (v.len() as u64, v.iter().sum::<f64>() / v.len() as f64))).collect()
}

#[test]
fn a_server_slower_than_the_node_deadline_gets_every_post() {
    // Every request answered after 300 ms: longer than a node's 200 ms deadline, well within the
    // connector's 5 s timeout. The wait is the connector's, not the guest's.
    let faults = Faults { delay: Duration::from_millis(300), ..Faults::default() };
    let (url, tb, server, stop) = start_thingsboard_with(faults);
    let dir = tempfile::tempdir().unwrap();
    let chain = repo().join("chains/wind-zones.json");
    let input = repo().join("examples/wind-zones/input.jsonl");
    let run = run(&chain, &input, dir.path(), &[("THINGSBOARD_URL", &url)], &[]);
    let _ = stop.send(());
    server.join().unwrap();
    assert!(run.result.status.success(), "{}", stderr(&run.result));

    let expected = expected_wind_windows();
    let node = run.node("to-thingsboard");
    assert_eq!(node["crashes"], 0, "{node}");
    assert_eq!(node["failures"], 0, "{node}");
    assert_eq!(node["disabled"], false, "{node}");
    let tb = tb.lock().unwrap();
    assert_eq!(tb.telemetry.len(), expected.len(), "every average posted");
    assert_eq!(tb.by_key.len(), expected.len(), "each with its own idempotency key");
    assert_eq!(tb.without_key, 0);
}

#[test]
fn a_failing_server_sends_every_average_to_failure_with_the_reason_and_opens_the_circuit() {
    let faults = Faults { fail: 1.0, ..Faults::default() };
    let (url, tb, server, stop) = start_thingsboard_with(faults);
    let dir = tempfile::tempdir().unwrap();
    let chain = wind_zones_with_failures(
        dir.path(),
        json!({"retries": 2, "backoffMs": 5, "circuitBreaker": {"failures": 3, "openMs": 60000}}),
    );
    let input = repo().join("examples/wind-zones/input.jsonl");
    let run = run(&chain, &input, dir.path(), &[("THINGSBOARD_URL", &url)], &[]);
    let _ = stop.send(());
    server.join().unwrap();
    assert!(run.result.status.success(), "Failure is connected: nothing lost\n{}", stderr(&run.result));

    let expected = expected_wind_windows();
    let node = run.node("to-thingsboard");
    assert_eq!(node["crashes"], 0, "a failing server is not a crashing node: {node}");
    assert_eq!(node["disabled"], false, "{node}");
    // Every average reached `out` twice: once from the window, once as the node's failure.
    let failed: Vec<&Value> = run.output.iter().filter(|m| m["metadata"].get("error").is_some()).collect();
    assert_eq!(failed.len(), expected.len(), "every average failed, none lost");
    assert_eq!(run.output.len(), 2 * expected.len());
    // The first calls spent their retries (login answered 500 three times); then the circuit
    // opened and the rest failed at once, saying so. (Two workers: a call already under way
    // when the third failure opened the circuit still runs its course.)
    let errors: Vec<&str> = failed.iter().map(|m| m["metadata"]["error"].as_str().unwrap()).collect();
    let spent = errors.iter().filter(|e| e.contains("HTTP 500")).count();
    let open = errors.iter().filter(|e| e.contains("circuit open")).count();
    assert!((3..=4).contains(&spent), "{errors:#?}");
    assert_eq!(spent + open, expected.len(), "{errors:#?}");
    assert_eq!(tb.lock().unwrap().failed, 3 * spent as u64, "each failed call: 1 attempt + 2 retries; none once open");
}

#[test]
fn an_imported_rest_call_node_waits_for_a_slow_server() {
    // ThingsBoard's REST API call node with `readTimeoutMs: 0` (no timeout of its own), as the
    // fixtures have it, posting to a device API that answers after 300 ms.
    let faults = Faults { delay: Duration::from_millis(300), ..Faults::default() };
    let (url, tb, server, stop) = start_thingsboard_with(faults);
    let dir = tempfile::tempdir().unwrap();
    let export = json!({
        "ruleChain": {"name": "Forward to the cloud", "root": false, "debugMode": false},
        "metadata": {
            "firstNodeIndex": 0,
            "nodes": [{
                "type": "org.thingsboard.rule.engine.rest.TbRestApiCallNode",
                "name": "Send Request",
                "debugMode": false,
                "configuration": {
                    "restEndpointUrlPattern": format!("{url}/api/v1/${{deviceName}}/telemetry"),
                    "requestMethod": "POST",
                    "headers": {"Content-Type": "application/json"},
                    "readTimeoutMs": 0,
                    "maxParallelRequestsCount": 0
                }
            }],
            "connections": []
        }
    });
    let export_path = dir.path().join("export.json");
    std::fs::write(&export_path, export.to_string()).unwrap();
    let chains = dir.path().join("chains");
    let imported = Command::new(sluice_bin())
        .args(["import", "thingsboard", export_path.to_str().unwrap(), "--out", chains.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(imported.status.success(), "{}", stderr(&imported));
    let chain = std::fs::read_dir(&chains)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    let input = dir.path().join("in.jsonl");
    let lines: String = (0..6)
        .map(|i| {
            format!(
                "{{\"ts\": {}, \"deviceName\": \"T-{i}\", \"deviceType\": \"thermometer\", \"t\": {i}}}\n",
                1_700_000_000_000_i64 + i
            )
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let run = run(&chain, &input, dir.path(), &[], &[]);
    let _ = stop.send(());
    server.join().unwrap();
    assert!(run.result.status.success(), "{}", stderr(&run.result));
    let tb = tb.lock().unwrap();
    let got: BTreeSet<(String, String)> =
        tb.device_telemetry.iter().map(|(token, body, _)| (token.clone(), body.to_string())).collect();
    let want: BTreeSet<(String, String)> = (0..6).map(|i| (format!("T-{i}"), json!({"t": i}).to_string())).collect();
    assert_eq!(got, want, "every message posted once, after the slow answer");
    assert!(tb.device_telemetry.iter().all(|(_, _, key)| key.is_some()), "with an idempotency key");
    let crashes: u64 =
        run.stats["stats"]["nodes"].as_object().unwrap().values().map(|n| n["crashes"].as_u64().unwrap()).sum();
    assert_eq!(crashes, 0);
}

#[test]
fn an_unreachable_mqtt_broker_fails_messages_with_the_reason_not_the_node() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let chain = json!({
        "name": "alerts to a broker that is not there",
        "connectors": {"broker": {"type": "mqtt", "url": format!("mqtt://127.0.0.1:{port}"),
                                   "timeoutMs": 300, "retries": 1, "backoffMs": 10,
                                   "circuitBreaker": {"failures": 2, "openMs": 60000}}},
        "entry": "publish",
        "nodes": [
            {"id": "publish", "module": "mqtt-action", "connector": "broker", "config": {"topic": "alerts/${deviceName}"}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "publish", "to": "out", "relation": "Success"},
            {"from": "publish", "to": "out", "relation": "Failure"}
        ]
    });
    let chain_path = dir.path().join("chain.json");
    std::fs::write(&chain_path, chain.to_string()).unwrap();
    let input = dir.path().join("in.jsonl");
    let lines: String = (0..20)
        .map(|i| format!("{{\"ts\": {}, \"deviceName\": \"D-{i}\", \"t\": {i}}}\n", 1_700_000_000_000_i64 + i))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let run = run(&chain_path, &input, dir.path(), &[], &[]);
    assert!(run.result.status.success(), "{}", stderr(&run.result));
    assert_eq!(run.output.len(), 20, "every message accounted for");
    let errors: Vec<&str> = run.output.iter().map(|m| m["metadata"]["error"].as_str().unwrap_or("")).collect();
    let timed_out = errors.iter().filter(|e| e.contains("no PUBACK") && e.contains("gave up after 2 attempts")).count();
    let open = errors.iter().filter(|e| e.contains("circuit open")).count();
    // Two workers: a call already waiting when the second failure opened the circuit still
    // runs its course.
    assert!((2..=3).contains(&timed_out), "{errors:#?}");
    assert_eq!(timed_out + open, 20, "{errors:#?}");
    let node = run.node("publish");
    assert_eq!(node["crashes"], 0, "{node}");
    assert_eq!(node["disabled"], false, "{node}");
}

/// The soak: the wind-zones chain posting 10,000 window averages to a ThingsBoard that fails
/// 30 % of requests at random (500, not handled) and stalls 5 % for a second (handled, answered
/// too late: the client's retry is a duplicate). Every average is taken by the stand-in under its
/// idempotency key or dead-lettered with a reason; the counts add up to the windows; a key always
/// carries the same request; and the exit code says whether anything was dead-lettered.
#[test]
fn soak_every_average_is_delivered_once_per_key_or_dead_lettered() {
    const ZONES: i64 = 10;
    const WINDOWS: i64 = 1_000;
    let t0 = 1_700_000_000_000_i64;
    let speed = |w: i64, z: i64, s: i64| ((w * 7 + z * 3 + s * 5) % 23) as f64 + 0.5;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut lines = String::new();
    for w in 0..WINDOWS {
        for s in 0..2 {
            for z in 0..ZONES {
                let ts = t0 + w * 10_000 + s * 4_000 + z;
                let line = json!({"ts": ts, "type": "POST_TELEMETRY_REQUEST",
                    "originator": {"entityType": "DEVICE", "name": format!("WS-{z}-{s}")},
                    "metadata": {"deviceType": "WeatherStation", "cs_geoZone": format!("Z{z}")},
                    "data": {"windSpeed": speed(w, z, s)}});
                lines.push_str(&format!("{line}\n"));
            }
        }
    }
    std::fs::write(&input, lines).unwrap();
    // (zone, window start) → (count, avg), from the generator above.
    let expected: BTreeMap<(String, i64), (u64, f64)> = (0..WINDOWS)
        .flat_map(|w| {
            (0..ZONES).map(move |z| ((format!("Z{z}"), t0 + w * 10_000), (2, (speed(w, z, 0) + speed(w, z, 1)) / 2.0)))
        })
        .collect();

    let faults =
        Faults { fail: 0.30, stall: 0.05, stall_for: Duration::from_secs(1), seed: 20261206, ..Faults::default() };
    let (url, tb, server, stop) = start_thingsboard_with(faults);
    let dead = dir.path().join("dead.jsonl");
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[deadLetter]\ntype = \"file\"\npath = {dead:?}\n\n\
             [connectors.thingsboard]\ntype = \"http\"\nbaseUrl = \"{url}\"\ntimeoutMs = 100\nretries = 3\nbackoffMs = 5\n"
        ),
    )
    .unwrap();
    let chain = repo().join("chains/wind-zones.json");
    let run = run(&chain, &input, dir.path(), &[], &["--config", config.to_str().unwrap(), "--workers", "4"]);
    let _ = stop.send(());
    server.join().unwrap();

    // The output: every window, exact.
    assert_eq!(run.output.len(), expected.len(), "{}", stderr(&run.result));
    let mut ids = BTreeSet::new();
    for m in &run.output {
        let key = (m["originator"]["name"].as_str().unwrap().to_string(), m["data"]["windowStart"].as_i64().unwrap());
        let (n, avg) = expected[&key];
        assert_eq!(m["data"]["count"].as_u64(), Some(n));
        assert!(crate::seeds::close(m["data"]["avg"].as_f64().unwrap(), avg), "{m}");
        ids.insert(m["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), expected.len());

    let dead_letters = read_jsonl(&dead);
    let dead_ids: BTreeSet<String> = dead_letters.iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    for m in &dead_letters {
        let error = m["metadata"]["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "a dead letter says why: {m}");
    }
    let tb = tb.lock().unwrap();
    let zone_of: BTreeMap<&String, &String> = tb.assets.iter().map(|(name, id)| (id, name)).collect();
    let mut delivered = BTreeSet::new();
    let mut duplicates = 0;
    for (key, (asset, body, count)) in &tb.by_key {
        // `{message id}:to-thingsboard:{fingerprint}`
        let (id, rest) = key.split_once(":to-thingsboard:").unwrap_or_else(|| panic!("key {key}"));
        assert_eq!(rest.len(), 16, "{key}");
        assert!(delivered.insert(id.to_string()), "one telemetry request per average: {key}");
        duplicates += count - 1;
        let window = (zone_of[asset].clone(), body["values"]["windowStart"].as_i64().unwrap());
        let (n, avg) = expected[&window];
        assert_eq!(body["values"]["count"].as_u64(), Some(n), "{key}");
        assert!(crate::seeds::close(body["values"]["avg"].as_f64().unwrap(), avg), "{key}: {body}");
    }
    assert_eq!(tb.without_key, 0);
    assert_eq!(tb.telemetry.len(), tb.by_key.len(), "the stand-in took each key once");
    // Every average is accounted for: delivered, dead-lettered, or both (its last attempt
    // stalled: taken, but answered too late to know).
    let accounted: BTreeSet<&String> = delivered.iter().chain(&dead_ids).collect();
    assert_eq!(accounted.len(), expected.len(), "delivered {} + dead {}", delivered.len(), dead_ids.len());
    assert!(accounted.iter().all(|id| ids.contains(*id)));
    let both = delivered.intersection(&dead_ids).count() as u64;
    assert!(both <= tb.stalled, "{both} both delivered and dead-lettered, {} stalls", tb.stalled);
    // A duplicate is a retry of a request the stand-in took but answered late.
    assert!(duplicates as u64 <= tb.stalled, "{duplicates} duplicates, {} stalls", tb.stalled);
    assert!(tb.failed > 1_000 && tb.stalled > 100, "the faults happened: {} failed, {} stalled", tb.failed, tb.stalled);
    // The exit code says whether anything was dead-lettered.
    let code = run.result.status.code();
    if dead_letters.is_empty() {
        assert_eq!(code, Some(0), "{}", stderr(&run.result));
    } else {
        assert_eq!(code, Some(3), "dead letters make a failed run\n{}", stderr(&run.result));
    }
    eprintln!(
        "soak: {} averages, {} delivered, {} dead-lettered ({both} both), {} injected failures, {} stalls, \
         {duplicates} duplicates dropped by key",
        expected.len(),
        delivered.len(),
        dead_ids.len(),
        tb.failed,
        tb.stalled
    );
}

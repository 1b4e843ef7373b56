//! The seed scenarios as shipped: each chain in `chains/` run by `sluice run` on its example
//! input in `examples/`, exactly as the README shows, with its actions delivered (Kafka topics to
//! files, ThingsBoard to a stand-in server speaking its REST API). Expected results are computed
//! here from the input with plain code that shares nothing with the nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{modules, repo, sluice_bin, stderr};
use crate::thingsboard::start_thingsboard;

/// `sluice run --chain chains/NAME.json --input examples/NAME/input.jsonl`, with topics written
/// under `out` (the chains' `${SLUICE_OUT}`) and extra environment.
pub(crate) fn run_seed(name: &str, out: &Path, env: &[(&str, &str)]) -> (Output, Vec<Value>) {
    let chain = repo().join("chains").join(format!("{name}.json"));
    let input = repo().join("examples").join(name).join("input.jsonl");
    let output = out.join("output.jsonl");
    let mut cmd = Command::new(sluice_bin());
    cmd.args(["run", "--chain", chain.to_str().unwrap(), "--input", input.to_str().unwrap()])
        .args(["--output", output.to_str().unwrap(), "--no-state", "--workers", "2"])
        .env("SLUICE_MODULES", modules())
        .env("SLUICE_CACHE_DIR", repo().join("target").join("sluice-module-cache"))
        .env("SLUICE_OUT", out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let result = cmd.output().expect("run sluice");
    let lines = if output.exists() { read_jsonl(&output) } else { Vec::new() };
    (result, lines)
}

pub(crate) fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

/// The input lines of an example.
pub(crate) fn example(name: &str) -> Vec<Value> {
    read_jsonl(&repo().join("examples").join(name).join("input.jsonl"))
}

/// What a Kafka connector (a file here) received: (topic, key, value) per record.
fn topic(out: &Path, file: &str) -> Vec<(String, Option<String>, Value)> {
    read_jsonl(&out.join(file))
        .into_iter()
        .map(|l| {
            let r = &l["request"];
            (r["topic"].as_str().unwrap().to_string(), r["key"].as_str().map(str::to_string), r["value"].clone())
        })
        .collect()
}

pub(crate) fn number(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

pub(crate) fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300)
}

/// Tumbling event-time windows as the chains document them: the watermark stamped on a line is
/// the greatest `ts` read so far minus the lateness; an event is late when its window's end plus
/// the grace is at or below it. `events`: (ts, Some((key, value)) when it reaches the window).
/// Returns (key, window start) → values, and the late count.
pub(crate) fn tumbling(
    events: impl IntoIterator<Item = (i64, Option<(String, f64)>)>,
    size: i64,
    grace: i64,
    lateness: i64,
) -> (BTreeMap<(String, i64), Vec<f64>>, u64) {
    let mut max_ts = i64::MIN;
    let mut windows: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    let mut late = 0;
    for (ts, kept) in events {
        max_ts = max_ts.max(ts);
        let Some((key, value)) = kept else { continue };
        let start = ts.div_euclid(size) * size;
        if start + size + grace <= max_ts - lateness {
            late += 1;
            continue;
        }
        windows.entry((key, start)).or_default().push(value);
    }
    (windows, late)
}

#[test]
fn wind_zones_averages_reach_kafka_and_thingsboard() {
    let input = example("wind-zones");
    let events = input.iter().map(|m| {
        let md = &m["metadata"];
        let kept = (md["deviceType"] == "WeatherStation" && md.get("cs_geoZone").is_some())
            .then(|| number(&m["data"]["windSpeed"]).map(|v| (md["cs_geoZone"].as_str().unwrap().to_string(), v)))
            .flatten();
        (m["ts"].as_i64().unwrap(), kept)
    });
    let (expected, late) = tumbling(events, 10_000, 2_000, 0);
    assert!(late > 0, "the example has late events");
    let expected: BTreeMap<(String, i64), (usize, f64)> =
        expected.into_iter().map(|(k, v)| (k, (v.len(), v.iter().sum::<f64>() / v.len() as f64))).collect();

    let (url, tb, server, stop) = start_thingsboard();
    let out = tempfile::tempdir().unwrap();
    let (result, lines) = run_seed("wind-zones", out.path(), &[("THINGSBOARD_URL", &url)]);
    let _ = stop.send(());
    server.join().unwrap();
    assert!(result.status.success(), "{}", stderr(&result));

    let check = |what: &str, key: (String, i64), data: &Value| {
        let (n, avg) = expected.get(&key).unwrap_or_else(|| panic!("{what}: unexpected window {key:?}"));
        assert_eq!(data["count"].as_u64(), Some(*n as u64), "{what}: count of {key:?}");
        assert!(close(data["avg"].as_f64().unwrap(), *avg), "{what}: avg of {key:?}: {data}");
    };
    // The output: one result per zone and window.
    assert_eq!(lines.len(), expected.len(), "{lines:?}");
    for m in &lines {
        let key = (m["originator"]["name"].as_str().unwrap().to_string(), m["data"]["windowStart"].as_i64().unwrap());
        check("output", key, &m["data"]);
    }
    // Kafka: the same results on weather-stations-data, keyed by zone.
    let records = topic(out.path(), "weather-stations-data.jsonl");
    assert_eq!(records.len(), expected.len());
    let mut seen = BTreeSet::new();
    for (topic, key, value) in &records {
        assert_eq!(topic, "weather-stations-data");
        let zone = key.clone().expect("keyed by zone");
        check("kafka", (zone.clone(), value["windowStart"].as_i64().unwrap()), value);
        seen.insert((zone, value["windowStart"].as_i64().unwrap()));
    }
    assert_eq!(seen.len(), expected.len(), "no window twice");
    // ThingsBoard: one asset per zone, created once; every average posted to its zone's asset.
    let tb = tb.lock().unwrap();
    let zones: BTreeSet<&String> = expected.keys().map(|(z, _)| z).collect();
    assert_eq!(tb.created.iter().collect::<BTreeSet<_>>(), zones, "assets created");
    assert_eq!(tb.created.len(), zones.len(), "each asset created once");
    assert_eq!(tb.telemetry.len(), expected.len());
    let zone_of: BTreeMap<&String, &String> = tb.assets.iter().map(|(name, id)| (id, name)).collect();
    for (asset, body) in &tb.telemetry {
        let zone = zone_of[asset].clone();
        let start = body["values"]["windowStart"].as_i64().unwrap();
        assert_eq!(body["ts"].as_i64(), Some(start), "telemetry at the window's start");
        check("thingsboard", (zone, start), &body["values"]);
    }
}

#[test]
fn solar_generators_flag_module_three_in_every_window() {
    // The chain's three generators: 60 payloads each, one second of event time apart, powers 5,
    // 5 and 3.5 (ThingsBoard's solar sample). Per 10 s window the module sums are 50, 50, 35:
    // average 45, population deviation sqrt((25 + 25 + 100) / 3) = 7.071; module 3 scores
    // 10 / 7.071 = 1.414 > 1, modules 1 and 2 score 0.707.
    let out = tempfile::tempdir().unwrap();
    let (result, lines) = run_seed("solar-anomaly", out.path(), &[]);
    assert!(result.status.success(), "{}", stderr(&result));
    let t0 = 1_700_000_000_000_i64;
    let windows: BTreeSet<i64> = (0..60).map(|i| (t0 + i * 1000).div_euclid(10_000) * 10_000).collect();
    assert_eq!(lines.len(), windows.len(), "one anomaly per window: {lines:?}");
    for m in &lines {
        let d = &m["data"];
        assert_eq!(d["member"], "Module 3");
        assert_eq!(d["group"], "Panel 1");
        let z = d["z"].as_f64().unwrap();
        assert!((z - 2f64.sqrt()).abs() < 1e-9, "z = {z}");
        assert!(windows.contains(&d["windowStart"].as_i64().unwrap()));
    }
    let records = topic(out.path(), "solar-module-anomalies.jsonl");
    assert_eq!(records.len(), windows.len());
    assert!(records.iter().all(|(t, k, v)| t == "solar-module-anomalies"
        && k.as_deref() == Some("Module 3")
        && v["member"] == "Module 3"));
}

#[test]
fn door_disruption_alerts_regions_with_bursts_of_rejections() {
    let input = example("door-disruption");
    let mut registry: BTreeMap<String, String> = BTreeMap::new();
    let mut events = Vec::new();
    for m in &input {
        let door = m["originator"]["name"].as_str().unwrap().to_string();
        match m["type"].as_str().unwrap() {
            "POST_ATTRIBUTES_REQUEST" => {
                registry.insert(door, m["data"]["region"].as_str().unwrap().to_string());
                events.push((m["ts"].as_i64().unwrap(), None));
            }
            _ => {
                let region = registry.get(&door).cloned();
                let rejected = m["data"]["event"] == "accessRejected";
                let ts = m["ts"].as_i64().unwrap();
                events.push((ts, region.filter(|_| rejected).map(|r| (r, ts as f64))));
            }
        }
    }
    let (windows, _) = tumbling(events, 60_000, 5_000, 0);
    let expected: BTreeMap<(String, i64), usize> =
        windows.into_iter().map(|(k, v)| (k, v.len())).filter(|(_, n)| *n >= 5).collect();
    assert!(!expected.is_empty(), "the example has a burst");

    let out = tempfile::tempdir().unwrap();
    let (result, lines) = run_seed("door-disruption", out.path(), &[]);
    assert!(result.status.success(), "{}", stderr(&result));
    let actual: BTreeMap<(String, i64), usize> = lines
        .iter()
        .map(|m| {
            assert_eq!(m["type"], "DOOR_DISRUPTION_ALERT");
            let key =
                (m["originator"]["name"].as_str().unwrap().to_string(), m["data"]["windowStart"].as_i64().unwrap());
            (key, m["data"]["count"].as_u64().unwrap() as usize)
        })
        .collect();
    assert_eq!(actual, expected);
    let records = topic(out.path(), "door-alerts.jsonl");
    assert_eq!(records.len(), expected.len());
    assert!(records.iter().all(|(t, k, _)| t == "door-alerts" && expected.keys().any(|(r, _)| Some(r) == k.as_ref())));
}

#[test]
fn threshold_anomalies_are_exact_whatever_the_order() {
    let input = example("threshold-anomaly");
    let value = |m: &Value| number(&m["data"]["value"]).unwrap();
    // Every reading above 100 is an anomaly, in or out of order: (sensor, value) pairs.
    let mut anomalies: Vec<(String, String)> = input
        .iter()
        .filter(|m| value(m) > 100.0)
        .map(|m| (m["originator"]["name"].as_str().unwrap().to_string(), m["data"]["value"].to_string()))
        .collect();
    anomalies.sort();
    let events = input.iter().map(|m| {
        let kept = (value(m) > 100.0).then(|| (m["originator"]["name"].as_str().unwrap().to_string(), value(m)));
        (m["ts"].as_i64().unwrap(), kept)
    });
    let (per_minute, late) = tumbling(events, 60_000, 10_000, 5_000);
    assert!(late > 0, "the example has anomalies beyond lateness and grace");

    let out = tempfile::tempdir().unwrap();
    let (result, lines) = run_seed("threshold-anomaly", out.path(), &[]);
    assert!(result.status.success(), "{}", stderr(&result));
    let records = topic(out.path(), "anomalies.jsonl");
    let mut produced: Vec<(String, String)> = records
        .iter()
        .map(|(t, key, v)| {
            assert_eq!(t, "anomalies");
            (key.clone().expect("keyed by sensor"), v["value"].to_string())
        })
        .collect();
    produced.sort();
    assert_eq!(produced, anomalies, "every anomaly once, keyed by its sensor");
    let actual: BTreeMap<(String, i64), (u64, f64)> = lines
        .iter()
        .map(|m| {
            let key =
                (m["originator"]["name"].as_str().unwrap().to_string(), m["data"]["windowStart"].as_i64().unwrap());
            (key, (m["data"]["count"].as_u64().unwrap(), m["data"]["max"].as_f64().unwrap()))
        })
        .collect();
    let expected: BTreeMap<(String, i64), (u64, f64)> = per_minute
        .into_iter()
        .map(|(k, v)| (k, (v.len() as u64, v.iter().cloned().fold(f64::MIN, f64::max))))
        .collect();
    assert_eq!(actual, expected);
}

#[test]
fn smart_meter_uplinks_become_readings_and_daily_consumption() {
    use base64::Engine as _;
    // Decode the example's TTN uplinks here, by the layout documented in rules/uplink-decoder:
    // byte 0 interval minutes, byte 1 flags (0), then u32 BE registers, oldest first, the newest
    // read at `received_at`.
    let mut readings: Vec<(String, i64, u64)> = Vec::new();
    for m in example("smart-meter") {
        let up = &m["data"];
        let meter = up["end_device_ids"]["device_id"].as_str().unwrap().to_string();
        let received = chrono::DateTime::parse_from_rfc3339(up["received_at"].as_str().unwrap()).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(up["uplink_message"]["frm_payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes[1], 0, "the example sends no age");
        let interval_ms = bytes[0] as i64 * 60_000;
        let registers: Vec<u64> =
            bytes[2..].chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap()) as u64).collect();
        let newest = received.timestamp_millis();
        for (i, wh) in registers.iter().enumerate() {
            readings.push((meter.clone(), newest - (registers.len() - 1 - i) as i64 * interval_ms, *wh));
        }
    }
    let day = 86_400_000_i64;
    let mut daily: BTreeMap<(String, i64), (u64, u64, u64)> = BTreeMap::new();
    for (meter, ts, wh) in &readings {
        let slot = daily.entry((meter.clone(), ts.div_euclid(day) * day)).or_insert((0, u64::MAX, 0));
        slot.0 += 1;
        slot.1 = slot.1.min(*wh);
        slot.2 = slot.2.max(*wh);
    }

    let out = tempfile::tempdir().unwrap();
    let (result, lines) = run_seed("smart-meter", out.path(), &[]);
    assert!(result.status.success(), "{}", stderr(&result));
    let actual: BTreeMap<(String, i64), (u64, u64, u64, f64)> = lines
        .iter()
        .map(|m| {
            let d = &m["data"];
            let key = (m["originator"]["name"].as_str().unwrap().to_string(), d["windowStart"].as_i64().unwrap());
            let f = |k: &str| d[k].as_f64().unwrap();
            (key, (d["count"].as_u64().unwrap(), f("min") as u64, f("max") as u64, f("consumptionWh")))
        })
        .collect();
    let expected: BTreeMap<(String, i64), (u64, u64, u64, f64)> =
        daily.into_iter().map(|(k, (n, lo, hi))| (k, (n, lo, hi, (hi - lo) as f64))).collect();
    assert_eq!(actual, expected);
    // Every reading is one data point on meter-readings, keyed by its meter.
    let mut produced: Vec<(String, i64, u64)> = topic(out.path(), "meter-readings.jsonl")
        .into_iter()
        .map(|(t, key, v)| {
            assert_eq!(t, "meter-readings");
            assert_eq!(key.as_deref(), v["originator"]["name"].as_str());
            (key.unwrap(), v["ts"].as_i64().unwrap(), v["data"]["energyWh"].as_u64().unwrap())
        })
        .collect();
    produced.sort();
    readings.sort();
    assert_eq!(produced, readings);
}

/// The `sluice run …` commands of the README's seed section, as written there.
fn readme_seed_commands() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme.split("## The seed chains").nth(1).expect("a seed section").split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|l| l.trim().strip_prefix("sluice run "))
        .map(|args| {
            let args = args.split(" #").next().unwrap();
            std::iter::once("run").chain(args.split_whitespace()).map(str::to_string).collect()
        })
        .collect()
}

/// A README command run from the repository root, topics under `out`.
fn run_readme_command(args: &[String], out: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(sluice_bin());
    cmd.args(args)
        .current_dir(repo())
        .env("SLUICE_MODULES", modules())
        .env("SLUICE_CACHE_DIR", repo().join("target").join("sluice-module-cache"))
        .env("SLUICE_OUT", out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run sluice")
}

#[test]
fn every_readme_seed_command_runs_clean() {
    let commands = readme_seed_commands();
    assert_eq!(commands.len(), 5, "{commands:?}");
    let (url, _tb, server, stop) = start_thingsboard();
    for args in &commands {
        let out = tempfile::tempdir().unwrap();
        let result = run_readme_command(args, out.path(), &[("THINGSBOARD_URL", &url)]);
        let err = stderr(&result);
        assert_eq!(result.status.code(), Some(0), "{args:?}:\n{err}");
        let noisy: Vec<&str> = err.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
        assert!(noisy.is_empty(), "{args:?} logged warnings:\n{}", noisy.join("\n"));
        assert!(!err.contains("failures:"), "{args:?}:\n{err}");
    }
    let _ = stop.send(());
    server.join().unwrap();
}

#[test]
fn wind_zones_without_thingsboard_says_what_was_lost_and_exits_3() {
    let args = readme_seed_commands().into_iter().find(|a| a.iter().any(|s| s.contains("wind-zones"))).unwrap();
    let out = tempfile::tempdir().unwrap();
    // Nobody listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let result = run_readme_command(&args, out.path(), &[("THINGSBOARD_URL", &url)]);
    let err = stderr(&result);
    assert_eq!(result.status.code(), Some(3), "{err}");
    assert!(err.contains("failures:") && err.contains("--allow-failures"), "{err}");
    // Kafka (a file here) still got every window result.
    assert!(!topic(out.path(), "weather-stations-data.jsonl").is_empty());
}

#[test]
fn running_a_seed_twice_gives_the_same_files() {
    let out = tempfile::tempdir().unwrap();
    let (first, lines1) = run_seed("threshold-anomaly", out.path(), &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    // Two workers: the same lines, not necessarily in the same order.
    let sorted = |text: String| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let sorted_values = |values: Vec<Value>| sorted(values.iter().map(|v| format!("{v}\n")).collect());
    let topic1 = sorted(std::fs::read_to_string(out.path().join("anomalies.jsonl")).unwrap());
    let (second, lines2) = run_seed("threshold-anomaly", out.path(), &[]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(sorted_values(lines1), sorted_values(lines2));
    assert!(!topic1.is_empty());
    assert_eq!(sorted(std::fs::read_to_string(out.path().join("anomalies.jsonl")).unwrap()), topic1);
}

#[test]
fn the_readme_validate_command_accepts_the_chains_directory() {
    // `sluice validate chains/*.json`, as the shell expands it: the schema file included.
    let mut chains: Vec<String> = std::fs::read_dir(repo().join("chains"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| p.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    chains.sort();
    assert!(chains.iter().any(|c| c.ends_with("chain.schema.json")));
    let result = Command::new(sluice_bin())
        .arg("validate")
        .args(&chains)
        .current_dir(repo())
        .env("SLUICE_MODULES", modules())
        .env("SLUICE_CACHE_DIR", repo().join("target").join("sluice-module-cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}{}", stderr(&result));
    assert!(stdout.contains("skipped: chains/chain.schema.json (a JSON Schema, not a chain)"), "{stdout}");
    assert_eq!(stdout.matches("ok: ").count(), chains.len() - 1, "{stdout}");
}

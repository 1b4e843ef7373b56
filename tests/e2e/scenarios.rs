//! The seed computations as WASM nodes over the host's windows, on a million generated messages
//! with 1% of them out of order, against plain reference computations written here — and the
//! same run killed with SIGKILL and resumed.
//!
//! The references implement the documented semantics directly: the watermark stamped on a line
//! is the greatest `ts` of the input so far (lateness 0); an event is late when its window's end
//! plus the grace period is at or below that watermark; every other event counts. Window results
//! feed the panel stage in full.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::support::{modules, repo, sluice, sluice_bin, stderr};

const N: usize = 1_000_000;
const WINDOW: i64 = 10_000;
const GRACE: i64 = 2_000;
const T0: i64 = 1_700_000_000_000;

use sluice_testkit::Rng;

/// Event time of line `k`: 10 ms apart; 1% of events are 0–5 s behind (some beyond the grace).
fn event_time(rng: &mut Rng, k: usize) -> i64 {
    let ts = T0 + k as i64 * 10;
    if rng.below(100) == 0 { ts - rng.below(5_000) as i64 } else { ts }
}

fn window_start(ts: i64) -> i64 {
    ts.div_euclid(WINDOW) * WINDOW
}

fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir")).path()
}

/// A wind reading: (line, reference contribution).
struct Wind {
    ts: i64,
    /// (zone, windSpeed) when the filter keeps it.
    kept: Option<(String, f64)>,
}

/// The wind workload: 300 stations in 12 zones; 5% thermometers and 3% stations with no zone
/// (filtered out); wind speeds sent as strings, as the sample devices do.
fn wind_input() -> &'static (PathBuf, Vec<Wind>) {
    static INPUT: OnceLock<(PathBuf, Vec<Wind>)> = OnceLock::new();
    INPUT.get_or_init(|| {
        let path = scratch().join("wind.jsonl");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut rng = Rng(7);
        let mut events = Vec::with_capacity(N);
        for k in 0..N {
            let station = rng.below(300);
            let ts = event_time(&mut rng, k);
            let speed = (rng.unit() * 4000.0).round() / 100.0;
            let thermometer = rng.below(100) < 5;
            let no_zone = rng.below(100) < 3;
            let zone = format!("Zone {}", station % 12);
            let mut metadata = json!({"deviceType": if thermometer { "Thermometer" } else { "WeatherStation" }});
            if !no_zone {
                metadata["cs_geoZone"] = json!(zone);
            }
            let line = json!({"id": format!("w{k}"), "ts": ts, "type": "POST_TELEMETRY_REQUEST",
                "originator": {"entityType": "DEVICE", "name": format!("WS-{station}")},
                "metadata": metadata, "data": {"windSpeed": format!("{speed}")}});
            writeln!(out, "{line}").unwrap();
            events.push(Wind { ts, kept: (!thermometer && !no_zone).then_some((zone, speed)) });
        }
        out.flush().unwrap();
        (path, events)
    })
}

/// (zone, window start) → (count, average).
type ZoneResults = BTreeMap<(String, i64), (u64, f64)>;

/// The zone results, and the number of late events.
fn wind_reference(events: &[Wind]) -> (ZoneResults, u64) {
    let mut watermark = i64::MIN;
    let mut sums: ZoneResults = BTreeMap::new();
    let mut late = 0;
    for e in events {
        watermark = watermark.max(e.ts);
        let Some((zone, speed)) = &e.kept else { continue };
        let start = window_start(e.ts);
        if start + WINDOW + GRACE <= watermark {
            late += 1;
            continue;
        }
        let slot = sums.entry((zone.clone(), start)).or_default();
        slot.0 += 1;
        slot.1 += speed;
    }
    (sums.into_iter().map(|(k, (n, sum))| (k, (n, sum / n as f64))).collect(), late)
}

/// The analytics of a seed chain: the file in `chains/` without its sources (generators) and
/// actions (nodes with a connector), written next to the test's other files. The references
/// here check the computation; the actions have tests of their own.
fn analytics_of(chain: &str, dir: &Path) -> PathBuf {
    let mut spec: Value = serde_json::from_slice(&std::fs::read(repo().join("chains").join(chain)).unwrap()).unwrap();
    let dropped: Vec<String> = spec["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n.get("connector").is_some() || n["module"] == "generator")
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    let keep = |id: &Value| !dropped.iter().any(|d| id == d.as_str());
    spec["nodes"].as_array_mut().unwrap().retain(|n| keep(&n["id"]));
    spec["connections"].as_array_mut().unwrap().retain(|c| keep(&c["from"]) && keep(&c["to"]));
    spec.as_object_mut().unwrap().remove("connectors");
    let path = dir.join(chain);
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    path
}

fn run_chain(chain: &str, input: &Path, output: &Path, stats: &Path, extra: &[&str]) -> std::process::Output {
    let chain = analytics_of(chain, output.parent().unwrap());
    let mut args = vec![
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
    ];
    args.extend_from_slice(extra);
    sluice(&args)
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300)
}

/// Zone results as (zone, window start) → (count, avg).
fn wind_results(lines: &[Value]) -> ZoneResults {
    lines
        .iter()
        .map(|m| {
            let key =
                (m["originator"]["name"].as_str().unwrap().to_string(), m["data"]["windowStart"].as_i64().unwrap());
            (key, (m["data"]["count"].as_u64().unwrap(), m["data"]["avg"].as_f64().unwrap()))
        })
        .collect()
}

fn assert_wind_matches(actual: &ZoneResults, expected: &ZoneResults) {
    assert_eq!(actual.len(), expected.len(), "number of zone windows");
    for (key, (n, avg)) in expected {
        let Some((an, aavg)) = actual.get(key) else { panic!("missing result for {key:?}") };
        assert_eq!(an, n, "count of {key:?}");
        assert!(close(*aavg, *avg), "avg of {key:?}: {aavg} vs {avg}");
    }
}

#[test]
fn wind_zones_on_a_million_messages_match_the_reference() {
    let (input, events) = wind_input();
    let (expected, late) = wind_reference(events);
    let dir = tempfile::tempdir().unwrap();
    let (output, stats) = (dir.path().join("out.jsonl"), dir.path().join("stats.json"));
    let out = run_chain("wind-zones.json", input, &output, &stats, &["--no-state"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = read_lines(&output);
    assert_eq!(lines.len(), expected.len(), "one result per zone and window, no duplicates");
    assert_wind_matches(&wind_results(&lines), &expected);
    let stats: Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(stats["stats"]["nodes"]["zone-average"]["late"].as_u64(), Some(late));
    assert!(late > 100, "the workload has late events ({late})");
    assert_eq!(stats["acked"].as_u64(), Some(N as u64));
}

/// Kill the engine with SIGKILL mid-run, start it again with the same command: it resumes from
/// its last checkpoint, and the results — duplicates of the same id aside — are the full set.
#[test]
fn a_run_killed_with_sigkill_resumes_and_misses_no_window() {
    let (input, events) = wind_input();
    let (expected, _) = wind_reference(events);
    let dir = tempfile::tempdir().unwrap();
    let (output, stats, state) = (dir.path().join("out.jsonl"), dir.path().join("s.json"), dir.path().join("state"));
    let chain = analytics_of("wind-zones.json", dir.path());
    let args = [
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
        "--state-dir",
        state.to_str().unwrap(),
        "--checkpoint-ms",
        "100",
    ];
    let mut child = Command::new(sluice_bin())
        .args(args)
        .env("SLUICE_MODULES", modules())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it has written a good part of its results (several checkpoints in).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let written = std::fs::read_to_string(&output).map(|t| t.lines().count()).unwrap_or(0);
        if written >= expected.len() / 3 || std::time::Instant::now() > deadline {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "finished before it could be killed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = read_lines(&output).len();
    assert!(before < expected.len(), "killed mid-run ({before} of {} results)", expected.len());

    let out = sluice(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resumed after line"), "{}", stderr(&out));
    let lines = read_lines(&output);
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    for line in &lines {
        let id = line["id"].as_str().unwrap().to_string();
        if let Some(seen) = by_id.insert(id.clone(), line.clone()) {
            assert_eq!(&seen, line, "a duplicate of {id} differs");
        }
    }
    let unique: Vec<Value> = by_id.into_values().collect();
    assert_wind_matches(&wind_results(&unique), &expected);
}

/// A module reading: (ts, module, panel, power).
struct Reading {
    ts: i64,
    module: String,
    panel: String,
    power: f64,
}

/// 40 panels of 3–5 modules; a few modules under-perform (half power) for a while.
fn solar_input() -> &'static (PathBuf, Vec<Reading>) {
    static INPUT: OnceLock<(PathBuf, Vec<Reading>)> = OnceLock::new();
    INPUT.get_or_init(|| {
        let path = scratch().join("solar.jsonl");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut rng = Rng(11);
        let modules: Vec<(String, String)> =
            (0..40).flat_map(|p| (0..3 + p % 3).map(move |m| (format!("P{p}-M{m}"), format!("P{p}")))).collect();
        let mut events = Vec::with_capacity(N);
        for k in 0..N {
            let (module, panel) = &modules[rng.below(modules.len() as u64) as usize];
            let ts = event_time(&mut rng, k);
            let weak = module.ends_with("-M1") && (ts / 600_000) % 3 == 0;
            let power = ((10.0 + rng.unit() * 2.0) * if weak { 0.5 } else { 1.0 } * 1000.0).round() / 1000.0;
            let line = json!({"id": format!("s{k}"), "ts": ts, "type": "POST_TELEMETRY_REQUEST",
                "originator": {"entityType": "DEVICE", "name": module},
                "metadata": {"deviceType": "SolarModule"}, "data": {"power": power, "panel": panel}});
            writeln!(out, "{line}").unwrap();
            events.push(Reading { ts, module: module.clone(), panel: panel.clone(), power });
        }
        out.flush().unwrap();
        (path, events)
    })
}

/// (panel, window start, module) → z of every anomalous module, and late events.
/// A member of a panel's window: (panel, window start, module).
type Member = (String, i64, String);

/// The anomalies (z > 1), the members whose z is 1 to within float noise (a window two modules
/// reported: both are exactly one deviation from their average, so whether a float z lands just
/// above or just below 1 depends on the order the sums were rounded in — the chain sums exactly,
/// this reference left to right — and either answer is right), and the late readings.
fn solar_reference(events: &[Reading]) -> (BTreeMap<Member, f64>, BTreeSet<Member>, u64) {
    let mut watermark = i64::MIN;
    let mut late = 0;
    // (panel, start) → module → sum of power
    let mut sums: BTreeMap<(String, i64), BTreeMap<String, f64>> = BTreeMap::new();
    for e in events {
        watermark = watermark.max(e.ts);
        let start = window_start(e.ts);
        if start + WINDOW + GRACE <= watermark {
            late += 1;
            continue;
        }
        *sums.entry((e.panel.clone(), start)).or_default().entry(e.module.clone()).or_default() += e.power;
    }
    let mut anomalies = BTreeMap::new();
    let mut borderline = BTreeSet::new();
    for ((panel, start), modules) in sums {
        let n = modules.len() as f64;
        let avg = modules.values().sum::<f64>() / n;
        let deviation = (modules.values().map(|s| (s - avg).powi(2)).sum::<f64>() / n).sqrt();
        for (module, sum) in modules {
            let z = (sum - avg).abs() / deviation;
            if deviation > 0.0 && (z - 1.0).abs() <= 1e-9 {
                borderline.insert((panel.clone(), start, module));
            } else if deviation > 0.0 && z > 1.0 {
                anomalies.insert((panel.clone(), start, module), z);
            }
        }
    }
    (anomalies, borderline, late)
}

#[test]
fn solar_anomalies_on_a_million_messages_match_the_reference() {
    let (input, events) = solar_input();
    let (expected, borderline, late) = solar_reference(events);
    let dir = tempfile::tempdir().unwrap();
    let (output, stats) = (dir.path().join("out.jsonl"), dir.path().join("stats.json"));
    let out = run_chain("solar-anomaly.json", input, &output, &stats, &["--no-state"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = read_lines(&output);
    let actual: BTreeMap<(String, i64, String), f64> = lines
        .iter()
        .map(|m| {
            let d = &m["data"];
            let key = (
                d["group"].as_str().unwrap().to_string(),
                d["windowStart"].as_i64().unwrap(),
                d["member"].as_str().unwrap().to_string(),
            );
            (key, d["z"].as_f64().unwrap())
        })
        .collect();
    assert_eq!(lines.len(), actual.len(), "no duplicate anomalies");
    let decided: Vec<_> = actual.keys().filter(|k| !borderline.contains(*k)).collect();
    assert_eq!(decided, expected.keys().collect::<Vec<_>>());
    for key in actual.keys().filter(|k| borderline.contains(*k)) {
        assert!(close(actual[key], 1.0), "z of {key:?}: {} (borderline: 1)", actual[key]);
    }
    for (key, z) in &expected {
        assert!(close(actual[key], *z), "z of {key:?}: {} vs {z}", actual[key]);
    }
    assert!(expected.len() > 100, "the workload has anomalies ({})", expected.len());
    let stats: Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(stats["stats"]["nodes"]["modules"]["late"].as_u64(), Some(late));
}

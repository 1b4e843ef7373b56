//! Whole-process workloads of issue 16, as `sluice run` runs them, against a plain native Rust
//! loop doing the same work in the same run — the "before" and "after" measurement of the message
//! path.
//!
//! - **wind**: `SLUICE_BENCH_N` (default 1,000,000) simple-form lines
//!   `{"ts", "deviceName", "deviceType", "cs_geoZone", "windSpeed"}` from 10,000 weather stations
//!   in 10 zones; 10 % other device types (thermometers, which also carry a zone and a wind speed),
//!   3 % of lines without the zone, 3 % without the wind speed. Through `chains/wind-zones.json`'s
//!   `stations` filter and `zone-average` window (10 s tumbling avg + count per zone, 2 s grace)
//!   into the `output` sink; the actions are left out.
//! - **solar**: as many simple-form module readings `{"ts", "deviceName", "deviceType", "panel",
//!   "power"}` (1,000 modules, one reading a second each, 100 panels of 10 modules, one weak
//!   module per panel) through `chains/solar-anomaly.json`'s `telemetry` switch, `modules` window
//!   (per-module sums) and `panels` group deviation; the anomalies go to the `output` sink (the
//!   generators, the decoder and the action are left out).
//!
//! Event time increases by 1 ms a line; 1 % of lines are up to 2 s behind it (within the 2 s
//! grace: never late) and 0.1 % are 2–6 s behind (some late), so the `Late` path is checked too.
//!
//! The node configs and the chain's `eventTime` are copied from the shipped chain files at run
//! time. One change: the simple form puts every field but `deviceName` and `deviceType` in `data`
//! (`sources/jsonl.rs`), so the wind filter's `present` keys (`cs_geoZone`) move to
//! `dataPresent` and the window's `metadata.cs_geoZone` key becomes `data.cs_geoZone`.
//!
//! The native loop reads the same file line by line, parses each line with serde into a typed
//! struct, and keeps windows in hash maps, closed by the watermark exactly as Sluice closes them
//! (`rule-sdk/src/windows.rs`, `state/time.rs`, `flow/worker.rs`): the watermark is the greatest
//! event time seen (every line counts, filtered or not) minus `latenessMs`; a window
//! `[start, end)` closes when the watermark reaches `end + graceMs`; an event is late when its
//! window is closed by the watermark that includes its own line. A window result goes downstream
//! judged by `end + graceMs - 1`, so the panel window of the same size takes it.
//!
//! Sluice runs as a child process: `sluice run --no-state --no-watch --workers W --stats FILE`.
//! Reported: messages per second (wall time of the whole process) and CPU seconds (user + sys,
//! `getrusage`), the median of `SLUICE_BENCH_RUNS` runs (default 3), for 1 and 2 workers, with
//! the ratio to the native loop. Every run's results are checked equal to the native loop's:
//! the same windows with the same counts, averages and sums within 1e-9 relative, the same late
//! count, the same anomalies; the bench panics naming the difference otherwise.
//!
//! `cargo bench -p sluice --bench workloads [wind|solar]` (guests are built from `rules/`);
//! `SLUICE_BENCH_DIR=DIR` writes the inputs, chains and outputs under `DIR` and keeps them.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{Value, json};

const T0: i64 = 1_700_000_000_000;
const STATIONS: u64 = 10_000;
const ZONES: u64 = 10;
const MODULES: u64 = 1_000;
const MODULES_PER_PANEL: u64 = 10;
/// Averages, sums and z-scores are equal when within this relative difference: with 2 workers a
/// zone's window adds its values in another order.
const REL_EPS: f64 = 1e-9;

use rng::Rng;
use sluice_testkit::rng;

trait EventTime {
    fn event_time(&mut self, k: u64) -> i64;
}

impl EventTime for Rng {
    /// Event time of line `k`: increasing by 1 ms a line, 1 % up to 2 s behind, 0.1 % 2–6 s.
    fn event_time(&mut self, k: u64) -> i64 {
        let nominal = T0 + k as i64;
        match self.below(1000) {
            0..10 => nominal - 1 - self.below(2_000) as i64,
            10 => nominal - 2_001 - self.below(4_000) as i64,
            _ => nominal,
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

/// `wind-1m`, `solar-200k`.
fn workload_name(base: &str, n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{base}-{}m", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{base}-{}k", n / 1_000),
        n => format!("{base}-{n}"),
    }
}

fn relative_eq(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= REL_EPS * a.abs().max(b.abs())
}

// ---------------------------------------------------------------------------------------------
// Inputs

fn generate_wind(path: &Path, n: usize) {
    let mut out = BufWriter::new(File::create(path).unwrap());
    let mut rng = Rng(16);
    let mut line = String::with_capacity(160);
    for k in 0..n as u64 {
        line.clear();
        let ts = rng.event_time(k);
        let wind = rng.below(4_000) as f64 / 100.0;
        if rng.below(10) == 0 {
            let t = rng.below(1_000);
            let temperature = rng.below(400) as f64 / 10.0;
            write!(
                line,
                r#"{{"ts":{ts},"deviceName":"TH-{t:04}","deviceType":"Thermometer","cs_geoZone":"Zone {}","temperature":{temperature},"windSpeed":{wind}}}"#,
                t % ZONES
            )
            .unwrap();
        } else {
            let s = rng.below(STATIONS);
            write!(line, r#"{{"ts":{ts},"deviceName":"WS-{s:05}","deviceType":"WeatherStation""#).unwrap();
            if rng.below(100) >= 3 {
                write!(line, r#","cs_geoZone":"Zone {}""#, s % ZONES).unwrap();
            }
            if rng.below(100) >= 3 {
                write!(line, r#","windSpeed":{wind}"#).unwrap();
            }
            line.push('}');
        }
        line.push('\n');
        out.write_all(line.as_bytes()).unwrap();
    }
    out.flush().unwrap();
}

fn generate_solar(path: &Path, n: usize) {
    let mut out = BufWriter::new(File::create(path).unwrap());
    let mut rng = Rng(61);
    let mut line = String::with_capacity(160);
    for k in 0..n as u64 {
        line.clear();
        let ts = rng.event_time(k);
        let m = k % MODULES;
        // One weak module per panel (70 %); every reading ±5 %.
        let base = if m % MODULES_PER_PANEL == 3 { 210.0 } else { 300.0 };
        let power = (base * (1.0 + (rng.below(1_001) as f64 - 500.0) / 10_000.0) * 100.0).round() / 100.0;
        writeln!(
            line,
            r#"{{"ts":{ts},"deviceName":"Module {m:04}","deviceType":"SolarModule","panel":"Panel {:03}","power":{power}}}"#,
            m / MODULES_PER_PANEL
        )
        .unwrap();
        out.write_all(line.as_bytes()).unwrap();
    }
    out.flush().unwrap();
}

/// The first `n` lines of `from`, for the warm-up run.
fn head(from: &Path, to: &Path, n: usize) {
    let mut out = BufWriter::new(File::create(to).unwrap());
    for line in BufReader::new(File::open(from).unwrap()).lines().take(n) {
        writeln!(out, "{}", line.unwrap()).unwrap();
    }
    out.flush().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Chains: the shipped nodes, read at run time

fn shipped(repo: &Path, name: &str) -> Value {
    let path = repo.join("chains").join(format!("{name}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn node(chain: &Value, id: &str) -> Value {
    chain["nodes"].as_array().unwrap().iter().find(|n| n["id"] == id).cloned().unwrap_or_else(|| {
        panic!("the shipped chain has no node `{id}`: update benches/workloads.rs");
    })
}

/// Asserts that the shipped config says what the native loop does.
fn expect(what: &str, got: &Value, expected: Value) {
    assert_eq!(got, &expected, "the shipped chain changed ({what}): update the native loop of benches/workloads.rs");
}

/// What the native loop takes from a chain: its window and event-time settings.
#[derive(Debug, Clone, Copy)]
struct Timing {
    size: i64,
    grace: i64,
    lateness: i64,
}

fn timing(chain: &Value, config: &Value) -> Timing {
    expect("eventTime.from", &chain["eventTime"]["from"], json!("ts"));
    expect("window type", &config["window"]["type"], json!("tumbling"));
    Timing {
        size: config["window"]["sizeMs"].as_i64().unwrap(),
        grace: config["graceMs"].as_i64().unwrap_or(0),
        lateness: chain["eventTime"]["latenessMs"].as_i64().unwrap_or(0),
    }
}

fn write_chain(dir: &Path, name: &str, chain: Value) -> PathBuf {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&chain).unwrap()).unwrap();
    path
}

/// `stations` → `zone-average` → output, for simple-form lines (the zone is in `data`).
fn wind_chain(repo: &Path, dir: &Path) -> (PathBuf, Timing) {
    let shipped = shipped(repo, "wind-zones");
    let mut stations = node(&shipped, "stations");
    let mut average = node(&shipped, "zone-average");
    let filter = &mut stations["config"];
    expect("stations.equals", &filter["equals"], json!({"deviceType": "WeatherStation"}));
    expect("stations.present", &filter["present"], json!(["cs_geoZone"]));
    expect("stations.dataPresent", &filter["dataPresent"], json!(["windSpeed"]));
    filter["dataPresent"] = json!(["cs_geoZone", "windSpeed"]);
    filter["present"] = json!([]);
    let config = &mut average["config"];
    expect("zone-average.key", &config["key"], json!("metadata.cs_geoZone"));
    expect("zone-average.value", &config["value"], json!("data.windSpeed"));
    expect("zone-average.aggregates", &config["aggregates"], json!(["avg", "count"]));
    expect("zone-average.late", &config["late"], json!("Late"));
    config["key"] = json!("data.cs_geoZone");
    let timing = timing(&shipped, config);
    let chain = json!({
        "name": "wind-zones: filter + window (workloads bench)",
        "eventTime": shipped["eventTime"],
        "entry": "stations",
        "nodes": [stations, average, {"id": "out", "sink": "output"}],
        "connections": [
            {"from": "stations", "to": "zone-average", "relation": "True"},
            {"from": "zone-average", "to": "out", "relation": "Success"},
        ],
    });
    (write_chain(dir, "wind", chain), timing)
}

/// `telemetry` → `modules` → `panels` → output (anomalies).
fn solar_chain(repo: &Path, dir: &Path) -> (PathBuf, Timing, f64) {
    let shipped = shipped(repo, "solar-anomaly");
    expect("entry", &shipped["entry"], json!("telemetry"));
    let telemetry = node(&shipped, "telemetry");
    let modules = node(&shipped, "modules");
    let panels = node(&shipped, "panels");
    expect("telemetry.module", &telemetry["module"], json!("msg-type-switch"));
    let m = &modules["config"];
    expect("modules.key", &m["key"], json!("originator"));
    expect("modules.value", &m["value"], json!("data.power"));
    expect("modules.keep", &m["keep"], json!(["data.panel"]));
    let p = &panels["config"];
    expect("panels.group", &p["group"], json!("data.panel"));
    expect("panels.member", &p["member"], json!("originator"));
    expect("panels.value", &p["value"], json!("data.sum"));
    let (modules_timing, panels_timing) = (timing(&shipped, m), timing(&shipped, p));
    assert_eq!(
        (modules_timing.size, modules_timing.grace),
        (panels_timing.size, panels_timing.grace),
        "the shipped chain changed (panels' window differs from the modules'): update benches/workloads.rs"
    );
    let threshold = p["thresholdSigma"].as_f64().unwrap_or(1.0);
    let chain = json!({
        "name": "solar-anomaly: module sums → panel deviation (workloads bench)",
        "eventTime": shipped["eventTime"],
        "entry": "telemetry",
        "nodes": [telemetry, modules, panels, {"id": "anomalies", "sink": "output"}],
        "connections": [
            {"from": "telemetry", "to": "modules", "relation": "Post telemetry"},
            {"from": "modules", "to": "panels", "relation": "Success"},
            {"from": "panels", "to": "anomalies", "relation": "Anomaly"},
        ],
    });
    (write_chain(dir, "solar", chain), modules_timing, threshold)
}

// ---------------------------------------------------------------------------------------------
// The native loops

/// Tumbling windows per key, opened and closed as Sluice's window store does.
struct Tumbling<A> {
    timing: Timing,
    /// start → key → accumulator.
    open: BTreeMap<i64, HashMap<String, A>>,
    late: u64,
}

impl<A: Default> Tumbling<A> {
    fn new(timing: Timing) -> Self {
        Tumbling { timing, open: BTreeMap::new(), late: 0 }
    }

    /// The accumulator of `key`'s window at `ts`, or `None` when that window is closed by
    /// `watermark` (late).
    fn add(&mut self, key: &str, ts: i64, watermark: i64) -> Option<&mut A> {
        let start = ts.div_euclid(self.timing.size) * self.timing.size;
        if start + self.timing.size + self.timing.grace <= watermark {
            self.late += 1;
            return None;
        }
        let per_key = self.open.entry(start).or_default();
        if !per_key.contains_key(key) {
            per_key.insert(key.to_owned(), A::default());
        }
        per_key.get_mut(key)
    }

    /// The windows `watermark` closes, oldest first: (start, key → accumulator).
    fn due(&mut self, watermark: i64) -> Vec<(i64, HashMap<String, A>)> {
        let mut due = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() + self.timing.size + self.timing.grace > watermark {
                break;
            }
            due.push(entry.remove_entry());
        }
        due
    }
}

/// The watermark after a line at `ts`: the greatest event time seen minus the lateness.
struct Watermark {
    max_seen: i64,
    lateness: i64,
}

impl Watermark {
    fn see(&mut self, ts: i64) -> i64 {
        self.max_seen = self.max_seen.max(ts);
        self.max_seen - self.lateness
    }
}

/// Reads `path` line by line (as `sluice run` does), calling `each` with every line.
fn for_each_line(path: &Path, mut each: impl FnMut(&str)) {
    let mut reader = BufReader::with_capacity(1 << 16, File::open(path).unwrap());
    let mut line = String::with_capacity(256);
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        each(line.trim_end());
    }
}

#[derive(Deserialize)]
struct WindLine<'a> {
    ts: i64,
    #[serde(rename = "deviceType", borrow)]
    device_type: Option<&'a str>,
    #[serde(rename = "cs_geoZone", borrow)]
    zone: Option<&'a str>,
    #[serde(rename = "windSpeed")]
    wind_speed: Option<f64>,
}

#[derive(Default)]
struct Mean {
    count: u64,
    sum: f64,
}

/// A zone's window result: (zone, start) → (end, count, avg).
type WindResults = BTreeMap<(String, i64), (i64, u64, f64)>;

struct WindOutcome {
    windows: WindResults,
    late: u64,
}

fn native_wind(input: &Path, timing: Timing) -> WindOutcome {
    let mut windows = Tumbling::<Mean>::new(timing);
    let mut watermark = Watermark { max_seen: i64::MIN, lateness: timing.lateness };
    let mut results = Vec::new();
    let mut emit = |due: Vec<(i64, HashMap<String, Mean>)>| {
        for (start, zones) in due {
            for (zone, mean) in zones {
                results.push((zone, start, start + timing.size, mean.count, mean.sum / mean.count as f64));
            }
        }
    };
    for_each_line(input, |line| {
        let line: WindLine = serde_json::from_str(line).expect("a generated line");
        let wm = watermark.see(line.ts);
        if line.device_type == Some("WeatherStation")
            && let (Some(zone), Some(speed)) = (line.zone, line.wind_speed)
            && let Some(mean) = windows.add(zone, line.ts, wm)
        {
            mean.count += 1;
            mean.sum += speed;
        }
        emit(windows.due(wm));
    });
    emit(windows.due(i64::MAX));
    let late = windows.late;
    let windows =
        results.into_iter().map(|(zone, start, end, count, avg)| ((zone, start), (end, count, avg))).collect();
    WindOutcome { windows, late }
}

#[derive(Deserialize)]
struct SolarLine<'a> {
    ts: i64,
    #[serde(rename = "deviceName", borrow)]
    device: &'a str,
    #[serde(borrow)]
    panel: Option<&'a str>,
    power: Option<f64>,
}

/// A flagged module: (member, window start) → its anomaly.
#[derive(Debug, Clone, PartialEq)]
struct Anomaly {
    group: String,
    members: u64,
    value: f64,
    z: f64,
}

type SolarResults = BTreeMap<(String, i64), Anomaly>;

struct SolarOutcome {
    anomalies: SolarResults,
    late: u64,
}

/// Module sums per window → per panel and window, the modules more than `threshold` population
/// standard deviations from the panel's average.
struct Solar {
    modules: Tumbling<Mean>,
    /// panel → its members' sums, in the order Sluice adds them.
    panels: Tumbling<Vec<(String, f64)>>,
    /// module → the panel of its first accepted reading (`keep: ["data.panel"]`).
    kept: HashMap<String, String>,
    watermark: Watermark,
    threshold: f64,
    anomalies: SolarResults,
}

impl Solar {
    fn new(timing: Timing, threshold: f64) -> Self {
        Solar {
            modules: Tumbling::new(timing),
            panels: Tumbling::new(timing),
            kept: HashMap::new(),
            watermark: Watermark { max_seen: i64::MIN, lateness: timing.lateness },
            threshold,
            anomalies: BTreeMap::new(),
        }
    }

    fn line(&mut self, line: &str) {
        let line: SolarLine = serde_json::from_str(line).expect("a generated line");
        let wm = self.watermark.see(line.ts);
        let power = line.power.expect("every generated reading has a power");
        if let Some(sum) = self.modules.add(line.device, line.ts, wm) {
            sum.count += 1;
            sum.sum += power;
            if !self.kept.contains_key(line.device) {
                let panel = line.panel.expect("every generated reading has a panel");
                self.kept.insert(line.device.to_owned(), panel.to_owned());
            }
        }
        self.close(wm);
    }

    fn close(&mut self, watermark: i64) {
        let timing = self.modules.timing;
        for (start, sums) in self.modules.due(watermark) {
            // One close time's windows fire in key order; a result is judged by the last
            // watermark its window was open at, so the panel window of the same size takes it.
            let mut sums: Vec<(String, Mean)> = sums.into_iter().collect();
            sums.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let open_until = start + timing.size + timing.grace - 1;
            for (module, sum) in sums {
                let panel = &self.kept[&module];
                let items =
                    self.panels.add(panel, start, open_until).expect("a module sum is never late for its panel");
                items.push((module, sum.sum));
            }
        }
        for (start, groups) in self.panels.due(watermark) {
            for (panel, items) in groups {
                let n = items.len() as f64;
                let avg = items.iter().map(|i| i.1).sum::<f64>() / n;
                let deviation = (items.iter().map(|i| (i.1 - avg).powi(2)).sum::<f64>() / n).sqrt();
                if deviation <= 0.0 {
                    continue;
                }
                for (member, value) in &items {
                    let z = (value - avg).abs() / deviation;
                    if z > self.threshold {
                        let anomaly = Anomaly { group: panel.clone(), members: items.len() as u64, value: *value, z };
                        self.anomalies.insert((member.clone(), start), anomaly);
                    }
                }
            }
        }
    }
}

fn native_solar(input: &Path, timing: Timing, threshold: f64) -> SolarOutcome {
    let mut solar = Solar::new(timing, threshold);
    for_each_line(input, |line| solar.line(line));
    solar.close(i64::MAX);
    SolarOutcome { anomalies: solar.anomalies, late: solar.modules.late }
}

// ---------------------------------------------------------------------------------------------
// Sluice, as a child process

/// Wall and CPU seconds of one run.
#[derive(Debug, Clone, Copy)]
struct Cost {
    wall: f64,
    cpu: f64,
}

/// User + system CPU seconds of this process (`RUSAGE_SELF`) or of its waited-for children
/// (`RUSAGE_CHILDREN`).
fn cpu_seconds(who: libc::c_int) -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the rusage it is pointed at; it is zeroed, a valid rusage already.
    let rc = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    // SAFETY: zeroed (a valid rusage: plain integers) and then written by getrusage.
    let usage = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Runs `once` `runs` times; the median wall time and the median CPU time.
fn median_of<T>(runs: usize, mut once: impl FnMut() -> (Cost, T)) -> (Cost, T) {
    let mut costs = Vec::new();
    let mut last = None;
    for _ in 0..runs.max(1) {
        let (cost, out) = once();
        costs.push(cost);
        last = Some(out);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let cost = Cost {
        wall: median(costs.iter().map(|c| c.wall).collect()),
        cpu: median(costs.iter().map(|c| c.cpu).collect()),
    };
    (cost, last.expect("at least one run"))
}

fn time_native<T>(work: impl FnOnce() -> T) -> (Cost, T) {
    let cpu = cpu_seconds(libc::RUSAGE_SELF);
    let started = Instant::now();
    let out = work();
    let wall = started.elapsed().as_secs_f64();
    (Cost { wall, cpu: cpu_seconds(libc::RUSAGE_SELF) - cpu }, out)
}

struct Sluice {
    bin: PathBuf,
    modules: PathBuf,
    cache: PathBuf,
}

/// What one `sluice run` left: its output file and its `--stats`.
struct Ran {
    output: PathBuf,
    stats: Value,
}

impl Sluice {
    /// `sluice run CHAIN --input INPUT --no-state --no-watch --workers W`, whole process.
    fn run(&self, chain: &Path, input: &Path, dir: &Path, workers: usize) -> (Cost, Ran) {
        let output = dir.join(format!("out-{workers}w.jsonl"));
        let stats = dir.join(format!("stats-{workers}w.json"));
        let cpu = cpu_seconds(libc::RUSAGE_CHILDREN);
        let started = Instant::now();
        let out = Command::new(&self.bin)
            .arg("run")
            .arg("--chain")
            .arg(chain)
            .arg("--input")
            .arg(input)
            .arg("--output")
            .arg(&output)
            .args(["--no-state", "--no-watch", "--workers", &workers.to_string()])
            .arg("--stats")
            .arg(&stats)
            .arg("--modules")
            .arg(&self.modules)
            .env("SLUICE_CACHE_DIR", &self.cache)
            .current_dir(dir)
            .output()
            .expect("start sluice");
        let wall = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(libc::RUSAGE_CHILDREN) - cpu;
        assert!(
            out.status.success(),
            "sluice run {} ({workers} workers) exited with {}:\n{}",
            chain.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stats = serde_json::from_slice(&std::fs::read(&stats).expect("--stats written")).expect("stats JSON");
        (Cost { wall, cpu }, Ran { output, stats })
    }
}

fn output_lines(path: &Path) -> Vec<Value> {
    BufReader::new(File::open(path).unwrap())
        .lines()
        .map(|line| serde_json::from_str(&line.unwrap()).expect("an output line is JSON"))
        .collect()
}

/// A node's count in `--stats` (`{"messages", "malformed", …, "stats": {"nodes": {…}}}`).
fn stat(stats: &Value, node: &str, field: &str) -> u64 {
    stats["stats"]["nodes"][node][field].as_u64().unwrap_or(0)
}

/// Every line a message, none malformed.
fn check_lines(stats: &Value, lines: usize, differences: &mut Vec<String>) {
    let (messages, malformed) = (stats["messages"].as_u64(), stats["malformed"].as_u64());
    if messages != Some(lines as u64) || malformed != Some(0) {
        differences.push(format!("{messages:?} messages, {malformed:?} malformed of {lines} lines"));
    }
}

/// Panics listing the first differences, if any.
fn assert_no_differences(what: &str, differences: Vec<String>) {
    if !differences.is_empty() {
        let first: Vec<&str> = differences.iter().take(10).map(String::as_str).collect();
        panic!(
            "{what}: results differ from the native loop's ({} differences):\n  {}",
            differences.len(),
            first.join("\n  ")
        );
    }
}

fn check_wind(what: &str, ran: &Ran, native: &WindOutcome, lines: usize) {
    let mut got = WindResults::new();
    let mut differences = Vec::new();
    for msg in output_lines(&ran.output) {
        let data = &msg["data"];
        let zone = msg["originator"]["name"].as_str().expect("a zone").to_string();
        let start = data["windowStart"].as_i64().expect("windowStart");
        let result = (
            data["windowEnd"].as_i64().expect("windowEnd"),
            data["count"].as_u64().expect("count"),
            data["avg"].as_f64().expect("avg"),
        );
        if got.insert((zone.clone(), start), result).is_some() {
            differences.push(format!("{zone} at {start}: two results"));
        }
    }
    for (key, n) in &native.windows {
        match got.get(key) {
            None => differences.push(format!("{key:?}: missing (native: end {}, count {}, avg {})", n.0, n.1, n.2)),
            Some(s) if s.0 != n.0 || s.1 != n.1 || !relative_eq(s.2, n.2) => differences
                .push(format!("{key:?}: end {}, count {}, avg {} (native: {}, {}, {})", s.0, s.1, s.2, n.0, n.1, n.2)),
            Some(_) => {}
        }
    }
    differences
        .extend(got.keys().filter(|k| !native.windows.contains_key(*k)).map(|k| format!("{k:?}: not in native")));
    check_lines(&ran.stats, lines, &mut differences);
    let (received, late) = (stat(&ran.stats, "stations", "received"), stat(&ran.stats, "zone-average", "late"));
    if received != lines as u64 {
        differences.push(format!("{received} messages reached `stations`, not every line ({lines})"));
    }
    if late != native.late {
        differences.push(format!("{late} late at `zone-average` (native: {})", native.late));
    }
    assert_no_differences(what, differences);
}

fn check_solar(what: &str, ran: &Ran, native: &SolarOutcome, lines: usize) {
    let mut got = SolarResults::new();
    let mut differences = Vec::new();
    for msg in output_lines(&ran.output) {
        let data = &msg["data"];
        let member = data["member"].as_str().expect("member").to_string();
        let start = data["windowStart"].as_i64().expect("windowStart");
        let anomaly = Anomaly {
            group: data["group"].as_str().expect("group").to_string(),
            members: data["members"].as_u64().expect("members"),
            value: data["value"].as_f64().expect("value"),
            z: data["z"].as_f64().expect("z"),
        };
        if got.insert((member.clone(), start), anomaly).is_some() {
            differences.push(format!("{member} at {start}: two anomalies"));
        }
    }
    for (key, n) in &native.anomalies {
        match got.get(key) {
            None => differences.push(format!("{key:?}: missing (native: {n:?})")),
            Some(s)
                if s.group != n.group
                    || s.members != n.members
                    || !relative_eq(s.value, n.value)
                    || !relative_eq(s.z, n.z) =>
            {
                differences.push(format!("{key:?}: {s:?} (native: {n:?})"))
            }
            Some(_) => {}
        }
    }
    differences
        .extend(got.keys().filter(|k| !native.anomalies.contains_key(*k)).map(|k| format!("{k:?}: not in native")));
    check_lines(&ran.stats, lines, &mut differences);
    let received = stat(&ran.stats, "telemetry", "received");
    if received != lines as u64 {
        differences.push(format!("{received} messages reached `telemetry`, not every line ({lines})"));
    }
    let (late, panel_late) = (stat(&ran.stats, "modules", "late"), stat(&ran.stats, "panels", "late"));
    if late != native.late || panel_late != 0 {
        differences.push(format!("{late} late at `modules`, {panel_late} at `panels` (native: {}, 0)", native.late));
    }
    assert_no_differences(what, differences);
}

// ---------------------------------------------------------------------------------------------
// The run

struct Row {
    workload: String,
    runner: String,
    cost: Cost,
    results: String,
}

/// Native, then Sluice with 1 and 2 workers, on `input`; every run checked against the native
/// results. A warm-up run on the first lines fills the module cache and checks the lines load.
#[allow(clippy::too_many_arguments)]
fn bench<T>(
    workload: &str,
    sluice: &Sluice,
    chain: &Path,
    input: &Path,
    dir: &Path,
    (n, runs): (usize, usize),
    native: impl Fn(&Path) -> T,
    check: impl Fn(&str, &Ran, &T, usize),
    describe: impl Fn(&T) -> String,
) -> Vec<Row> {
    let warm = dir.join("warm-up.jsonl");
    let warm_lines = n.min(20_000);
    head(input, &warm, warm_lines);
    let (_, ran) = sluice.run(chain, &warm, dir, 1);
    check(&format!("{workload} warm-up ({warm_lines} lines)"), &ran, &native(&warm), warm_lines);

    eprintln!("{workload}: native, {runs} runs");
    let (cost, expected) = median_of(runs, || time_native(|| native(input)));
    let results = format!("yes ({})", describe(&expected));
    let mut rows = vec![Row { workload: workload.into(), runner: "native".into(), cost, results: results.clone() }];
    for workers in [1, 2] {
        eprintln!("{workload}: sluice, {workers} worker(s), {runs} runs");
        let (cost, ()) = median_of(runs, || {
            let (cost, ran) = sluice.run(chain, input, dir, workers);
            check(&format!("{workload}, sluice {workers}w"), &ran, &expected, n);
            (cost, ())
        });
        rows.push(Row {
            workload: workload.into(),
            runner: format!("sluice {workers}w"),
            cost,
            results: results.clone(),
        });
    }
    rows
}

fn main() {
    let started = Instant::now();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let modules = sluice::toolchain::build(&repo.join("rules")).expect("build the rules");
    let n = env_usize("SLUICE_BENCH_N", 1_000_000);
    let runs = env_usize("SLUICE_BENCH_RUNS", 3);
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    // `SLUICE_BENCH_BIN`: another build of `sluice` (an older commit's, for a before/after).
    let sluice = Sluice {
        bin: std::env::var_os("SLUICE_BENCH_BIN")
            .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sluice")), PathBuf::from),
        modules,
        cache: repo.join("target").join("sluice-module-cache"),
    };
    // `SLUICE_BENCH_DIR`: inputs, chains and outputs there, kept (to profile a run by hand).
    let temp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("SLUICE_BENCH_DIR").map_or_else(|| temp.path().to_path_buf(), PathBuf::from);
    let load = load_average();
    let mut rows = Vec::new();
    if wanted("wind") {
        let dir = dir.join("wind");
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("input.jsonl");
        generate_wind(&input, n);
        let (chain, timing) = wind_chain(&repo, &dir);
        rows.extend(bench(
            &workload_name("wind", n),
            &sluice,
            &chain,
            &input,
            &dir,
            (n, runs),
            |input| native_wind(input, timing),
            check_wind,
            |o| format!("{} windows, {} late", o.windows.len(), o.late),
        ));
    }
    if wanted("solar") {
        let dir = dir.join("solar");
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("input.jsonl");
        generate_solar(&input, n);
        let (chain, timing, threshold) = solar_chain(&repo, &dir);
        rows.extend(bench(
            &workload_name("solar", n),
            &sluice,
            &chain,
            &input,
            &dir,
            (n, runs),
            |input| native_solar(input, timing, threshold),
            check_solar,
            |o| format!("{} anomalies, {} late", o.anomalies.len(), o.late),
        ));
    }
    print_table(&rows, n, runs);
    println!(
        "bench took {:.0} s; load average (1, 5, 15 min) at the start {load}, at the end {} on {} cores",
        started.elapsed().as_secs_f64(),
        load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

/// `/proc/loadavg`'s first three fields: other work on the machine skews wall times.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn print_table(rows: &[Row], n: usize, runs: usize) {
    println!("\n{n} messages per workload; median of {runs} runs; whole process for sluice (--no-state --no-watch)");
    println!(
        "{:<12} {:<10} {:>12} {:>8} {:>12} {:>10}  results equal",
        "workload", "runner", "msgs/s", "CPU-s", "msgs/s ×nat", "CPU ×nat"
    );
    let mut targets = Vec::new();
    for row in rows {
        let native = rows.iter().find(|r| r.workload == row.workload && r.runner == "native").expect("native row");
        let speed = native.cost.wall / row.cost.wall;
        let cpu = row.cost.cpu / native.cost.cpu;
        println!(
            "{:<12} {:<10} {:>10.3} M {:>8.2} {:>11.3}× {:>9.1}×  {}",
            row.workload,
            row.runner,
            n as f64 / row.cost.wall / 1e6,
            row.cost.cpu,
            speed,
            cpu,
            row.results
        );
        if row.runner == "sluice 2w" {
            let met = |ok: bool| if ok { "met" } else { "not met" };
            targets.push(format!(
                "{}: sluice 2w msgs/s ≥ 0.5× native: {speed:.3}× ({}); CPU-s ≤ 4× native: {cpu:.1}× ({})",
                row.workload,
                met(speed >= 0.5),
                met(cpu <= 4.0)
            ));
        }
    }
    println!("\ntargets of issue 16:");
    for target in targets {
        println!("  {target}");
    }
}

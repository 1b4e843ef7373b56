//! Throughput of the seed chains (`chains/*.json`) as `sluice run` runs them: JSON lines in from
//! a file, every node a WASM module, actions delivered (Kafka topics to file connectors), output
//! to a file. Generated inputs of `SLUICE_BENCH_N` messages (default 200,000) per chain; reported
//! in messages per second, for 1 and 2 workers. Solar runs its analytics on module telemetry read
//! from the input (its generators are dropped: they produce 180 messages, not a load).
//!
//! `cargo bench -p sluice --bench seeds` (guests are built from `rules/` first).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use sluice::app::AppOptions;
use sluice::config::OutputSpec;
use sluice::flow::PipelineConfig;
use sluice::runtime::Runtime;
use sluice::sources::jsonl::{JsonLinesSource, Stream};

const T0: i64 = 1_700_000_000_000;

use rng::Rng;
use sluice_testkit::rng;

fn msg(id: usize, ts: i64, kind: &str, device: &str, metadata: Value, data: Value) -> Value {
    json!({"id": format!("m{id}"), "ts": ts, "type": kind, "originator": {"entityType": "DEVICE", "name": device},
           "metadata": metadata, "data": data})
}

/// One generated input line per message of chain `name`.
fn generate(name: &str, n: usize, rng: &mut Rng) -> Vec<Value> {
    (0..n)
        .map(|k| {
            let ts = T0 + k as i64 * 10;
            match name {
                "wind-zones" => {
                    let s = rng.below(300);
                    msg(
                        k,
                        ts,
                        "POST_TELEMETRY_REQUEST",
                        &format!("WS-{s}"),
                        json!({"deviceType": "WeatherStation", "cs_geoZone": format!("Zone {}", s % 12)}),
                        json!({"windSpeed": format!("{}", rng.below(4000) as f64 / 100.0)}),
                    )
                }
                "solar-anomaly" => {
                    let m = rng.below(300);
                    msg(
                        k,
                        ts,
                        "POST_TELEMETRY_REQUEST",
                        &format!("Module {m}"),
                        json!({}),
                        json!({"panel": format!("Panel {}", m / 3), "power": 3.0 + rng.below(200) as f64 / 100.0}),
                    )
                }
                "door-disruption" if k < 100 => msg(
                    k,
                    T0,
                    "POST_ATTRIBUTES_REQUEST",
                    &format!("door-{k}"),
                    json!({}),
                    json!({"region": format!("region-{}", k % 7), "site": "HQ"}),
                ),
                "door-disruption" => {
                    let event = if rng.below(10) < 3 { "accessRejected" } else { "accessGranted" };
                    msg(
                        k,
                        ts,
                        "POST_TELEMETRY_REQUEST",
                        &format!("door-{}", rng.below(100)),
                        json!({}),
                        json!({"event": event, "badge": rng.below(1000)}),
                    )
                }
                "threshold-anomaly" => {
                    let s = rng.below(100);
                    msg(
                        k,
                        ts,
                        "POST_TELEMETRY_REQUEST",
                        &format!("sensor-{s}"),
                        json!({"deviceName": format!("sensor-{s}")}),
                        json!({"value": rng.below(11_000) as f64 / 100.0}),
                    )
                }
                other => panic!("no generator for {other}"),
            }
        })
        .collect()
}

/// The chain file as shipped, without generator nodes (they are sources, not load).
fn chain_without_generators(repo: &Path, name: &str, dir: &Path) -> PathBuf {
    let mut spec: Value =
        serde_json::from_slice(&std::fs::read(repo.join("chains").join(format!("{name}.json"))).unwrap()).unwrap();
    let generators: Vec<Value> = spec["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["module"] == "generator")
        .map(|n| n["id"].clone())
        .collect();
    spec["nodes"].as_array_mut().unwrap().retain(|n| !generators.contains(&n["id"]));
    spec["connections"].as_array_mut().unwrap().retain(|c| !generators.contains(&c["from"]));
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
    path
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let modules = sluice::toolchain::build(&repo.join("rules")).expect("build the rules");
    let n: usize = std::env::var("SLUICE_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let cache = repo.join("target").join("sluice-module-cache");
    let runtime = Arc::new(Runtime::new(Some(cache)).expect("runtime"));
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    println!("{:<20} {:>8} {:>10} {:>12}", "chain", "workers", "messages", "msgs/s");
    for name in ["wind-zones", "solar-anomaly", "door-disruption", "threshold-anomaly"] {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input.jsonl");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        for line in generate(name, n, &mut Rng(7)) {
            writeln!(file, "{line}").unwrap();
        }
        file.flush().unwrap();
        drop(file);
        let chain = chain_without_generators(&repo, name, dir.path());
        // SAFETY: single-threaded here; the connectors read it when the chain loads.
        unsafe { std::env::set_var("SLUICE_OUT", dir.path()) };
        for workers in [1, 2] {
            let options = AppOptions {
                output: OutputSpec::File { path: dir.path().join("out.jsonl").display().to_string() },
                pipeline: PipelineConfig { workers, ..PipelineConfig::default() },
                fresh: true,
                ..AppOptions::new(chain.clone(), vec![modules.clone()])
            };
            let source = Box::new(JsonLinesSource::new(Stream::File(input.clone()), false));
            let (_never, shutdown) = tokio::sync::watch::channel(false);
            let started = Instant::now();
            let (report, _) =
                tokio.block_on(sluice::app::run(runtime.clone(), options, source, shutdown)).expect("run");
            let secs = started.elapsed().as_secs_f64();
            assert_eq!(report.messages as usize, n, "{name}: every line a message");
            println!("{name:<20} {workers:>8} {n:>10} {:>12.0}", n as f64 / secs);
        }
    }
}

//! Hot reload, measured: a pipeline runs a 3-node chain (`counter` → `rename-keys` → output)
//! under a steady 10,000 msgs/s while its chain file is rewritten; each version renames `v` to
//! `v{k}`, so every output says which version ran it.
//!
//! Per reload:
//! - **latency**: file written → first output of the new version (debounce + load and
//!   validate + swap + one message's trip);
//! - **load**: `Reloader::reload` alone, called directly (read, load modules from the compile
//!   cache, run every node's `init` on its config, check state, swap);
//! - **pause**: the longest gap between two outputs around the swap, against the median gap.
//!
//! `cargo bench -p sluice --bench reload` (the rules must be built:
//! `sluice rules build rules`). `SLUICE_BENCH_RELOADS` sets the number of reloads (default 20).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::chain::Loader;
use sluice::flow::{Ack, Envelope, Pipeline, PipelineConfig, Sinks};
use sluice::reload::{ReloadOptions, Reloader};
use sluice::runtime::Runtime;
use sluice::sinks::jsonl::SinkItem;
use sluice::state::StateStore;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn chain(k: usize) -> String {
    json!({
        "entry": "count",
        "nodes": [
            {"id": "count", "module": "counter", "config": {"relation": "Success"}},
            {"id": "tag", "module": "rename-keys", "config": {"renameKeysMapping": {"v": format!("v{k}")}}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "count", "to": "tag", "relation": "Success"},
            {"from": "tag", "to": "out", "relation": "Success"}
        ]
    })
    .to_string()
}

fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("reload: bench");
        return;
    }
    let reloads: usize = std::env::var("SLUICE_BENCH_RELOADS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let runtime = Arc::new(Runtime::with_default_cache().unwrap());
    let module_dirs = vec![sluice::toolchain::module_dir(&repo().join("rules"))];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chain.json");
    save(&file, &chain(0));
    let loaded = Arc::new(Loader::new(&runtime, module_dirs.clone()).load(&file).unwrap());
    let state = StateStore::default();
    let (tx, rx) = sync_channel(4096);
    let config = PipelineConfig { workers: 2, flush_at_end: false, ..Default::default() };
    let pipeline =
        Pipeline::start(runtime.clone(), loaded, state.clone(), Sinks { output: Some(tx), dead_letter: None }, config)
            .unwrap();
    let reloader = Arc::new(Reloader::new(
        runtime.clone(),
        module_dirs,
        Default::default(),
        None,
        pipeline.chain_handle(),
        state,
        Duration::from_secs(3600),
    ));
    let options = ReloadOptions::default();
    let _watcher = sluice::reload::watch(reloader.clone(), &options).unwrap();

    // Outputs, stamped on arrival: (when, version).
    let outputs = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for (bytes, _ack) in rx.into_iter().flat_map(SinkItem::into_msgs) {
            {
                let version = bytes
                    .tb()
                    .data
                    .as_object()
                    .and_then(|d| d.keys().find_map(|k| k.strip_prefix('v')?.parse::<usize>().ok()))
                    .unwrap_or(usize::MAX);
                seen.push((Instant::now(), version));
            }
        }
        seen
    });

    // 10,000 msgs/s from 64 devices until the reloads are done.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let sender = pipeline.sender();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let due = start + Duration::from_micros(i * 100);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let device = format!("dev-{}", i % 64);
                let msg = json!({"id": format!("m{i}"), "ts": 1_700_000_000_000u64 + i, "type": "POST_TELEMETRY_REQUEST",
                    "originator": {"entityType": "DEVICE", "name": device}, "metadata": {}, "data": {"v": i}});
                let envelope = Envelope::new(
                    Arc::new(serde_json::from_value::<sluice_sdk::TbMsg>(msg).unwrap().into()),
                    Envelope::key_of("DEVICE", &device),
                    Ack::none(),
                );
                if sender.send_blocking(envelope).is_err() {
                    break;
                }
                i += 1;
            }
        })
    };

    std::thread::sleep(Duration::from_secs(2));
    let mut writes = Vec::new();
    for k in 1..=reloads {
        writes.push((k, Instant::now()));
        save(&file, &chain(k));
        std::thread::sleep(Duration::from_millis(1000));
    }
    // The load step alone, while the stream still runs.
    let mut loads = Vec::new();
    for _ in 0..reloads {
        let started = Instant::now();
        reloader.reload("bench").unwrap();
        loads.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    loads.sort_by(f64::total_cmp);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    feeder.join().unwrap();
    drop(_watcher);
    let _ = pipeline.shutdown();
    let seen = outputs.join().unwrap();

    // Gaps between consecutive outputs: the normal one, and the longest around each swap.
    let gaps: Vec<f64> = seen.windows(2).map(|w| (w[1].0 - w[0].0).as_secs_f64() * 1000.0).collect();
    let mut sorted = gaps.clone();
    sorted.sort_by(f64::total_cmp);
    let median_gap = percentile(&sorted, 0.5);
    let p99_gap = percentile(&sorted, 0.99);
    let mut latencies = Vec::new();
    let mut pauses = Vec::new();
    for (k, written) in &writes {
        let Some(first) = seen.iter().position(|(_, v)| v == k) else {
            println!("reload/{k}: never live");
            continue;
        };
        latencies.push((seen[first].0 - *written).as_secs_f64() * 1000.0);
        let around = first.saturating_sub(50)..(first + 50).min(gaps.len());
        pauses.push(gaps[around].iter().copied().fold(0.0, f64::max));
    }
    latencies.sort_by(f64::total_cmp);
    pauses.sort_by(f64::total_cmp);
    let status = reloader.status();
    println!(
        "reload: {} of {reloads} versions live ({} outputs at 10,000 msgs/s, debounce {} ms)",
        latencies.len(),
        seen.len(),
        options.debounce.as_millis()
    );
    println!(
        "reload/latency (file written -> first output of the new version): p50 {:.0} ms, max {:.0} ms",
        percentile(&latencies, 0.5),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "reload/pause (longest gap between outputs around a swap): p50 {:.2} ms, max {:.2} ms; normal gap p50 {:.3} ms, p99 {:.3} ms",
        percentile(&pauses, 0.5),
        pauses.last().copied().unwrap_or(f64::NAN),
        median_gap,
        p99_gap
    );
    println!(
        "reload/load (Reloader::reload: load + validate + swap): p50 {:.1} ms, max {:.1} ms",
        percentile(&loads, 0.5),
        loads.last().copied().unwrap_or(f64::NAN)
    );
    println!("reload/status: {} reloads, {} refused", status.reloads, status.failed_reloads);
}

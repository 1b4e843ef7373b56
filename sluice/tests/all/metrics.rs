//! Per-node counters on `/metrics` (`sluice::flow::LiveStats`): while a pipeline runs they are
//! what its workers last published; once it has stopped they are exactly the counts it returned
//! (what `--stats` writes). Checked on a chain where every kind of count moves: outputs on
//! several relations, drops, failures with and without a connection, windows fired, late events.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use sluice::chain::Loader;
use sluice::core::{Ack, Metrics, SinkItem};
use sluice::flow::{Envelope, PipelineConfig, RunStats};
use sluice_sdk::TbMsg;

use crate::support::{ChainDir, modules, runtime, start_to_channel};

/// The counters of `text` (Prometheus text) whose name starts with `sluice_node_` or
/// `sluice_output_`: `name{labels}` → value (the gauges of what nodes hold now left out).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with("sluice_node_") || l.starts_with("sluice_output_"))
        .filter(|l| l.contains("_total{"))
        .filter_map(|l| {
            let (sample, value) = l.rsplit_once(' ')?;
            Some((sample.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// What the samples should be for `stats`, computed from the stats themselves.
fn expected(stats: &RunStats, chain: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (id, n) in &stats.nodes {
        let labels = format!("chain=\"{chain}\",node=\"{id}\"");
        for (name, value) in [
            ("received", n.received),
            ("failures", n.failures),
            ("crashes", n.crashes),
            ("unhandled_failures", n.unhandled_failures),
            ("dead_lettered", n.dead_lettered),
            ("hop_limit", n.hop_limit),
            ("late", n.late),
            ("windows_fired", n.windows_fired),
            ("timers_fired", n.timers_fired),
            ("window_failures", n.window_failures),
        ] {
            out.insert(format!("sluice_node_{name}_total{{{labels}}}"), value as f64);
        }
        for (family, map) in [("outputs", &n.outputs), ("dropped", &n.dropped)] {
            for (relation, count) in map {
                out.insert(format!("sluice_node_{family}_total{{{labels},relation=\"{relation}\"}}"), *count as f64);
            }
        }
        for (kind, count) in &n.failure_kinds {
            out.insert(format!("sluice_node_failures_by_kind_total{{{labels},kind=\"{kind}\"}}"), *count as f64);
        }
    }
    out.insert(format!("sluice_output_messages_total{{chain=\"{chain}\"}}"), stats.output as f64);
    out
}

#[test]
fn node_counters_on_metrics_end_equal_to_the_run_stats() {
    let dir = ChainDir::new();
    let path = dir.write_json(
        "zones.json",
        &json!({
            "entry": "check",
            "nodes": [
                {"id": "check", "module": "check-fields", "config": {"messageNames": ["payload"]}},
                {"id": "decode", "module": "json-decoder"},
                {"id": "avg", "module": "window-aggregate", "config": {
                    "key": "data.zone", "value": "data.v",
                    "window": {"type": "tumbling", "sizeMs": 10000}, "graceMs": 0,
                    "aggregates": ["avg", "count"], "late": "Late"}},
                {"id": "out", "sink": "output"}
            ],
            "connections": [
                {"from": "check", "to": "decode", "relation": "True"},
                {"from": "decode", "to": "avg", "relation": "Success"},
                {"from": "avg", "to": "out", "relation": "Success"}
            ]
        }),
    );
    let chain = Arc::new(Loader::new(&runtime(), vec![modules().to_path_buf()]).load(&path).expect("loads"));
    let (pipeline, rx) = start_to_channel(&chain, PipelineConfig { workers: 2, queue: 4, ..Default::default() });
    let live = pipeline.live_stats();
    let metrics = Metrics::default();
    live.register(&metrics, "zones");
    let sink = std::thread::spawn(move || rx.into_iter().flat_map(SinkItem::into_msgs).count());

    let mut watermark = i64::MIN;
    for i in 0..600i64 {
        let ts = 1_000 * i;
        let msg = match i % 10 {
            // No `payload`: dropped on `False`.
            0 => TbMsg::telemetry(format!("d{}", i % 7), json!({"v": 1})),
            // Not JSON: the decoder fails, with no Failure connection.
            1 => TbMsg::telemetry(format!("d{}", i % 7), json!({"payload": "{not json"})),
            // Behind the watermark by a window and more: late.
            2 if i > 50 => TbMsg::telemetry(
                format!("d{}", i % 7),
                json!({"payload": json!({"deviceName": "late", "zone": "z1", "v": 5.0}).to_string()}),
            )
            .with_ts(ts - 30_000),
            _ => TbMsg::telemetry(
                format!("d{}", i % 7),
                json!({"payload": json!({"deviceName": format!("d{}", i % 7), "zone": format!("z{}", i % 3), "v": i as f64}).to_string()}),
            ),
        };
        let msg = if i % 10 == 2 && i > 50 { msg } else { msg.with_ts(ts) };
        watermark = watermark.max(msg.ts);
        let key = Envelope::key_of(&msg.originator.entity_type, &msg.originator.name);
        let envelope = Envelope::new(Arc::new(msg.into()), key, Ack::none()).with_watermark(watermark);
        pipeline.send_blocking(envelope).expect("the pipeline takes it");
    }
    let stats = pipeline.shutdown();
    let written = sink.join().expect("sink");

    // Every kind of count moved.
    let node = |id: &str| stats.node(id);
    assert_eq!(node("check").received, 600);
    assert!(node("check").dropped.get("False").is_some_and(|n| *n == 60), "{stats:?}");
    assert_eq!((node("decode").failures, node("decode").unhandled_failures), (60, 60));
    assert_eq!(node("decode").failure_kinds, [("error".to_string(), 60)].into(), "the decoder returned an error");
    assert!(node("avg").late > 0 && node("avg").windows_fired > 0, "{stats:?}");
    assert_eq!(stats.output as usize, written);

    // Stopped: the live view is the run's stats, and /metrics says the same, sample by sample.
    assert_eq!(live.snapshot(), stats);
    let text = metrics.render();
    assert_eq!(samples(&text), expected(&stats, "zones"));

    // Call latency, per node: every call of `check` counted once, in the +Inf bucket too; the
    // window node's windows are calls as well.
    let line = |sample: &str| text.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse::<f64>().ok());
    assert_eq!(line("sluice_node_call_seconds_count{chain=\"zones\",node=\"check\"}"), Some(600.0), "{text}");
    assert_eq!(line("sluice_node_call_seconds_bucket{chain=\"zones\",node=\"check\",le=\"+Inf\"}"), Some(600.0));
    assert!(text.contains("# TYPE sluice_node_call_seconds histogram"));
    let avg = node("avg");
    assert_eq!(
        line("sluice_node_call_seconds_count{chain=\"zones\",node=\"avg\"}"),
        Some((avg.received + avg.windows_fired + avg.timers_fired) as f64),
        "{text}"
    );
}

//! The contract every sink keeps (`sluice::sinks::Sink`), checked the same way for each, the sink
//! started only through the trait, as `sluice run` starts it:
//!
//! 1. its counters are on the metrics registry before it writes anything;
//! 2. each message's ack goes exactly once, and only when the message is written;
//! 3. a flush answers once every message acked before it can be read back where the sink
//!    writes (durable);
//! 4. when its last sender goes, [`sluice::sinks::Output::finish`] returns how many it wrote,
//!    and its counters say the same.
//!
//! The JSON-lines sink is held to it by the engine's tests (`tests/all/sinks.rs`), the Kafka
//! sink by the end-to-end tests, against a real broker.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sluice::core::{Ack, AckTarget, Metrics, SinkItem};
use sluice::sinks::{Sink, SinkContext};
use sluice_sdk::{Originator, TbMsg};

/// Messages each sink is sent.
pub const N: u64 = 50;

/// Remembers which messages were acked, and how often.
#[derive(Default)]
struct Acks(Mutex<Vec<u64>>);

impl AckTarget for Acks {
    fn ack(&self, position: u64) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(position);
    }
}

/// The value of `sample` (a metric's name and labels as rendered) on `metrics`.
pub fn sample(metrics: &Metrics, sample: &str) -> Option<f64> {
    metrics.render().lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// Message `i` of the contract run: from `Meter {i % 5}`, data `{"n": i}`.
pub fn message(i: u64) -> TbMsg {
    let mut msg = TbMsg::new(
        "POST_TELEMETRY_REQUEST",
        Originator::device(format!("Meter {}", i % 5)),
        serde_json::json!({"n": i}),
    );
    msg.ts = 1_700_000_000_000 + i as i64;
    msg
}

/// Holds `sink` to the contract. `read_back` returns the messages readable where it writes
/// (called after a flush, until it has them all or the patience runs out).
pub fn holds_to_the_contract(sink: Box<dyn Sink>, read_back: impl Fn() -> Vec<Value>) {
    let what = sink.describe();
    let metrics = Metrics::default();
    let output = sink
        .start(SinkContext { name: "output", append: false, metrics: metrics.clone() })
        .unwrap_or_else(|e| panic!("{what}: starts: {e}"));
    let written = "sluice_sink_written_total{sink=\"output\"}";

    // 1. Registered before anything is written.
    assert_eq!(sample(&metrics, written), Some(0.0), "{what}: {}", metrics.render());

    // 2. Each ack once, after the write.
    let acks = Arc::new(Acks::default());
    for i in 0..N {
        let ack = Ack::new(acks.clone(), i);
        output.tx.send(SinkItem::msg(Arc::new(message(i).into()), ack)).expect("the sink takes messages");
    }
    // 3. The flush makes them durable: every one acked, every one readable.
    sluice::sinks::jsonl::flush(&output.tx).unwrap_or_else(|e| panic!("{what}: flush: {e}"));
    let acked: Vec<u64> = acks.0.lock().unwrap().clone();
    let once: BTreeSet<u64> = acked.iter().copied().collect();
    assert_eq!((acked.len(), once.len()), (N as usize, N as usize), "{what}: each message acked once by the flush");
    let mut seen = Vec::new();
    crate::wait_until("every message readable where the sink writes", || {
        seen = read_back();
        seen.len() as u64 >= N
    });
    let ns: BTreeSet<u64> = seen.iter().filter_map(|m| m["data"]["n"].as_u64()).collect();
    assert_eq!(ns, (0..N).collect(), "{what}: every message written once, as its TbMsg JSON");
    assert_eq!(seen.len() as u64, N, "{what}: nothing twice");
    assert!(seen.iter().all(|m| m["originator"]["name"].as_str().is_some_and(|n| n.starts_with("Meter "))));

    // 4. Finished: the count, the same on its counters.
    let count = output.finish().unwrap_or_else(|e| panic!("{what}: finish: {e}"));
    assert_eq!(count, N, "{what}");
    assert_eq!(sample(&metrics, written), Some(N as f64), "{what}");
    assert!(sample(&metrics, "sluice_sink_flushes_total{sink=\"output\"}").is_some_and(|f| f >= 1.0), "{what}");
}

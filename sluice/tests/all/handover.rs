//! A partition's state moving between two instances, in one process and in a fixed order: the
//! Kafka source's hand-over (the leaving instance's share of the state, split out; the new
//! owner absorbing it inside `Feed::reassign`) without a broker, so the interleaving that made
//! `tests/e2e/kafka.rs` flaky happens every time: the new owner's other partitions have read far
//! ahead — their watermark is past every window — before the partition arrives mid-window.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice::flow::{Ack, Envelope, Pipeline, PipelineConfig, Sinks};
use sluice::host::Clock;
use sluice::sinks::jsonl::SinkItem;
use sluice::sources::Feed;
use sluice::state::StateStore;
use sluice::state::time::Watermarks;
use sluice_sdk::TbMsg;

use crate::support::{ChainDir, modules, runtime};

const WINDOW: i64 = 10_000;
/// Far past every window: a partition's last record, which closes them all.
const FAR: i64 = 10_000_000;

/// One instance: its pipeline, its source's feed, its state, and what its output received.
struct Instance {
    pipeline: Pipeline,
    feed: Feed,
    state: StateStore,
    collector: std::thread::JoinHandle<Vec<TbMsg>>,
}

impl Instance {
    fn start(chain: &Arc<sluice::chain::Chain>) -> Instance {
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let state = StateStore::default();
        // As the service runs: two workers, and no window closed for want of input at the end.
        let config = PipelineConfig { workers: 2, queue: 16, flush_at_end: false, ..Default::default() };
        let pipeline = Pipeline::start(
            runtime(),
            chain.clone(),
            state.clone(),
            Sinks { output: Some(tx), ..Default::default() },
            config,
        )
        .expect("pipeline");
        let feed = Feed::new(pipeline.sender(), chain, Watermarks::new(&chain.event_time), Clock::System);
        let collector = std::thread::spawn(move || {
            rx.into_iter().flat_map(SinkItem::into_msgs).map(|(bytes, _)| bytes.to_tb()).collect()
        });
        Instance { pipeline, feed, state, collector }
    }

    /// Feeds `records` read from `partition`, in order, and waits until the workers ran them.
    fn read(&self, partition: u32, records: &[TbMsg]) {
        for msg in records {
            self.feed.push_blocking(msg.clone(), partition, Ack::none()).expect("pipeline open");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.feed.progress().idle() {
            assert!(Instant::now() < deadline, "the workers never finished");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// What the output received (the instance stops; open windows stay unfired, as when a
    /// service leaves its group).
    fn stop(self) -> Vec<TbMsg> {
        drop(self.feed);
        self.pipeline.shutdown();
        self.collector.join().expect("collector")
    }
}

/// Readings of `devices` a quarter second apart from `from` to `until` (event time, ms), in
/// time order as a partition carries them; `v` a small integer.
fn readings(devices: &[String], from: i64, until: i64) -> Vec<TbMsg> {
    let mut out = Vec::new();
    for ts in (from..until).step_by(250) {
        for (d, device) in devices.iter().enumerate() {
            let v = (ts / 250 * 7 + d as i64 * 3) % 13;
            out.push(TbMsg::telemetry(device, json!({ "v": v })).with_ts(ts).with_id(format!("{device}@{ts}")));
        }
    }
    out
}

/// The worker of a pipeline of two that runs `device`'s messages (the router's rule: the hash
/// of the originator, modulo the workers).
fn worker_of(device: &str) -> u64 {
    Envelope::key_of("DEVICE", device) % 2
}

/// `n` device names whose messages run on `worker`, none of `taken`.
fn devices_on(worker: u64, n: usize, taken: &[String]) -> Vec<String> {
    (0..).map(|i| format!("dev-{i}")).filter(|d| worker_of(d) == worker && !taken.contains(d)).take(n).collect()
}

/// (device, window start) → (count, sum), by plain arithmetic over the readings.
fn expected(readings: &[TbMsg]) -> BTreeMap<(String, i64), (u64, f64)> {
    let mut windows = BTreeMap::new();
    for msg in readings {
        let e = windows.entry((msg.originator.name.clone(), msg.ts.div_euclid(WINDOW) * WINDOW)).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += msg.data["v"].as_f64().unwrap();
    }
    windows
}

/// A partition arrives mid-window at an instance whose other partition has already read past
/// that window: its open windows are not closed by that watermark — which never counted them —
/// but by the one its own records make, so each is emitted once, with every reading.
///
/// Before the fix, the first message on a worker that had not yet fired windows up to the
/// instance's watermark closed the arrived windows short of the partition's remaining records;
/// those then opened the same windows again, emitted later under the same ids with different
/// contents. The devices are placed on the workers so that this happens every time: the staying
/// partition's on worker 0, so worker 1 has fired nothing when the partition arrives.
#[test]
fn a_partition_arriving_behind_the_watermark_keeps_its_windows_open() {
    let dir = ChainDir::new();
    let chain = dir
        .load(
            "chain.json",
            &json!({
                "eventTime": {"from": "ts", "idleTimeoutMs": 3_600_000},
                "entry": "per-device",
                "nodes": [
                    {"id": "per-device", "module": "window-aggregate", "config": {
                        "key": "originator", "value": "data.v",
                        "window": {"type": "tumbling", "sizeMs": WINDOW},
                        "aggregates": ["count", "sum"], "resultType": "DEVICE_WINDOW"}},
                    {"id": "out", "sink": "output"}
                ],
                "connections": [{"from": "per-device", "to": "out", "relation": "Success"}]
            }),
        )
        .unwrap_or_else(|e| panic!("{e} (modules in {})", modules().display()));
    let chain = Arc::new(chain);
    let (moving, staying) = (4u32, 1u32);
    let staying_devices = devices_on(0, 2, &[]);
    let moving_devices = [devices_on(1, 1, &staying_devices), devices_on(0, 1, &staying_devices)].concat();
    let moving_head = readings(&moving_devices, 0, 25_000);
    let moving_tail = readings(&moving_devices, 25_000, 30_000);
    let staying_all = readings(&staying_devices, 0, 60_000);
    let closer =
        |p: u32| TbMsg::telemetry(format!("closer-{p}"), json!({"v": 0})).with_ts(FAR).with_id(format!("c{p}"));

    // Instance B reads partition 4 up to the middle of the window [20 s, 30 s), then leaves:
    // its share of the state is what the changelog carries (taken as the source's cut takes it:
    // nothing in flight, under the gate).
    let b = Instance::start(&chain);
    b.read(moving, &moving_head);
    let (share, max_seen) = {
        let _gate = b.feed.progress().gate();
        let mut parts = b.state.split(&BTreeSet::from([moving]));
        (parts.remove(&moving).expect("asked for"), b.feed.watermarks().max_seen(moving))
    };
    assert_eq!(max_seen, Some(24_750));
    assert!(!share.is_empty(), "the windows at 20 s are open");
    let from_b = b.stop();

    // Instance A has read partition 1 to 60 s, past the windows at 20 s, when partition 4
    // arrives; then the rest of partition 4 (from the offset of B's snapshot), and both end.
    let a = Instance::start(&chain);
    a.read(staying, &staying_all);
    a.feed.reassign(|| {
        a.state.absorb(moving, share).expect("absorb");
        a.feed.resume_partition(moving, max_seen);
    });
    a.read(moving, &moving_tail);
    a.read(moving, &[closer(moving)]);
    a.read(staying, &[closer(staying)]);
    let from_a = a.stop();

    let mut by_id: BTreeMap<String, &TbMsg> = BTreeMap::new();
    for msg in from_b.iter().chain(&from_a) {
        if let Some(seen) = by_id.insert(msg.id.clone(), msg) {
            assert_eq!(seen.data, msg.data, "a duplicate of {} differs", msg.id);
        }
    }
    let results: BTreeMap<(String, i64), (u64, f64)> = by_id
        .values()
        .filter(|m| !m.originator.name.starts_with("closer"))
        .map(|m| {
            let d = &m.data;
            (
                (m.originator.name.clone(), d["windowStart"].as_i64().unwrap()),
                (d["count"].as_u64().unwrap(), d["sum"].as_f64().unwrap()),
            )
        })
        .collect();
    let all: Vec<TbMsg> = [moving_head, moving_tail, staying_all].concat();
    assert_eq!(results, expected(&all));
}

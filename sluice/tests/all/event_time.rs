//! Event time per device: three devices whose clocks are minutes apart, one of them going silent
//! halfway, feed one site's 10 s windows through the sources' [`Feed`] on a hand-set clock.
//!
//! With `eventTime.per = "originator"` every reading counts — each device is judged by its own
//! readings, the silent one stops holding the windows back once idle — and the results equal a
//! batch computation over all the readings. With one watermark for all (`per = "partition"`,
//! the HTTP source's single partition), the device ahead makes the others' readings late.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::flow::{Ack, PipelineConfig};
use sluice::host::Clock;
use sluice::sinks::jsonl::SinkItem;
use sluice::sources::Feed;
use sluice::state::time::Watermarks;
use sluice_sdk::TbMsg;

use crate::support::{ChainDir, start_to_channel};

/// Wall-clock time at the start of the run.
const W0: i64 = 1_700_000_000_000;
const WINDOW: i64 = 10_000;
const IDLE: i64 = 5_000;
/// Steps of one second of wall-clock time; device C stops after [`SILENT_FROM`].
const STEPS: i64 = 120;
const SILENT_FROM: i64 = 60;

/// (name, how far its clock is from the wall clock).
const DEVICES: [(&str, i64); 3] = [("A", 0), ("B", 180_000), ("C", -240_000)];

fn chain(per: &str) -> Value {
    json!({
        "entry": "site",
        "eventTime": {"from": "ts", "latenessMs": 1_000, "idleTimeoutMs": IDLE, "per": per},
        "nodes": [
            {"id": "site", "module": "window-aggregate", "config": {
                "key": "data.site", "value": "data.v",
                "window": {"type": "tumbling", "sizeMs": WINDOW}, "graceMs": 0,
                "aggregates": ["count", "sum"], "late": "Late"}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "site", "to": "out", "relation": "Success"},
            {"from": "site", "to": "out", "relation": "Late"}
        ]
    })
}

/// Every reading, in the order the devices send them: each second, each device still on the
/// air sends two readings of its own clock, the second 500 ms older than the first (within the
/// chain's 1 s lateness).
fn readings() -> Vec<(i64, TbMsg)> {
    let mut out = Vec::new();
    for step in 0..STEPS {
        let wall = W0 + step * 1_000;
        for (i, (name, offset)) in DEVICES.iter().enumerate() {
            if *name == "C" && step >= SILENT_FROM {
                continue;
            }
            for late_by in [0, 500] {
                let ts = wall + offset + 700 - late_by;
                let v = (step * 7 + i as i64 * 3 + late_by / 500) % 50;
                out.push((wall, TbMsg::telemetry(*name, json!({"site": "S", "v": v})).with_ts(ts)));
            }
        }
    }
    out
}

/// The batch reference: (count, sum) per window start, from every reading.
fn reference(readings: &[(i64, TbMsg)]) -> BTreeMap<i64, (u64, i64)> {
    let mut windows = BTreeMap::new();
    for (_, msg) in readings {
        let start = msg.ts.div_euclid(WINDOW) * WINDOW;
        let entry = windows.entry(start).or_insert((0u64, 0i64));
        entry.0 += 1;
        entry.1 += msg.data["v"].as_i64().unwrap();
    }
    windows
}

/// What the chain wrote: window results by start, and late readings.
#[derive(Debug, Default)]
struct Written {
    windows: BTreeMap<i64, (u64, i64)>,
    late: u64,
}

fn written(out: &Mutex<Vec<TbMsg>>) -> Written {
    let mut w = Written::default();
    for msg in out.lock().unwrap().iter() {
        if msg.msg_type == "POST_TELEMETRY_REQUEST" {
            w.late += 1;
            continue;
        }
        let start = msg.data["windowStart"].as_i64().unwrap();
        let sum = msg.data["sum"].as_f64().unwrap();
        assert_eq!(sum.fract(), 0.0, "{msg:?}");
        let previous = w.windows.insert(start, (msg.data["count"].as_u64().unwrap(), sum as i64));
        assert!(previous.is_none(), "window {start} emitted twice");
    }
    w
}

/// Runs every reading through a feed with a hand-set clock. Before the end: lets the clock run
/// past the idle timeout with every device silent and (`wait_for_freed`) waits for the windows
/// that frees. Returns
/// what was written then, and after the end of input (every window flushed).
fn run(per: &str, wait_for_freed: bool) -> (Written, Written) {
    let dir = ChainDir::new();
    let chain = Arc::new(dir.load("chain.json", &chain(per)).expect("chain loads"));
    let now = Arc::new(AtomicI64::new(W0));
    let clock = Clock::Manual(now.clone());
    let config = PipelineConfig {
        workers: 2,
        queue: 16,
        clock: clock.clone(),
        flush_at_end: true,
        tick: Duration::from_millis(10),
    };
    let (pipeline, rx) = start_to_channel(&chain, config);
    let out = Arc::new(Mutex::new(Vec::new()));
    let collector = {
        let out = out.clone();
        std::thread::spawn(move || {
            for (bytes, _ack) in rx.into_iter().flat_map(SinkItem::into_msgs) {
                out.lock().unwrap().push(bytes.to_tb());
            }
        })
    };
    let feed = Feed::new(pipeline.sender(), &chain, Watermarks::new(&chain.event_time), clock);
    let readings = readings();
    for (wall, msg) in &readings {
        now.store(*wall, Ordering::SeqCst);
        feed.push_blocking(msg.clone(), 0, Ack::none()).expect("the pipeline takes it");
    }

    // Every device silent past the idle timeout: nobody holds the watermark back, and it moves
    // to the furthest a device got — with no message, through the feed's idle check.
    let last_b = readings.iter().filter(|(_, m)| m.originator.name == "B").map(|(_, m)| m.ts).max().unwrap();
    now.store(W0 + STEPS * 1_000 + IDLE + 1_000, Ordering::SeqCst);
    let freed = reference(&readings).into_keys().filter(|start| start + WINDOW <= last_b - 1_000).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while wait_for_freed && written(&out).windows.len() < freed && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before_end = written(&out);

    drop(feed);
    pipeline.shutdown();
    collector.join().expect("collector");
    (before_end, written(&out))
}

#[test]
fn per_originator_three_skewed_devices_one_silent_equal_the_batch_reference() {
    let expected = reference(&readings());
    let (before_end, at_end) = run("originator", true);
    assert_eq!(at_end.late, 0, "no reading is late by its own device's clock");
    assert_eq!(at_end.windows, expected, "every window as the batch computation has it");
    // Device B is 3 minutes ahead and last spoke at its 11:57: with every device idle, every
    // window up to B's watermark closed before the end of input.
    let last_b = readings().iter().filter(|(_, m)| m.originator.name == "B").map(|(_, m)| m.ts).max().unwrap();
    let closed: BTreeMap<i64, (u64, i64)> =
        expected.iter().filter(|(start, _)| *start + WINDOW <= last_b - 1_000).map(|(k, v)| (*k, *v)).collect();
    assert_eq!(closed.len(), expected.len() - 1, "all but B's last window");
    assert_eq!(before_end.windows, closed, "silent devices hold no window open");
}

#[test]
fn one_watermark_for_all_makes_the_devices_behind_late() {
    let expected = reference(&readings());
    let (_, at_end) = run("partition", false);
    // B's readings, three minutes ahead, set the one watermark: A's and C's are behind it.
    assert!(at_end.late > 200, "late: {}", at_end.late);
    assert_ne!(at_end.windows, expected);
}

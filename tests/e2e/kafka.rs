//! Sluice against a real Kafka-protocol broker (tansu): `sluice run --config sluice.toml` as a
//! separate process, killed, restarted, doubled, and cut off from its broker. Expected results
//! are computed here from the generated input with plain arithmetic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{modules, repo, sluice_bin};
use crate::tansu::{Relay, Tansu, free_port};

const T0: i64 = 1_700_000_000_000;
const WINDOW: i64 = 10_000;

/// A `sluice run --config` process; killed (SIGKILL) on drop unless stopped.
pub(crate) struct Service {
    child: Child,
    log: PathBuf,
}

impl Service {
    pub(crate) fn start(dir: &Path, chain: &Path, config: &Path, state: &str) -> Service {
        let log = dir.join(format!("sluice-{}.log", free_port()));
        let child = Command::new(sluice_bin())
            .args(["run", "--chain", chain.to_str().unwrap(), "--config", config.to_str().unwrap()])
            .args(["--state-dir", dir.join(state).to_str().unwrap(), "--workers", "2"])
            .args(["--stats", dir.join(format!("{state}-stats.json")).to_str().unwrap()])
            .env("SLUICE_MODULES", modules())
            .env("SLUICE_CACHE_DIR", repo().join("target").join("sluice-module-cache"))
            // `SLUICE_TEST_LOG` sets the services' log filter when a failure needs more than info.
            .env("RUST_LOG", std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sluice");
        Service { child, log }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log shows `needle` (e.g. an assignment).
    pub(crate) fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            assert!(Instant::now() < deadline, "no `{needle}` in the log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM; panics unless the service exits 0, with its exit status and whole log (its
    /// shutdown included). Returns the log.
    pub(crate) fn stop_ok(self) -> String {
        let path = self.log.clone();
        let status = self.stop();
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(status.success(), "the service did not stop cleanly: {status}\n{log}");
        log
    }

    /// SIGTERM; the exit status and the whole log.
    pub(crate) fn stop_with_log(self) -> (std::process::ExitStatus, String) {
        let path = self.log.clone();
        let status = self.stop();
        (status, std::fs::read_to_string(&path).unwrap_or_default())
    }

    /// SIGTERM, and the exit status.
    pub(crate) fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Count and sum of `v` per device and 10 s tumbling window, into a Kafka topic.
fn window_chain(dir: &Path) -> PathBuf {
    // Watermarks advance only with events (no idle timeout within a test): the results are the
    // same whatever the timing, the kill or the outage.
    let chain = json!({
        "eventTime": {"from": "ts", "idleTimeoutMs": 3_600_000},
        "entry": "per-device",
        "nodes": [
            {"id": "per-device", "module": "window-aggregate", "config": {
                "key": "originator", "value": "data.v", "window": {"type": "tumbling", "sizeMs": WINDOW},
                "aggregates": ["count", "sum"], "resultType": "DEVICE_WINDOW"}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [{"from": "per-device", "to": "out", "relation": "Success"}]
    });
    write(dir, "windows.json", &chain.to_string())
}

/// A `sluice.toml`: `readings`-style input topic, output topic, 200 ms checkpoints; `source_extra`
/// goes into `[source]`, `extra` at the end.
fn config(
    dir: &Path,
    brokers: &str,
    group: &str,
    input: &str,
    output: &str,
    source_extra: &str,
    extra: &str,
) -> PathBuf {
    // Top-level keys of `extra` (before its first section) must precede every section.
    let split = extra.find("\n[").map_or(0, |i| i + 1);
    let (top, extra) = if extra.starts_with('[') { ("", extra) } else { extra.split_at(split) };
    write(
        dir,
        &format!("sluice-{}.toml", free_port()),
        &format!(
            r#"{top}
[source]
type = "kafka"
brokers = "{brokers}"
group = "{group}"
topics = ["{input}"]
properties = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}
{source_extra}

[output]
type = "kafka"
brokers = "{brokers}"
topic = "{output}"

[state]
checkpointMs = 200
{extra}
"#
        ),
    )
}

/// `devices × per_device` readings a quarter second apart; `v` a small integer. Device `d` is
/// on partition `d % 6`, so every partition carries readings and moves the watermark.
fn readings(devices: usize, per_device: usize) -> Vec<(Option<i32>, String, String, i64)> {
    let mut out = Vec::new();
    for i in 0..per_device {
        for d in 0..devices {
            let ts = T0 + i as i64 * 250;
            let v = ((i * 7 + d * 3) % 13) as i64;
            let device = format!("dev-{d}");
            let partition = Some((d % 6) as i32);
            out.push((partition, device.clone(), json!({"deviceName": device, "ts": ts, "v": v}).to_string(), ts));
        }
    }
    out
}

/// One record per partition far ahead in event time: every partition's watermark passes every
/// window of the readings, so they all close.
fn closers(partitions: i32) -> Vec<(Option<i32>, String, String, i64)> {
    let ts = T0 + 10_000_000;
    (0..partitions)
        .map(|p| {
            let device = format!("closer-{p}");
            (Some(p), device.clone(), json!({"deviceName": device, "ts": ts, "v": 0}).to_string(), ts)
        })
        .collect()
}

/// (device, window start) → (count, sum), computed from the readings.
fn expected_windows(readings: &[(Option<i32>, String, String, i64)]) -> BTreeMap<(String, i64), (u64, f64)> {
    let mut windows = BTreeMap::new();
    for (_, device, value, ts) in readings {
        let v: Value = serde_json::from_str(value).unwrap();
        let e = windows.entry((device.clone(), ts.div_euclid(WINDOW) * WINDOW)).or_insert((0u64, 0f64));
        e.0 += 1;
        e.1 += v["v"].as_f64().unwrap();
    }
    windows
}

/// Window results by (device, start), checking that duplicates (at-least-once) are identical.
fn results_of(values: &[Value]) -> BTreeMap<(String, i64), (u64, f64)> {
    let mut by_id: BTreeMap<String, &Value> = BTreeMap::new();
    for v in values {
        let id = v["id"].as_str().expect("every result has an id").to_string();
        if let Some(seen) = by_id.insert(id.clone(), v) {
            assert_eq!(seen["data"], v["data"], "a duplicate of {id} differs");
        }
    }
    by_id
        .values()
        .filter(|v| !v["originator"]["name"].as_str().unwrap().starts_with("closer"))
        .map(|v| {
            let d = &v["data"];
            (
                (v["originator"]["name"].as_str().unwrap().to_string(), d["windowStart"].as_i64().unwrap()),
                (d["count"].as_u64().unwrap(), d["sum"].as_f64().unwrap()),
            )
        })
        .collect()
}

fn complete(expected: &BTreeMap<(String, i64), (u64, f64)>) -> impl FnMut(&[Value]) -> bool + '_ {
    move |values| {
        let ids: BTreeSet<&str> = values
            .iter()
            .filter(|v| !v["originator"]["name"].as_str().unwrap_or("closer").starts_with("closer"))
            .filter_map(|v| v["id"].as_str())
            .collect();
        ids.len() >= expected.len()
    }
}

#[test]
fn solar_modules_from_kafka_raw_uplinks_to_the_anomalies_topic() {
    // ThingsBoard's solar sample: three modules, powers 5, 5 and 3.5, one uplink a second for a
    // minute. Per 10 s window the module sums are 50, 50, 35: mean 45, population deviation
    // sqrt((25 + 25 + 100) / 3); module 3 scores 10 / 7.071 = 1.414 > 1, the others 0.707.
    let broker = Tansu::start();
    broker.create_topic("solar-module-raw", 3);
    broker.create_topic("solar-module-anomalies", 1);
    // The chain's telemetry goes to the output: a topic that exists (a produce to an unknown
    // topic waits out its delivery timeout).
    broker.create_topic("solar-output", 1);
    let dir = tempfile::tempdir().unwrap();
    let mut chain: Value =
        serde_json::from_slice(&std::fs::read(repo().join("chains/solar-anomaly.json")).unwrap()).unwrap();
    chain["nodes"].as_array_mut().unwrap().retain(|n| n["module"] != "generator");
    chain["connections"].as_array_mut().unwrap().retain(|c| !c["from"].as_str().unwrap().ends_with("-simulator"));
    chain.as_object_mut().unwrap().remove("$schema");
    let chain = write(dir.path(), "solar.json", &chain.to_string());
    // The chain's `kafka` connector (a file in the shipped chain) becomes the real broker.
    // Raw uplinks enter at the decoder (decoded telemetry enters the shipped chain further on).
    let admin = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        "entry = \"decode\"\n[admin]\nlisten = \"{admin}\"\n[connectors.kafka]\ntype = \"kafka\"\nbrokers = \"{}\"\n",
        broker.brokers
    );
    let config =
        config(dir.path(), &broker.brokers, "solar", "solar-module-raw", "solar-output", "format = \"raw\"", &extra);

    let mut records = Vec::new();
    for i in 0..60 {
        let ts = T0 + i * 1000;
        for (m, power) in [(1, 5.0), (2, 5.0), (3, 3.5)] {
            let payload = json!({"name": format!("Module {m}"), "panel": "Panel 1", "power": power});
            records.push((None, format!("Module {m} Simulator"), payload.to_string(), ts));
        }
    }
    let far = T0 + 3_600_000;
    for p in 0..3 {
        let payload = json!({"name": format!("Closer {p}"), "panel": format!("Closer panel {p}"), "power": 1.0});
        records.push((Some(p), format!("Closer {p}"), payload.to_string(), far));
    }
    broker.produce("solar-module-raw", &records);

    let service = Service::start(dir.path(), &chain, &config, "state");
    let windows: BTreeSet<i64> = (0..60).map(|i| (T0 + i * 1000).div_euclid(WINDOW) * WINDOW).collect();
    let anomalies = broker.read_until("solar-module-anomalies", Duration::from_secs(90), |v| v.len() >= windows.len());
    // Everything read and committed: librdkafka's statistics show each of the 3 partitions
    // with a consumer lag of 0.
    let lag = |m: &BTreeMap<String, f64>| -> Vec<f64> {
        (0..3)
            .filter_map(|p| {
                m.get(&format!("sluice_kafka_consumer_lag{{topic=\"solar-module-raw\",partition=\"{p}\"}}")).copied()
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = crate::support::metrics(&admin);
        if lag(&m) == [0.0, 0.0, 0.0] {
            break;
        }
        assert!(Instant::now() < deadline, "consumer lag not 0 on the 3 partitions: {:?}\n{}", lag(&m), service.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = service.stop_ok();
    assert_eq!(anomalies.len(), windows.len(), "one anomaly per window: {anomalies:?}\n{log}");
    let mut starts = BTreeSet::new();
    for a in &anomalies {
        assert_eq!(a["member"], "Module 3", "{a}");
        assert_eq!(a["group"], "Panel 1");
        assert!((a["z"].as_f64().unwrap() - 2f64.sqrt()).abs() < 1e-9, "{a}");
        starts.insert(a["windowStart"].as_i64().unwrap());
    }
    assert_eq!(starts, windows);
}

#[test]
fn kill_9_mid_stream_then_restart_loses_no_window() {
    let broker = Tansu::start();
    broker.create_topic("readings", 6);
    broker.create_topic("windows", 1);
    let dir = tempfile::tempdir().unwrap();
    let chain = window_chain(dir.path());
    let config = config(dir.path(), &broker.brokers, "crash", "readings", "windows", "", "");
    let input = readings(12, 2_000);
    let expected = expected_windows(&input);

    // Input arrives while the first instance runs; it is killed part-way.
    let first = Service::start(dir.path(), &chain, &config, "state");
    let (head, tail) = input.split_at(input.len() / 2);
    broker.produce("readings", head);
    let seen = broker.read_until("windows", Duration::from_secs(60), |v| v.len() >= 20);
    assert!(seen.len() >= 20, "the first instance produced results before the kill:\n{}", first.log());
    let first_log = first.log();
    first.kill9();
    // tansu 0.6 mishandles a member joining while a dead one is still in the group: when the
    // dead leader's session expires mid-join it hands the newcomer an empty assignment and
    // never rebalances again (its log: "missed heartbeat for leader …", and Sluice's:
    // "partitions assigned partitions=[]"). Apache Kafka evicts the dead member and assigns
    // everything to the newcomer. So the restart waits out the session timeout (6 s): the
    // join then finds the dead member already expired.
    let killed = Instant::now();

    broker.produce("readings", tail);
    broker.produce("readings", &closers(6));
    std::thread::sleep(Duration::from_secs(7).saturating_sub(killed.elapsed()));
    let second = Service::start(dir.path(), &chain, &config, "state");
    let values = broker.read_until("windows", Duration::from_secs(300), complete(&expected));
    let log = second.log();
    assert!(second.stop().success(), "{log}");
    assert!(log.contains("restored the last checkpoint"), "{log}");
    let results = results_of(&values);
    let missing: Vec<_> = expected.keys().filter(|k| !results.contains_key(*k)).take(5).collect();
    assert!(
        missing.is_empty(),
        "missing windows, e.g. {missing:?}\n--- first instance:\n{first_log}\n--- second:\n{log}"
    );
    assert_eq!(results, expected);
}

#[test]
fn two_instances_in_one_group_split_the_partitions_and_agree_with_one() {
    let broker = Tansu::start();
    broker.create_topic("readings", 6);
    broker.create_topic("windows", 1);
    let dir = tempfile::tempdir().unwrap();
    let chain = window_chain(dir.path());
    let config = config(dir.path(), &broker.brokers, "scale", "readings", "windows", "", "");
    let a = Service::start(dir.path(), &chain, &config, "state-a");
    a.wait_for_log("partitions assigned", Duration::from_secs(60));
    let b = Service::start(dir.path(), &chain, &config, "state-b");
    b.wait_for_log("partitions assigned", Duration::from_secs(60));
    // Both are members once each has an assignment after the second joined.
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.log().matches("partitions assigned").count() < 2 {
        assert!(Instant::now() < deadline, "no second assignment for the first instance:\n{}", a.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    let input = readings(12, 800);
    let expected = expected_windows(&input);
    broker.produce("readings", &input);
    broker.produce("readings", &closers(6));
    let values = broker.read_until("windows", Duration::from_secs(300), complete(&expected));
    let (log_a, log_b) = (a.log(), b.log());
    assert!(a.stop().success(), "{log_a}");
    assert!(b.stop().success(), "{log_b}");
    assert_eq!(results_of(&values), expected, "instance logs:\n{log_a}\n---\n{log_b}");
    // Each instance really did part of the work.
    for log in [&log_a, &log_b] {
        let last = log.lines().rev().find(|l| l.contains("partitions assigned")).unwrap();
        assert!(last.matches("readings/").count() == 3, "3 of 6 partitions each: {last}");
    }
}

/// Partitions move twice while their windows are open — to a second instance joining, and back
/// when it leaves — and every window still counts every reading: each partition's state goes
/// with it through the changelog.
#[test]
fn partitions_moving_mid_window_take_their_state_along() {
    let broker = Tansu::start();
    broker.create_topic("readings", 6);
    broker.create_topic("windows", 1);
    let dir = tempfile::tempdir().unwrap();
    let chain = window_chain(dir.path());
    let config = config(dir.path(), &broker.brokers, "handover", "readings", "windows", "", "");
    let per_device = 1_200;
    let input = readings(12, per_device);
    let expected = expected_windows(&input);
    // Cut inside windows: reading 410 of a device is at 102.5 s, 820 at 205 s.
    let (head, rest) = input.split_at(410 * 12);
    let (middle, tail) = rest.split_at(410 * 12);

    let a = Service::start(dir.path(), &chain, &config, "state-a");
    a.wait_for_log("partitions assigned", Duration::from_secs(60));
    broker.produce("readings", head);
    // Every window before 100 s closed on the first instance: 12 devices × 10 windows. The
    // windows at [100 s, 110 s) are open, a quarter full.
    let seen = broker.read_until("windows", Duration::from_secs(120), |v| v.len() >= 120);
    assert!(seen.len() >= 120, "the first instance closed the first windows:\n{}", a.log());

    let b = Service::start(dir.path(), &chain, &config, "state-b");
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.log().matches("partitions assigned").count() < 2 || !b.log().contains("partitions assigned") {
        assert!(Instant::now() < deadline, "no rebalance:\n{}\n---\n{}", a.log(), b.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    broker.produce("readings", middle);
    let seen = broker.read_until("windows", Duration::from_secs(120), |v| v.len() >= 240);
    assert!(seen.len() >= 240, "both instances closed windows up to 200 s:\n{}\n---\n{}", a.log(), b.log());

    // The second instance leaves: its partitions go back, with the windows at [200 s, 210 s).
    let log_b = b.log();
    assert!(b.stop().success(), "{log_b}");
    broker.produce("readings", tail);
    broker.produce("readings", &closers(6));
    let values = broker.read_until("windows", Duration::from_secs(300), complete(&expected));
    let log_a = a.log();
    assert!(a.stop().success(), "{log_a}");
    let results = results_of(&values);
    let wrong: Vec<_> = expected.iter().filter(|(k, v)| results.get(*k) != Some(*v)).take(5).collect();
    assert!(wrong.is_empty(), "windows differ, e.g. {wrong:?}\n--- a:\n{log_a}\n--- b:\n{log_b}");
    assert_eq!(results, expected);
    // Both directions went through the changelog: three partitions to the newcomer, and back.
    assert_eq!(log_b.matches("state restored from the changelog").count(), 3, "{log_b}");
    assert!(log_a.matches("state restored from the changelog").count() >= 3, "{log_a}");
}

/// The interleaving that once made the test above fail, forced: the instance that stays has read
/// its own partitions to the end — its watermark past every window — before the partitions of
/// the one leaving arrive, mid-window. Their windows wait for their own records instead of
/// closing, short of them, by a watermark that never counted them (which emitted each such
/// window twice: "a duplicate of per-device/aggregate/dev-10/1700000200000:0 differs").
#[test]
fn partitions_arriving_behind_the_watermark_keep_their_windows_open() {
    let broker = Tansu::start();
    broker.create_topic("readings", 6);
    broker.create_topic("windows", 1);
    let dir = tempfile::tempdir().unwrap();
    let chain = window_chain(dir.path());
    let config = config(dir.path(), &broker.brokers, "behind", "readings", "windows", "", "");
    let input = readings(12, 800);
    let expected = expected_windows(&input);
    // Reading 410 of a device is at 102.5 s: the windows at [100 s, 110 s) are open at the move.
    let (head, tail) = input.split_at(410 * 12);

    let a = Service::start(dir.path(), &chain, &config, "state-a");
    a.wait_for_log("partitions assigned", Duration::from_secs(60));
    let b = Service::start(dir.path(), &chain, &config, "state-b");
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.log().matches("partitions assigned").count() < 2 || !b.log().contains("partitions assigned") {
        assert!(Instant::now() < deadline, "no rebalance:\n{}\n---\n{}", a.log(), b.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let mine = last_assignment(&a.log());
    assert_eq!(mine.len(), 3, "3 of 6 partitions each:\n{}", a.log());
    broker.produce("readings", head);
    broker.read_until("windows", Duration::from_secs(120), |v| v.len() >= 120);

    // The first instance reads its partitions to their end and closes every window of theirs.
    let on = |p: &Option<i32>, set: &BTreeSet<i32>| set.contains(&p.unwrap());
    let (own, moving): (Vec<_>, Vec<_>) = tail.iter().cloned().partition(|r| on(&r.0, &mine));
    broker.produce("readings", &own);
    broker.produce("readings", &closers(6).into_iter().filter(|r| on(&r.0, &mine)).collect::<Vec<_>>());
    let own_windows: BTreeSet<(String, i64)> =
        expected.keys().filter(|(d, _)| mine.contains(&(d[4..].parse::<i32>().unwrap() % 6))).cloned().collect();
    let closed = |v: &[Value]| -> BTreeSet<(String, i64)> {
        v.iter()
            .filter_map(|r| Some((r["originator"]["name"].as_str()?.to_string(), r["data"]["windowStart"].as_i64()?)))
            .collect()
    };
    let seen = broker.read_until("windows", Duration::from_secs(120), |v| own_windows.is_subset(&closed(v)));
    assert!(own_windows.is_subset(&closed(&seen)), "the first instance closed its windows:\n{}", a.log());

    // Now the second leaves: its partitions arrive at the first with windows open at 100 s.
    let log_b = b.log();
    assert!(b.stop().success(), "{log_b}");
    broker.produce("readings", &moving);
    broker.produce("readings", &closers(6).into_iter().filter(|r| !on(&r.0, &mine)).collect::<Vec<_>>());
    let values = broker.read_until("windows", Duration::from_secs(300), complete(&expected));
    let log_a = a.log();
    assert!(a.stop().success(), "{log_a}");
    let results = results_of(&values);
    let wrong: Vec<_> = expected.iter().filter(|(k, v)| results.get(*k) != Some(*v)).take(5).collect();
    assert!(wrong.is_empty(), "windows differ, e.g. {wrong:?}\n--- a:\n{log_a}\n--- b:\n{log_b}");
    assert_eq!(results, expected);
    assert_eq!(log_a.matches("state restored from the changelog").count(), 3, "{log_a}");
}

/// The partition numbers of the last assignment an instance logged.
fn last_assignment(log: &str) -> BTreeSet<i32> {
    let line = log.lines().rev().find(|l| l.contains("partitions assigned")).unwrap_or_default();
    line.split("readings/")
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

/// The changelog on a real broker: a snapshot larger than a record goes out in chunks and comes
/// back whole, the newest snapshot is the one read, and an unchanged one is not written again.
#[test]
fn changelog_snapshots_round_trip_through_the_broker() {
    use base64::Engine as _;
    use sluice::sources::kafka::changelog::{CHUNK, Changelog};
    use sluice::state::partition::PartitionState;

    let broker = Tansu::start();
    broker.create_topic("readings", 2);
    let spec =
        serde_json::from_value(json!({"brokers": broker.brokers, "group": "cl", "topics": ["readings"]})).unwrap();
    let changelog = Changelog::new(&spec).unwrap();
    assert_eq!(changelog.latest("readings", 1).unwrap().map(|(_, head)| head.offset), None, "nothing yet");

    // 24 values of 100 KB: about 3.2 MB of JSON, several records.
    let b64 = base64::engine::general_purpose::STANDARD;
    let big = PartitionState {
        kv: BTreeMap::from([(
            "counter".to_string(),
            (0..24u8).map(|i| (b64.encode([i]), b64.encode(vec![i; 100_000]))).collect(),
        )]),
        ..Default::default()
    };
    assert!(serde_json::to_vec(&big).unwrap().len() > 5 * CHUNK);
    assert!(changelog.write("readings", 1, 500, Some(T0), &big).unwrap());
    assert!(!changelog.write("readings", 1, 500, Some(T0), &big).unwrap(), "unchanged: not written again");
    let back = changelog.read("readings", 1).unwrap().expect("a snapshot");
    assert_eq!((back.offset, back.max_event_time), (500, Some(T0)));
    assert_eq!(back.state, big);

    let small = PartitionState {
        tables: BTreeMap::from([("registry".into(), BTreeMap::from([("dev-1".into(), json!({"zone": "A"}))]))]),
        ..Default::default()
    };
    assert!(changelog.write("readings", 1, 600, None, &small).unwrap());
    let back = changelog.read("readings", 1).unwrap().expect("a snapshot");
    assert_eq!((back.offset, back.state), (600, small), "the newest snapshot is read");
    assert!(changelog.read("readings", 0).unwrap().is_none(), "partition 0 has none");
}

#[test]
fn broker_outage_mid_run_loses_nothing() {
    // The broker stays up (its storage is in memory) but becomes unreachable: every connection
    // through the relay Sluice uses is cut and new ones refused for a few seconds.
    let (broker_port, relay_port) = (free_port(), free_port());
    let relay = Relay::start(relay_port, broker_port);
    let broker = Tansu::start_on(broker_port, relay_port);
    broker.create_topic("readings", 6);
    broker.create_topic("windows", 1);
    let dir = tempfile::tempdir().unwrap();
    let chain = window_chain(dir.path());
    let config = config(dir.path(), &broker.brokers, "outage", "readings", "windows", "", "");
    let input = readings(12, 1_200);
    let expected = expected_windows(&input);
    let service = Service::start(dir.path(), &chain, &config, "state");
    let (head, tail) = input.split_at(input.len() / 3);
    broker.produce("readings", head);
    broker.read_until("windows", Duration::from_secs(60), |v| !v.is_empty());
    relay.cut();
    std::thread::sleep(Duration::from_secs(4));
    relay.heal();
    broker.produce("readings", tail);
    broker.produce("readings", &closers(6));
    let values = broker.read_until("windows", Duration::from_secs(300), complete(&expected));
    let log = service.stop_ok();
    assert_eq!(results_of(&values), expected, "{log}");
}

#[test]
fn the_kafka_sink_holds_to_the_sink_contract() {
    let broker = Tansu::start();
    broker.create_topic("contract-out", 2);
    let connection = sluice::config::KafkaConnection {
        brokers: broker.brokers.clone(),
        properties: Default::default(),
        await_delivery: false,
    };
    let sink = sluice::sinks::KafkaSink::new(connection, "contract-out".into());
    sluice_testkit::sinks::holds_to_the_contract(Box::new(sink), || {
        broker.read_until("contract-out", Duration::from_secs(10), |v| v.len() as u64 >= sluice_testkit::sinks::N)
    });
}

//! Real device traffic over MQTT (mosquitto), through `sluice run --config`:
//!
//! - devices whose clocks are minutes apart, each on its own topic: every topic has a watermark
//!   of its own, so none of their readings is late with `latenessMs` 0 — with one watermark for
//!   the source, the device behind had every reading late;
//! - ThingsBoard devices as they are: access token as MQTT user name, `v1/devices/me/telemetry`,
//!   resolved through the token file the HTTP source uses (the broker runs Sluice's plugin).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rumqttc::{Client, MqttOptions, QoS};
use serde_json::{Value, json};

use crate::brokers::Mosquitto;
use crate::kafka::{Service, write};

/// Waits until the service says it subscribed.
fn wait_subscribed(service: &Service) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !service.log().contains("MQTT source subscribed") {
        assert!(Instant::now() < deadline, "the MQTT source did not subscribe:\n{}", service.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A device's MQTT client (its event loop pumped by a thread until it disconnects).
fn device(port: u16, id: &str, username: Option<&str>) -> (Client, std::thread::JoinHandle<()>) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    if let Some(user) = username {
        options.set_credentials(user, "");
    }
    let (client, mut connection) = Client::new(options, 100);
    let pump = std::thread::spawn(move || for _ in connection.iter().take_while(Result::is_ok) {});
    (client, pump)
}

/// The messages in `out.jsonl` so far.
fn output(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("out.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).expect("an output line is JSON")).collect()
}

fn wait_for_output(dir: &Path, service: &Service, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = output(dir);
        if done(&out) {
            return out;
        }
        assert!(Instant::now() < deadline, "{what}: not after 60 s: {out:?}\n{}", service.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

const T0: i64 = 1_700_000_000_000;
const WINDOW: i64 = 10_000;

#[test]
fn devices_on_their_own_topics_need_no_lateness_for_skewed_clocks() {
    let mosquitto = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let chain = json!({
        "entry": "site",
        "eventTime": {"from": "ts", "latenessMs": 0, "idleTimeoutMs": 3_000},
        "nodes": [
            {"id": "site", "module": "window-aggregate", "config": {
                "key": "data.site", "value": "data.v", "window": {"type": "tumbling", "sizeMs": WINDOW},
                "aggregates": ["count", "sum"], "late": "Late"}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "site", "to": "out", "relation": "Success"},
            {"from": "site", "to": "out", "relation": "Late"}
        ]
    });
    let chain = write(dir.path(), "chain.json", &chain.to_string());
    let config = write(
        dir.path(),
        "sluice.toml",
        &format!(
            "[source]\ntype = \"mqtt\"\nurl = \"{}\"\n\n[output]\ntype = \"file\"\npath = \"out.jsonl\"\n",
            mosquitto.url()
        ),
    );
    let service = Service::start(dir.path(), &chain, &config, "state");
    wait_subscribed(&service);

    // Device A's clock is 3 minutes ahead of device B's. Each round, A sends 5 readings, then B
    // sends 5 — B's always minutes older than what A sent just before. 12 rounds, half a second
    // apart: both stay on the air (idle after 3 s) past the 3 s warm-up.
    let (client, pump) = device(mosquitto.port, "devices", None);
    let mut readings: Vec<(&str, i64, i64)> = Vec::new();
    for round in 0..12i64 {
        for (name, offset) in [("A", 180_000), ("B", 0)] {
            for i in 0..5 {
                let ts = T0 + offset + round * 5_000 + i * 1_000;
                let v = (round * 11 + i * 3 + offset / 60_000) % 40;
                let point = json!({"ts": ts, "values": {"site": "S", "v": v}});
                client
                    .publish(format!("v1/devices/{name}/telemetry"), QoS::AtLeastOnce, false, point.to_string())
                    .unwrap();
                readings.push((name, ts, v));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // The reference: count and sum per 10 s window over every reading. Once both devices are
    // silent (idle), the watermark is A's last reading: every window that ends by then closes.
    let a_last = readings.iter().filter(|r| r.0 == "A").map(|r| r.1).max().unwrap();
    let mut expected: BTreeMap<i64, (u64, i64)> = BTreeMap::new();
    for (_, ts, v) in &readings {
        let w = expected.entry(ts.div_euclid(WINDOW) * WINDOW).or_default();
        w.0 += 1;
        w.1 += v;
    }
    expected.retain(|start, _| start + WINDOW <= a_last);
    let out = wait_for_output(dir.path(), &service, "every window up to A's last reading", |out| {
        out.iter().filter(|m| m["type"] == "WINDOW_AGGREGATE").count() >= expected.len()
    });
    let late: Vec<&Value> = out.iter().filter(|m| m["type"] == "POST_TELEMETRY_REQUEST").collect();
    assert!(late.is_empty(), "{} late readings, e.g. {:?}", late.len(), late.first());
    let got: BTreeMap<i64, (u64, i64)> = out
        .iter()
        .filter(|m| m["type"] == "WINDOW_AGGREGATE")
        .map(|m| {
            let d = &m["data"];
            (d["windowStart"].as_i64().unwrap(), (d["count"].as_u64().unwrap(), d["sum"].as_f64().unwrap() as i64))
        })
        .collect();
    assert_eq!(got, expected);
    client.disconnect().unwrap();
    let _ = pump.join();
    service.stop_ok();
}

#[test]
fn thingsboard_devices_publish_to_me_with_their_access_token() {
    let mosquitto = Mosquitto::start_with_token_plugin();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "tokens.json",
        r#"{"A1_TOKEN": {"deviceName": "Thermostat A1", "deviceType": "thermostat"},
            "B2_TOKEN": {"deviceName": "Meter B2"}}"#,
    );
    let chain = json!({"entry": "out", "nodes": [{"id": "out", "sink": "output"}]});
    let chain = write(dir.path(), "chain.json", &chain.to_string());
    let config = write(
        dir.path(),
        "sluice.toml",
        &format!(
            "[source]\ntype = \"mqtt\"\nurl = \"{}\"\ntokens = \"tokens.json\"\n\n\
             [output]\ntype = \"file\"\npath = \"out.jsonl\"\n",
            mosquitto.url()
        ),
    );
    let service = Service::start(dir.path(), &chain, &config, "state");
    wait_subscribed(&service);

    // Refused: a client publishing straight to a token topic (the plugin denies it), a device
    // with a token nobody issued, and one with no user name at all.
    let (spoofer, spoofer_pump) = device(mosquitto.port, "spoofer", Some("someone"));
    spoofer.publish("v1/tokens/A1_TOKEN/telemetry", QoS::AtLeastOnce, false, r#"{"spoofed": 1}"#).unwrap();
    let (stranger, stranger_pump) = device(mosquitto.port, "stranger", Some("WRONG_TOKEN"));
    stranger.publish("v1/devices/me/telemetry", QoS::AtLeastOnce, false, r#"{"temperature": 99}"#).unwrap();
    let (anonymous, anonymous_pump) = device(mosquitto.port, "anonymous", None);
    anonymous.publish("v1/devices/me/telemetry", QoS::AtLeastOnce, false, r#"{"temperature": 98}"#).unwrap();

    // ThingsBoard devices, unchanged: access token as user name, `v1/devices/me/…`.
    let (a1, a1_pump) = device(mosquitto.port, "thermostat-a1", Some("A1_TOKEN"));
    a1.publish("v1/devices/me/attributes", QoS::AtLeastOnce, false, r#"{"firmware": "1.2"}"#).unwrap();
    let point =
        json!([{"ts": T0, "values": {"temperature": 21.5}}, {"ts": T0 + 1_000, "values": {"temperature": 21.7}}]);
    a1.publish("v1/devices/me/telemetry", QoS::AtLeastOnce, false, point.to_string()).unwrap();
    let (b2, b2_pump) = device(mosquitto.port, "meter-b2", Some("B2_TOKEN"));
    b2.publish("v1/devices/me/telemetry", QoS::AtLeastOnce, false, r#"{"ts": 1700000002000, "values": {"kwh": 7}}"#)
        .unwrap();

    let out = wait_for_output(dir.path(), &service, "the devices' 4 messages", |out| out.len() >= 4);
    // The two refusals are logged (and counted) once they are through.
    let deadline = Instant::now() + Duration::from_secs(30);
    while service.log().matches("malformed publish").count() < 2 {
        assert!(Instant::now() < deadline, "refusals not logged:\n{}", service.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let out_after = output(dir.path());
    assert_eq!(out_after.len(), 4, "only the devices with known tokens: {out_after:?}");

    let summary: Vec<(String, String, String, String, Value)> = out
        .iter()
        .map(|m| {
            let meta = &m["metadata"];
            (
                m["type"].as_str().unwrap().to_string(),
                m["originator"]["name"].as_str().unwrap().to_string(),
                meta["deviceType"].as_str().unwrap().to_string(),
                meta["topic"].as_str().unwrap().to_string(),
                m["data"].clone(),
            )
        })
        .collect();
    let msg = |t: &str, name: &str, kind: &str, topic: &str, data: Value| {
        (t.to_string(), name.to_string(), kind.to_string(), topic.to_string(), data)
    };
    let mut expected = vec![
        msg(
            "POST_ATTRIBUTES_REQUEST",
            "Thermostat A1",
            "thermostat",
            "v1/devices/me/attributes",
            json!({"firmware": "1.2"}),
        ),
        msg(
            "POST_TELEMETRY_REQUEST",
            "Thermostat A1",
            "thermostat",
            "v1/devices/me/telemetry",
            json!({"temperature": 21.5}),
        ),
        msg(
            "POST_TELEMETRY_REQUEST",
            "Thermostat A1",
            "thermostat",
            "v1/devices/me/telemetry",
            json!({"temperature": 21.7}),
        ),
        msg("POST_TELEMETRY_REQUEST", "Meter B2", "default", "v1/devices/me/telemetry", json!({"kwh": 7})),
    ];
    let mut summary = summary;
    summary.sort_by(|a, b| (&a.1, &a.0, a.4.to_string()).cmp(&(&b.1, &b.0, b.4.to_string())));
    expected.sort_by(|a, b| (&a.1, &a.0, a.4.to_string()).cmp(&(&b.1, &b.0, b.4.to_string())));
    assert_eq!(summary, expected);
    let ts: Vec<i64> =
        out.iter().filter(|m| m["originator"]["name"] == "Meter B2").map(|m| m["ts"].as_i64().unwrap()).collect();
    assert_eq!(ts, [1_700_000_002_000]);

    // Tokens are credentials: neither the output nor the log shows one.
    let written = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let log = service.log();
    for token in ["A1_TOKEN", "B2_TOKEN", "WRONG_TOKEN"] {
        assert!(!written.contains(token) && !log.contains(token), "{token} shown:\n{written}\n{log}");
    }
    assert!(log.contains("unknown access token"), "{log}");
    assert!(log.contains("a broker does not tell subscribers who published"), "{log}");

    for (client, pump) in
        [(spoofer, spoofer_pump), (stranger, stranger_pump), (anonymous, anonymous_pump), (a1, a1_pump), (b2, b2_pump)]
    {
        client.disconnect().unwrap();
        let _ = pump.join();
    }
    let _ = service.stop_ok();
}

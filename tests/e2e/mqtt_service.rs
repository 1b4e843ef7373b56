//! `sluice run --config` with ThingsBoard's MQTT device and gateway APIs as the source (mosquitto):
//! `/metrics` counts what the source received, handed to the chain, refused and acknowledged,
//! and shows the connection going down with the broker and coming back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rumqttc::{Client, MqttOptions, QoS};
use serde_json::json;

use crate::brokers::Mosquitto;
use crate::kafka::{Service, write};
use crate::support::metrics;
use crate::tansu::free_port;

/// Polls `/metrics` until `done` holds for them (panics with them and the log after `timeout`).
fn wait_for_metrics(
    admin: &str,
    service: &Service,
    what: &str,
    timeout: Duration,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + timeout;
    loop {
        let m = metrics(admin);
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what}: not after {timeout:?}: {m:?}\n{}", service.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn mqtt(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    let name = format!("sluice_mqtt_source_{name}");
    *m.get(&name).unwrap_or_else(|| panic!("no {name} in {m:?}"))
}

#[test]
fn mqtt_source_metrics_count_publishes_messages_acks_and_the_connection() {
    let mut mosquitto = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let chain = json!({
        "entry": "threshold",
        "nodes": [
            {"id": "threshold", "module": "threshold", "config": {"value": "data.temperature", "op": ">", "threshold": 100}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "threshold", "to": "out", "relation": "Normal"},
            {"from": "threshold", "to": "out", "relation": "Anomaly"}
        ]
    });
    let chain = write(dir.path(), "chain.json", &chain.to_string());
    let config = write(
        dir.path(),
        "sluice.toml",
        &format!(
            "[source]\ntype = \"mqtt\"\nurl = \"{}\"\n\n[output]\ntype = \"file\"\npath = \"out.jsonl\"\n\n\
             [admin]\nlisten = \"{admin}\"\n",
            mosquitto.url()
        ),
    );
    let service = Service::start(dir.path(), &chain, &config, "state");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !service.log().contains("MQTT source subscribed") {
        assert!(Instant::now() < deadline, "the MQTT source did not subscribe:\n{}", service.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = metrics(&admin);
    assert_eq!((mqtt(&m, "connected"), mqtt(&m, "connects_total")), (1.0, 1.0), "{m:?}");

    // 10 device publishes (one message each), one gateway publish carrying 3 messages, one
    // malformed publish (acknowledged and skipped): 12 publishes, 13 messages, 12 PUBACKs.
    let mut options = MqttOptions::new("devices", "127.0.0.1", mosquitto.port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut connection) = Client::new(options, 100);
    let pump = std::thread::spawn(move || for _ in connection.iter().take_while(Result::is_ok) {});
    for i in 0..10 {
        let point = json!({"ts": 1_700_000_000_000i64 + i * 1000, "values": {"temperature": 20 + i}});
        client.publish("v1/devices/T-1/telemetry", QoS::AtLeastOnce, false, point.to_string()).unwrap();
    }
    let gateway = json!({
        "G-1": [{"ts": 1_700_000_000_000i64, "values": {"temperature": 1}},
                {"ts": 1_700_000_001_000i64, "values": {"temperature": 200}}],
        "G-2": {"temperature": 3}
    });
    client.publish("v1/gateway/telemetry", QoS::AtLeastOnce, false, gateway.to_string()).unwrap();
    client.publish("v1/devices/T-1/telemetry", QoS::AtLeastOnce, false, "{oops").unwrap();

    let m =
        wait_for_metrics(&admin, &service, "12 PUBACKs", Duration::from_secs(30), |m| mqtt(m, "acks_total") >= 12.0);
    let counted = ["publishes_total", "messages_total", "malformed_total", "acks_total"].map(|n| mqtt(&m, n));
    assert_eq!(counted, [12.0, 13.0, 1.0, 12.0], "{m:?}");
    assert_eq!(mqtt(&m, "connection_errors_total"), 0.0, "{m:?}");
    client.disconnect().unwrap();
    let _ = pump.join();

    // The broker goes away: the gauge drops and the failed attempts are counted; it comes back:
    // a second connection.
    mosquitto.stop();
    wait_for_metrics(&admin, &service, "disconnected", Duration::from_secs(30), |m| {
        mqtt(m, "connected") == 0.0 && mqtt(m, "connection_errors_total") >= 1.0
    });
    mosquitto.restart();
    let m = wait_for_metrics(&admin, &service, "reconnected", Duration::from_secs(30), |m| mqtt(m, "connected") == 1.0);
    assert_eq!(mqtt(&m, "connects_total"), 2.0, "{m:?}");

    let log = service.stop_ok();
    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap_or_default();
    assert_eq!(out.lines().count(), 13, "every message reached the output:\n{out}\n{log}");
}

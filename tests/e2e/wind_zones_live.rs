//! Wind zones end to end on real transports: weather stations publish over MQTT (mosquitto) the
//! way ThingsBoard's device API takes it — their attributes once, then wind speed telemetry —
//! and Sluice, as a service, posts each zone's 10 s average to ThingsBoard's REST API (a stand-in
//! server speaking it) and produces it to the Kafka topic `weather-stations-data` (tansu).
//!
//! The shipped chain reads `deviceType` and `cs_geoZone` from the metadata; over MQTT they are the
//! devices' attributes, so the test puts ThingsBoard's own front in front of it: attributes are
//! saved (`table-writer`), telemetry is enriched with them (`originator-attributes`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rumqttc::{Client, MqttOptions, QoS};
use serde_json::{Value, json};

use crate::brokers::Mosquitto;
use crate::kafka::{Service, write};
use crate::seeds::{close, tumbling};
use crate::support::repo;
use crate::tansu::Tansu;
use crate::thingsboard::start_thingsboard;

/// Readings start a minute from now, on a window boundary: the attribute messages are stamped
/// with the time they arrive (like a device's attributes in ThingsBoard), and that must stay
/// behind the readings' event time, or it would move the watermark past them.
fn t0() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    (now + 60_000).div_euclid(10_000) * 10_000
}

#[test]
fn stations_over_mqtt_to_thingsboard_rest_and_kafka() {
    let mosquitto = Mosquitto::start();
    let kafka = Tansu::start();
    kafka.create_topic("weather-stations-data", 1);
    let (tb_url, tb, tb_server, tb_stop) = start_thingsboard();
    let dir = tempfile::tempdir().unwrap();

    let mut chain: Value =
        serde_json::from_slice(&std::fs::read(repo().join("chains/wind-zones.json")).unwrap()).unwrap();
    chain.as_object_mut().unwrap().remove("$schema");
    chain["entry"] = json!("by-type");
    // MQTT orders messages per topic only, and mosquitto interleaves topics differently from how
    // they were published once the subscriber's in-flight window (20) is full — as it is when 600
    // readings are published in one burst. Each topic has a watermark of its own, so the chain
    // needs no lateness for that: with 0, nothing is late and the results are the reference's
    // whatever the interleaving. (With one watermark for the source: 43 readings late.) A
    // station silent for 10 s no longer holds the windows back.
    chain["eventTime"]["latenessMs"] = json!(0);
    chain["eventTime"]["idleTimeoutMs"] = json!(10_000);
    let nodes = chain["nodes"].as_array_mut().unwrap();
    nodes.push(json!({"id": "by-type", "module": "msg-type-switch"}));
    nodes.push(
        json!({"id": "save-attributes", "module": "table-writer", "config": {"table": "attributes", "merge": true}}),
    );
    nodes.push(json!({"id": "enrich", "module": "originator-attributes",
        "config": {"table": "attributes", "attributes": {"deviceType": "deviceType", "geoZone": "cs_geoZone"}}}));
    let connections = chain["connections"].as_array_mut().unwrap();
    connections.push(json!({"from": "by-type", "to": "save-attributes", "relation": "Post attributes"}));
    connections.push(json!({"from": "by-type", "to": "enrich", "relation": "Post telemetry"}));
    connections.push(json!({"from": "enrich", "to": "stations", "relation": "Success"}));
    let chain = write(dir.path(), "wind-zones-live.json", &chain.to_string());
    let config = write(
        dir.path(),
        "sluice.toml",
        &format!(
            r#"
[source]
type = "mqtt"
url = "{mqtt}"
clientId = "sluice-wind-zones"

[output]
type = "file"
path = "out.jsonl"

[connectors.kafka]
type = "kafka"
brokers = "{kafka}"

[connectors.thingsboard]
type = "http"
baseUrl = "{tb_url}"
"#,
            mqtt = mosquitto.url(),
            kafka = kafka.brokers
        ),
    );
    let service = Service::start(dir.path(), &chain, &config, "state");
    // Subscribed once the source says so (publishes before that would find no subscriber).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !service.log().contains("MQTT source subscribed") {
        assert!(Instant::now() < deadline, "the MQTT source did not subscribe:\n{}", service.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // Six stations in three zones and a thermometer (filtered out), like the seed's
    // send-randomized-windspeed scripts: a reading every 700 ms of event time for a minute.
    let stations: Vec<(String, &str, &str)> = (1..=6)
        .map(|i| (format!("WS-{i}"), "WeatherStation", ["A", "B", "C"][i % 3]))
        .chain([("T-1".to_string(), "Thermometer", "A")])
        .collect();
    let mut options = MqttOptions::new("stations", "127.0.0.1", mosquitto.port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut connection) = Client::new(options, 100);
    let pump = std::thread::spawn(move || for _ in connection.iter().take_while(Result::is_ok) {});
    let t0 = t0();
    let mut events = Vec::new();
    for (name, kind, zone) in &stations {
        let attributes = json!({"deviceType": kind, "geoZone": zone});
        client
            .publish(format!("v1/devices/{name}/attributes"), QoS::AtLeastOnce, false, attributes.to_string())
            .unwrap();
        events.push((0, None));
    }
    let mut n = 0u64;
    for step in 0..86 {
        for (name, kind, zone) in &stations {
            n += 1;
            let ts = t0 + step * 700 + (n % 7) as i64;
            let speed = (n * 37 % 50) as f64;
            let point = json!({"ts": ts, "values": {"windSpeed": speed.to_string()}});
            client.publish(format!("v1/devices/{name}/telemetry"), QoS::AtLeastOnce, false, point.to_string()).unwrap();
            events.push((ts, (*kind == "WeatherStation").then(|| (zone.to_string(), speed))));
        }
    }
    // One last reading far ahead closes every window above (its own stays open) once the other
    // stations are idle. Published with the burst: on its own topic, it makes no other station's
    // readings late, however mosquitto interleaves the topics.
    let far = json!({"ts": t0 + 3_600_000, "values": {"windSpeed": "1"}});
    client.publish("v1/devices/WS-1/telemetry", QoS::AtLeastOnce, false, far.to_string()).unwrap();

    let (windows, _) = tumbling(events, 10_000, 2_000, 0);
    let expected: BTreeMap<(String, i64), (u64, f64)> =
        windows.into_iter().map(|(k, v)| (k, (v.len() as u64, v.iter().sum::<f64>() / v.len() as f64))).collect();

    let records =
        kafka.read_keyed_until("weather-stations-data", Duration::from_secs(180), |v| v.len() >= expected.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    while tb.lock().unwrap().telemetry.len() < expected.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    client.disconnect().unwrap();
    let _ = pump.join();
    let log = service.stop_ok();
    let _ = tb_stop.send(());
    let check = |what: &str, key: (String, i64), data: &Value| {
        let (count, avg) = expected.get(&key).unwrap_or_else(|| panic!("{what}: unexpected window {key:?}"));
        assert_eq!(
            data["count"].as_u64(),
            Some(*count),
            "{what}: count of {key:?} (t0 {t0})\n{log}\n{}",
            std::fs::read_to_string(dir.path().join("state-stats.json")).unwrap_or_default()
        );
        assert!(close(data["avg"].as_f64().unwrap(), *avg), "{what}: avg of {key:?}: {data}");
    };
    tb_server.join().unwrap();

    // Kafka: every zone window once, with the reference's count and average.
    assert_eq!(records.len(), expected.len(), "{log}");
    let mut seen = BTreeSet::new();
    for (zone, r) in &records {
        let key = (zone.clone().expect("keyed by zone"), r["windowStart"].as_i64().unwrap());
        assert!(seen.insert(key.clone()), "{key:?} twice");
        check("kafka", key, r);
    }
    // ThingsBoard: one asset per zone; every average posted to it.
    let tb = tb.lock().unwrap();
    let zones: BTreeSet<&String> = expected.keys().map(|(z, _)| z).collect();
    assert_eq!(tb.created.iter().collect::<BTreeSet<_>>(), zones);
    assert_eq!(tb.telemetry.len(), expected.len());
    let zone_of: BTreeMap<&String, &String> = tb.assets.iter().map(|(name, id)| (id, name)).collect();
    for (asset, body) in &tb.telemetry {
        let start = body["values"]["windowStart"].as_i64().unwrap();
        check("thingsboard", (zone_of[asset].clone(), start), &body["values"]);
    }
}

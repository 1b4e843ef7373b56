//! The MQTT source and connector against a real Mosquitto on a loopback port.
//!
//! Messages flow through a chain whose only node is the `output` sink; the tests read what the
//! sink wrote, and what a plain rumqttc client sees on the broker.

use std::collections::BTreeSet;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::{Value, json};
use sluice::chain::Loader;
use sluice::chain::spec::CircuitBreakerSpec;
use sluice::config::{MqttConnection, MqttSourceSpec, PayloadFormat};
use sluice::connectors::mqtt::MqttConnector;
use sluice::connectors::{CallPolicySpec, Guarded};
use sluice::flow::{Ack, Pipeline, PipelineConfig, Sinks};
use sluice::host::Clock;
use sluice::sinks::jsonl::SinkItem;
use sluice::sources::Feed;
use sluice::sources::mqtt::{self, MqttSourceError, MqttSourceStats};
use sluice::state::StateStore;
use sluice::state::time::Watermarks;
use sluice_sdk::TbMsg;
use tokio::sync::watch;

use crate::brokers::{Mosquitto, TlsListener, free_port};
use crate::support::{ChainDir, runtime, start_to_channel};

use sluice_testkit::{PATIENCE, wait_until};

fn tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

fn connection(url: &str, client_id: Option<&str>) -> MqttConnection {
    MqttConnection {
        url: url.into(),
        client_id: client_id.map(str::to_string),
        username: None,
        password: None,
        ca_file: None,
        keep_alive_s: Some(5),
        protocol_version: None,
    }
}

fn source_spec(url: &str, client_id: Option<&str>) -> MqttSourceSpec {
    MqttSourceSpec {
        connection: connection(url, client_id),
        topics: vec![],
        format: PayloadFormat::Json,
        msg_type: None,
        tokens: None,
    }
}

/// A running MQTT source feeding a chain that only writes to the output sink.
struct SourceRun {
    pipeline: Option<Pipeline>,
    out: Arc<Mutex<Vec<TbMsg>>>,
    stats: Arc<MqttSourceStats>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), MqttSourceError>>,
    collector: Option<std::thread::JoinHandle<()>>,
    _dir: ChainDir,
}

impl SourceRun {
    /// Starts the source; with `hold`, the sink hands each message's ack to that channel instead
    /// of dropping it (the message then counts as still in the chain).
    fn start(rt: &tokio::runtime::Runtime, spec: MqttSourceSpec, hold: Option<Sender<(TbMsg, Ack)>>) -> SourceRun {
        let dir = ChainDir::new();
        let chain = dir.sink_only();
        let config = PipelineConfig { workers: 2, queue: 16, flush_at_end: false, ..PipelineConfig::default() };
        let (pipeline, rx) = start_to_channel(&chain, config);
        let out = Arc::new(Mutex::new(Vec::new()));
        let collector = {
            let out = out.clone();
            std::thread::spawn(move || {
                for (bytes, ack) in rx.into_iter().flat_map(SinkItem::into_msgs) {
                    let msg: TbMsg = bytes.to_tb();
                    out.lock().unwrap().push(msg.clone());
                    match &hold {
                        Some(held) => held.send((msg, ack)).expect("the test holds the acks"),
                        None => drop(ack),
                    }
                }
            })
        };
        let feed = Feed::new(pipeline.sender(), &chain, Watermarks::new(&chain.event_time), Clock::System);
        let stats = Arc::new(MqttSourceStats::default());
        let (shutdown, stop) = watch::channel(false);
        let task = rt.spawn(mqtt::run_with_stats(spec, feed, stop, stats.clone()));
        let run =
            SourceRun { pipeline: Some(pipeline), out, stats, shutdown, task, collector: Some(collector), _dir: dir };
        run.wait_subscribed(1);
        run
    }

    fn wait_subscribed(&self, subscriptions: u64) {
        wait_until("the source's subscription", || MqttSourceStats::get(&self.stats.subscribed) >= subscriptions);
    }

    fn output(&self) -> Vec<TbMsg> {
        self.out.lock().unwrap().clone()
    }

    /// The `n` field of every message written, in the order written.
    fn numbers(&self) -> Vec<i64> {
        self.output().iter().filter_map(|m| m.data.get("n").and_then(Value::as_i64)).collect()
    }

    /// Asks the source to stop, waits for it, then for the chain.
    fn stop(mut self, rt: &tokio::runtime::Runtime) -> Result<(), MqttSourceError> {
        self.shutdown.send(true).expect("the source listens");
        let result = rt.block_on(&mut self.task).expect("source task");
        self.pipeline.take().expect("running").shutdown();
        self.collector.take().expect("running").join().expect("collector");
        result
    }
}

/// A plain rumqttc client for the test's side of the broker; its event loop runs in `rt`,
/// reconnecting on errors, and forwards what it receives.
struct TestClient {
    client: AsyncClient,
    received: Arc<Mutex<Vec<rumqttc::Publish>>>,
    subacks: Arc<Mutex<u64>>,
}

impl TestClient {
    fn connect(rt: &tokio::runtime::Runtime, port: u16, id: &str, persistent: bool) -> TestClient {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5)).set_clean_session(!persistent);
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let received = Arc::new(Mutex::new(Vec::new()));
        let subacks = Arc::new(Mutex::new(0));
        let (r, s) = (received.clone(), subacks.clone());
        rt.spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) => r.lock().unwrap().push(p),
                    Ok(Event::Incoming(Incoming::SubAck(_))) => *s.lock().unwrap() += 1,
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        TestClient { client, received, subacks }
    }

    fn publish(&self, rt: &tokio::runtime::Runtime, topic: &str, payload: Value) {
        let client = self.client.clone();
        let topic = topic.to_string();
        rt.block_on(async move { client.publish(topic, QoS::AtLeastOnce, false, payload.to_string()).await })
            .expect("publish queued");
    }

    fn subscribe(&self, rt: &tokio::runtime::Runtime, filter: &str) {
        let before = *self.subacks.lock().unwrap();
        let client = self.client.clone();
        let filter = filter.to_string();
        rt.block_on(async move { client.subscribe(filter, QoS::AtLeastOnce).await }).expect("subscribe queued");
        wait_until("the test client's subscription", || *self.subacks.lock().unwrap() > before);
    }

    fn payloads(&self) -> Vec<String> {
        self.received.lock().unwrap().iter().map(|p| String::from_utf8_lossy(&p.payload).into_owned()).collect()
    }
}

/// A message as expected, without the random id.
fn telemetry(device: &str, ts: i64, data: Value, topic: &str) -> Value {
    json!({
        "ts": ts,
        "type": "POST_TELEMETRY_REQUEST",
        "originator": {"entityType": "DEVICE", "name": device},
        "metadata": {"deviceName": device, "ts": ts.to_string(), "topic": topic},
        "data": data,
    })
}

#[test]
fn mqtt_device_and_gateway_telemetry_go_through_the_chain() {
    let broker = Mosquitto::start();
    let rt = tokio();
    let run = SourceRun::start(&rt, source_spec(&broker.url(), None), None);
    let device = TestClient::connect(&rt, broker.port, "test-device", false);

    device.publish(
        &rt,
        "v1/devices/Thermo-1/telemetry",
        json!([
            {"ts": 1451649600512_i64, "values": {"temperature": 42}},
            {"ts": 1451649601512_i64, "values": {"temperature": 43}}
        ]),
    );
    device.publish(
        &rt,
        "v1/gateway/telemetry",
        json!({
            "Device A": [{"ts": 1483228800000_i64, "values": {"temperature": 40}},
                         {"ts": 1483228801000_i64, "values": {"temperature": 41}}],
            "Device B": [{"ts": 1483228800000_i64, "values": {"humidity": 80}}]
        }),
    );
    device.publish(&rt, "v1/devices/me/telemetry", json!({"temperature": 1}));
    device.publish(&rt, "v1/gateway/connect", json!({"device": "Device A", "type": "Thermostat"}));

    wait_until("six messages", || run.output().len() >= 6);
    wait_until("four PUBACKs", || MqttSourceStats::get(&run.stats.acked) == 4);
    let output = run.output();
    let ids: BTreeSet<&str> = output.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), 6, "every message has its own id");
    assert!(!ids.contains(""));
    let mut got: Vec<Value> = output
        .iter()
        .map(|m| {
            let mut v = serde_json::to_value(m).unwrap();
            v.as_object_mut().unwrap().remove("id");
            v
        })
        .filter(|v| v["type"] != "CONNECT_EVENT")
        .collect();
    got.sort_by_key(|v| (v["originator"]["name"].as_str().unwrap().to_string(), v["ts"].as_i64()));
    let device_topic = "v1/devices/Thermo-1/telemetry";
    let gateway_topic = "v1/gateway/telemetry";
    assert_eq!(
        got,
        [
            telemetry("Device A", 1483228800000, json!({"temperature": 40}), gateway_topic),
            telemetry("Device A", 1483228801000, json!({"temperature": 41}), gateway_topic),
            telemetry("Device B", 1483228800000, json!({"humidity": 80}), gateway_topic),
            telemetry("Thermo-1", 1451649600512, json!({"temperature": 42}), device_topic),
            telemetry("Thermo-1", 1451649601512, json!({"temperature": 43}), device_topic),
        ]
    );
    let connect = output.iter().find(|m| m.msg_type == "CONNECT_EVENT").expect("connect event");
    assert_eq!((connect.originator.name.as_str(), connect.meta("deviceType")), ("Device A", Some("Thermostat")));
    // The `me` publish was refused, counted, and acknowledged (three valid + one malformed).
    assert_eq!(MqttSourceStats::get(&run.stats.malformed), 1);
    assert_eq!(MqttSourceStats::get(&run.stats.publishes), 4);
    run.stop(&rt).expect("clean stop");
}

/// The connector as a chain grants it: one attempt per call (these tests count attempts), no
/// circuit breaker, `timeout_ms` per attempt (default: the connector's).
fn guarded(connector: MqttConnector, timeout_ms: Option<u64>) -> Guarded {
    let policy = CallPolicySpec {
        timeout_ms,
        retries: Some(0),
        circuit_breaker: Some(CircuitBreakerSpec { enabled: false, failures: None, open_ms: None }),
        ..Default::default()
    };
    Guarded::new("mqtt", Arc::new(connector), &policy).expect("policy")
}

/// A ThingsBoard device as it is — its access token as user name, `v1/devices/me/telemetry` —
/// through a mosquitto with Sluice's token plugin: the source resolves the token through its
/// token file to the device and its type.
#[test]
fn mqtt_thingsboard_device_known_by_its_access_token() {
    let broker = Mosquitto::start_with_token_plugin();
    let rt = tokio();
    let dir = ChainDir::new();
    let tokens =
        dir.write("tokens.json", r#"{"A1_TOKEN": {"deviceName": "Thermostat A1", "deviceType": "thermostat"}}"#);
    let spec =
        MqttSourceSpec { tokens: Some(tokens.to_string_lossy().into_owned()), ..source_spec(&broker.url(), None) };
    let run = SourceRun::start(&rt, spec, None);

    let mut options = MqttOptions::new("thermostat-a1", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5)).set_credentials("A1_TOKEN", "");
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    rt.spawn(async move { while eventloop.poll().await.is_ok() {} });
    let point = json!({"ts": 1451649600512_i64, "values": {"temperature": 42}});
    rt.block_on(client.publish("v1/devices/me/telemetry", QoS::AtLeastOnce, false, point.to_string()))
        .expect("publish queued");

    wait_until("the device's message", || !run.output().is_empty());
    let mut got = serde_json::to_value(&run.output()[0]).unwrap();
    got.as_object_mut().unwrap().remove("id");
    let mut expected = telemetry("Thermostat A1", 1451649600512, json!({"temperature": 42}), "v1/devices/me/telemetry");
    expected["metadata"]["deviceType"] = json!("thermostat");
    assert_eq!(got, expected);
    run.stop(&rt).expect("clean stop");
}

#[test]
fn mqtt_connector_publishes_and_the_subscriber_gets_exactly_the_payloads() {
    let broker = Mosquitto::start();
    let rt = tokio();
    let subscriber = TestClient::connect(&rt, broker.port, "test-subscriber", false);
    subscriber.subscribe(&rt, "alerts/#");

    let connector =
        Arc::new(guarded(MqttConnector::new("alerts", &connection(&broker.url(), None)).expect("connector"), None));
    // Four workers publishing at once, as a chain's workers do.
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let connector = connector.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let payload = if i % 2 == 0 { json!(format!("text {w}-{i}")) } else { json!({"w": w, "i": i}) };
                    let qos = match i {
                        7 => 0,
                        11 | 12 => 2,
                        _ => 1,
                    };
                    let answer = connector
                        .call(
                            "publish",
                            &json!({"topic": "alerts/zone", "qos": qos, "payload": payload}),
                            &Ack::none(),
                            "key",
                        )
                        .unwrap_or_else(|e| panic!("publish {w}-{i}: {e}"));
                    assert_eq!(answer, json!({}));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    // Everything confirmed before this one was sent: once it arrives, so has the rest.
    connector.call("publish", &json!({"topic": "alerts/zone", "payload": "end"}), &Ack::none(), "key").expect("last");
    wait_until("the last payload", || subscriber.payloads().contains(&"end".to_string()));

    let mut expected: Vec<String> = (0..4)
        .flat_map(|w| {
            (0..25).map(move |i| if i % 2 == 0 { format!("text {w}-{i}") } else { json!({"w": w, "i": i}).to_string() })
        })
        .collect();
    expected.push("end".into());
    expected.sort();
    let mut got = subscriber.payloads();
    got.sort();
    assert_eq!(got, expected);

    // Bad requests fail the call, naming what is wrong; nothing is sent.
    let e = connector
        .call("publish", &json!({"topic": "alerts/+", "payload": 1}), &Ack::none(), "key")
        .unwrap_err()
        .to_string();
    assert!(e.contains("wildcards"), "{e}");
}

/// With `protocolVersion: "5"` every publish carries its call's idempotency key as the user
/// property `idempotency-key`: an MQTT 5 subscriber sees each payload with its own key.
#[test]
fn mqtt5_connector_sends_the_idempotency_key_as_a_user_property() {
    use rumqttc::v5::mqttbytes::v5::Packet;
    let broker = Mosquitto::start();
    let rt = tokio();
    let mut options = rumqttc::v5::MqttOptions::new("test-subscriber-5", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 64);
    /// A payload and its user properties.
    type Received = (String, Vec<(String, String)>);
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let subscribed = Arc::new(Mutex::new(false));
    let (r, s) = (received.clone(), subscribed.clone());
    rt.spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::v5::Event::Incoming(Packet::Publish(p))) => {
                    let properties = p.properties.map(|p| p.user_properties).unwrap_or_default();
                    r.lock().unwrap().push((String::from_utf8_lossy(&p.payload).into_owned(), properties));
                }
                Ok(rumqttc::v5::Event::Incoming(Packet::SubAck(_))) => *s.lock().unwrap() = true,
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    rt.block_on(client.subscribe("alerts/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)).expect("subscribe queued");
    wait_until("the MQTT 5 subscription", || *subscribed.lock().unwrap());

    let spec = MqttConnection {
        protocol_version: Some(sluice::chain::spec::MqttVersion::V5),
        ..connection(&broker.url(), None)
    };
    let connector = guarded(MqttConnector::new("alerts", &spec).expect("connector"), None);
    for (i, qos) in [1, 0, 2, 1].into_iter().enumerate() {
        let request = json!({"topic": "alerts/zone", "qos": qos, "payload": {"i": i}});
        let answer =
            connector.call("publish", &request, &Ack::none(), &format!("msg-{i}:publish:0123")).expect("publish");
        assert_eq!(answer, json!({}));
    }
    wait_until("four publishes", || received.lock().unwrap().len() == 4);
    let mut got = received.lock().unwrap().clone();
    got.sort();
    let expected: Vec<Received> = (0..4)
        .map(|i| (json!({"i": i}).to_string(), vec![("idempotency-key".to_string(), format!("msg-{i}:publish:0123"))]))
        .collect();
    assert_eq!(got, expected);

    // A source refuses MQTT 5, saying so, rather than connecting with the wrong protocol.
    let source = MqttSourceSpec { connection: spec, ..source_spec(&broker.url(), None) };
    let dir = ChainDir::new();
    let path = dir.write_json("chain.json", &json!({"entry": "out", "nodes": [{"id": "out", "sink": "output"}]}));
    let chain = Arc::new(Loader::new(&runtime(), vec![]).load(&path).expect("chain loads"));
    let pipeline =
        Pipeline::start(runtime(), chain.clone(), StateStore::default(), Sinks::default(), PipelineConfig::default())
            .expect("pipeline");
    let feed = Feed::new(pipeline.sender(), &chain, Watermarks::new(&chain.event_time), Clock::System);
    let (_tx, shutdown) = watch::channel(false);
    let err = rt.block_on(mqtt::run_with_stats(source, feed, shutdown, Arc::default())).unwrap_err();
    assert!(err.to_string().contains("`protocolVersion`"), "{err}");
}

#[test]
fn mqtt_connector_retains_and_reports_an_unreachable_broker() {
    let broker = Mosquitto::start();
    let rt = tokio();
    let connector =
        guarded(MqttConnector::new("status", &connection(&broker.url(), Some("sluice-status"))).unwrap(), None);
    connector
        .call(
            "status",
            &json!({"topic": "status/pump-1", "retain": true, "payload": {"on": true}}),
            &Ack::none(),
            "key",
        )
        .expect("retained publish");
    // A client subscribing afterwards gets the retained message.
    let late = TestClient::connect(&rt, broker.port, "test-late", false);
    late.subscribe(&rt, "status/#");
    wait_until("the retained message", || !late.payloads().is_empty());
    assert_eq!(late.payloads(), [r#"{"on":true}"#]);
    assert!(late.received.lock().unwrap()[0].retain);

    let nowhere = guarded(
        MqttConnector::new("x", &connection(&format!("mqtt://127.0.0.1:{}", free_port()), None)).unwrap(),
        Some(700),
    );
    let e = nowhere.call("x", &json!({"topic": "a", "payload": "b"}), &Ack::none(), "key").unwrap_err().to_string();
    assert!(e.contains("no PUBACK for topic `a`") && e.contains("last connection error"), "{e}");
}

#[test]
fn mqtt_source_loses_nothing_across_a_broker_restart() {
    let mut broker = Mosquitto::start_persistent();
    let rt = tokio();
    let run = SourceRun::start(&rt, source_spec(&broker.url(), Some("sluice-restart")), None);
    let device = TestClient::connect(&rt, broker.port, "test-restart-device", true);
    let topic = "v1/devices/dev-1/telemetry";

    for n in 0..10 {
        device.publish(&rt, topic, json!({"n": n}));
    }
    wait_until("the first ten", || run.numbers().len() >= 10);

    broker.stop();
    // Published while the broker is down: queued by the device's client, sent when it is back.
    for n in 10..20 {
        device.publish(&rt, topic, json!({"n": n}));
    }
    broker.restart();
    for n in 20..30 {
        device.publish(&rt, topic, json!({"n": n}));
    }
    wait_until("all thirty", || run.numbers().iter().collect::<BTreeSet<_>>().len() == 30);
    let got: BTreeSet<i64> = run.numbers().into_iter().collect();
    assert_eq!(got, (0..30).collect::<BTreeSet<i64>>());
    assert!(MqttSourceStats::get(&run.stats.connects) >= 2, "the source reconnected");
    assert!(MqttSourceStats::get(&run.stats.connection_errors) >= 1, "the lost connection was counted");
    assert!(run.stats.connected.load(std::sync::atomic::Ordering::SeqCst), "connected again");
    let stats = run.stats.clone();
    run.stop(&rt).expect("clean stop");
    assert!(!stats.connected.load(std::sync::atomic::Ordering::SeqCst), "not connected once stopped");
}

#[test]
fn mqtt_connector_publishes_across_a_broker_restart() {
    let mut broker = Mosquitto::start_persistent();
    let rt = tokio();
    let subscriber = TestClient::connect(&rt, broker.port, "test-restart-subscriber", true);
    subscriber.subscribe(&rt, "alarms/#");
    let connector = Arc::new(guarded(MqttConnector::new("alarms", &connection(&broker.url(), None)).unwrap(), None));
    let publish = |n: i64| {
        let connector = connector.clone();
        std::thread::spawn(move || {
            connector.call("alarm", &json!({"topic": "alarms/boiler", "payload": {"n": n}}), &Ack::none(), "key")
        })
    };
    publish(0).join().unwrap().expect("before the restart");
    broker.stop();
    // Calls made while the broker is down wait, and complete once it is back.
    let waiting: Vec<_> = (1..4).map(publish).collect();
    broker.restart();
    for call in waiting {
        call.join().unwrap().expect("confirmed after the restart");
    }
    wait_until("four alarms", || subscriber.payloads().len() >= 4);
    let got: BTreeSet<String> = subscriber.payloads().into_iter().collect();
    assert_eq!(got, (0..4).map(|n| format!(r#"{{"n":{n}}}"#)).collect::<BTreeSet<_>>());
}

#[test]
fn mqtt_publish_not_done_in_the_chain_is_redelivered_to_the_next_session() {
    let broker = Mosquitto::start();
    let rt = tokio();
    let topic = "v1/devices/dev-2/telemetry";
    let device = TestClient::connect(&rt, broker.port, "test-redeliver-device", false);

    let (held_tx, held) = std::sync::mpsc::channel::<(TbMsg, Ack)>();
    let first = SourceRun::start(&rt, source_spec(&broker.url(), Some("sluice-redeliver")), Some(held_tx));
    device.publish(&rt, topic, json!({"n": 1}));
    let (one, ack) = held.recv_timeout(PATIENCE).expect("n = 1 reaches the sink");
    assert_eq!(one.data, json!({"n": 1}));
    drop(ack); // done: PUBACK
    wait_until("the PUBACK of n = 1", || MqttSourceStats::get(&first.stats.acked) == 1);
    device.publish(&rt, topic, json!({"n": 2}));
    let (two, unfinished) = held.recv_timeout(PATIENCE).expect("n = 2 reaches the sink");
    assert_eq!(two.data, json!({"n": 2}));
    // Sluice stops (or crashes) while n = 2 is still in the chain: no PUBACK for it.
    first.stop(&rt).expect("clean stop");
    drop(unfinished); // too late: that session is gone

    let second = SourceRun::start(&rt, source_spec(&broker.url(), Some("sluice-redeliver")), None);
    wait_until("n = 2 again", || second.numbers().contains(&2));
    device.publish(&rt, topic, json!({"n": 3}));
    wait_until("n = 3", || second.numbers().contains(&3));
    // n = 1 was acknowledged, so the broker did not send it again.
    assert_eq!(second.numbers(), [2, 3]);
    let again = second.output().into_iter().find(|m| m.data == json!({"n": 2})).unwrap();
    assert_eq!((again.originator.name.as_str(), again.meta("topic")), ("dev-2", Some(topic)));
    second.stop(&rt).expect("clean stop");
}

/// Makes a CA and a server certificate for 127.0.0.1 with the `openssl` command.
fn certificates(dir: &std::path::Path) -> (std::path::PathBuf, TlsListener) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Sluice test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName = IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["ca.pem", "server.key", "server.pem"] {
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let listener = TlsListener {
        port: free_port(),
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    (dir.join("ca.pem"), listener)
}

#[test]
fn mqtts_with_the_brokers_ca_and_without() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, tls) = certificates(certs.path());
    let tls_port = tls.port;
    let broker = Mosquitto::start_with_tls(tls);
    let rt = tokio();
    let subscriber = TestClient::connect(&rt, broker.port, "test-tls-subscriber", false);
    subscriber.subscribe(&rt, "secure/#");

    let mut spec = connection(&format!("mqtts://127.0.0.1:{tls_port}"), None);
    spec.ca_file = Some(ca.display().to_string());
    let connector = guarded(MqttConnector::new("secure", &spec).expect("connector"), None);
    connector
        .call("n", &json!({"topic": "secure/a", "payload": "over TLS"}), &Ack::none(), "key")
        .expect("TLS publish");
    wait_until("the TLS publish", || !subscriber.payloads().is_empty());
    assert_eq!(subscriber.payloads(), ["over TLS"]);

    // Without the CA the platform's roots are used, which do not know this broker.
    spec.ca_file = None;
    match MqttConnector::new("secure", &spec) {
        // A machine without CA roots at all says so at once.
        Err(e) => assert!(e.to_string().contains("caFile"), "{e}"),
        Ok(untrusted) => {
            let untrusted = guarded(untrusted, Some(1500));
            let e = untrusted
                .call("n", &json!({"topic": "secure/a", "payload": "x"}), &Ack::none(), "key")
                .unwrap_err()
                .to_string();
            assert!(e.contains("no PUBACK") && e.to_lowercase().contains("certificate"), "{e}");
        }
    }
}

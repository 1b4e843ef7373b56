//! The contract every source keeps (`sluice::sources::Source`), checked the same way for each,
//! started only through the trait, as the service starts it:
//!
//! 1. its counters are on the metrics registry before anything is read;
//! 2. each message reaches the chain, and the sender hears it acknowledged only once the
//!    message is processed (the test's sink holds every ack, then lets them go);
//! 3. it stops on shutdown, and when it returns its report counts exactly what reached the chain.
//!
//! The JSON-lines source is held to it reading a named pipe, so that it waits for input as it
//! waits on stdin, and is stopped there rather than reaching the end.
//!
//! The Kafka source keeps the same contract through the same trait; it needs a Kafka broker,
//! and is held to it by the end-to-end tests (`tests/e2e/kafka.rs`), which run against tansu.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sluice::config::{HttpSourceSpec, MqttConnection, MqttSourceSpec, PayloadFormat};
use sluice::core::{Ack, AckCounter, Clock, Metrics, SinkItem};
use sluice::flow::{Pipeline, PipelineConfig};
use sluice::sources::http::HttpSource;
use sluice::sources::jsonl::{JsonLinesSource, Stream};
use sluice::sources::mqtt::MqttSource;
use sluice::sources::{Checkpointer, CutError, Feed, Offsets, Source, SourceContext};
use sluice::state::checkpoint::Captured;
use sluice::state::partition::PartitionState;
use sluice::state::time::Watermarks;
use sluice::state::window::Owner;
use tokio::sync::watch;

use crate::brokers::{Mosquitto, free_port};
use crate::support::{ChainDir, start_to_channel};

/// Messages each source is sent.
const N: u64 = 12;

use sluice_testkit::{PATIENCE, wait_until};

/// Checkpoints nowhere: these sources are checkpointed by the service, not by themselves.
struct NoCheckpoints;

impl Checkpointer for NoCheckpoints {
    fn save(&self, _: &Offsets, _: &BTreeSet<Owner>) -> Result<Captured, CutError> {
        Ok(Captured::default())
    }
    fn capture(&self, _: &Offsets, _: &BTreeSet<Owner>) -> Result<Captured, CutError> {
        Ok(Captured::default())
    }
    fn persist(&self, _: &Captured) -> Result<(), CutError> {
        Ok(())
    }
    fn absorb(&self, _: Owner, _: PartitionState) -> Result<(), CutError> {
        Ok(())
    }
    fn drop_partition(&self, _: Owner) -> usize {
        0
    }
    fn save_at(&self, _: u64) -> Result<(), CutError> {
        Ok(())
    }
}

/// A sink-only chain whose sink holds every message's ack until the test lets them go.
struct Harness {
    pipeline: Pipeline,
    feed: Feed,
    arrived: Arc<AtomicU64>,
    held: Arc<Mutex<Option<Vec<Ack>>>>,
    sink: std::thread::JoinHandle<()>,
    _dir: ChainDir,
}

impl Harness {
    fn start() -> Harness {
        let dir = ChainDir::new();
        let chain = dir.sink_only();
        let config = PipelineConfig { workers: 2, queue: 16, flush_at_end: false, ..PipelineConfig::default() };
        let (pipeline, rx) = start_to_channel(&chain, config);
        let arrived = Arc::new(AtomicU64::new(0));
        let held = Arc::new(Mutex::new(Some(Vec::new())));
        let sink = {
            let (arrived, held) = (arrived.clone(), held.clone());
            std::thread::spawn(move || {
                for (_, ack) in rx.into_iter().flat_map(SinkItem::into_msgs) {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    if let Some(held) = held.lock().unwrap().as_mut() {
                        held.push(ack);
                    }
                }
            })
        };
        let feed = Feed::new(pipeline.sender(), &chain, Watermarks::new(&chain.event_time), Clock::System);
        Harness { pipeline, feed, arrived, held, sink, _dir: dir }
    }

    /// Lets every held ack go, and stops holding.
    fn release(&self) {
        self.held.lock().unwrap().take();
    }

    fn stop(self) {
        drop(self.feed);
        drop(self.pipeline.shutdown());
        self.sink.join().expect("sink thread");
    }
}

/// The value of the sample `sample` (its name and labels, as rendered) on the registry.
fn sample(metrics: &Metrics, sample: &str) -> Option<f64> {
    metrics.render().lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// What differs between sources: how to send one, and where it says it acknowledged.
struct Case {
    source: Box<dyn Source>,
    /// A sample that exists from the start (registered before anything is read).
    registered: &'static str,
    /// The sample counting acknowledgements to senders.
    acknowledged: &'static str,
    /// Waits until the source is ready for input.
    ready: Box<dyn Fn(&Metrics)>,
    /// Sends message `i` (on a thread of its own: a sender may wait for its acknowledgement).
    send: Arc<dyn Fn(u64) + Send + Sync>,
}

fn holds_to_the_contract(case: Case) {
    let harness = Harness::start();
    let metrics = Metrics::default();
    let (stop, shutdown) = watch::channel(false);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cx = SourceContext {
        feed: harness.feed.clone(),
        shutdown,
        metrics: metrics.clone(),
        checkpointer: Arc::new(NoCheckpoints),
        keeps_state: false,
        checkpoint_every: Duration::from_secs(1),
        acks: Arc::new(AckCounter::default()),
        resume: None,
    };
    let task = rt.spawn(case.source.run(cx));

    // 1. Registered before anything is read.
    wait_until(case.registered, || sample(&metrics, case.registered).is_some());
    assert_eq!(sample(&metrics, case.acknowledged), Some(0.0), "{}", metrics.render());
    (case.ready)(&metrics);

    // 2. Every message reaches the chain; none is acknowledged while the chain holds it.
    let senders: Vec<_> = (0..N)
        .map(|i| {
            let send = case.send.clone();
            std::thread::spawn(move || send(i))
        })
        .collect();
    wait_until("every message in the sink", || harness.arrived.load(Ordering::SeqCst) == N);
    // An acknowledgement sent too early has this long to show (none is ever due while held).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sample(&metrics, case.acknowledged), Some(0.0), "acknowledged before processed");
    harness.release();
    wait_until("every message acknowledged", || sample(&metrics, case.acknowledged) == Some(N as f64));
    for sender in senders {
        sender.join().expect("sender");
    }

    // 3. Stops on shutdown, counting what reached the chain.
    stop.send(true).unwrap();
    let (report, ended) = rt
        .block_on(async { tokio::time::timeout(PATIENCE, task).await })
        .expect("stops on shutdown")
        .expect("the source task");
    ended.expect("a clean stop");
    assert_eq!((report.records, report.malformed, report.exhausted), (N, 0, false), "{report:?}");
    assert_eq!(harness.arrived.load(Ordering::SeqCst), N);
    harness.stop();
    // A read of a pipe or stdin cut short by the stop may still wait on a blocking thread (the
    // binary does the same).
    rt.shutdown_background();
}

#[test]
fn the_mqtt_source_holds_to_the_source_contract() {
    let broker = Mosquitto::start();
    let spec = MqttSourceSpec {
        connection: MqttConnection {
            url: broker.url(),
            client_id: None,
            username: None,
            password: None,
            keep_alive_s: None,
            protocol_version: None,
            ca_file: None,
        },
        topics: vec![],
        format: PayloadFormat::Json,
        msg_type: None,
        tokens: None,
    };
    let port = broker.port;
    let rt = Arc::new(tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap());
    let client = {
        let mut options = rumqttc::MqttOptions::new("contract-device", "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
        rt.spawn(async move {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        client
    };
    let send = {
        let rt = rt.clone();
        move |i: u64| {
            let client = client.clone();
            let payload = json!({"n": i}).to_string();
            rt.block_on(client.publish("v1/devices/Meter-1/telemetry", rumqttc::QoS::AtLeastOnce, false, payload))
                .expect("publish queued");
        }
    };
    holds_to_the_contract(Case {
        source: Box::new(MqttSource::new(spec, std::path::Path::new("."))),
        registered: "sluice_mqtt_source_messages_total",
        acknowledged: "sluice_mqtt_source_acks_total",
        ready: Box::new(|metrics| {
            wait_until("the subscription", || sample(metrics, "sluice_mqtt_source_connected") == Some(1.0));
        }),
        send: Arc::new(send),
    });
}

#[test]
fn the_http_source_holds_to_the_source_contract() {
    let dir = ChainDir::new();
    dir.write("tokens.json", r#"{"CONTRACT_TOKEN": {"deviceName": "Meter 1", "deviceType": "meter"}}"#);
    let addr = format!("127.0.0.1:{}", free_port());
    let spec = HttpSourceSpec { listen: addr.clone(), tokens: "tokens.json".into() };
    let url = format!("http://{addr}/api/v1/CONTRACT_TOKEN/telemetry");
    let send = move |i: u64| {
        let client = reqwest::blocking::Client::builder().timeout(PATIENCE).build().unwrap();
        let status = client.post(&url).body(json!({"n": i}).to_string()).send().expect("answered").status();
        assert_eq!(status.as_u16(), 200);
    };
    let ready_url = format!("http://{addr}/");
    holds_to_the_contract(Case {
        source: Box::new(HttpSource::new(spec, dir.dir.path())),
        registered: "sluice_http_source_messages_total",
        acknowledged: "sluice_http_source_requests_total{outcome=\"accepted\"}",
        ready: Box::new(move |_| {
            // Listening: any answer will do (the root is not a device API path).
            wait_until("the listener", || reqwest::blocking::get(&ready_url).is_ok());
        }),
        send: Arc::new(send),
    });
}

#[test]
fn the_json_lines_source_holds_to_the_source_contract() {
    let dir = ChainDir::new();
    let fifo = dir.dir.path().join("input.jsonl");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", fifo.display());
    // One writer for every sender, opened once the source has opened the pipe for reading:
    // the source meets no end of its input until the writer goes.
    let writer: Arc<Mutex<Option<std::fs::File>>> = Arc::default();
    let ready = {
        let (writer, fifo) = (writer.clone(), fifo.clone());
        move |_: &Metrics| {
            let file = std::fs::OpenOptions::new().write(true).open(&fifo).expect("the pipe opens for writing");
            *writer.lock().unwrap() = Some(file);
        }
    };
    let send = {
        let writer = writer.clone();
        move |i: u64| {
            use std::io::Write;
            let line = format!("{}\n", json!({"ts": 1_700_000_000_000u64 + i, "deviceName": "Meter 1", "n": i}));
            let mut writer = writer.lock().unwrap();
            writer.as_mut().expect("the pipe is open").write_all(line.as_bytes()).expect("written");
        }
    };
    holds_to_the_contract(Case {
        source: Box::new(JsonLinesSource::new(Stream::File(fifo), false)),
        registered: "sluice_jsonl_lines_total",
        acknowledged: "sluice_jsonl_acked_total",
        ready: Box::new(ready),
        send: Arc::new(send),
    });
}

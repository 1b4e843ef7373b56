//! Kafka → the 3-node chain (`chains/uplink-to-telemetry.json`: json-decoder → check-fields →
//! rename-keys, every node a WASM module) → Kafka, on loopback against tansu.
//!
//! Two measurements:
//! 1. **Sustained throughput**: N uplinks are on the input topic before Sluice starts; the time
//!    from start until all N results are on the output topic.
//! 2. **Latency at a fixed rate**: uplinks produced at 10,000 msgs/s for a few seconds, each
//!    stamped with its send time; end-to-end latency = time the result is read from the output
//!    topic − send time; p50 / p99 / max.
//!
//! `cargo bench -p sluice --bench kafka` (needs tansu: `scripts/setup.sh`, and the rules
//! built: `sluice rules build rules`). `SLUICE_BENCH_N` sets N (default 300000).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use sluice::app::AppOptions;
use sluice::config::Config;
use sluice::config::OutputSpec;
use sluice::runtime::Runtime;

/// The service runs in this process: on the `sluice` binary's allocator, as it runs in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

struct Tansu(Child);

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_tansu() -> (Tansu, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bin = std::env::var_os("SLUICE_TANSU").map(PathBuf::from).unwrap_or_else(|| {
        let cached = PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/sluice/tansu/bin/tansu");
        if cached.exists() { cached } else { "tansu".into() }
    });
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(bin)
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu (scripts/setup.sh installs it)");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    (Tansu(child), format!("127.0.0.1:{port}"))
}

fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let new: Vec<_> = topics.iter().map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1))).collect();
    for r in rt.block_on(admin.create_topics(&new, &AdminOptions::new())).unwrap() {
        r.unwrap();
    }
}

fn uplink(i: u64, ts: i64) -> String {
    let payload = format!(
        "{{\"deviceName\": \"T-{}\", \"deviceType\": \"Thermometer\", \"temp\": {}.5, \"hum\": {}}}",
        i % 1000,
        15 + i % 10,
        40 + i % 20
    );
    serde_json::json!({"ts": ts, "type": "UPLINK", "originator": {"entityType": "DEVICE", "name": format!("gateway-{}", i % 64)},
        "data": {"payload": payload}})
    .to_string()
}

fn producer(brokers: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "2")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap()
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, key: &str, value: &str) {
    let mut record = BaseRecord::to(topic).key(key).payload(value);
    loop {
        match p.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

fn reader(brokers: &str, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-reader-{}", now_ms()))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

fn config(brokers: &str, group: &str, input: &str, output: &str) -> Config {
    // `SLUICE_BENCH_CHECKPOINT_MS` (default 1000): how often the source cuts (drains, saves, commits).
    let every: u64 = std::env::var("SLUICE_BENCH_CHECKPOINT_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    // `SLUICE_BENCH_CHANGELOG=false` leaves the changelog out, to see what it costs.
    let changelog = std::env::var("SLUICE_BENCH_CHANGELOG").map_or(true, |v| v != "false");
    Config::parse(&format!(
        r#"
[source]
type = "kafka"
brokers = "{brokers}"
group = "{group}"
topics = ["{input}"]
changelog = {changelog}
[source.properties]
"fetch.wait.max.ms" = "5"
[output]
type = "kafka"
brokers = "{brokers}"
topic = "{output}"
[state]
checkpointMs = {every}
"#
    ))
    .unwrap()
}

/// Starts the service in this process; returns a stop handle and its thread.
fn start_service(
    runtime: Arc<Runtime>,
    config: Config,
    state: &Path,
) -> (tokio::sync::watch::Sender<bool>, std::thread::JoinHandle<()>) {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let source = sluice::sources::from_spec(config.source.clone().expect("a [source]"), &repo());
    let options = AppOptions {
        connectors: config.connectors.clone(),
        entry: config.entry.clone(),
        output: config.output.clone().unwrap_or_else(OutputSpec::stdout),
        dead_letter: config.dead_letter.clone(),
        dir: repo(),
        state_dir: Some(state.to_path_buf()),
        checkpoint_every: Duration::from_millis(config.state.checkpoint_ms.max(1)),
        fresh: true,
        ..AppOptions::new(
            repo().join("chains/uplink-to-telemetry.json"),
            vec![sluice::toolchain::module_dir(&repo().join("rules"))],
        )
    };
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        if let Err(e) = rt.block_on(sluice::app::run(runtime, options, source, shutdown)) {
            eprintln!("service failed: {e}");
        }
    });
    (stop, thread)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("kafka: bench");
        return;
    }
    let n: u64 = std::env::var("SLUICE_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(300_000);
    let (_tansu, brokers) = start_tansu();
    create_topics(
        &brokers,
        &[
            ("uplinks", 6),
            ("telemetry", 6),
            ("uplinks-rate", 6),
            ("telemetry-rate", 6),
            ("uplinks-pass", 6),
            ("telemetry-pass", 6),
            ("uplinks-copied", 6),
        ],
    );
    let runtime = Arc::new(Runtime::with_default_cache().unwrap());
    let state = tempfile::tempdir().unwrap();

    // 1. Throughput: a backlog of n uplinks.
    let p = producer(&brokers);
    let producing = Instant::now();
    for i in 0..n {
        send(&p, "uplinks", &format!("gateway-{}", i % 64), &uplink(i, 1_700_000_000_000 + i as i64));
    }
    p.flush(Duration::from_secs(60)).unwrap();
    let produced = producing.elapsed();
    // The broker alone, as a baseline: the same backlog read back by a plain consumer.
    let baseline = reader(&brokers, "uplinks");
    let reading = Instant::now();
    let mut read = 0u64;
    while read < n && reading.elapsed() < Duration::from_secs(120) {
        if let Some(Ok(_)) = baseline.poll(Duration::from_millis(100)) {
            read += 1;
        }
    }
    let read_took = reading.elapsed();
    drop(baseline);
    println!(
        "kafka/broker-only: produce {:.0} msgs/s, consume {:.0} msgs/s (no Sluice: what tansu and librdkafka do here)",
        n as f64 / produced.as_secs_f64(),
        read as f64 / read_took.as_secs_f64()
    );
    let out = reader(&brokers, "telemetry");
    // The reader joins its group before the clock starts.
    let _ = out.poll(Duration::from_millis(500));
    let started = Instant::now();
    let (stop, service) =
        start_service(runtime.clone(), config(&brokers, "bench", "uplinks", "telemetry"), state.path());
    let (seen, first) = count_arrivals(&out, n);
    let took = started.elapsed();
    let _ = stop.send(true);
    service.join().unwrap();
    let sluice_rate = seen as f64 / took.as_secs_f64();
    println!(
        "kafka/throughput: {seen} of {n} messages in {:.2} s = {sluice_rate:.0} msgs/s (Kafka → 3 WASM nodes → Kafka, \
         incl. start-up; the first output after {:.2} s, then {:.0} msgs/s)",
        took.as_secs_f64(),
        first.duration_since(started).as_secs_f64(),
        seen.saturating_sub(1) as f64 / took.saturating_sub(first.duration_since(started)).as_secs_f64(),
    );
    // The baseline of that: the same backlog through a plain librdkafka pass-through (consume,
    // produce the same bytes, with Sluice's consumer and producer settings), measured the same way.
    let out = reader(&brokers, "uplinks-copied");
    let _ = out.poll(Duration::from_millis(500));
    let started = Instant::now();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let pass = pass_through(&brokers, "bench-copy", "uplinks", "uplinks-copied", running.clone());
    let (copied, first) = count_arrivals(&out, n);
    let took = started.elapsed();
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    pass.join().unwrap();
    let pass_rate = copied as f64 / took.as_secs_f64();
    println!(
        "kafka/throughput (broker only: pass-through): {copied} of {n} messages in {:.2} s = {pass_rate:.0} msgs/s \
         (the first after {:.2} s); Sluice / pass-through = {:.2}× (issue 16's target: ≥ 0.8×)",
        took.as_secs_f64(),
        first.duration_since(started).as_secs_f64(),
        sluice_rate / pass_rate
    );

    // 2. Latency at a fixed rate (10,000 msgs/s by default; `SLUICE_BENCH_RATE`), through
    // Sluice and, as the baseline, through a plain librdkafka pass-through (consume, produce the
    // same bytes, nothing else): the same two broker hops without Sluice.
    let rate: u64 = std::env::var("SLUICE_BENCH_RATE").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let seconds = 5u64;
    let (stop, service) =
        start_service(runtime, config(&brokers, "bench-rate", "uplinks-rate", "telemetry-rate"), state.path());
    let latencies = fixed_rate(&brokers, "uplinks-rate", "telemetry-rate", rate, seconds);
    let _ = stop.send(true);
    service.join().unwrap();
    report(&format!("kafka/latency at {rate} msgs/s for {seconds} s (Sluice)"), latencies);

    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let pass = pass_through(&brokers, "bench-pass", "uplinks-pass", "telemetry-pass", running.clone());
    let latencies = fixed_rate(&brokers, "uplinks-pass", "telemetry-pass", rate, seconds);
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    pass.join().unwrap();
    report(&format!("kafka/latency at {rate} msgs/s for {seconds} s (broker only: pass-through)"), latencies);
}

/// Reads `out` until `n` records came (or five minutes passed): how many, and when the first did.
fn count_arrivals(out: &BaseConsumer, n: u64) -> (u64, Instant) {
    let started = Instant::now();
    let (mut seen, mut first) = (0u64, None);
    while seen < n && started.elapsed() < Duration::from_secs(300) {
        if let Some(Ok(_)) = out.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            seen += 1;
        }
    }
    (seen, first.unwrap_or_else(Instant::now))
}

/// Produces `rate` msgs/s for `seconds` to `input`, each stamped with its send time, and reads
/// `output` until every result came (or a minute passed): the end-to-end latencies, in ms.
fn fixed_rate(brokers: &str, input: &str, output: &str, rate: u64, seconds: u64) -> Vec<i64> {
    let out = reader(brokers, output);
    let _ = out.poll(Duration::from_millis(500));
    std::thread::sleep(Duration::from_secs(3)); // the groups settle
    let sender = {
        let (brokers, input) = (brokers.to_string(), input.to_string());
        std::thread::spawn(move || {
            let p = producer(&brokers);
            let start = Instant::now();
            for i in 0..rate * seconds {
                let due = start + Duration::from_micros(i * 1_000_000 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                send(&p, &input, &format!("gateway-{}", i % 64), &uplink(i, now_ms()));
            }
            p.flush(Duration::from_secs(30)).unwrap();
        })
    };
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds + 60);
    while (latencies.len() as u64) < rate * seconds && Instant::now() < deadline {
        if let Some(Ok(m)) = out.poll(Duration::from_millis(100)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            latencies.push(now_ms() - v["ts"].as_i64().unwrap());
        }
    }
    sender.join().unwrap();
    latencies
}

/// A consumer that produces every record it reads, unchanged, to `output` — with Sluice's
/// consumer and producer settings, and no processing.
fn pass_through(
    brokers: &str,
    group: &str,
    input: &str,
    output: &str,
    running: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    consumer.subscribe(&[input]).unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let output = output.to_string();
    std::thread::spawn(move || {
        while running.load(std::sync::atomic::Ordering::SeqCst) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                send(&producer, &output, "", std::str::from_utf8(m.payload().unwrap_or_default()).unwrap());
            }
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    })
}

fn report(what: &str, mut latencies: Vec<i64>) {
    if latencies.is_empty() {
        println!("{what}: no results");
        return;
    }
    latencies.sort_unstable();
    let q = |f: f64| latencies[((latencies.len() as f64 * f) as usize).min(latencies.len() - 1)];
    println!(
        "{what}: {} results, p50 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        q(0.5),
        q(0.99),
        latencies.last().unwrap()
    );
}

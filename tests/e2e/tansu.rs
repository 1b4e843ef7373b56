//! A real Kafka-protocol broker for tests: tansu (`cargo install tansu`, installed by
//! `scripts/setup.sh`), started on a free loopback port with in-memory storage and killed when
//! the guard drops. Plus the clients tests use to create topics, produce input and read output,
//! and a TCP relay that cuts the network between Sluice and the broker (an outage) and heals it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// The tansu binary: `$SLUICE_TANSU`, the setup script's cache, or `PATH`.
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_TANSU") {
        return p.into();
    }
    let cached =
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sluice/tansu/bin/tansu")).filter(|p| p.exists());
    cached.unwrap_or_else(|| "tansu".into())
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

/// A running tansu; killed on drop.
pub struct Tansu {
    child: Child,
    /// What clients use: `127.0.0.1:PORT`.
    pub brokers: String,
}

impl Tansu {
    /// Starts a broker listening on `port` and advertising `advertised` (a relay in front of it
    /// in the outage test; the same port otherwise).
    pub fn start_on(port: u16, advertised: u16) -> Tansu {
        let child = Command::new(tansu_bin())
            .args(["broker", "--listener-url", &format!("tcp://127.0.0.1:{port}")])
            .args(["--advertised-listener-url", &format!("tcp://127.0.0.1:{advertised}")])
            .args(["--storage-engine", "memory://tansu/"])
            .stderr(Stdio::null())
            // `SLUICE_TANSU_LOG=FILE`: the broker's own log (it writes to stdout; `RUST_LOG`
            // sets its level), to see the group coordinator's view.
            .stdout(match std::env::var_os("SLUICE_TANSU_LOG") {
                Some(path) => Stdio::from(std::fs::File::create(path).expect("SLUICE_TANSU_LOG")),
                None => Stdio::null(),
            })
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tansu ({}): {e}; run scripts/setup.sh", tansu_bin().display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Tansu { child, brokers: format!("127.0.0.1:{advertised}") }
    }

    pub fn start() -> Tansu {
        let port = free_port();
        Tansu::start_on(port, port)
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &self.brokers).create().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = rt.block_on(admin.create_topics([&topic], &AdminOptions::new())).unwrap();
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
    }

    /// One record per batch: tansu 0.6 answers a fetch at an offset inside a record batch from
    /// the *next* batch, skipping the rest of that one (a real Kafka broker returns the whole
    /// batch and the client skips to the offset). Sluice resumes at exact offsets after a crash
    /// or a rebalance, so input is written batch by batch to stay clear of that broker bug.
    pub fn producer(&self) -> ThreadedProducer<DefaultProducerContext> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("linger.ms", "0")
            .set("batch.num.messages", "1")
            .set("partitioner", "murmur2_random")
            .create()
            .unwrap()
    }

    /// Produces `(partition?, key, value, timestamp)` records and waits until all are delivered.
    pub fn produce(&self, topic: &str, records: &[(Option<i32>, String, String, i64)]) {
        let producer = self.producer();
        for (partition, key, value, ts) in records {
            let mut record = BaseRecord::to(topic).key(key).payload(value).timestamp(*ts);
            if let Some(p) = partition {
                record = record.partition(*p);
            }
            let mut record = record;
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    }

    /// Reads `topic` from the start until `done` says so or `timeout` passes; returns the
    /// values as JSON.
    pub fn read_until(
        &self,
        topic: &str,
        timeout: Duration,
        mut done: impl FnMut(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let mut values = Vec::new();
        self.read_keyed_until(topic, timeout, |records| {
            values = records.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>();
            done(&values)
        })
        .into_iter()
        .map(|(_, v)| v)
        .collect()
    }

    /// [`Tansu::read_until`] with each record's key.
    pub fn read_keyed_until(
        &self,
        topic: &str,
        timeout: Duration,
        mut done: impl FnMut(&[(Option<String>, serde_json::Value)]) -> bool,
    ) -> Vec<(Option<String>, serde_json::Value)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("test-reader-{}", free_port()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "5")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let deadline = Instant::now() + timeout;
        let mut values = Vec::new();
        while Instant::now() < deadline && !done(&values) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let payload = m.payload().unwrap_or_default();
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                let value = serde_json::from_slice(payload)
                    .unwrap_or_else(|e| panic!("{topic}: not JSON: {e}: {}", String::from_utf8_lossy(payload)));
                values.push((key, value));
            }
        }
        values
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay `listen → target` that can cut every connection and refuse new ones (the broker
/// unreachable), then heal.
pub struct Relay {
    up: Arc<AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Relay {
    pub fn start(port: u16, target: u16) -> Relay {
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        let (up2, gen2) = (up.clone(), generation.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, target))) else { continue };
                let born = gen2.load(Ordering::SeqCst);
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    let (up, epoch) = (up2.clone(), gen2.clone());
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
                        let mut buf = [0u8; 64 * 1024];
                        loop {
                            if !up.load(Ordering::SeqCst) || epoch.load(Ordering::SeqCst) != born {
                                break;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = from.shutdown(std::net::Shutdown::Both);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { up, generation }
    }

    /// Cuts every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

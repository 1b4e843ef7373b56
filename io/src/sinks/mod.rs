//! Sinks: where messages leave — JSON lines to a file or stdout, records on a Kafka topic. Each
//! is a [`Sink`], started the same way with a [`SinkContext`]; it acks a message once it is
//! written and makes what it wrote durable on a flush (a checkpoint waits for that). `sluice run`
//! starts one for `[output]` and one for `[deadLetter]` ([`from_spec`]) and does not know which.

pub mod jsonl;
pub mod kafka;

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jsonl::Target;
use sluice_connectors::kafka::KafkaProducer;
use sluice_core::metrics::Labels;
use sluice_core::{Metrics, SinkSender};
use sluice_engine::chain::spec::KafkaConnection;

/// How many sends may wait for a sink's thread before a worker waits for it. A send is the
/// messages one batch of a worker's input produced (see `sluice_core::sink`): at most 1024.
const CAPACITY: usize = 256;

/// A sink: where the chain's results (the `output`) or its dead letters leave the engine, on a
/// thread of its own. Sink nodes send [`sluice_core::SinkItem`]s and do not know which sink
/// they feed.
///
/// The contract (checked for every sink by `sluice_testkit::sinks::holds_to_the_contract`):
/// - it registers its counters in [`SinkContext::metrics`] before it writes anything;
/// - it drops a message's [`sluice_core::Ack`] only once the message is written (a file: in
///   the file's buffer; Kafka: on the delivery report), never before;
/// - a [`sluice_core::SinkItem::Flush`] is answered once everything written before it is
///   durable (a file: synced; Kafka: delivered);
/// - when its last sender is dropped it writes what it holds, and [`Output::finish`] returns
///   how many messages it wrote.
pub trait Sink: Send + 'static {
    /// Where it writes, for logs and errors (a path, stdout, a topic).
    fn describe(&self) -> String;

    /// Opens its destination and starts its thread.
    fn start(self: Box<Self>, cx: SinkContext) -> Result<Output, SinkError>;
}

/// What a sink is handed when it starts.
pub struct SinkContext {
    /// Which output it is (`output`, `deadLetter`): in errors, its thread's name and the
    /// `sink` label of its counters.
    pub name: &'static str,
    /// A file is appended to (a resumed run, a service), else started empty.
    pub append: bool,
    /// Where it registers its counters (`/metrics`).
    pub metrics: Metrics,
}

/// Why a sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The error's text (which names the path) is part of the message, so it is not also a
    /// `source`.
    #[error("{name}: {error}")]
    Open { name: &'static str, error: std::io::Error },
    #[error("{name}: {error}")]
    Kafka { name: &'static str, error: sluice_connectors::kafka::ProducerError },
    #[error("{name}: cannot start its thread: {error}")]
    Thread { name: &'static str, error: std::io::Error },
}

/// The sink an `[output]` or `[deadLetter]` spec describes; a relative path is relative to
/// `base` (the directory of `sluice.toml`).
pub fn from_spec(spec: &OutputSpec, base: &Path) -> Box<dyn Sink> {
    match spec {
        OutputSpec::File { path } if path == "-" => Box::new(JsonLinesSink::stdout()),
        OutputSpec::File { path } => Box::new(JsonLinesSink::file(base.join(path))),
        OutputSpec::Kafka { connection, topic } => Box::new(KafkaSink::new(connection.clone(), topic.clone())),
    }
}

/// JSON lines to a file or stdout (see [`jsonl`]).
pub struct JsonLinesSink {
    path: Option<PathBuf>,
}

impl JsonLinesSink {
    pub fn file(path: PathBuf) -> Self {
        JsonLinesSink { path: Some(path) }
    }

    pub fn stdout() -> Self {
        JsonLinesSink { path: None }
    }
}

impl Sink for JsonLinesSink {
    fn describe(&self) -> String {
        self.path.as_ref().map_or_else(|| "stdout".into(), |p| p.display().to_string())
    }

    fn start(self: Box<Self>, cx: SinkContext) -> Result<Output, SinkError> {
        let stats = SinkStats::register(&cx);
        let target = match &self.path {
            None => Target::Stdout,
            Some(path) => {
                Target::File(jsonl::open(path, cx.append).map_err(|error| SinkError::Open { name: cx.name, error })?)
            }
        };
        let (tx, thread) =
            jsonl::spawn(target, CAPACITY, stats).map_err(|error| SinkError::Thread { name: cx.name, error })?;
        Ok(Output { tx, thread, is_file: true })
    }
}

/// Records on a Kafka topic (see [`kafka`]).
pub struct KafkaSink {
    connection: KafkaConnection,
    topic: String,
}

impl KafkaSink {
    pub fn new(connection: KafkaConnection, topic: String) -> Self {
        KafkaSink { connection, topic }
    }
}

impl Sink for KafkaSink {
    fn describe(&self) -> String {
        format!("Kafka {} topic {}", self.connection.brokers, self.topic)
    }

    fn start(self: Box<Self>, cx: SinkContext) -> Result<Output, SinkError> {
        let stats = SinkStats::register(&cx);
        let producer =
            KafkaProducer::new(cx.name, &self.connection).map_err(|error| SinkError::Kafka { name: cx.name, error })?;
        let (tx, thread) = kafka::spawn(Arc::new(producer), self.topic, CAPACITY, stats)
            .map_err(|error| SinkError::Thread { name: cx.name, error })?;
        Ok(Output { tx, thread, is_file: false })
    }
}

/// A sink's counters on `/metrics`, labelled by its name.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Messages written (a file: into its buffer; Kafka: handed to the producer).
    pub written: AtomicU64,
    /// Flushes answered.
    pub flushes: AtomicU64,
}

impl SinkStats {
    fn register(cx: &SinkContext) -> Arc<SinkStats> {
        let stats = Arc::new(SinkStats::default());
        let labels: Labels = match cx.name {
            "output" => &[("sink", "output")],
            "deadLetter" => &[("sink", "deadLetter")],
            // A name of its own, for as long as the process runs (a handful at most).
            other => Box::leak(Box::new([("sink", other)])),
        };
        cx.metrics.register_stats(
            &stats,
            [
                ("sluice_sink_written_total", "Messages written by a sink.", "counter", labels, |s| {
                    s.written.load(Ordering::Relaxed)
                }),
                ("sluice_sink_flushes_total", "Flushes a sink answered (checkpoints).", "counter", labels, |s| {
                    s.flushes.load(Ordering::Relaxed)
                }),
            ],
        );
        stats
    }
}

/// A started sink: a sender for sink nodes and the thread behind it.
pub struct Output {
    pub tx: SinkSender,
    pub thread: std::thread::JoinHandle<std::io::Result<u64>>,
    /// A file (or stdout): acks on write, durable on flush.
    pub is_file: bool,
}

impl Output {
    /// Waits for everything sent to be written (every sender must be dropped first); returns
    /// how many messages were.
    pub fn finish(self) -> std::io::Result<u64> {
        drop(self.tx);
        self.thread.join().unwrap_or_else(|_| Err(std::io::Error::other("the output thread panicked")))
    }
}

/// Where the `output` sink (or dead letters) go.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum OutputSpec {
    /// JSON lines to a file (`-`: stdout): a service appends; a file run (`--input`) starts it
    /// empty unless it resumes from a checkpoint.
    File { path: String },
    /// Records on a Kafka topic, keyed by originator name; acked on the delivery report.
    Kafka {
        #[serde(flatten)]
        connection: KafkaConnection,
        topic: String,
    },
}

impl OutputSpec {
    /// JSON lines on stdout.
    pub fn stdout() -> OutputSpec {
        OutputSpec::File { path: "-".into() }
    }
}

//! Sources: where messages come from. Each turns what it reads into a [`TbMsg`] with an ack handle
//! ([`crate::flow::Ack`]) and hands it to a [`Feed`].
//!
//! ```text
//! jsonl (file, stdin) ─┐
//! kafka (group)       ─┤
//! mqtt (subscriptions) ┼─ TbMsg + partition + Ack ──▶ Feed ──(watermark, key)──▶ Pipeline
//! http (device API)   ─┘
//! ```
//!
//! What a source must do is small and the same everywhere: say which partition the message came
//! from (watermarks are tracked per partition — a Kafka partition, an MQTT topic — and, with
//! `eventTime.per = "originator"`, per device within it: see [`crate::state::time`]) and hold
//! the message "unfinished" until its ack fires — commit a Kafka offset, PUBACK an MQTT
//! publish, answer an HTTP request.

//!
//! Every source is started the same way: it is a [`Source`], handed a [`SourceContext`] (the
//! feed, the shutdown signal, the metrics registry it registers its own counters in, and the
//! checkpointer), and it returns a [`SourceReport`] when its input ends or the engine stops. The
//! service builds one from `[source]` and does not know which it runs; `tests/all/sources.rs`
//! holds each to the contract.

pub mod http;
pub mod jsonl;
pub mod kafka;
pub mod mqtt;
pub mod tokens;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

pub use kafka::{Checkpointer, Offsets};

use crate::core::message::Message;

use crate::chain::Chain;
use crate::core::Ack;
use crate::core::Clock;
use crate::core::Metrics;
use crate::flow::{Closed, Envelope, PipelineSender};
use crate::state::time::{TimeField, Watermarks};

/// A source: reads messages from somewhere and hands them to the pipeline through
/// [`SourceContext::feed`].
///
/// The contract (checked for every source by `tests/all/sources.rs`):
/// - it registers its counters in [`SourceContext::metrics`] before it reads anything, so that
///   a source that never connects shows on `/metrics`;
/// - it acknowledges a message to whoever sent it (a Kafka commit, an MQTT PUBACK, an HTTP
///   answer) only once the message is processed — its [`crate::core::Ack`] fired;
/// - it stops when [`SourceContext::shutdown`] turns `true` (or its sender is dropped) and, when
///   its future ends, every message it read is in the pipeline: none is held back.
pub trait Source: Send + 'static {
    /// What it reads, for logs (a broker and topics, a URL, an address).
    fn describe(&self) -> String;

    /// Whether it saves its own checkpoints with its position (Kafka's offsets, at its cuts).
    /// The service checkpoints any other every `checkpoint_ms`, and once when it stops.
    fn checkpoints_itself(&self) -> bool {
        false
    }

    /// Runs until the input ends or shutdown; what it counted, and how it ended.
    fn run(self: Box<Self>, cx: SourceContext) -> SourceFuture;
}

/// The future of a running [`Source`]: its counts, also when it fails.
pub type SourceFuture = Pin<Box<dyn Future<Output = (SourceReport, Result<(), SourceError>)> + Send>>;

/// What a source is handed when it starts.
pub struct SourceContext {
    /// The one way into the pipeline.
    pub feed: Feed,
    /// Turns `true` when the engine stops.
    pub shutdown: watch::Receiver<bool>,
    /// Where the source registers its counters (`/metrics`).
    pub metrics: Metrics,
    /// Saves consistent cuts of the state with the source's position (used by a source that
    /// [`Source::checkpoints_itself`]).
    pub checkpointer: Arc<dyn Checkpointer>,
}

/// What a source counted: the service's summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SourceReport {
    /// Records (lines, Kafka records, MQTT messages, HTTP telemetry points) handed to the chain.
    pub records: u64,
    /// Records skipped: not a message (logged with where they came from).
    pub malformed: u64,
    /// Checkpoints committed with the source's position (Kafka).
    pub commits: u64,
    /// Partition reassignments (Kafka).
    pub rebalances: u64,
}

/// Why a source stopped before its input ended or the engine stopped it.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaSourceError),
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttSourceError),
    #[error(transparent)]
    Http(#[from] http::HttpSourceError),
}

/// The one way into a running pipeline, shared by every source: stamps a message with the
/// watermarks of its source partition (and originator: `eventTime.per`), keys it by originator
/// (so one device's messages keep their order), and waits while the workers are busy
/// (backpressure reaches the source).
///
/// Stamping and entering the pipeline's progress happen under one lock, so that no message
/// stamped before another is counted after it: a window can then only close once every message
/// that could still land in it is done. While messages flow, the watermark moves with them; a
/// thread of the feed's own re-evaluates it every [`IDLE_CHECK`] as well, so that windows close
/// when every device has gone silent (idle) instead of waiting for the next message.
#[derive(Clone)]
pub struct Feed {
    shared: Arc<Shared>,
}

struct Shared {
    sender: PipelineSender,
    watermarks: Mutex<Watermarks>,
    time_field: TimeField,
    input: jsonl::InputForm,
    clock: Clock,
}

/// How often a feed checks whether idle partitions or devices let the watermark move on.
pub const IDLE_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

impl Feed {
    pub fn new(sender: PipelineSender, chain: &Chain, watermarks: Watermarks, clock: Clock) -> Self {
        let shared = Arc::new(Shared {
            sender,
            watermarks: Mutex::new(watermarks),
            time_field: chain.time_field.clone(),
            input: chain.input.clone(),
            clock,
        });
        let weak = Arc::downgrade(&shared);
        // Ends with the last clone of the feed.
        let spawned = std::thread::Builder::new().name("sluice-watermarks".into()).spawn(move || {
            loop {
                std::thread::sleep(IDLE_CHECK);
                let Some(shared) = weak.upgrade() else { return };
                shared.advance();
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no idle check of the watermark: it moves only with messages");
        }
        Feed { shared }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watermarks> {
        self.shared.watermarks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The envelope for `msg` read from `partition`: its watermarks are advanced by the message,
    /// and it counts as in flight from now on.
    pub fn envelope(&self, msg: impl Into<Message>, partition: u32, ack: Ack) -> Envelope {
        let msg = msg.into();
        let shared = &self.shared;
        let now = shared.clock.now_ms();
        let key = Envelope::key_of(msg.entity_type(), msg.name());
        let event_time = shared.time_field.event_time(&msg, now);
        let mut watermarks = self.lock();
        let stamp = watermarks.stamp(partition, msg.name(), event_time, now);
        let mut envelope = Envelope::new(Arc::new(msg), key, ack).with_stamp(stamp).with_partition(partition);
        envelope.progress = Some(shared.sender.progress().issue(stamp.combined));
        drop(watermarks);
        envelope
    }

    /// Hands `msg` to the pipeline, waiting for room.
    pub async fn push(&self, msg: impl Into<Message>, partition: u32, ack: Ack) -> Result<(), Closed> {
        let envelope = self.envelope(msg, partition, ack);
        self.shared.sender.send(envelope).await
    }

    /// [`Feed::push`] from a thread outside the async runtime (the Kafka consumer's).
    pub fn push_blocking(&self, msg: impl Into<Message>, partition: u32, ack: Ack) -> Result<(), Closed> {
        let envelope = self.envelope(msg, partition, ack);
        self.shared.sender.send_blocking(envelope)
    }

    /// A partition was assigned: it holds the watermark back until its first message (or its
    /// idle timeout).
    pub fn expect_partition(&self, partition: u32) {
        let now = self.shared.clock.now_ms();
        self.lock().expect(partition, now);
    }

    /// A partition arrived with its state from another instance: its watermark continues from
    /// the greatest event time seen there.
    pub fn resume_partition(&self, partition: u32, max_seen: Option<i64>) {
        let now = self.shared.clock.now_ms();
        self.lock().resume(partition, max_seen, now);
    }

    /// A partition was revoked: it no longer holds the watermark back.
    pub fn forget_partition(&self, partition: u32) {
        self.lock().remove(partition);
    }

    /// The partitions this source reads change (a rebalance): `change` takes their state in and
    /// out and says where each one's watermark stands (`resume_partition`, `expect_partition`,
    /// `forget_partition`); meanwhile no window fires. Then windows close by the combined
    /// watermark of the partitions held now, even where it is behind the one reached without
    /// the partitions that just came in: their windows stay open until their own records have
    /// passed them (see [`crate::flow::Progress::rewind`]).
    pub fn reassign<R>(&self, change: impl FnOnce() -> R) -> R {
        let progress = self.shared.sender.progress().clone();
        let _gate = progress.gate();
        let out = change();
        let watermark = self.lock().current(self.shared.clock.now_ms());
        progress.rewind(watermark);
        out
    }

    /// The watermarks as of now, for a checkpoint.
    pub fn watermarks(&self) -> Watermarks {
        self.lock().clone()
    }

    /// Lets idle partitions and devices stop holding the watermark back now, without a message
    /// (the feed's own thread does this every [`IDLE_CHECK`]).
    pub fn advance_idle(&self) {
        self.shared.advance();
    }

    pub fn progress(&self) -> &Arc<crate::flow::Progress> {
        self.shared.sender.progress()
    }

    /// A [`crate::flow::Batcher`] onto the pipeline, for envelopes made by [`Feed::envelope`]
    /// (each keeps its own progress token; the batch saves the hand-over per message).
    pub fn batcher(&self) -> crate::flow::Batcher {
        self.shared.sender.batcher()
    }

    /// How flat JSON records become messages (the chain's `input`).
    pub fn input_form(&self) -> &jsonl::InputForm {
        &self.shared.input
    }

    pub fn now_ms(&self) -> i64 {
        self.shared.clock.now_ms()
    }
}

impl Shared {
    /// Moves the pipeline's progress to the combined watermark when idle entries (or the end of
    /// a warm-up) let it move on: as a message would, with nothing to process.
    fn advance(&self) {
        let now = self.clock.now_ms();
        let mut watermarks = self.watermarks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(combined) = watermarks.advance(now) {
            drop(self.sender.progress().issue(combined));
        }
    }
}

pub(crate) use crate::core::input::json_kind;

/// How many levels of arrays and objects input JSON may nest (`[[0]]` is 2): serde_json's
/// recursion limit (it refuses the 128th level), here and in every guest, whose SDK parses
/// messages with the same library. Deeper input is refused with this number in the error rather
/// than serde_json's bare "recursion limit exceeded".
pub const MAX_DEPTH: usize = 127;

/// Parses input JSON (a line, an MQTT payload, an HTTP body). Numbers keep every digit (serde_json
/// with `arbitrary_precision`): a 39-digit integer reaches the chain and the output as written.
pub(crate) fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(bytes).map_err(json_error)
}

/// A JSON syntax error as a line's error says it.
pub(crate) fn json_error(e: serde_json::Error) -> String {
    if e.to_string().starts_with("recursion limit exceeded") {
        format!("nesting deeper than {MAX_DEPTH} levels (Sluice's limit for input JSON) at column {}", e.column())
    } else {
        e.to_string()
    }
}

/// Refuses a message whose `data` nests so deep that the message, with its own object around
/// `data`, would pass [`MAX_DEPTH`]: nodes could not read it.
pub(crate) fn check_depth(msg: &sluice_sdk::TbMsg) -> Result<(), String> {
    if 1 + depth(&msg.data) > MAX_DEPTH {
        return Err(depth_error());
    }
    Ok(())
}

pub(crate) fn depth_error() -> String {
    format!(
        "nesting deeper than {MAX_DEPTH} levels (Sluice's limit for a message, counting the message object around `data`)"
    )
}

/// Levels of arrays and objects in `value` (a scalar is 0), without recursion.
pub(crate) fn depth(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    let scalar = |v: &Value| !matches!(v, Value::Array(_) | Value::Object(_));
    // The common case, flat telemetry, without a stack.
    match value {
        Value::Object(map) if map.values().all(scalar) => return 1,
        Value::Array(items) if items.iter().all(scalar) => return 1,
        v if scalar(v) => return 0,
        _ => {}
    }
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, above)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(above + 1);
        stack.extend(children.map(|child| (child, above + 1)));
    }
    deepest
}

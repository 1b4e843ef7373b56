//! Sources: where messages come from. Each turns what it reads into a [`TbMsg`] with an ack handle
//! ([`sluice_engine::flow::Ack`]) and hands it to a [`Feed`].
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
//! `eventTime.per = "originator"`, per device within it: see [`sluice_engine::state::time`]) and hold
//! the message "unfinished" until its ack fires — commit a Kafka offset, PUBACK an MQTT
//! publish, answer an HTTP request (a file's acks are only counted).
//!
//! Every source is started the same way: it is a [`Source`], handed a [`SourceContext`] (the
//! feed, the shutdown signal, the metrics registry it registers its own counters in, the
//! checkpointer and where a restored checkpoint left it), and it returns a [`SourceReport`] when
//! its input ends or the engine stops. [`crate::app`] runs one — JSON lines when no `[source]`
//! is configured, else [`from_spec`] — and does not know which it runs; a file differs only in
//! being [`Source::finite`]. `tests/all/sources.rs` holds each to the contract.

pub mod http;
pub mod jsonl;
pub mod kafka;
pub mod mqtt;
pub mod tokens;

use serde::Deserialize;

use http::HttpSourceSpec;
use kafka::KafkaSourceSpec;
use mqtt::MqttSourceSpec;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use sluice_core::message::Message;

use sluice_core::Clock;
use sluice_core::Metrics;
use sluice_core::{Ack, AckGroup};
use sluice_engine::chain::Chain;
use sluice_engine::flow::{Closed, Envelope, PipelineSender};
use std::collections::{BTreeMap, BTreeSet};

use sluice_engine::state::checkpoint::{Captured, SourcePosition};
use sluice_engine::state::partition::PartitionState;
use sluice_engine::state::time::{TimeField, Watermarks};
use sluice_engine::state::window::Owner;

/// A source: reads messages from somewhere and hands them to the pipeline through
/// [`SourceContext::feed`].
///
/// The contract (checked for every source by `tests/all/sources.rs`):
/// - it registers its counters in [`SourceContext::metrics`] before it reads anything, so that
///   a source that never connects shows on `/metrics`;
/// - it acknowledges a message to whoever sent it (a Kafka commit, an MQTT PUBACK, an HTTP
///   answer) only once the message is processed — its [`sluice_core::Ack`] fired;
/// - it stops when [`SourceContext::shutdown`] turns `true` (or its sender is dropped) and, when
///   its future ends, every message it read is in the pipeline: none is held back.
pub trait Source: Send + 'static {
    /// What it reads, for logs (a broker and topics, a URL, an address).
    fn describe(&self) -> String;

    /// Which input this is, in checkpoints (a file's path, a group and its topics, a URL): a
    /// checkpoint of another input is not resumed.
    fn id(&self) -> String;

    /// Whether its input ends (a file, stdin). The end of a finite input closes every window
    /// still open, waits for pending timers and marks the checkpoint complete; its watermark
    /// moves only with its records (no idle check by the wall clock), so a run's results do
    /// not depend on how fast it reads; and a fresh run starts its output files empty. A
    /// source that runs on is only ever paused: its windows stay open in the state, and its
    /// files are appended to.
    fn finite(&self) -> bool {
        false
    }

    /// Whether it saves its own checkpoints with its position (Kafka's offsets, a file's line,
    /// at its cuts). The engine checkpoints any other every
    /// [`SourceContext::checkpoint_every`]; it writes every source's last checkpoint when the
    /// source has returned and the pipeline has stopped.
    fn checkpoints_itself(&self) -> bool {
        false
    }

    /// Whether its partitions are heard of only as they come (MQTT topics), rather than known
    /// or assigned before their records (a file's one, Kafka's).
    fn discovers_partitions(&self) -> bool {
        false
    }

    /// Runs until the input ends or shutdown; what it counted, and how it ended.
    fn run(self: Box<Self>, cx: SourceContext) -> SourceFuture;
}

/// Offsets as checkpoints store them: `"topic/partition"` → next offset to read.
pub type Offsets = BTreeMap<String, i64>;

/// What the engine does at a source's cut, and with state that moves between instances.
pub trait Checkpointer: Send + Sync {
    /// Saves the state with these offsets now (the pipeline is idle and every message handed
    /// out is acked when it is called): revocation, shutdown. The result also holds the state
    /// of each of `partitions`, for the changelog.
    fn save(&self, offsets: &Offsets, partitions: &BTreeSet<Owner>) -> Result<Captured, CutError>;
    /// Takes the state in memory with these offsets (the pipeline is idle; outputs of the
    /// messages it covers may still be on their way), with each of `partitions`' share.
    fn capture(&self, offsets: &Offsets, partitions: &BTreeSet<Owner>) -> Result<Captured, CutError>;
    /// Writes what [`Checkpointer::capture`] took (every message it covers is now acked).
    fn persist(&self, captured: &Captured) -> Result<(), CutError>;
    /// Takes in a partition's state from the changelog (the partition moved here).
    fn absorb(&self, partition: Owner, state: PartitionState) -> Result<(), CutError>;
    /// Forgets a partition's state (it moved away, or the changelog has newer); returns how
    /// many entries.
    fn drop_partition(&self, partition: Owner) -> usize;
    /// Saves the state now at `position`, a source's units without offsets (a file's lines);
    /// the pipeline is idle and nothing is held back when it is called.
    fn save_at(&self, position: u64) -> Result<(), CutError>;
}

/// Why a cut (a checkpoint) could not be taken or written.
#[derive(Debug, thiserror::Error)]
pub enum CutError {
    #[error("cannot flush an output: {0}")]
    Flush(std::io::Error),
    #[error(transparent)]
    Checkpoint(#[from] sluice_engine::state::checkpoint::CheckpointError),
    #[error("cannot capture the state: {0}")]
    Capture(serde_json::Error),
    #[error(transparent)]
    Partition(#[from] sluice_engine::state::partition::PartitionStateError),
}

/// The source `[source]` of a `sluice.toml` describes; relative paths in it (certificates) are
/// relative to `base`, the file's directory.
pub fn from_spec(spec: SourceSpec, base: &std::path::Path) -> Box<dyn Source> {
    match spec {
        SourceSpec::Kafka(spec) => Box::new(kafka::KafkaSource::new(spec)),
        SourceSpec::Mqtt(spec) => Box::new(mqtt::MqttSource::new(spec, base)),
        SourceSpec::Http(spec) => Box::new(http::HttpSource::new(spec, base)),
    }
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
    /// Whether checkpoints reach a disk (not with `--no-state`): a source whose cuts only save
    /// state (a file's) skips them without one; Kafka's also commit offsets, so it cuts anyway.
    pub keeps_state: bool,
    /// How often a source that [`Source::checkpoints_itself`] cuts.
    pub checkpoint_every: std::time::Duration,
    /// Counts the messages whose every branch finished, for a source whose acks need no more
    /// than a count (a file's: `Ack::new(cx.acks.clone(), line)`). The engine reports it once
    /// the pipeline has stopped; the others acknowledge to their senders.
    pub acks: Arc<sluice_core::AckCounter>,
    /// Where the state restored from the last checkpoint of this source leaves it: the line
    /// of a file, the offsets of Kafka partitions (`None`: it starts from the beginning).
    pub resume: Option<SourcePosition>,
}

/// What a source counted: the run's summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SourceReport {
    /// Records (lines, Kafka records, MQTT messages, HTTP telemetry points) handed to the chain.
    pub records: u64,
    /// Records skipped: not a message (logged with where they came from).
    pub malformed: u64,
    /// Checkpoints committed with the source's position while it ran (Kafka, a file).
    pub commits: u64,
    /// Partition reassignments (Kafka).
    pub rebalances: u64,
    /// Lines read, blank ones and those a restored checkpoint covered included (a file): the
    /// position its last checkpoint is taken at.
    pub lines: u64,
    /// Lines a restored checkpoint covered, skipped rather than run again (a file).
    pub resumed_after: u64,
    /// The input reached its end (a [`Source::finite`] one), rather than being stopped.
    pub exhausted: bool,
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
    #[error(transparent)]
    Lines(#[from] jsonl::JsonLinesError),
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
    /// The feed of a source that runs on (a broker, a server): a thread of its own lets the
    /// watermark move on when partitions or devices fall idle (see [`IDLE_CHECK`]).
    pub fn new(sender: PipelineSender, chain: &Chain, watermarks: Watermarks, clock: Clock) -> Self {
        let feed = Feed::without_idle_check(sender, chain, watermarks, clock);
        let weak = Arc::downgrade(&feed.shared);
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
        feed
    }

    /// The feed of a source whose input ends ([`Source::finite`]: a file, stdin): the watermark
    /// moves only with its records, never with the wall clock, so a run's results do not depend
    /// on how fast it reads. Its end closes the windows still open.
    pub fn without_idle_check(sender: PipelineSender, chain: &Chain, watermarks: Watermarks, clock: Clock) -> Self {
        let shared = Arc::new(Shared {
            sender,
            watermarks: Mutex::new(watermarks),
            time_field: chain.time_field.clone(),
            input: chain.input.clone(),
            clock,
        });
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
    /// passed them (see [`sluice_engine::flow::Progress::rewind`]).
    pub fn reassign<R>(&self, change: impl FnOnce() -> R) -> R {
        let progress = self.shared.sender.progress().clone();
        let _gate = progress.gate();
        let out = change();
        let watermark = self.lock().current(self.shared.clock.now_ms());
        progress.rewind(watermark);
        out
    }

    /// A handle that does not keep the feed (and its pipeline) alive: for `/metrics`.
    pub fn downgrade(&self) -> WeakFeed {
        WeakFeed(Arc::downgrade(&self.shared))
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

    pub fn progress(&self) -> &Arc<sluice_engine::flow::Progress> {
        self.shared.sender.progress()
    }

    /// Hands messages over in batches, for a source that has many at hand (see [`FeedBatcher`]).
    pub fn batcher(&self) -> FeedBatcher {
        let batcher = self.shared.sender.batcher();
        let groups = (0..batcher.workers()).map(|_| None).collect();
        FeedBatcher { feed: self.clone(), batcher, groups }
    }

    /// How flat JSON records become messages (the chain's `input`).
    pub fn input_form(&self) -> &jsonl::InputForm {
        &self.shared.input
    }

    pub fn now_ms(&self) -> i64 {
        self.shared.clock.now_ms()
    }
}

/// A [`Feed`] that does not keep it alive (see [`Feed::downgrade`]).
pub struct WeakFeed(std::sync::Weak<Shared>);

impl WeakFeed {
    /// The watermarks of the feed, if it still runs.
    pub fn watermarks(&self) -> Option<Watermarks> {
        let shared = self.0.upgrade()?;
        let watermarks = shared.watermarks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some(watermarks)
    }
}

/// The [`Feed`] for a source with many messages at hand (a file, a Kafka poll): each message is
/// stamped as by [`Feed::push`], then held in its worker's batch, which is handed over when full
/// or on [`FeedBatcher::flush`]. A batch is one unit of progress (see [`sluice_engine::flow::Batcher`]):
/// per message there is no token, no channel send and no wake-up of a worker.
///
/// A message held in a batch is in flight: it holds its windows open. So a source flushes
/// whenever it is about to wait for input, and before it waits for the pipeline to be idle (a
/// checkpoint), or it would wait for messages it holds itself.
pub struct FeedBatcher {
    feed: Feed,
    batcher: sluice_engine::flow::Batcher,
    /// Per worker, the ack handle its pending batch's counted messages share
    /// ([`FeedBatcher::push_counted_at`]): closed when the batch is handed over.
    groups: Vec<Option<AckGroup>>,
}

impl FeedBatcher {
    /// Stamps `msg` and adds it to its worker's batch; returns the worker when that batch is
    /// full. Stamp and enqueue happen under the watermark lock, as in [`Feed::envelope`].
    fn enqueue(&mut self, msg: Message, partition: u32, ack: Ack, now: i64) -> Option<usize> {
        let key = Envelope::key_of(msg.entity_type(), msg.name());
        self.enqueue_keyed(msg, key, partition, ack, now)
    }

    fn enqueue_keyed(&mut self, msg: Message, key: u64, partition: u32, ack: Ack, now: i64) -> Option<usize> {
        let shared = &self.feed.shared;
        let event_time = shared.time_field.event_time(&msg, now);
        let mut watermarks = self.feed.lock();
        let stamp = watermarks.stamp(partition, msg.name(), event_time, now);
        let envelope = Envelope::new(Arc::new(msg), key, ack).with_stamp(stamp).with_partition(partition);
        let i = self.batcher.enqueue(envelope);
        drop(watermarks);
        self.batcher.full(i).then_some(i)
    }

    /// Adds `msg`, read from `partition`, to its batch (handing the batch over, waiting for
    /// room, once it is full).
    pub async fn push(&mut self, msg: impl Into<Message>, partition: u32, ack: Ack) -> Result<(), Closed> {
        let now = self.feed.now_ms();
        self.push_at(msg, partition, ack, now).await
    }

    /// [`FeedBatcher::push`] with the arrival time already read (once per buffer a file
    /// reader fills, rather than once per line).
    pub async fn push_at(&mut self, msg: impl Into<Message>, partition: u32, ack: Ack, now: i64) -> Result<(), Closed> {
        match self.enqueue(msg.into(), partition, ack, now) {
            Some(i) => self.batcher.send(i).await,
            None => Ok(()),
        }
    }

    /// [`FeedBatcher::push_at`] for a source whose acks are only counted (a file's): the
    /// messages of one worker's batch share one ack handle ([`AckGroup`]) instead of each
    /// allocating its own, and only that worker touches it. `position` is the message's (the
    /// group reports its first).
    pub async fn push_counted_at(
        &mut self,
        msg: impl Into<Message>,
        target: &Arc<sluice_core::AckCounter>,
        position: u64,
        now: i64,
    ) -> Result<(), Closed> {
        let msg = msg.into();
        let key = Envelope::key_of(msg.entity_type(), msg.name());
        let worker = self.batcher.worker_of(key);
        let group = self.groups[worker].get_or_insert_with(|| AckGroup::new(target.clone(), position));
        let ack = group.join();
        match self.enqueue_keyed(msg, key, 0, ack, now) {
            Some(i) => {
                self.groups[i] = None;
                self.batcher.send(i).await
            }
            None => Ok(()),
        }
    }

    /// [`FeedBatcher::push`] from a thread outside the async runtime (the Kafka consumer's).
    pub fn push_blocking(&mut self, msg: impl Into<Message>, partition: u32, ack: Ack) -> Result<(), Closed> {
        let now = self.feed.now_ms();
        match self.enqueue(msg.into(), partition, ack, now) {
            Some(i) => self.batcher.send_blocking(i),
            None => Ok(()),
        }
    }

    /// Hands every partial batch over.
    pub async fn flush(&mut self) -> Result<(), Closed> {
        self.groups.iter_mut().for_each(|g| *g = None);
        self.batcher.flush().await
    }

    /// [`FeedBatcher::flush`] from a thread outside the async runtime.
    pub fn flush_blocking(&mut self) -> Result<(), Closed> {
        self.groups.iter_mut().for_each(|g| *g = None);
        self.batcher.flush_blocking()
    }

    /// Whether a message waits in a batch not yet handed over.
    pub fn holds(&self) -> bool {
        self.batcher.holds()
    }

    pub fn feed(&self) -> &Feed {
        &self.feed
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

pub(crate) use sluice_core::input::json_kind;

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

/// Where messages come from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceSpec {
    /// A Kafka consumer group.
    Kafka(KafkaSourceSpec),
    /// MQTT subscriptions (QoS 1), ThingsBoard device and gateway API topics.
    Mqtt(MqttSourceSpec),
    /// ThingsBoard's HTTP device API (`POST /api/v1/{token}/telemetry`).
    Http(HttpSourceSpec),
}

/// How a record's bytes become a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// A TbMsg as JSON, or ThingsBoard's simple telemetry form (`{"ts", "deviceName", …}`),
    /// as in JSON-lines input.
    #[default]
    Json,
    /// Bytes for an uplink decoder: `data` is the payload as text (base64, with
    /// `metadata.payloadEncoding = "base64"`, when it is not UTF-8); the record key names the
    /// device.
    Raw,
}

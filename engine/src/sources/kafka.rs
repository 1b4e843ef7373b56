//! The Kafka source: a consumer-group member (librdkafka) that feeds the pipeline and commits
//! offsets only for messages whose every branch has finished.
//!
//! ```text
//! poll ──record──▶ Msg + Ack(partition, offset) ──▶ Feed ──▶ chain ──▶ sinks / actions
//!   ▲                                                                      │ (delivered)
//!   └── commit(next offsets) ◀── checkpoint(state + offsets) ◀── all acked ┘
//! ```
//!
//! **Delivery guarantee: at least once.** Every `checkpoint` period the consumer stops polling
//! until the workers have run every message it handed out, takes the state in memory with the
//! next offset of every partition, and reads on. Once every message that capture covers is acked
//! (its outputs written or delivered), it writes the capture (one redb transaction) and then
//! commits those offsets to Kafka. The input pauses for the workers to drain, not for a broker
//! round trip. A crash replays from the last
//! checkpoint: state and offsets agree, and results produced after it come again with the same
//! ids (record ids are derived from topic, partition and offset).
//!
//! **Rebalances.** On revocation the same cut runs before the partitions are given up, so the
//! next owner starts exactly where this one committed. On assignment, partitions this instance
//! has checkpointed resume from the checkpoint's offsets (which may be ahead of Kafka's if the
//! process died between saving and committing); others from the group's committed offset.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use sluice_sdk::{Msg, Originator, msg_type};
use uuid::Uuid;

use super::Feed;
use crate::config::{KafkaSourceSpec, PayloadFormat};
use crate::flow::{Ack, AckTarget};
use crate::state::checkpoint::Captured;

/// Namespace of record ids: uuid v5 of `topic/partition@offset`.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x5a1c_e000_0000_4000_8000_6b61_666b_6100);

/// Offsets as checkpoints store them: `"topic/partition"` → next offset to read.
pub type Offsets = BTreeMap<String, i64>;

#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("Kafka source ({brokers}): {message}")]
    Setup { brokers: String, message: String },
    #[error("Kafka source: checkpoint failed: {0}")]
    Checkpoint(String),
}

/// What the service does at a cut.
pub trait Checkpointer: Send + Sync {
    /// Saves the state with these offsets now (the pipeline is idle and every message handed
    /// out is acked when it is called): revocation, shutdown.
    fn save(&self, offsets: &Offsets) -> Result<(), String>;
    /// Takes the state in memory with these offsets (the pipeline is idle; outputs of the
    /// messages it covers may still be on their way).
    fn capture(&self, offsets: &Offsets) -> Result<Captured, String>;
    /// Writes what [`Checkpointer::capture`] took (every message it covers is now acked).
    fn persist(&self, captured: &Captured) -> Result<(), String>;
}

/// Counts of a run, for logs and `/metrics`.
#[derive(Debug, Default)]
pub struct KafkaSourceStats {
    pub records: AtomicU64,
    pub malformed: AtomicU64,
    pub commits: AtomicU64,
    pub rebalances: AtomicU64,
}

/// The key of a partition in checkpoints and logs.
pub fn partition_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// Messages handed out and not yet acked, per partition, and the next offset to read.
#[derive(Default)]
struct Tracker {
    partitions: Mutex<Vec<Track>>,
}

struct Track {
    topic: String,
    partition: i32,
    /// Offsets handed to the pipeline and not yet acked.
    pending: BTreeSet<i64>,
    /// One past the last offset handed out.
    next: i64,
    assigned: bool,
}

impl Tracker {
    /// The index of `(topic, partition)`, registering it.
    fn index(&self, topic: &str, partition: i32) -> usize {
        let mut tracks = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = tracks.iter().position(|t| t.partition == partition && t.topic == topic) {
            return i;
        }
        tracks.push(Track { topic: topic.into(), partition, pending: BTreeSet::new(), next: -1, assigned: true });
        tracks.len() - 1
    }

    fn handed_out(&self, index: usize, offset: i64) {
        let mut tracks = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let track = &mut tracks[index];
        track.pending.insert(offset);
        track.next = offset + 1;
    }

    fn pending(&self) -> usize {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|t| t.pending.len()).sum()
    }

    /// Next offsets of assigned partitions that have handed out something (safe to commit
    /// once nothing is pending): `(topic, partition, offset)`.
    fn positions(&self) -> Vec<(String, i32, i64)> {
        let tracks = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        tracks
            .iter()
            .filter(|t| t.assigned && t.next >= 0)
            .map(|t| (t.topic.clone(), t.partition, t.pending.first().copied().unwrap_or(t.next)))
            .collect()
    }

    /// One past the last offset handed out, per assigned partition that handed out something:
    /// what a capture taken while the pipeline is idle covers.
    fn handed_out_positions(&self) -> Vec<(String, i32, i64)> {
        let tracks = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        tracks.iter().filter(|t| t.assigned && t.next >= 0).map(|t| (t.topic.clone(), t.partition, t.next)).collect()
    }

    /// Every message below these offsets is acked (processed and its outputs delivered).
    fn acked_below(&self, targets: &[(String, i32, i64)]) -> bool {
        let tracks = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        targets.iter().all(|(topic, partition, offset)| {
            tracks
                .iter()
                .find(|t| t.partition == *partition && t.topic == *topic)
                .is_none_or(|t| t.pending.first().is_none_or(|first| first >= offset))
        })
    }

    fn set_assigned(&self, topic: &str, partition: i32, assigned: bool) {
        let i = self.index(topic, partition);
        let mut tracks = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        tracks[i].assigned = assigned;
    }

    /// The next offset this process would read on `(topic, partition)`, if it read any.
    fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        let tracks = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        tracks.iter().find(|t| t.partition == partition && t.topic == topic && t.next >= 0).map(|t| t.next)
    }
}

impl AckTarget for Tracker {
    fn ack(&self, position: u64) {
        let (index, offset) = ((position >> 48) as usize, (position & ((1 << 48) - 1)) as i64);
        let mut tracks = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(track) = tracks.get_mut(index) {
            track.pending.remove(&offset);
        }
    }
}

/// The consumer's context: runs the cut on revocation and seeks to checkpointed offsets on
/// assignment.
struct Context {
    tracker: Arc<Tracker>,
    cut: Arc<Cut>,
    /// Offsets of the restored checkpoint, used once per partition on its first assignment.
    restored: Mutex<Offsets>,
    stats: Arc<KafkaSourceStats>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        // Broker down, DNS, auth: librdkafka reconnects by itself; say so once per event.
        tracing::warn!(%error, "Kafka source: {reason} (librdkafka keeps reconnecting)");
    }
}

impl ConsumerContext for Context {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut restored = self.restored.lock().unwrap_or_else(|p| p.into_inner());
                let mut assigned = Vec::new();
                for mut elem in tpl.elements() {
                    let key = partition_key(elem.topic(), elem.partition());
                    // Where this process's state says the partition is: past what it has
                    // processed already (the assignment came back after a session loss), else
                    // the restored checkpoint's offset, else the group's committed offset.
                    let resume = self.tracker.position(elem.topic(), elem.partition()).or(restored.remove(&key));
                    if let Some(offset) = resume {
                        let _ = elem.set_offset(Offset::Offset(offset));
                    }
                    assigned.push(key);
                    self.tracker.set_assigned(elem.topic(), elem.partition(), true);
                    self.cut.feed.expect_partition(watermark_partition(elem.topic(), elem.partition()));
                }
                tracing::info!(partitions = ?assigned, "Kafka source: partitions assigned");
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(error = %e, "Kafka source: cannot take the assignment");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Hand over cleanly: everything read so far finished, saved and committed.
                if let Err(e) = self.cut.run(consumer, &self.tracker) {
                    tracing::error!("Kafka source: checkpoint before revocation failed: {e}");
                }
                let revoked: Vec<_> = tpl.elements().iter().map(|e| partition_key(e.topic(), e.partition())).collect();
                // Their events now go to another instance: they no longer hold this one's
                // watermark back.
                for elem in tpl.elements() {
                    self.tracker.set_assigned(elem.topic(), elem.partition(), false);
                    self.cut.feed.forget_partition(watermark_partition(elem.topic(), elem.partition()));
                }
                tracing::info!(partitions = ?revoked, "Kafka source: partitions revoked");
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "Kafka source: cannot give up the assignment");
                }
            }
            other => tracing::error!(error = ?other, "Kafka source: rebalance error"),
        }
    }
}

/// The consistent cut: all handed-out messages acked, state saved with the offsets, offsets
/// committed.
struct Cut {
    checkpointer: Arc<dyn Checkpointer>,
    feed: Feed,
    stats: Arc<KafkaSourceStats>,
    /// Set while the source stops: no more waiting for acks that cannot come.
    stopping: Arc<AtomicBool>,
    /// Bumped by every blocking cut: a capture taken before one is stale and never written
    /// (it would put older state over newer).
    epoch: AtomicU64,
}

/// A checkpoint taken in memory, waiting for the outputs of the messages it covers.
struct PendingCut {
    captured: Captured,
    targets: Vec<(String, i32, i64)>,
    epoch: u64,
    started: Instant,
}

impl Cut {
    /// The periodic cut, first half: waits only until the workers have run every message handed
    /// out (not until their outputs are delivered), takes the state in memory, and lets the
    /// source read on. Output deliveries — a broker round trip — no longer stall the input.
    fn capture(&self, tracker: &Tracker) -> Result<PendingCut, String> {
        let started = Instant::now();
        while !self.feed.progress().idle() {
            std::thread::sleep(Duration::from_micros(100));
            if self.stopping.load(Ordering::SeqCst) {
                return Err("stopping".into());
            }
        }
        let targets = tracker.handed_out_positions();
        let offsets: Offsets = targets.iter().map(|(t, p, offset)| (partition_key(t, *p), *offset)).collect();
        let captured = self.checkpointer.capture(&offsets)?;
        Ok(PendingCut { captured, targets, epoch: self.epoch.load(Ordering::SeqCst), started })
    }

    /// The second half, once every message the capture covers is acked: write it, then commit
    /// its offsets. `Ok(false)`: stale (a blocking cut came in between), nothing done.
    fn finish(&self, consumer: &BaseConsumer<Context>, pending: PendingCut) -> Result<bool, String> {
        if pending.epoch != self.epoch.load(Ordering::SeqCst) {
            return Ok(false);
        }
        self.checkpointer.persist(&pending.captured)?;
        if !pending.targets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (topic, partition, offset) in &pending.targets {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)).map_err(|e| e.to_string())?;
            }
            consumer.commit(&tpl, CommitMode::Sync).map_err(|e| format!("commit {:?}: {e}", pending.targets))?;
            self.stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(
            targets = ?pending.targets,
            took_ms = pending.started.elapsed().as_millis() as u64,
            "Kafka source: checkpoint written and committed"
        );
        Ok(true)
    }

    /// The blocking cut (revocation, shutdown): everything handed out acked, saved, committed.
    fn run(&self, consumer: &BaseConsumer<Context>, tracker: &Tracker) -> Result<(), String> {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let mut warned = false;
        while tracker.pending() > 0 || !self.feed.progress().idle() {
            std::thread::sleep(Duration::from_micros(200));
            if !warned && started.elapsed() > Duration::from_secs(5) {
                tracing::warn!(
                    pending = tracker.pending(),
                    "Kafka source: checkpoint waits for messages to be delivered (is an output broker down?)"
                );
                warned = true;
            }
            if self.stopping.load(Ordering::SeqCst) && started.elapsed() > Duration::from_secs(30) {
                return Err(format!("{} messages still unacked at shutdown: not committed", tracker.pending()));
            }
        }
        let positions = tracker.positions();
        let offsets: Offsets = positions.iter().map(|(t, p, offset)| (partition_key(t, *p), *offset)).collect();
        self.checkpointer.save(&offsets)?;
        if positions.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset) in &positions {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)).map_err(|e| e.to_string())?;
        }
        consumer.commit(&tpl, CommitMode::Sync).map_err(|e| format!("commit {offsets:?}: {e}"))?;
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(?offsets, took_ms = started.elapsed().as_millis() as u64, "Kafka source: committed");
        Ok(())
    }
}

/// A running Kafka source.
pub struct KafkaSource {
    pub stats: Arc<KafkaSourceStats>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<(), KafkaSourceError>>,
}

impl KafkaSource {
    /// Subscribes and starts consuming on a thread of its own. `restored`: the offsets of the
    /// checkpoint the state was restored from.
    pub fn start(
        spec: KafkaSourceSpec,
        feed: Feed,
        checkpointer: Arc<dyn Checkpointer>,
        restored: Offsets,
        every: Duration,
    ) -> Result<KafkaSource, KafkaSourceError> {
        let brokers = spec.brokers.clone();
        let setup = |message: String| KafkaSourceError::Setup { brokers: brokers.clone(), message };
        if spec.topics.is_empty() {
            return Err(setup("`topics` is empty".into()));
        }
        let stats = Arc::new(KafkaSourceStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tracker = Arc::new(Tracker::default());
        let cut = Arc::new(Cut {
            checkpointer,
            feed: feed.clone(),
            stats: stats.clone(),
            stopping: stop.clone(),
            epoch: AtomicU64::new(0),
        });
        let context = Context {
            tracker: tracker.clone(),
            cut: cut.clone(),
            restored: Mutex::new(restored),
            stats: stats.clone(),
        };
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &spec.brokers)
            .set("group.id", &spec.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Low fetch wait: some brokers (tansu) answer a fetch only after the maximum wait.
            .set("fetch.wait.max.ms", "10");
        for (k, v) in &spec.properties {
            config.set(k, v);
        }
        let consumer: BaseConsumer<Context> =
            config.create_with_context(context).map_err(|e| setup(format!("cannot create the consumer: {e}")))?;
        let topics: Vec<&str> = spec.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| setup(format!("cannot subscribe to {topics:?}: {e}")))?;
        let reader = Reader { spec, feed, tracker, cut, stats: stats.clone(), stop: stop.clone(), every };
        let thread = std::thread::Builder::new()
            .name("sluice-kafka-source".into())
            .spawn(move || reader.run(consumer))
            .map_err(|e| setup(e.to_string()))?;
        Ok(KafkaSource { stats, stop, thread })
    }

    /// Stops reading, checkpoints and commits what was processed, and leaves the group.
    pub fn stop(self) -> Result<(), KafkaSourceError> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_else(|_| Err(KafkaSourceError::Checkpoint("the consumer thread panicked".into())))
    }

    /// The consumer thread has ended (an error, or a stop).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

struct Reader {
    spec: KafkaSourceSpec,
    feed: Feed,
    tracker: Arc<Tracker>,
    cut: Arc<Cut>,
    stats: Arc<KafkaSourceStats>,
    stop: Arc<AtomicBool>,
    every: Duration,
}

impl Reader {
    fn run(self, consumer: BaseConsumer<Context>) -> Result<(), KafkaSourceError> {
        let acks: Arc<dyn AckTarget> = self.tracker.clone();
        let mut last_cut = Instant::now();
        let mut pending: Option<PendingCut> = None;
        while !self.stop.load(Ordering::SeqCst) {
            if pending.is_none() && last_cut.elapsed() >= self.every {
                match self.cut.capture(&self.tracker) {
                    Ok(cut) => pending = Some(cut),
                    Err(e) => tracing::warn!("Kafka source: checkpoint deferred: {e}"),
                }
                last_cut = Instant::now();
            }
            if pending.as_ref().is_some_and(|p| self.tracker.acked_below(&p.targets))
                && let Some(cut) = pending.take()
            {
                // A failed cut (broker unreachable for the commit, say) is retried at the next
                // one: the checkpoint on disk and the group's offsets only ever lag, so a
                // restart replays — never skips.
                if let Err(e) = self.cut.finish(&consumer, cut) {
                    tracing::warn!("Kafka source: checkpoint deferred: {e}");
                }
            }
            match consumer.poll(Duration::from_millis(50)) {
                None => {}
                Some(Err(e)) => tracing::warn!(error = %e, "Kafka source: poll"),
                Some(Ok(record)) => {
                    self.stats.records.fetch_add(1, Ordering::Relaxed);
                    let index = self.tracker.index(record.topic(), record.partition());
                    let offset = record.offset();
                    match to_msg(&record, &self.spec) {
                        Ok(msg) => {
                            self.tracker.handed_out(index, offset);
                            let ack = Ack::new(acks.clone(), ((index as u64) << 48) | offset as u64);
                            if self
                                .feed
                                .push_blocking(&msg, watermark_partition(record.topic(), record.partition()), ack)
                                .is_err()
                            {
                                break;
                            }
                        }
                        Err(reason) => {
                            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                topic = record.topic(),
                                partition = record.partition(),
                                offset,
                                "Kafka source: skipping a record that is not a message: {reason}"
                            );
                            // Nothing pending for it: its offset is passed by the next commit.
                            self.tracker.handed_out(index, offset);
                            self.tracker.ack(((index as u64) << 48) | offset as u64);
                        }
                    }
                }
            }
        }
        let result = self.cut.run(&consumer, &self.tracker).map_err(KafkaSourceError::Checkpoint);
        consumer.unsubscribe();
        result
    }
}

/// The watermark partition of a record: topic and partition in one number, stable across runs.
fn watermark_partition(topic: &str, partition: i32) -> u32 {
    let topic = crate::runtime::cache::content_hash(topic.as_bytes());
    let hi = u32::from_str_radix(&topic[..4], 16).unwrap_or(0);
    (hi << 16) | (partition as u32 & 0xffff)
}

/// A record as a message: per `format`, a TbMsg / simple telemetry JSON, or raw bytes for an
/// uplink decoder.
pub fn to_msg(record: &BorrowedMessage<'_>, spec: &KafkaSourceSpec) -> Result<Msg, String> {
    let ts = record.timestamp().to_millis().unwrap_or_else(chrono_now);
    let source = partition_key(record.topic(), record.partition());
    let payload = record.payload().unwrap_or_default();
    let key = record.key().map(|k| String::from_utf8_lossy(k).into_owned());
    let mut msg = match spec.format {
        PayloadFormat::Json => {
            let text = std::str::from_utf8(payload).map_err(|e| format!("not UTF-8: {e}"))?;
            super::jsonl::parse_line(&source, record.offset() as u64, text, ts)
                .map_err(|e| e.message)?
                .ok_or("empty record")?
        }
        PayloadFormat::Raw => {
            let device = key.clone().ok_or("a raw record needs a key naming its device")?;
            let msg_type = spec.msg_type.as_deref().unwrap_or(msg_type::POST_TELEMETRY_REQUEST);
            let (data, encoding) = match std::str::from_utf8(payload) {
                Ok(text) => (serde_json::Value::String(text.to_string()), None),
                Err(_) => (
                    serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(payload)),
                    Some("base64"),
                ),
            };
            let mut msg = Msg::new(msg_type, Originator::device(&device), data).with_ts(ts);
            msg.metadata.insert("deviceName".into(), device);
            msg.metadata.insert("ts".into(), ts.to_string());
            if let Some(encoding) = encoding {
                msg.metadata.insert("payloadEncoding".into(), encoding.into());
            }
            msg
        }
    };
    msg.id = Uuid::new_v5(&ID_NAMESPACE, format!("{source}@{}", record.offset()).as_bytes()).to_string();
    msg.metadata.insert("topic".into(), record.topic().to_string());
    msg.metadata.insert("partition".into(), record.partition().to_string());
    msg.metadata.insert("offset".into(), record.offset().to_string());
    if let Some(key) = key {
        msg.metadata.entry("key".into()).or_insert(key);
    }
    Ok(msg)
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

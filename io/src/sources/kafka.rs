//! The Kafka source: a consumer-group member (librdkafka) that feeds the pipeline and commits
//! offsets only for messages whose every branch has finished.
//!
//! ```text
//! poll ──record──▶ TbMsg + Ack(partition, offset) ──▶ Feed ──▶ chain ──▶ sinks / actions
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
//! **Rebalances.** Every cut also writes each partition's state to the changelog before it
//! commits ([`changelog`]). On revocation the same cut runs, blocking, before the partitions are
//! given up, and their state is kept aside. On assignment each partition resumes from the newest
//! state there is, by the offset it reflects: the one held here (kept aside, or restored from the
//! local checkpoint, which may be ahead of Kafka's commit if the process died between saving
//! and committing) or the changelog's snapshot (another instance went further). State held here
//! for partitions that went elsewhere is dropped, so their windows fire on their new owner only.
//! No window fires while state changes hands, and afterwards windows close by the watermark of
//! the partitions held now ([`Feed::reassign`]): a partition that arrives behind the ones this
//! instance kept reading keeps its windows open until its own records pass them, instead of
//! having them closed, short of those records, by a watermark it was never part of.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::jsonl::InputForm;
use base64::Engine as _;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use sluice_sdk::{Originator, TbMsg, msg_type};
use uuid::Uuid;

use super::PayloadFormat;
use super::{Checkpointer, Feed, FeedBatcher, Offsets, Source, SourceContext, SourceError, SourceFuture, SourceReport};
use sluice_core::{Ack, AckTarget, Metrics};
use sluice_engine::state::checkpoint::Captured;
use sluice_engine::state::partition::PartitionState;
use sluice_engine::state::window::Owner;

pub mod changelog;
use changelog::Changelog;

/// Namespace of record ids: uuid v5 of `topic/partition@offset`.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x5a1c_e000_0000_4000_8000_6b61_666b_6100);

#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("Kafka source ({brokers}): {message}")]
    Setup { brokers: String, message: String },
    #[error("Kafka source: checkpoint failed: {0}")]
    Checkpoint(String),
    #[error("Kafka source: {0}")]
    Handover(String),
}

/// Counts of a run, for logs and `/metrics`.
#[derive(Debug, Default)]
pub struct KafkaSourceStats {
    pub records: AtomicU64,
    pub malformed: AtomicU64,
    pub commits: AtomicU64,
    pub rebalances: AtomicU64,
    /// Partition snapshots written to the changelog.
    pub snapshots_written: AtomicU64,
    /// Partitions whose state was restored from the changelog on assignment.
    pub partitions_restored: AtomicU64,
    /// Consumer lag per assigned partition (`(topic, partition)` → records between the group's
    /// committed offset and the end of the partition), from librdkafka's statistics: refreshed
    /// every `statistics.interval.ms` (1 s unless the source's `properties` say otherwise).
    pub lag: Mutex<BTreeMap<(String, i32), i64>>,
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
    /// One past the last offset handed out; at assignment, the offset the state reflects (-1:
    /// unknown, the group's committed offset applies).
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

    /// Next offsets of assigned partitions with a known position (safe to commit once nothing
    /// is pending): `(topic, partition, offset)`.
    fn positions(&self) -> Vec<(String, i32, i64)> {
        let tracks = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        tracks
            .iter()
            .filter(|t| t.assigned && t.next >= 0)
            .map(|t| (t.topic.clone(), t.partition, t.pending.first().copied().unwrap_or(t.next)))
            .collect()
    }

    /// One past the last offset handed out, per assigned partition with a known position:
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

    /// Marks `(topic, partition)` assigned from `next` (-1: unknown) or revoked.
    fn set_assigned(&self, topic: &str, partition: i32, assigned: bool, next: Option<i64>) {
        let i = self.index(topic, partition);
        let mut tracks = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        tracks[i].assigned = assigned;
        if let Some(next) = next {
            tracks[i].next = next;
        }
    }

    /// The next offset this process would read on `(topic, partition)`, if it knows it.
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

/// The consumer's context: runs the cut on revocation, and on assignment brings each
/// partition's state to where its new offset is.
struct Context {
    tracker: Arc<Tracker>,
    cut: Arc<Cut>,
    /// Partitions whose state this process holds but which are not assigned to it (revoked and
    /// not yet reassigned, or restored from the local checkpoint before the first assignment),
    /// with the offset that state reflects.
    parked: Mutex<Offsets>,
    stats: Arc<KafkaSourceStats>,
    /// A rebalance that could not bring a partition's state (the changelog unreadable): the
    /// source stops with this error rather than run on with state missing.
    fatal: Mutex<Option<String>>,
    /// Messages read and not yet handed to the workers: the poll loop gathers them while
    /// records keep coming at once, and hands them over before it waits. A rebalance (run inside
    /// a poll) and a cut hand them over first: they wait for every message read to be done.
    held: Mutex<FeedBatcher>,
}

impl ClientContext for Context {
    /// librdkafka's statistics (every `statistics.interval.ms`): the lag of each partition this
    /// consumer has, replacing the last snapshot (a revoked partition leaves it).
    fn stats(&self, statistics: rdkafka::Statistics) {
        let lag = statistics
            .topics
            .into_iter()
            .flat_map(|(topic, t)| {
                t.partitions
                    .into_values()
                    .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
                    .map(move |p| ((topic.clone(), p.partition), p.consumer_lag))
            })
            .collect();
        *self.stats.lag.lock().unwrap_or_else(|e| e.into_inner()) = lag;
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Broker down, DNS, auth: librdkafka reconnects by itself; say so once per event.
        tracing::warn!(%error, "Kafka source: {reason} (librdkafka keeps reconnecting)");
    }
}

/// Where an assigned partition resumes, and with what state.
#[derive(Debug, PartialEq)]
enum Resume {
    /// The state held here is the newest: read on from its offset.
    Local(i64),
    /// The changelog has newer state: it replaces what is held here.
    Changelog(i64),
    /// No state anywhere: empty, from the group's committed offset.
    Committed,
}

/// The rule, in one place: the newest of the local state (`local`) and the changelog's
/// (`changelog`), by the offset each reflects; the local one on a tie (no read needed).
fn resume_from(local: Option<i64>, changelog: Option<i64>) -> Resume {
    match (local, changelog) {
        (Some(l), Some(c)) if c > l => Resume::Changelog(c),
        (Some(l), _) => Resume::Local(l),
        (None, Some(c)) => Resume::Changelog(c),
        (None, None) => Resume::Committed,
    }
}

impl Context {
    /// Hands every held message to the workers.
    fn hand_over(&self) -> Result<(), sluice_engine::flow::Closed> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).flush_blocking()
    }

    /// Brings `(topic, partition)`'s state to where it resumes; returns that offset, if known.
    fn take_over(&self, topic: &str, partition: i32, parked: &mut Offsets) -> Result<Option<i64>, String> {
        let key = partition_key(topic, partition);
        let owner = watermark_partition(topic, partition);
        let local = parked.remove(&key);
        let Some(changelog) = &self.cut.changelog else {
            // No changelog: what is held here, else the group's offset.
            match local {
                Some(_) => {}
                None => self.cut.feed.expect_partition(owner),
            }
            return Ok(local);
        };
        let newest = changelog.latest(topic, partition).map_err(|e| e.to_string())?.map(|(_, head)| head.offset);
        match resume_from(local, newest) {
            Resume::Local(offset) => Ok(Some(offset)),
            Resume::Committed => {
                self.cut.feed.expect_partition(owner);
                Ok(None)
            }
            Resume::Changelog(_) => {
                let snapshot = changelog
                    .read(topic, partition)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("the changelog of `{key}` lost its snapshot while being read"))?;
                let dropped = self.cut.checkpointer.drop_partition(owner);
                let entries = snapshot.state.len();
                self.cut.checkpointer.absorb(owner, snapshot.state).map_err(|e| format!("`{key}`: {e}"))?;
                self.cut.feed.resume_partition(owner, snapshot.max_event_time);
                self.stats.partitions_restored.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    partition = %key,
                    offset = snapshot.offset,
                    entries,
                    replaced = dropped,
                    "Kafka source: state restored from the changelog"
                );
                Ok(Some(snapshot.offset))
            }
        }
    }
}

impl ConsumerContext for Context {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        // What was read goes to the workers before partitions come and go (a revocation waits
        // for it to be done).
        let _ = self.hand_over();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
                // No window fires while state comes and goes; then windows close by the
                // watermark of the partitions held now, which counts the ones that came in.
                let assigned = self.cut.feed.reassign(|| {
                    let mut assigned = Vec::new();
                    for mut elem in tpl.elements() {
                        let (topic, partition) = (elem.topic().to_string(), elem.partition());
                        let resume = match self.take_over(&topic, partition, &mut parked) {
                            Ok(resume) => resume,
                            Err(e) => {
                                let message = format!("cannot take over the state of `{topic}/{partition}`: {e}");
                                tracing::error!("Kafka source: {message}");
                                *self.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
                                None
                            }
                        };
                        if let Some(offset) = resume {
                            let _ = elem.set_offset(Offset::Offset(offset));
                        }
                        self.tracker.set_assigned(&topic, partition, true, Some(resume.unwrap_or(-1)));
                        assigned.push(partition_key(&topic, partition));
                    }
                    // State held for partitions that went elsewhere: their new owners have it (the
                    // changelog), and windows of theirs must not fire here too.
                    for (key, _) in std::mem::take(&mut *parked) {
                        let Some((topic, partition)) = split_partition_key(&key) else { continue };
                        let owner = watermark_partition(topic, partition);
                        let dropped = self.cut.checkpointer.drop_partition(owner);
                        self.cut.feed.forget_partition(owner);
                        tracing::info!(partition = %key, entries = dropped, "Kafka source: state of a partition now elsewhere dropped");
                    }
                    assigned
                });
                tracing::info!(partitions = ?assigned, "Kafka source: partitions assigned");
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(error = %e, "Kafka source: cannot take the assignment");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Hand over cleanly: everything read so far finished, saved, in the changelog
                // and committed.
                if let Err(e) = self.cut.run(consumer, &self.tracker) {
                    tracing::error!("Kafka source: checkpoint before revocation failed: {e}");
                }
                let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
                let mut revoked = Vec::new();
                for elem in tpl.elements() {
                    let (topic, partition) = (elem.topic(), elem.partition());
                    let key = partition_key(topic, partition);
                    // Kept until the next assignment: if the partition comes back unchanged, its
                    // state is still here; if not, it is dropped then.
                    if let Some(offset) = self.tracker.position(topic, partition) {
                        parked.insert(key.clone(), offset);
                    } else {
                        // Nothing known of it here: nothing of it to keep.
                        let owner = watermark_partition(topic, partition);
                        self.cut.checkpointer.drop_partition(owner);
                        self.cut.feed.forget_partition(owner);
                    }
                    self.tracker.set_assigned(topic, partition, false, None);
                    revoked.push(key);
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

/// `"topic/partition"` back into its parts.
fn split_partition_key(key: &str) -> Option<(&str, i32)> {
    let (topic, partition) = key.rsplit_once('/')?;
    Some((topic, partition.parse().ok()?))
}

/// The consistent cut: all handed-out messages acked, state saved with the offsets, each
/// partition's state in the changelog, offsets committed.
struct Cut {
    checkpointer: Arc<dyn Checkpointer>,
    changelog: Option<Arc<Changelog>>,
    feed: Feed,
    stats: Arc<KafkaSourceStats>,
    /// Set while the source stops: no more waiting for acks that cannot come.
    stopping: Arc<AtomicBool>,
    /// Bumped by every blocking cut: a capture taken before one is stale and never written
    /// (it would put older state over newer).
    epoch: AtomicU64,
    /// Held while a cut writes (checkpoint, changelog, commit): the periodic second half runs on
    /// a thread of its own, and a blocking cut must not interleave with it (an older snapshot
    /// would land in the changelog after a newer one).
    writing: Mutex<()>,
}

/// A checkpoint taken in memory, waiting for the outputs of the messages it covers.
struct PendingCut {
    captured: Captured,
    targets: Vec<(String, i32, i64)>,
    /// Greatest event time per target partition, at the capture.
    max_seen: BTreeMap<Owner, i64>,
    epoch: u64,
    started: Instant,
}

impl Cut {
    /// The watermark partitions of `targets`, and their greatest event times now.
    fn owners(&self, targets: &[(String, i32, i64)]) -> (BTreeSet<Owner>, BTreeMap<Owner, i64>) {
        if self.changelog.is_none() {
            return Default::default();
        }
        let owners: BTreeSet<Owner> = targets.iter().map(|(t, p, _)| watermark_partition(t, *p)).collect();
        let watermarks = self.feed.watermarks();
        let max_seen = owners.iter().filter_map(|o| Some((*o, watermarks.max_seen(*o)?))).collect();
        (owners, max_seen)
    }

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
        let (owners, max_seen) = self.owners(&targets);
        let captured = self.checkpointer.capture(&offsets, &owners).map_err(|e| e.to_string())?;
        Ok(PendingCut { captured, targets, max_seen, epoch: self.epoch.load(Ordering::SeqCst), started })
    }

    /// Writes each target partition's state to the changelog (those that changed).
    fn write_changelog(
        &self,
        captured: &Captured,
        targets: &[(String, i32, i64)],
        max_seen: &BTreeMap<Owner, i64>,
    ) -> Result<(), String> {
        let Some(changelog) = &self.changelog else { return Ok(()) };
        let empty = PartitionState::default();
        let writes: Vec<changelog::Write<'_>> = targets
            .iter()
            .map(|(topic, partition, offset)| {
                let owner = watermark_partition(topic, *partition);
                changelog::Write {
                    input: topic,
                    partition: *partition,
                    offset: *offset,
                    max_event_time: max_seen.get(&owner).copied(),
                    state: captured.partitions.get(&owner).unwrap_or(&empty),
                }
            })
            .collect();
        let written = changelog.write_all(&writes).map_err(|e| e.to_string())?;
        self.stats.snapshots_written.fetch_add(written as u64, Ordering::Relaxed);
        Ok(())
    }

    fn commit(&self, consumer: &BaseConsumer<Context>, targets: &[(String, i32, i64)]) -> Result<(), String> {
        if targets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset) in targets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)).map_err(|e| e.to_string())?;
        }
        consumer.commit(&tpl, CommitMode::Sync).map_err(|e| format!("commit {targets:?}: {e}"))?;
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The second half, once every message the capture covers is acked: write it, then the
    /// changelog, then commit its offsets. `Ok(false)`: stale (a blocking cut came in between),
    /// nothing done.
    fn finish(&self, consumer: &BaseConsumer<Context>, pending: PendingCut) -> Result<bool, String> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if pending.epoch != self.epoch.load(Ordering::SeqCst) {
            return Ok(false);
        }
        self.checkpointer.persist(&pending.captured).map_err(|e| e.to_string())?;
        self.write_changelog(&pending.captured, &pending.targets, &pending.max_seen)?;
        self.commit(consumer, &pending.targets)?;
        tracing::debug!(
            targets = ?pending.targets,
            took_ms = pending.started.elapsed().as_millis() as u64,
            "Kafka source: checkpoint written and committed"
        );
        Ok(true)
    }

    /// The blocking cut (revocation, shutdown): everything handed out acked, saved, in the
    /// changelog, committed.
    fn run(&self, consumer: &BaseConsumer<Context>, tracker: &Tracker) -> Result<(), String> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
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
        let (owners, max_seen) = self.owners(&positions);
        let captured = self.checkpointer.save(&offsets, &owners).map_err(|e| e.to_string())?;
        self.write_changelog(&captured, &positions, &max_seen)?;
        self.commit(consumer, &positions)?;
        tracing::debug!(?offsets, took_ms = started.elapsed().as_millis() as u64, "Kafka source: committed");
        Ok(())
    }
}

/// The Kafka source as a [`Source`]: a member of its consumer group, reading the partitions the
/// group assigns it, with their state (see the module docs).
pub struct KafkaSource {
    spec: KafkaSourceSpec,
}

impl KafkaSource {
    /// The source `spec` describes. It resumes at the offsets of the checkpoint the state was
    /// restored from ([`SourceContext::resume`]) and cuts every [`SourceContext::checkpoint_every`].
    pub fn new(spec: KafkaSourceSpec) -> Self {
        KafkaSource { spec }
    }
}

impl Source for KafkaSource {
    fn describe(&self) -> String {
        format!("Kafka {} {:?} (group {})", self.spec.brokers, self.spec.topics, self.spec.group)
    }

    fn id(&self) -> String {
        format!("kafka:{}:{}", self.spec.group, self.spec.topics.join(","))
    }

    fn checkpoints_itself(&self) -> bool {
        true
    }

    fn run(self: Box<Self>, cx: SourceContext) -> SourceFuture {
        Box::pin(async move {
            let restored = cx.resume.map(|p| p.offsets).unwrap_or_default();
            let consumer =
                match KafkaConsumer::start(self.spec, cx.feed, cx.checkpointer, restored, cx.checkpoint_every) {
                    Ok(consumer) => consumer,
                    Err(e) => return (SourceReport::default(), Err(e.into())),
                };
            register_metrics(&cx.metrics, &consumer.stats);
            let mut shutdown = cx.shutdown;
            while !*shutdown.borrow() && !consumer.is_finished() {
                // A dropped sender is a stop too (nobody is left to ask for one).
                if let Ok(Err(_)) = tokio::time::timeout(Duration::from_millis(200), shutdown.changed()).await {
                    break;
                }
            }
            let stats = consumer.stats.clone();
            let stopped = tokio::task::spawn_blocking(move || consumer.stop())
                .await
                .unwrap_or_else(|e| Err(KafkaSourceError::Handover(format!("the consumer task failed: {e}"))));
            let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
            let report = SourceReport {
                records: load(&stats.records),
                malformed: load(&stats.malformed),
                commits: load(&stats.commits),
                rebalances: load(&stats.rebalances),
                ..SourceReport::default()
            };
            (report, stopped.map_err(SourceError::from))
        })
    }
}

/// Its counters on `/metrics`.
fn register_metrics(metrics: &Metrics, stats: &Arc<KafkaSourceStats>) {
    metrics.register_stats(
        stats,
        [
            ("sluice_kafka_records_total", "Records read from Kafka.", "counter", &[], |s| {
                s.records.load(Ordering::Relaxed)
            }),
            ("sluice_kafka_malformed_total", "Records skipped: not a message.", "counter", &[], |s| {
                s.malformed.load(Ordering::Relaxed)
            }),
            ("sluice_kafka_commits_total", "Checkpoints committed to the group.", "counter", &[], |s| {
                s.commits.load(Ordering::Relaxed)
            }),
            ("sluice_kafka_rebalances_total", "Rebalance callbacks (assign and revoke).", "counter", &[], |s| {
                s.rebalances.load(Ordering::Relaxed)
            }),
            (
                "sluice_kafka_changelog_snapshots_total",
                "Partition state snapshots written to the changelog.",
                "counter",
                &[],
                |s| s.snapshots_written.load(Ordering::Relaxed),
            ),
            (
                "sluice_kafka_partitions_restored_total",
                "Partitions whose state came from the changelog.",
                "counter",
                &[],
                |s| s.partitions_restored.load(Ordering::Relaxed),
            ),
        ],
    );
    let lag = stats.clone();
    metrics.register_dynamic(sluice_core::metrics::DynamicFamily {
        name: "sluice_kafka_consumer_lag",
        help: "Records between the group's committed offset and the end of each partition this consumer has (librdkafka's statistics, every second).",
        kind: "gauge",
        samples: Box::new(move || {
            let lag = lag.lag.lock().unwrap_or_else(|e| e.into_inner());
            lag.iter()
                .map(|((topic, partition), n)| {
                    (vec![("topic", topic.clone()), ("partition", partition.to_string())], *n as f64)
                })
                .collect()
        }),
    });
}

/// A running Kafka consumer: the thread that reads, hands over and checkpoints.
pub struct KafkaConsumer {
    pub stats: Arc<KafkaSourceStats>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<(), KafkaSourceError>>,
}

impl KafkaConsumer {
    /// Subscribes and starts consuming on a thread of its own. `restored`: the offsets of the
    /// checkpoint the state was restored from.
    pub fn start(
        spec: KafkaSourceSpec,
        feed: Feed,
        checkpointer: Arc<dyn Checkpointer>,
        restored: Offsets,
        every: Duration,
    ) -> Result<KafkaConsumer, KafkaSourceError> {
        let brokers = spec.brokers.clone();
        let setup = |message: String| KafkaSourceError::Setup { brokers: brokers.clone(), message };
        if spec.topics.is_empty() {
            return Err(setup("`topics` is empty".into()));
        }
        let stats = Arc::new(KafkaSourceStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tracker = Arc::new(Tracker::default());
        let changelog = if spec.changelog {
            Some(Arc::new(Changelog::new(&spec).map_err(|e| setup(e.to_string()))?))
        } else {
            None
        };
        let cut = Arc::new(Cut {
            checkpointer,
            changelog,
            feed: feed.clone(),
            stats: stats.clone(),
            stopping: stop.clone(),
            epoch: AtomicU64::new(0),
            writing: Mutex::new(()),
        });
        let context = Context {
            tracker: tracker.clone(),
            cut: cut.clone(),
            parked: Mutex::new(restored),
            stats: stats.clone(),
            fatal: Mutex::new(None),
            held: Mutex::new(feed.batcher()),
        };
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &spec.brokers)
            .set("group.id", &spec.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Low fetch wait: some brokers (tansu) answer a fetch only after the maximum wait.
            .set("fetch.wait.max.ms", "10")
            // The consumer lag on `/metrics` (`ClientContext::stats`).
            .set("statistics.interval.ms", "1000");
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
        Ok(KafkaConsumer { stats, stop, thread })
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
        let consumer = Arc::new(consumer);
        let acks: Arc<dyn AckTarget> = self.tracker.clone();
        let mut last_cut = Instant::now();
        let mut pending: Option<PendingCut> = None;
        // The second half of a periodic cut (checkpoint write, changelog, commit: broker round
        // trips) runs here, so the consumer keeps polling meanwhile. One at a time: the next
        // capture waits until the last one is written.
        let finishing = Arc::new(AtomicBool::new(false));
        let (to_finisher, finisher_inbox) = std::sync::mpsc::channel::<PendingCut>();
        let finisher = {
            let (cut, consumer, finishing) = (self.cut.clone(), consumer.clone(), finishing.clone());
            std::thread::Builder::new()
                .name("sluice-kafka-cut".into())
                .spawn(move || {
                    for pending in finisher_inbox {
                        // A failed cut (broker unreachable for the commit, say) is retried at
                        // the next one: the checkpoint on disk, the changelog and the group's
                        // offsets only ever lag, so a restart replays — never skips.
                        if let Err(e) = cut.finish(&consumer, pending) {
                            tracing::warn!("Kafka source: checkpoint deferred: {e}");
                        }
                        finishing.store(false, Ordering::SeqCst);
                    }
                })
                .map_err(|e| KafkaSourceError::Checkpoint(format!("cannot start the cut thread: {e}")))?
        };
        let result = self.read(&consumer, &acks, &mut last_cut, &mut pending, &finishing, &to_finisher);
        drop(to_finisher);
        if finisher.join().is_err() {
            tracing::error!("Kafka source: the cut thread panicked");
        }
        result?;
        let _ = consumer.context().hand_over();
        let result = self.cut.run(&consumer, &self.tracker).map_err(KafkaSourceError::Checkpoint);
        consumer.unsubscribe();
        result
    }

    /// The poll loop, until stopped.
    fn read(
        &self,
        consumer: &BaseConsumer<Context>,
        acks: &Arc<dyn AckTarget>,
        last_cut: &mut Instant,
        pending: &mut Option<PendingCut>,
        finishing: &AtomicBool,
        to_finisher: &std::sync::mpsc::Sender<PendingCut>,
    ) -> Result<(), KafkaSourceError> {
        // Messages gathered since the last hand-over, and each partition's watermark partition
        // (a hash of the topic: computed once).
        let mut held_now = 0usize;
        let mut owners: Vec<Option<u32>> = Vec::new();
        while !self.stop.load(Ordering::SeqCst) {
            if let Some(fatal) = consumer.context().fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
                consumer.unsubscribe();
                return Err(KafkaSourceError::Handover(fatal));
            }
            if pending.is_none() && !finishing.load(Ordering::SeqCst) && last_cut.elapsed() >= self.every {
                // The capture waits for every message read to be done: none may be held.
                if held_now > 0 && consumer.context().hand_over().is_err() {
                    break;
                }
                held_now = 0;
                match self.cut.capture(&self.tracker) {
                    Ok(cut) => *pending = Some(cut),
                    Err(e) => tracing::warn!("Kafka source: checkpoint deferred: {e}"),
                }
                *last_cut = Instant::now();
            }
            if pending.as_ref().is_some_and(|p| self.tracker.acked_below(&p.targets))
                && let Some(cut) = pending.take()
            {
                finishing.store(true, Ordering::SeqCst);
                if to_finisher.send(cut).is_err() {
                    finishing.store(false, Ordering::SeqCst);
                }
            }
            // Records that came at once are gathered; before the poll waits, they go to the workers.
            let context = consumer.context();
            let wait = if held_now > 0 { Duration::ZERO } else { Duration::from_millis(50) };
            match consumer.poll(wait) {
                None => {
                    if held_now > 0 && context.hand_over().is_err() {
                        break;
                    }
                    held_now = 0;
                }
                Some(Err(e)) => tracing::warn!(error = %e, "Kafka source: poll"),
                Some(Ok(record)) => {
                    self.stats.records.fetch_add(1, Ordering::Relaxed);
                    let index = self.tracker.index(record.topic(), record.partition());
                    let offset = record.offset();
                    match to_msg(&record, &self.spec, self.feed.input_form()) {
                        Ok(msg) => {
                            self.tracker.handed_out(index, offset);
                            let ack = Ack::new(acks.clone(), ((index as u64) << 48) | offset as u64);
                            if owners.len() <= index {
                                owners.resize(index + 1, None);
                            }
                            let owner = *owners[index]
                                .get_or_insert_with(|| watermark_partition(record.topic(), record.partition()));
                            let pushed =
                                context.held.lock().unwrap_or_else(|p| p.into_inner()).push_blocking(msg, owner, ack);
                            if pushed.is_err() {
                                break;
                            }
                            held_now += 1;
                            if held_now >= HOLD {
                                if context.hand_over().is_err() {
                                    break;
                                }
                                held_now = 0;
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
        Ok(())
    }
}

/// At most this many messages are gathered before they go to the workers.
const HOLD: usize = 256;

/// The watermark partition of a record: topic and partition in one number, stable across runs.
fn watermark_partition(topic: &str, partition: i32) -> u32 {
    let topic = sluice_core::content_hash(topic.as_bytes());
    let hi = u32::from_str_radix(&topic[..4], 16).unwrap_or(0);
    (hi << 16) | (partition as u32 & 0xffff)
}

/// A record as a message: per `format` (flat JSON records as `form` says), a TbMsg / simple telemetry JSON, or raw bytes for an
/// uplink decoder.
pub fn to_msg(record: &BorrowedMessage<'_>, spec: &KafkaSourceSpec, form: &InputForm) -> Result<TbMsg, String> {
    let ts = record.timestamp().to_millis().unwrap_or_else(chrono_now);
    let source = partition_key(record.topic(), record.partition());
    let payload = record.payload().unwrap_or_default();
    let key = record.key().map(|k| String::from_utf8_lossy(k).into_owned());
    let mut msg = match spec.format {
        PayloadFormat::Json => {
            let text = std::str::from_utf8(payload).map_err(|e| format!("not UTF-8: {e}"))?;
            super::jsonl::parse_message_as(&source, record.offset() as u64, text, ts, form)
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
            let mut msg = TbMsg::new(msg_type, Originator::device(&device), data).with_ts(ts);
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSourceSpec {
    pub brokers: String,
    /// Consumer group: instances with the same group split the partitions.
    pub group: String,
    /// Topic names; a name starting with `^` is a regular expression (librdkafka's patterns).
    pub topics: Vec<String>,
    #[serde(default)]
    pub format: PayloadFormat,
    /// Message type of `raw` records (default `POST_TELEMETRY_REQUEST`).
    #[serde(default)]
    pub msg_type: Option<String>,
    /// Extra librdkafka consumer properties (TLS, SASL, tuning); they win over Sluice's defaults.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Hand keyed state over on rebalances through `{group}-{topic}-changelog` topics (see
    /// `sources::kafka::changelog`). Off: a partition that moves starts with empty state on its
    /// new owner.
    #[serde(default = "yes")]
    pub changelog: bool,
    /// Replication factor of changelog topics Sluice creates (default: the input topic's).
    #[serde(default)]
    pub changelog_replication: Option<i32>,
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The newest state wins, by the offset it reflects; a tie keeps what is here (no read).
    #[test]
    fn an_assigned_partition_resumes_from_the_newest_state() {
        assert_eq!(resume_from(Some(100), Some(250)), Resume::Changelog(250), "another instance went further");
        assert_eq!(resume_from(Some(100), Some(100)), Resume::Local(100), "the snapshot is this state");
        assert_eq!(
            resume_from(Some(300), Some(250)),
            Resume::Local(300),
            "saved here, the process died before its changelog write"
        );
        assert_eq!(resume_from(None, Some(250)), Resume::Changelog(250));
        assert_eq!(resume_from(Some(7), None), Resume::Local(7));
        assert_eq!(resume_from(None, None), Resume::Committed);
    }

    #[test]
    fn partition_keys_split_back() {
        assert_eq!(split_partition_key("solar/module-raw/3"), Some(("solar/module-raw", 3)));
        assert_eq!(split_partition_key("readings"), None);
    }
}

//! The changelog: how a partition's state follows it to another instance of the group.
//!
//! This is Kafka Streams' answer, kept to what Sluice needs. For each input topic there is a
//! topic `{group}-{topic}-changelog` with as many partitions; changelog partition `p` belongs
//! to input partition `p`. At every checkpoint, once the outputs of what it covers are
//! delivered, the source writes each partition's state there — a *snapshot* tagged with the
//! input offset it reflects — before it commits that offset. The instance a partition moves
//! to reads the newest snapshot and resumes right after it: state and position agree, as they
//! do in a local checkpoint.
//!
//! ```text
//! cut ─▶ per partition: state ──JSON──▶ chunks ──▶ {group}-{topic}-changelog[p] ─▶ commit offsets
//! assign p ─▶ last record of changelog[p] ─▶ its snapshot's chunks ─▶ absorb ─▶ seek to its offset
//! ```
//!
//! A snapshot is the partition's whole state, not a delta: a restore reads one snapshot, never
//! a history, and a partition whose state and offset did not change is not written again. A
//! snapshot larger than [`CHUNK`] is split into records; the last record names the offset of
//! the first, so the reader finds a snapshot from the end of the partition alone. Records are
//! keyed by chunk number, so a compacted topic (`cleanup.policy=compact`, which Sluice sets
//! when it creates the topic) keeps the newest snapshot and drops the older ones.
//!
//! Why the snapshot carries the offset instead of the commit's metadata: the offset and the
//! state then come from the same record, and brokers that drop commit metadata (tansu 0.6
//! does) work the same.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};

use super::KafkaSourceSpec;
use sluice_engine::state::partition::PartitionState;

/// Bytes of snapshot per record: well under the 1 MiB default of `message.max.bytes`.
pub const CHUNK: usize = 512 * 1024;

/// How long a broker call of the changelog may take before the cut (or the restore) fails.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error("changelog `{topic}`: {message}")]
    Topic { topic: String, message: String },
    #[error("changelog `{topic}` partition {partition}: {message}")]
    Partition { topic: String, partition: i32, message: String },
}

/// What precedes the state bytes in every changelog record (one JSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Head {
    /// `"topic/partition"` of the input partition.
    pub source: String,
    /// The next input offset to read: the state reflects every record before it.
    pub offset: i64,
    /// The greatest event time seen on the partition: its watermark continues from there.
    pub max_event_time: Option<i64>,
    /// One id per snapshot, shared by its chunks.
    pub snapshot: String,
    pub chunk: u32,
    pub chunks: u32,
    /// Changelog offset of chunk 0 (on the last chunk of a snapshot of several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<i64>,
}

/// One partition's state to write: [`Changelog::write_all`].
pub struct Write<'a> {
    pub input: &'a str,
    pub partition: i32,
    /// The next input offset: the state reflects every record before it.
    pub offset: i64,
    pub max_event_time: Option<i64>,
    pub state: &'a PartitionState,
}

/// A partition's newest snapshot.
#[derive(Debug)]
pub struct Snapshot {
    pub offset: i64,
    pub max_event_time: Option<i64>,
    pub state: PartitionState,
}

/// Delivery reports: the offset (or error) of each record, by the slot it was sent with.
#[derive(Default)]
struct Reports {
    slots: Mutex<BTreeMap<usize, Result<i64, String>>>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, slot: usize) {
        let outcome = match result {
            Ok(message) => Ok(message.offset()),
            Err((e, _)) => Err(e.to_string()),
        };
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).insert(slot, outcome);
    }
}

/// The changelog topics of one consumer group.
pub struct Changelog {
    group: String,
    brokers: String,
    properties: BTreeMap<String, String>,
    replication: Option<i32>,
    producer: ThreadedProducer<Reports>,
    reader: BaseConsumer,
    /// Input topic → its changelog topic, once known to exist.
    topics: Mutex<BTreeMap<String, String>>,
    /// What was last written per input partition: (offset, hash of the state). An unchanged
    /// partition is not written again.
    written: Mutex<BTreeMap<(String, i32), (i64, u64)>>,
    next_slot: Mutex<usize>,
}

impl Changelog {
    /// Connects a producer and a reader with the source's connection properties (TLS, SASL).
    pub fn new(spec: &KafkaSourceSpec) -> Result<Changelog, ChangelogError> {
        let topic = format!("{}-*-changelog", spec.group);
        let setup = |message: String| ChangelogError::Topic { topic: topic.clone(), message };
        let mut producer = ClientConfig::new();
        producer
            .set("bootstrap.servers", &spec.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            // One record per batch: a reader starts at the last record of a partition, and
            // some brokers (tansu 0.6) answer a fetch from inside a batch with the next batch.
            .set("batch.num.messages", "1")
            .set("message.timeout.ms", TIMEOUT.as_millis().to_string());
        let mut reader = ClientConfig::new();
        reader
            .set("bootstrap.servers", &spec.brokers)
            .set("group.id", format!("{}-changelog-reader", spec.group))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "10");
        for (k, v) in &spec.properties {
            // Connection settings (security.protocol, ssl.*, sasl.*) apply to both; consumer
            // tuning is the consumer's alone.
            if is_connection_property(k) {
                producer.set(k, v);
            }
            reader.set(k, v);
        }
        Ok(Changelog {
            group: spec.group.clone(),
            brokers: spec.brokers.clone(),
            properties: spec.properties.clone(),
            replication: spec.changelog_replication,
            producer: producer
                .create_with_context(Reports::default())
                .map_err(|e| setup(format!("cannot create the producer: {e}")))?,
            reader: reader.create().map_err(|e| setup(format!("cannot create the reader: {e}")))?,
            topics: Mutex::new(BTreeMap::new()),
            written: Mutex::new(BTreeMap::new()),
            next_slot: Mutex::new(0),
        })
    }

    /// The changelog topic of `input`, created (compacted, as many partitions as `input`, its
    /// replication factor) if it does not exist yet.
    pub fn topic(&self, input: &str) -> Result<String, ChangelogError> {
        if let Some(t) = self.topics.lock().unwrap_or_else(|p| p.into_inner()).get(input) {
            return Ok(t.clone());
        }
        let name = format!("{}-{input}-changelog", self.group);
        let err = |message: String| ChangelogError::Topic { topic: name.clone(), message };
        let metadata = self
            .reader
            .fetch_metadata(Some(input), TIMEOUT)
            .map_err(|e| err(format!("cannot read the metadata of `{input}`: {e}")))?;
        let Some(source) = metadata.topics().first() else {
            return Err(err(format!("no metadata for `{input}`")));
        };
        let partitions = source.partitions().len() as i32;
        let replication =
            self.replication.unwrap_or_else(|| source.partitions().first().map_or(1, |p| p.replicas().len() as i32));
        let existing = self.reader.fetch_metadata(Some(&name), TIMEOUT).ok().and_then(|m| {
            m.topics()
                .first()
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .map(|t| t.partitions().len())
        });
        match existing {
            Some(n) if (n as i32) < partitions => {
                return Err(err(format!(
                    "has {n} partitions but `{input}` has {partitions}: a changelog needs one per input partition"
                )));
            }
            Some(_) => {}
            None => self.create(&name, partitions, replication.max(1))?,
        }
        self.topics.lock().unwrap_or_else(|p| p.into_inner()).insert(input.to_string(), name.clone());
        Ok(name)
    }

    fn create(&self, name: &str, partitions: i32, replication: i32) -> Result<(), ChangelogError> {
        let err = |message: String| ChangelogError::Topic { topic: name.to_string(), message };
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in self.properties.iter().filter(|(k, _)| is_connection_property(k)) {
            config.set(k, v);
        }
        let admin: AdminClient<DefaultClientContext> =
            config.create().map_err(|e| err(format!("cannot create an admin client: {e}")))?;
        let topic =
            NewTopic::new(name, partitions, TopicReplication::Fixed(replication)).set("cleanup.policy", "compact");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| err(format!("cannot start a runtime for the admin client: {e}")))?;
        let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let results = runtime
            .block_on(admin.create_topics([&topic], &options))
            .map_err(|e| err(format!("cannot create: {e}")))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(err(format!("cannot create: {code}"))),
            }
        }
        tracing::info!(topic = name, partitions, replication, "Kafka source: changelog topic created");
        // The new topic's leaders take a moment to be known to the producer.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let ready = self.reader.fetch_metadata(Some(name), TIMEOUT).ok().is_some_and(|m| {
                m.topics().first().is_some_and(|t| t.error().is_none() && t.partitions().len() as i32 >= partitions)
            });
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(err("created, but its metadata never showed it".into()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes partition `(input, partition)`'s state as of input offset `offset`, unless the
    /// newest snapshot written by this instance already has that offset and that state.
    /// Returns whether it wrote. Waits for the broker's acknowledgement of every chunk.
    pub fn write(
        &self,
        input: &str,
        partition: i32,
        offset: i64,
        max_event_time: Option<i64>,
        state: &PartitionState,
    ) -> Result<bool, ChangelogError> {
        Ok(self.write_all(&[Write { input, partition, offset, max_event_time, state }])? == 1)
    }

    /// [`Changelog::write`] for several partitions at once: their records go out together,
    /// so a cut waits for one broker round trip (two when a snapshot has several chunks), not
    /// one per partition. Returns how many snapshots it wrote.
    pub fn write_all(&self, writes: &[Write<'_>]) -> Result<usize, ChangelogError> {
        struct Out {
            topic: String,
            partition: i32,
            head: Head,
            body: Vec<u8>,
            key: (String, i32),
            hash: u64,
        }
        let mut outs = Vec::new();
        for w in writes {
            let topic = self.topic(w.input)?;
            let body = serde_json::to_vec(w.state).map_err(|e| ChangelogError::Partition {
                topic: topic.clone(),
                partition: w.partition,
                message: e.to_string(),
            })?;
            let hash = {
                use std::hash::Hasher;
                let mut h = fxhash::FxHasher64::default();
                h.write(&body);
                h.finish()
            };
            let key = (w.input.to_string(), w.partition);
            if self.written.lock().unwrap_or_else(|p| p.into_inner()).get(&key) == Some(&(w.offset, hash)) {
                continue;
            }
            let head = Head {
                source: super::partition_key(w.input, w.partition),
                offset: w.offset,
                max_event_time: w.max_event_time,
                snapshot: uuid::Uuid::new_v4().to_string(),
                chunk: 0,
                chunks: body.len().div_ceil(CHUNK).max(1) as u32,
                first: None,
            };
            outs.push(Out { topic, partition: w.partition, head, body, key, hash });
        }
        let chunk = |body: &[u8], i: u32| -> Vec<u8> {
            let start = (i as usize * CHUNK).min(body.len());
            body[start..(start + CHUNK).min(body.len())].to_vec()
        };
        // Chunk 0 of every snapshot first: the last chunk of each must name its offset.
        let sent: Vec<_> =
            outs.iter().map(|o| (o.topic.as_str(), o.partition, o.head.clone(), chunk(&o.body, 0))).collect();
        let firsts = self.send_all(&sent)?;
        let mut rest = Vec::new();
        for (o, first) in outs.iter_mut().zip(firsts) {
            o.head.first = Some(first);
            for i in 1..o.head.chunks {
                let head = Head { chunk: i, ..o.head.clone() };
                rest.push((o.topic.as_str(), o.partition, head, chunk(&o.body, i)));
            }
        }
        self.send_all(&rest)?;
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        for o in &outs {
            written.insert(o.key.clone(), (o.head.offset, o.hash));
            tracing::debug!(topic = %o.topic, partition = o.partition, offset = o.head.offset, bytes = o.body.len(),
                "Kafka source: changelog snapshot written");
        }
        Ok(outs.len())
    }

    /// Produces records `(topic, partition, head, chunk)` and waits for every delivery report:
    /// their offsets, in order.
    fn send_all(&self, records: &[(&str, i32, Head, Vec<u8>)]) -> Result<Vec<i64>, ChangelogError> {
        let mut slots = Vec::with_capacity(records.len());
        for (topic, partition, head, chunk) in records {
            let err = |message: String| ChangelogError::Partition {
                topic: topic.to_string(),
                partition: *partition,
                message,
            };
            let mut payload = serde_json::to_vec(head).map_err(|e| err(e.to_string()))?;
            payload.push(b'\n');
            payload.extend_from_slice(chunk);
            let slot = {
                let mut next = self.next_slot.lock().unwrap_or_else(|p| p.into_inner());
                *next += 1;
                *next
            };
            let key = head.chunk.to_string();
            let mut record = BaseRecord::with_opaque_to(topic, slot).partition(*partition).key(&key).payload(&payload);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => return Err(err(format!("cannot produce: {e}"))),
                }
            }
            slots.push(slot);
        }
        let deadline = Instant::now() + TIMEOUT + Duration::from_secs(5);
        let mut offsets = Vec::with_capacity(slots.len());
        for (slot, (topic, partition, _, _)) in slots.into_iter().zip(records) {
            let err = |message: String| ChangelogError::Partition {
                topic: topic.to_string(),
                partition: *partition,
                message,
            };
            loop {
                let report = self.producer.context().slots.lock().unwrap_or_else(|p| p.into_inner()).remove(&slot);
                if let Some(outcome) = report {
                    offsets.push(outcome.map_err(|e| err(format!("not delivered: {e}")))?);
                    break;
                }
                if Instant::now() > deadline {
                    return Err(err("no delivery report".into()));
                }
                let _ = self.producer.flush(Duration::from_millis(20));
            }
        }
        Ok(offsets)
    }

    /// The head of partition `(input, partition)`'s newest snapshot, without its state.
    pub fn latest(&self, input: &str, partition: i32) -> Result<Option<(i64, Head)>, ChangelogError> {
        let topic = self.topic(input)?;
        let err = |message: String| ChangelogError::Partition { topic: topic.clone(), partition, message };
        // The broker may be coming back (a rebalance often follows an outage): transient errors
        // are retried until the timeout.
        let deadline = Instant::now() + TIMEOUT;
        let (low, high) = loop {
            match self.reader.fetch_watermarks(&topic, partition, Duration::from_secs(5)) {
                Ok(marks) => break marks,
                Err(e) if Instant::now() > deadline => return Err(err(format!("cannot read its offsets: {e}"))),
                Err(e) => {
                    tracing::debug!(%topic, partition, error = %e, "changelog: offsets not read yet, retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        if high <= low {
            return Ok(None);
        }
        let records = self.read_from(&topic, partition, high - 1, high).map_err(&err)?;
        let Some((at, head, _)) = records.into_iter().next_back() else {
            return Err(err(format!("its last record (offset {}) could not be read", high - 1)));
        };
        Ok(Some((at, head)))
    }

    /// Partition `(input, partition)`'s newest snapshot, if it has one.
    pub fn read(&self, input: &str, partition: i32) -> Result<Option<Snapshot>, ChangelogError> {
        let Some((last_at, last)) = self.latest(input, partition)? else { return Ok(None) };
        let topic = self.topic(input)?;
        let err = |message: String| ChangelogError::Partition { topic: topic.clone(), partition, message };
        let from = if last.chunks <= 1 { last_at } else { last.first.unwrap_or(last_at) };
        let mut chunks: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for (_, head, bytes) in self.read_from(&topic, partition, from, last_at + 1).map_err(&err)? {
            if head.snapshot == last.snapshot {
                chunks.insert(head.chunk, bytes);
            }
        }
        if chunks.len() as u32 != last.chunks {
            return Err(err(format!(
                "snapshot {} of `{}` at offset {} has {} of its {} chunks",
                last.snapshot,
                last.source,
                last.offset,
                chunks.len(),
                last.chunks
            )));
        }
        let body: Vec<u8> = chunks.into_values().flatten().collect();
        let state = serde_json::from_slice(&body)
            .map_err(|e| err(format!("snapshot of `{}` at offset {} is not state: {e}", last.source, last.offset)))?;
        Ok(Some(Snapshot { offset: last.offset, max_event_time: last.max_event_time, state }))
    }

    /// Records `[from, until)` of a changelog partition: (offset, head, state bytes).
    fn read_from(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        until: i64,
    ) -> Result<Vec<(i64, Head, Vec<u8>)>, String> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from)).map_err(|e| e.to_string())?;
        self.reader.assign(&tpl).map_err(|e| format!("cannot read: {e}"))?;
        let mut out = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        let mut last_error = None;
        let result = loop {
            if Instant::now() > deadline {
                let why = last_error.map_or(String::new(), |e| format!(" (last error: {e})"));
                break Err(format!("reading offsets {from}..{until} timed out{why}"));
            }
            match self.reader.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => break Ok(()),
                // Brokers down or a leader moving: librdkafka reconnects; keep polling.
                Some(Err(e)) => {
                    tracing::debug!(%topic, partition, error = %e, "changelog: read error, retrying");
                    last_error = Some(e.to_string());
                }
                Some(Ok(record)) => {
                    let at = record.offset();
                    let payload = record.payload().unwrap_or_default();
                    let split = payload.iter().position(|&b| b == b'\n').unwrap_or(payload.len());
                    let head: Head = match serde_json::from_slice(&payload[..split]) {
                        Ok(head) => head,
                        Err(e) => break Err(format!("record at offset {at} is not a Sluice snapshot: {e}")),
                    };
                    out.push((at, head, payload.get(split + 1..).unwrap_or_default().to_vec()));
                    if at + 1 >= until {
                        break Ok(());
                    }
                }
            }
        };
        let _ = self.reader.unassign();
        result.map(|()| out)
    }
}

/// Properties that say how to reach and authenticate to the brokers, shared by every client
/// Sluice makes for a source.
fn is_connection_property(key: &str) -> bool {
    key.starts_with("security.")
        || key.starts_with("ssl.")
        || key.starts_with("sasl.")
        || key.starts_with("client.")
        || key == "broker.address.family"
}

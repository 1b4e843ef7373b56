//! Sources: where messages come from. Each turns what it reads into a [`Msg`] with an ack handle
//! ([`crate::flow::Ack`]) and hands it to a [`Feed`].
//!
//! ```text
//! jsonl (file, stdin) ─┐
//! kafka (group)       ─┤
//! mqtt (subscriptions) ┼─ Msg + partition + Ack ──▶ Feed ──(watermark, key)──▶ Pipeline
//! http (device API)   ─┘
//! ```
//!
//! What a source must do is small and the same everywhere: say which partition the message came
//! from (watermarks are tracked per partition) and hold the message "unfinished" until its ack
//! fires — commit a Kafka offset, PUBACK an MQTT publish, answer an HTTP request.

pub mod http;
pub mod jsonl;
pub mod kafka;
pub mod mqtt;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sluice_sdk::Msg;

use crate::chain::Chain;
use crate::flow::{Ack, Closed, Envelope, PipelineSender};
use crate::host::Clock;
use crate::state::time::{TimeField, Watermarks};

/// The one way into a running pipeline, shared by every source: stamps a message with the
/// watermark of its source partition, keys it by originator (so one device's messages keep
/// their order), and waits while the workers are busy (backpressure reaches the source).
#[derive(Clone)]
pub struct Feed {
    sender: PipelineSender,
    watermarks: Arc<Mutex<Watermarks>>,
    time_field: TimeField,
    clock: Clock,
}

impl Feed {
    pub fn new(sender: PipelineSender, chain: &Chain, watermarks: Watermarks, clock: Clock) -> Self {
        Feed { sender, watermarks: Arc::new(Mutex::new(watermarks)), time_field: chain.time_field.clone(), clock }
    }

    /// The envelope for `msg` read from `partition`: its watermark is advanced by the message.
    pub fn envelope(&self, msg: &Msg, partition: u32, ack: Ack) -> Envelope {
        let now = self.clock.now_ms();
        let key = Envelope::key_of(&msg.originator.entity_type, &msg.originator.name);
        let watermark = self.watermarks.lock().unwrap_or_else(|p| p.into_inner()).observe(
            partition,
            self.time_field.event_time(msg, now),
            now,
        );
        // A Msg always serializes: its fields are strings, numbers and JSON values.
        let bytes = serde_json::to_vec(msg).unwrap_or_default();
        Envelope::new(Bytes::from(bytes), key, ack).with_watermark(watermark).with_partition(partition)
    }

    /// Hands `msg` to the pipeline, waiting for room.
    pub async fn push(&self, msg: &Msg, partition: u32, ack: Ack) -> Result<(), Closed> {
        let envelope = self.envelope(msg, partition, ack);
        self.sender.send(envelope).await
    }

    /// [`Feed::push`] from a thread outside the async runtime (the Kafka consumer's).
    pub fn push_blocking(&self, msg: &Msg, partition: u32, ack: Ack) -> Result<(), Closed> {
        let envelope = self.envelope(msg, partition, ack);
        self.sender.send_blocking(envelope)
    }

    /// A partition was assigned: it holds the watermark back until its first message (or its
    /// idle timeout).
    pub fn expect_partition(&self, partition: u32) {
        let now = self.clock.now_ms();
        self.watermarks.lock().unwrap_or_else(|p| p.into_inner()).expect(partition, now);
    }

    /// A partition arrived with its state from another instance: its watermark continues from
    /// the greatest event time seen there.
    pub fn resume_partition(&self, partition: u32, max_seen: Option<i64>) {
        let now = self.clock.now_ms();
        self.watermarks.lock().unwrap_or_else(|p| p.into_inner()).resume(partition, max_seen, now);
    }

    /// A partition was revoked: it no longer holds the watermark back.
    pub fn forget_partition(&self, partition: u32) {
        self.watermarks.lock().unwrap_or_else(|p| p.into_inner()).remove(partition);
    }

    /// The partitions this source reads change (a rebalance): `change` takes their state in and
    /// out and says where each one's watermark stands (`resume_partition`, `expect_partition`,
    /// `forget_partition`); meanwhile no window fires. Then windows close by the combined
    /// watermark of the partitions held now, even where it is behind the one reached without
    /// the partitions that just came in: their windows stay open until their own records have
    /// passed them (see [`crate::flow::Progress::rewind`]).
    pub fn reassign<R>(&self, change: impl FnOnce() -> R) -> R {
        let progress = self.sender.progress().clone();
        let _gate = progress.gate();
        let out = change();
        let watermark = self.watermarks.lock().unwrap_or_else(|p| p.into_inner()).current(self.clock.now_ms());
        progress.rewind(watermark);
        out
    }

    /// The watermarks as of now, for a checkpoint.
    pub fn watermarks(&self) -> Watermarks {
        self.watermarks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn progress(&self) -> &Arc<crate::flow::Progress> {
        self.sender.progress()
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// What a JSON value is, for error messages ("… must be an object, not an array").
pub(crate) fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// How many levels of arrays and objects input JSON may nest (`[[0]]` is 2): serde_json's
/// recursion limit (it refuses the 128th level), here and in every guest, whose SDK parses
/// messages with the same library. Deeper input is refused with this number in the error rather
/// than serde_json's bare "recursion limit exceeded".
pub const MAX_DEPTH: usize = 127;

/// Parses input JSON (a line, an MQTT payload, an HTTP body). Numbers keep every digit (serde_json
/// with `arbitrary_precision`): a 39-digit integer reaches the chain and the output as written.
pub(crate) fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(bytes).map_err(|e| {
        if e.to_string().starts_with("recursion limit exceeded") {
            format!("nesting deeper than {MAX_DEPTH} levels (Sluice's limit for input JSON) at column {}", e.column())
        } else {
            e.to_string()
        }
    })
}

/// Refuses a message whose `data` nests so deep that the message, with its own object around
/// `data`, would pass [`MAX_DEPTH`]: nodes could not read it.
pub(crate) fn check_depth(msg: &sluice_sdk::Msg) -> Result<(), String> {
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

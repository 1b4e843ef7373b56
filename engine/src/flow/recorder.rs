//! The flight recorder: each node's last events — what came in, what went out on which
//! relation, how long the call took, the error — always on, cheap enough to leave on.
//!
//! Why it is cheap: an event holds the messages themselves, not their text. A message is
//! immutable and shared (`Arc<Message>`), so keeping the input and the outputs of a call is a
//! few reference counts; nothing is written out as JSON until someone looks
//! ([`Recorder::events`]), and then each body is cut at `maxBodyBytes`. Each worker writes its own
//! rings (one lock nobody else takes while it runs) and reuses their slots, so a recorded call
//! allocates nothing once the rings are full.
//!
//! Failures go to a ring of their own as well, so that a rare failure is not pushed out by the
//! normal traffic after it. A node (`"record": false`) or a chain file (`"record": {"enabled":
//! false}`) opts out: nothing of its messages stays in memory.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::chain::Chain;
use crate::host::Relation;
use sluice_core::message::Message;
use sluice_core::spec::RecordSpec;

/// What a recorded call was handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Handed {
    Message,
    Window,
    Timer,
}

/// One call of a node.
#[derive(Debug, Clone)]
pub struct Event {
    /// Per node and worker, from 1: the order of its calls.
    pub seq: u64,
    pub worker: usize,
    /// Processing time of the call's start.
    pub at_ms: i64,
    /// When the call started, by the monotonic clock: what orders the events of all workers.
    pub started: std::time::Instant,
    pub handed: Handed,
    /// The message it was handed (none for a window or a timer).
    pub input: Option<Arc<Message>>,
    /// What it emitted, in order, with the relation of each.
    pub outputs: Vec<(Relation, Arc<Message>)>,
    pub duration: Duration,
    /// Why it failed (the text of the `Failure` output's `error`).
    pub error: Option<String>,
}

/// The last events of one node on one worker.
#[derive(Debug)]
pub(crate) struct Ring {
    events: VecDeque<Event>,
    failures: VecDeque<Event>,
    seq: u64,
    /// How many events and failures it keeps.
    caps: (usize, usize),
}

impl Ring {
    /// Adds `event` to `queue`, dropping the oldest past `cap`; returns the dropped event's
    /// outputs vector, emptied, for the next event to reuse.
    fn push(queue: &mut VecDeque<Event>, cap: usize, event: Event) -> Vec<(Relation, Arc<Message>)> {
        let mut spare = Vec::new();
        while queue.len() >= cap {
            if let Some(old) = queue.pop_front() {
                spare = old.outputs;
            }
        }
        queue.push_back(event);
        spare.clear();
        spare
    }
}

/// Rings of one node id, one per worker.
type Rings = Vec<Arc<Mutex<Ring>>>;

/// The recorder of a running pipeline: rings by node id (kept across reloads: a node that stays
/// keeps its history).
#[derive(Clone)]
pub struct Recorder {
    spec: Arc<Mutex<RecordSpec>>,
    workers: usize,
    nodes: Arc<Mutex<BTreeMap<String, Rings>>>,
}

/// A worker's handle on one node's ring (`None`: the node is not recorded).
pub(crate) type Slot = Option<Arc<Mutex<Ring>>>;

impl Recorder {
    pub fn new(workers: usize, spec: RecordSpec) -> Self {
        Recorder { spec: Arc::new(Mutex::new(spec)), workers, nodes: Arc::default() }
    }

    fn spec(&self) -> RecordSpec {
        self.spec.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Worker `worker`'s slots for the nodes of `chain` (by index). Called when the worker
    /// starts and when it adopts a reloaded chain (whose `record` settings then apply).
    pub(crate) fn slots(&self, chain: &Chain, worker: usize) -> Vec<Slot> {
        *self.spec.lock().unwrap_or_else(|p| p.into_inner()) = chain.record.clone();
        let enabled = chain.record.enabled;
        let caps = (chain.record.events.max(1), chain.record.failures.max(1));
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        chain
            .nodes
            .iter()
            .map(|node| {
                if !(enabled && node.record) {
                    // Opted out (perhaps by a reload): what was kept goes too.
                    nodes.remove(&node.id);
                    return None;
                }
                let rings = nodes.entry(node.id.clone()).or_insert_with(|| {
                    (0..self.workers)
                        .map(|_| {
                            let ring = Ring { events: VecDeque::new(), failures: VecDeque::new(), seq: 0, caps };
                            Arc::new(Mutex::new(ring))
                        })
                        .collect()
                });
                let ring = rings.get(worker).cloned();
                if let Some(ring) = &ring {
                    ring.lock().unwrap_or_else(|p| p.into_inner()).caps = caps;
                }
                ring
            })
            .collect()
    }

    /// Records a call in `slot` (a worker's own ring); returns an empty outputs vector for the
    /// worker's next event (the one of the event it pushed out, once the ring is full).
    pub(crate) fn record(slot: &Mutex<Ring>, mut event: Event) -> Vec<(Relation, Arc<Message>)> {
        let mut ring = slot.lock().unwrap_or_else(|p| p.into_inner());
        let (events, failures) = ring.caps;
        ring.seq += 1;
        event.seq = ring.seq;
        if event.error.is_some() {
            Ring::push(&mut ring.failures, failures, event.clone());
        }
        Ring::push(&mut ring.events, events, event)
    }

    /// `node`'s last events and last failures, newest first, every worker's together; each
    /// message written out as JSON and cut at `maxBodyBytes`. `None`: the node is not
    /// recorded (unknown, or opted out).
    pub fn events(&self, node: &str) -> Option<NodeEvents> {
        let rings = self.nodes.lock().unwrap_or_else(|p| p.into_inner()).get(node)?.clone();
        let max = self.spec().max_body_bytes.max(16);
        let (mut events, mut failures) = (Vec::new(), Vec::new());
        for ring in rings {
            let ring = ring.lock().unwrap_or_else(|p| p.into_inner());
            events.extend(ring.events.iter().cloned());
            failures.extend(ring.failures.iter().cloned());
        }
        let shown = |mut list: Vec<Event>| -> Vec<ShownEvent> {
            list.sort_by_key(|e| std::cmp::Reverse(e.started));
            list.iter().map(|e| ShownEvent::of(e, max)).collect()
        };
        Some(NodeEvents { node: node.to_string(), events: shown(events), failures: shown(failures) })
    }
}

/// What `GET /nodes/{id}/events` answers.
#[derive(Debug, Clone, Serialize)]
pub struct NodeEvents {
    pub node: String,
    /// The last calls, newest first.
    pub events: Vec<ShownEvent>,
    /// The last failed calls, newest first (kept apart from `events`).
    pub failures: Vec<ShownEvent>,
}

/// An event as shown: messages as JSON (or, past `maxBodyBytes`, the start of their text).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShownEvent {
    pub seq: u64,
    pub worker: usize,
    pub at_ms: i64,
    pub handed: Handed,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Body>,
    pub outputs: Vec<ShownOutput>,
    pub duration_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShownOutput {
    pub relation: String,
    pub msg: Body,
}

/// A message as JSON, or the start of its text when it is longer than allowed.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Body {
    Whole(serde_json::Value),
    Cut {
        /// The first `maxBodyBytes` bytes of its JSON (at a character boundary).
        truncated: String,
        /// Its whole length.
        bytes: usize,
    },
}

impl Body {
    pub(crate) fn of(msg: &Message, max: usize) -> Body {
        let text = serde_json::to_string(msg).unwrap_or_else(|e| format!("(cannot be written as JSON: {e})"));
        if text.len() <= max {
            return serde_json::from_str(&text).map_or(Body::Cut { bytes: text.len(), truncated: text }, Body::Whole);
        }
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Body::Cut { truncated: text[..end].to_string(), bytes: text.len() }
    }
}

impl ShownEvent {
    fn of(e: &Event, max: usize) -> ShownEvent {
        ShownEvent {
            seq: e.seq,
            worker: e.worker,
            at_ms: e.at_ms,
            handed: e.handed,
            input: e.input.as_deref().map(|m| Body::of(m, max)),
            outputs: e
                .outputs
                .iter()
                .map(|(relation, msg)| ShownOutput { relation: relation.to_string(), msg: Body::of(msg, max) })
                .collect(),
            duration_us: e.duration.as_micros() as u64,
            error: e.error.clone(),
        }
    }
}

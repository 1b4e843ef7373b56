//! The chain file as the user wrote it (`ChainSpec`), before any validation.
//!
//! Unknown fields are refused, so a typo (`"conections"`) is an error rather than a silently
//! ignored key. `chains/chain.schema.json` is generated from these types (`sluice schema`), so the
//! schema and the loader cannot drift apart.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub mod canonical;
pub mod connectors;

pub use crate::input::InputSpec;
pub use connectors::{
    CallPolicySpec, CircuitBreakerSpec, ConnectorKind, ConnectorSpec, KafkaConnection, MqttConnection, MqttVersion,
};

/// A rule chain: nodes, the relation-labelled connections between them, and the entry node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "Sluice rule chain")]
pub struct ChainSpec {
    /// The JSON Schema this file follows (for editors); ignored by the loader.
    #[serde(default, rename = "$schema", skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Human-readable name of the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Id of the node every message enters first.
    pub entry: String,
    /// Most node visits one message may make. Required when connections form a cycle: a message
    /// that would go past the bound is stopped, logged and counted (`hop_limit`). Without cycles it
    /// defaults to the number of nodes (nested chains included) plus one, which no path exceeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_hops: Option<u32>,
    /// Where each message's event time comes from, and the allowed lateness that sets the
    /// watermark windows close by. Default: the message's `ts`, no lateness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<EventTimeSpec>,
    /// How a flat JSON record — neither a message (`originator`) nor ThingsBoard's telemetry
    /// form (`deviceName`) — becomes a message: its originator built from its fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputSpec>,
    /// Where action nodes may deliver: name → connector. A node reaches one only when granted
    /// it (`"connector": NAME` on the node).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub connectors: BTreeMap<String, ConnectorSpec>,
    /// The flight recorder: the last events of every node (what came in, what went out on
    /// which relation, how long it took, the error), kept in memory and shown on the admin
    /// endpoint (`GET /nodes/{id}/events`). On by default; `{"enabled": false}` turns it off for
    /// this chain's nodes (sensitive data), as `"record": false` does for one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordSpec>,
    /// Host tables to seed when the chain starts: table name → where its first rows come from
    /// (a device registry, entity relations from `sluice import --relations`). A seeded row is
    /// added only when the table does not hold its key — rows restored from a checkpoint, or
    /// written by nodes before a reload, win.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tables: BTreeMap<String, TableSpec>,
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub connections: Vec<ConnectionSpec>,
}

/// One node. Exactly one of `module`, `chain` or `sink` says what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSpec {
    /// Unique within the chain; connections refer to it.
    pub id: String,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A WASM rule: a path (relative to this chain file) to a `.wasm` module — or a `.wat` text
    /// module; anything ending so or containing `/` is a path — or else the name of a built-in
    /// rule (`check-fields`), looked up in the module directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// A nested chain: a path to another chain file (relative to this one). The message enters
    /// that chain's entry node; outputs the nested chain does not connect leave this node with
    /// their relation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// A host sink: `output` writes the message to the run's output (`--output`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
    /// The rule's configuration, handed to its `init`: at load (to validate it), then whenever an
    /// instance starts (one per worker, and a fresh one after a crash).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub config: Value,
    /// Log every message in and out of this node (target `sluice::debug`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub debug: bool,
    /// Keep this node's last events in the flight recorder (default `true`; `false` for a node
    /// that handles data which must not stay in memory).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub record: bool,
    /// The connector (declared under the chain's `connectors`) this node's actions go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    /// Sandbox limits of this node; unset fields take the engine's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
}

fn yes() -> bool {
    true
}

fn is_yes(value: &bool) -> bool {
    *value
}

/// A table's seed (see [`ChainSpec::tables`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TableSpec {
    /// A JSON Lines file, relative to this chain file: one row a line, `{"key": "T-1",
    /// "value": {…}}` (the key a string, the value any JSON); blank lines are skipped; a key may
    /// appear once. Read when the chain loads, so a malformed line refuses the chain, naming the
    /// file and the line.
    pub seed: String,
}

/// The flight recorder's settings (see [`ChainSpec::record`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct RecordSpec {
    /// Record at all (default `true`).
    pub enabled: bool,
    /// Events kept per node and worker (default 100).
    #[schemars(range(min = 1))]
    pub events: usize,
    /// Failures kept per node and worker, apart from the other events so that a rare failure
    /// is not pushed out by normal traffic (default 100).
    #[schemars(range(min = 1))]
    pub failures: usize,
    /// A message longer than this, as JSON, is shown cut to this many bytes (default 4096).
    #[schemars(range(min = 16))]
    pub max_body_bytes: usize,
}

impl Default for RecordSpec {
    fn default() -> Self {
        RecordSpec { enabled: true, events: 100, failures: 100, max_body_bytes: 4096 }
    }
}

/// A connection: outputs of `from` labelled `relation` go to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSpec {
    pub from: String,
    pub to: String,
    pub relation: String,
}

/// The JSON Schema of chain files.
pub fn schema() -> Value {
    serde_json::to_value(schemars::schema_for!(ChainSpec)).unwrap_or(Value::Null)
}

/// Per-node sandbox limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Wall-clock deadline for one message, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub deadline_ms: Option<u64>,
    /// Most linear memory the module may grow to, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub memory_mb: Option<u64>,
    /// Disable the node after this many consecutive crashes (trap, deadline, out of memory);
    /// 0 never disables. A disabled node sends every message to `Failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_after: Option<u32>,
}

/// Where a message's event time comes from, and how late events may be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventTimeSpec {
    /// `ts` (the message's ts, the default), `metadata.<key>`, `data.<key>` or `arrival`.
    #[serde(default = "default_field")]
    pub from: String,
    /// How far behind the greatest event time seen the watermark trails, in ms.
    #[serde(default)]
    pub lateness_ms: u64,
    /// A partition (or originator) silent for this long (processing time, ms) stops holding
    /// the watermark back.
    #[serde(default = "default_idle")]
    pub idle_timeout_ms: u64,
    /// `partition` (default): one watermark per source partition (Kafka partition, MQTT topic).
    /// `originator`: one per device within its partition; a reading is late only by its own
    /// device's watermark, and windows close by the least of the devices not idle.
    #[serde(default, skip_serializing_if = "WatermarkPer::is_partition")]
    pub per: WatermarkPer,
}

fn default_field() -> String {
    "ts".into()
}

fn default_idle() -> u64 {
    30_000
}

impl Default for EventTimeSpec {
    fn default() -> Self {
        EventTimeSpec {
            from: default_field(),
            lateness_ms: 0,
            idle_timeout_ms: default_idle(),
            per: WatermarkPer::Partition,
        }
    }
}

/// One watermark per source partition, or per originator within its partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WatermarkPer {
    /// Per source partition: a Kafka partition, an MQTT topic; the HTTP source and a file are one.
    #[default]
    Partition,
    /// Per originator (device) within its source partition: a device whose clock is behind is
    /// judged by its own readings, not by the others'.
    Originator,
}

impl WatermarkPer {
    pub fn is_partition(&self) -> bool {
        *self == WatermarkPer::Partition
    }
}

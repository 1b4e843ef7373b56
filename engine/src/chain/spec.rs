//! The chain file as the user wrote it (`ChainSpec`), before any validation.
//!
//! Unknown fields are refused, so a typo (`"conections"`) is an error rather than a silently
//! ignored key. `chains/chain.schema.json` is generated from these types (`sluice schema`), so the
//! schema and the loader cannot drift apart.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

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
    pub event_time: Option<crate::state::time::EventTimeSpec>,
    /// How a flat JSON record — neither a message (`originator`) nor ThingsBoard's telemetry
    /// form (`deviceName`) — becomes a message: its originator built from its fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputSpec>,
    /// Where action nodes may deliver: name → connector. A node reaches one only when granted
    /// it (`"connector": NAME` on the node).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub connectors: BTreeMap<String, ConnectorSpec>,
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub connections: Vec<ConnectionSpec>,
}

/// How flat records become messages (`input` in the chain file). A record `{"ts": 1700000000000,
/// "panel": "Panel 0042", "module": "Module 3", "power": 312.25}` with
/// `{"originator": "${panel}/${module}"}` becomes telemetry from the device
/// `Panel 0042/Module 3`, its fields (`ts` taken out) as `data`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InputSpec {
    /// The originator's name: text with `${field}` (or `${data.field}`) taken from the record's
    /// top-level fields (strings as they are, numbers and booleans written out). A record
    /// missing one is malformed, the error naming the field. Like Kafka Streams' `selectKey`: the
    /// originator is also what orders and partitions messages.
    pub originator: String,
    /// The originator's entity type (default `DEVICE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_type: Option<String>,
    /// The message type (default `POST_TELEMETRY_REQUEST`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub msg_type: Option<String>,
}

/// A destination for action nodes' requests (see `engine/src/connectors`): what it is
/// (`type` and its fields) and how calls to it are made (timeout, retries, circuit breaker —
/// the same keys for every kind).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorSpec {
    // `policy` first: serde hands flattened fields the keys in declaration order, the policy
    // takes its own, and the kind (which refuses unknown keys) sees only the rest.
    #[serde(flatten)]
    pub policy: CallPolicySpec,
    #[serde(flatten)]
    pub kind: ConnectorKind,
}

impl From<ConnectorKind> for ConnectorSpec {
    fn from(kind: ConnectorKind) -> Self {
        ConnectorSpec { kind, policy: CallPolicySpec::default() }
    }
}

/// What a connector is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum ConnectorKind {
    /// Appends each request as a JSON line `{"connector", "node", "request"}` (tests, demos).
    /// A relative `path` is relative to the working directory; `{chainDir}/…` to the chain file.
    /// A run that starts fresh empties the file first (a resumed run, or a service, appends).
    File {
        path: String,
        /// Keep what earlier runs wrote: never empty the file (default false).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        append: bool,
    },
    /// HTTP calls (the REST action, the ThingsBoard flow).
    #[serde(rename_all = "camelCase")]
    Http {
        /// Relative request URLs are resolved against this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base_url: Option<String>,
        /// Headers sent with every request.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
    },
    /// A Kafka producer (librdkafka): idempotent, `acks=all`. The request's message is acked
    /// only on its delivery report.
    Kafka(KafkaConnection),
    /// An MQTT client (QoS 1 publishes, confirmed by PUBACK).
    Mqtt(MqttConnection),
}

/// How calls to a connector are made: each attempt's timeout, retries with exponential
/// backoff and jitter, and a circuit breaker. Every key is optional; the defaults are in
/// `engine/src/connectors/policy.rs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallPolicySpec {
    /// Time for one attempt, in ms: an HTTP exchange, an MQTT publish's confirmation, a Kafka
    /// delivery report awaited (default 10000 for HTTP and Kafka, 30000 for MQTT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_ms: Option<u64>,
    /// Attempts after the first for what may pass if asked again — a network error, a
    /// timeout, an HTTP 5xx — with exponential backoff (default 3; 0: no retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The first backoff in ms, doubled per retry, with jitter (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// The longest backoff in ms (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff_ms: Option<u64>,
    /// The circuit breaker: after `failures` calls in a row failed (retries spent), calls fail
    /// at once for `openMs`, then one probe call decides (default: on, 5 failures, 10000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
}

/// When a connector's circuit opens and for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreakerSpec {
    /// `false`: never open (default `true`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Consecutive failed calls that open the circuit (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub failures: Option<u32>,
    /// How long it stays open before a probe, in ms (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

/// Where a Kafka cluster is, and librdkafka properties passed through unchanged (TLS, SASL,
/// tuning: `security.protocol`, `sasl.mechanism`, `ssl.ca.location`…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaConnection {
    /// `host:port[,host:port…]` (librdkafka's `bootstrap.servers`).
    pub brokers: String,
    /// Extra librdkafka properties; they win over Sluice's defaults.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// `true`: the node waits for the delivery report and gets `{"partition", "offset"}`
    /// (ThingsBoard's Kafka node metadata). `false` (default): the node goes on at once and
    /// the message is acked when the report comes — same guarantee, far higher throughput.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub await_delivery: bool,
}

/// Where an MQTT broker is and how to log in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MqttConnection {
    /// `mqtt://host:port` or `mqtts://host:port` (TLS).
    pub url: String,
    /// Client id (default: `sluice-` and a random suffix; set it for a persistent session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// PEM file of the CA that signed the broker's certificate (`mqtts://`; default: the
    /// platform's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Keep-alive interval in seconds (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_s: Option<u64>,
    /// The protocol: `"3.1.1"` (the default) or `"5"`. Over MQTT 5 an action's publish carries
    /// its idempotency key as the user property `idempotency-key`. Sources speak 3.1.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<MqttVersion>,
}

/// An MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum MqttVersion {
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5")]
    V5,
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
    /// The connector (declared under the chain's `connectors`) this node's actions go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    /// Sandbox limits of this node; unset fields take the engine's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
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

//! The connector part of a chain file (`connectors` → NAME → spec): one type per kind, beside
//! the connectors that read them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A destination for action nodes' requests (see `connectors/src`): what it is
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
/// `connectors/src/policy.rs`.
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

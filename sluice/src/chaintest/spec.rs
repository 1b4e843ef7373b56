//! The test file: what `*.test.json` and `*.test.yaml` hold.
//!
//! ```json
//! {
//!   "chain": "wind-zones.json",
//!   "tests": [{
//!     "name": "one zone's average over 10 s",
//!     "steps": [
//!       {"send": [{"ts": 1000, "deviceName": "WS-1", "deviceType": "WeatherStation", "zone": "A", "windSpeed": 4}]},
//!       {"endOfInput": true},
//!       {"expect": {"sink": "output", "messages": [{"data": {"zone": "A", "avgWindSpeed": 4}}]}}
//!     ]
//!   }]
//! }
//! ```
//!
//! Field names are the chain file's style (camelCase), unknown fields are errors (a misspelt
//! `expect` key must not pass as "nothing to check"), and every error names the file and the
//! path of the field (`tests[0].steps[2].expect.mesages`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use sluice_core::spec::ConnectorSpec;

/// One test file: defaults for its tests, and the tests.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestFile {
    /// An editor's schema reference; ignored.
    #[serde(default, rename = "$schema")]
    pub schema: Option<String>,
    /// The chain every test runs, relative to this file (a test may name its own).
    #[serde(default)]
    pub chain: Option<String>,
    /// How each connector of the chain behaves in every test (default: captured).
    #[serde(default)]
    pub connectors: BTreeMap<String, ConnectorTest>,
    pub tests: Vec<TestCase>,
}

/// One test: a chain run from fresh state through its steps.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestCase {
    pub name: String,
    /// The chain, relative to the test file (default: the file's `chain`).
    #[serde(default)]
    pub chain: Option<String>,
    /// Connector behaviour for this test, over the file's.
    #[serde(default)]
    pub connectors: BTreeMap<String, ConnectorTest>,
    /// Processing time at the start, in ms since the epoch (default
    /// [`DEFAULT_START_MS`]: 2024-01-01T00:00:00Z).
    #[serde(default)]
    pub start_ms: Option<i64>,
    pub steps: Vec<Step>,
}

/// Processing time at the start of a test that does not set `startMs`.
pub const DEFAULT_START_MS: i64 = 1_704_067_200_000;

/// What a connector does in a test.
///
/// By default it is **captured**: requests are recorded, not executed, and answered with
/// `replies` in order, then `reply` (or what the connector's kind answers on success: HTTP 200 with an empty body, a Kafka
/// partition and offset, an MQTT or file acknowledgement) — or failed with `fail`. `live: true`
/// executes them against the chain's connector, or against `spec` when given (a local stand-in
/// server, a scratch file).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectorTest {
    #[serde(default)]
    pub live: bool,
    /// Replaces the chain's spec of this connector (implies `live`).
    #[serde(default)]
    pub spec: Option<ConnectorSpec>,
    /// Answers to the first captured requests, in order (a login, then a lookup…).
    #[serde(default)]
    pub replies: Vec<Value>,
    /// The answer to every captured request after `replies`.
    #[serde(default)]
    pub reply: Option<Value>,
    /// Every captured request fails with this reason (after no retry).
    #[serde(default)]
    pub fail: Option<String>,
}

/// One step of a test.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum Step {
    /// Messages in: full TbMsg objects or flat records (the simple telemetry form, or what the
    /// chain's `input` names), one or a list. They arrive at the current processing time.
    Send(OneOrMany),
    /// Messages in from a JSON-lines file, relative to the test file.
    SendFile(String),
    /// Processing time moves on by this many ms: timers due on the way fire in order, and the
    /// watermark moves on for the partitions and devices that fell idle (as a running source's).
    AdvanceMs(u64),
    /// The input ends: every open window closes (as at the end of a file run).
    EndOfInput(bool),
    /// Checks what happened since the last check of the same place.
    Expect(Box<Expect>),
}

/// One value or a list of them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    Many(Vec<Value>),
    One(Value),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<Value> {
        match self {
            OneOrMany::Many(v) => v,
            OneOrMany::One(v) => vec![v],
        }
    }
}

/// A check. It names one place — a node and relation, a sink, a connector, a node's state, a
/// table row, a node's counts — and what it expects there.
///
/// Messages and requests are those that reached the place since the last check of it (a check
/// consumes what it saw), matched in order, each partially (only the fields the expectation
/// names) unless `exact`; numbers within `tolerance`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    /// A node's output: with `relation`, what it sent on that relation.
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub relation: Option<String>,
    /// `output` (the chain's output sink) or `deadLetter` (failures nothing took).
    #[serde(default)]
    pub sink: Option<String>,
    /// A connector's captured requests.
    #[serde(default)]
    pub connector: Option<String>,
    /// A node's keyed state, at `key`.
    #[serde(default)]
    pub state: Option<String>,
    /// A table (shared by the chain's nodes), at `key`.
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    /// The expected messages (node, sink) or requests (connector), in order.
    #[serde(default)]
    pub messages: Option<Vec<Value>>,
    #[serde(default)]
    pub requests: Option<Vec<Value>>,
    /// The expected value at `key` (state, table); `null` with `absent` for none.
    #[serde(default)]
    pub value: Option<Value>,
    /// No value at `key`.
    #[serde(default)]
    pub absent: bool,
    /// How many messages or requests.
    #[serde(default)]
    pub count: Option<u64>,
    /// A node's counts since the start: messages judged late, failures.
    #[serde(default)]
    pub late: Option<u64>,
    #[serde(default)]
    pub failed: Option<u64>,
    /// Whole messages must be equal, not only the fields named.
    #[serde(default)]
    pub exact: bool,
    /// The largest difference two numbers may have and still match (default 1e-9).
    #[serde(default)]
    pub tolerance: Option<f64>,
}

/// Default [`Expect::tolerance`].
pub const DEFAULT_TOLERANCE: f64 = 1e-9;

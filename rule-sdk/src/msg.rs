//! The message every node sees: ThingsBoard's `TbMsg`, as JSON.
//!
//! One definition serves the host and the guest, so what a rule author tests natively is byte for
//! byte what the engine hands the compiled module:
//!
//! ```json
//! {"id": "7b0c…", "ts": 1700000000000, "type": "POST_TELEMETRY_REQUEST",
//!  "originator": {"entityType": "DEVICE", "name": "Wind Turbine 1"},
//!  "metadata": {"deviceType": "WeatherStation", "ts": "1700000000000"},
//!  "data": {"windSpeed": 33}}
//! ```
//!
//! `metadata` is a map of strings, as in ThingsBoard; `data` is any JSON value (an object for
//! telemetry and attributes). A `BTreeMap` keeps metadata in a stable order, so outputs are
//! reproducible.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Metadata of a message: string keys to string values, as in ThingsBoard.
pub type Metadata = BTreeMap<String, String>;

/// Well-known message types. Any other string is a valid, custom type.
pub mod msg_type {
    pub const POST_TELEMETRY_REQUEST: &str = "POST_TELEMETRY_REQUEST";
    pub const POST_ATTRIBUTES_REQUEST: &str = "POST_ATTRIBUTES_REQUEST";
    pub const ATTRIBUTES_UPDATED: &str = "ATTRIBUTES_UPDATED";
    pub const ATTRIBUTES_DELETED: &str = "ATTRIBUTES_DELETED";
    pub const TIMESERIES_UPDATED: &str = "TIMESERIES_UPDATED";
    pub const TIMESERIES_DELETED: &str = "TIMESERIES_DELETED";
    pub const RPC_CALL_FROM_SERVER_TO_DEVICE: &str = "RPC_CALL_FROM_SERVER_TO_DEVICE";
    pub const TO_SERVER_RPC_REQUEST: &str = "TO_SERVER_RPC_REQUEST";
    pub const CONNECT_EVENT: &str = "CONNECT_EVENT";
    pub const DISCONNECT_EVENT: &str = "DISCONNECT_EVENT";
    pub const ACTIVITY_EVENT: &str = "ACTIVITY_EVENT";
    pub const INACTIVITY_EVENT: &str = "INACTIVITY_EVENT";
    pub const ENTITY_CREATED: &str = "ENTITY_CREATED";
    pub const ENTITY_UPDATED: &str = "ENTITY_UPDATED";
    pub const ENTITY_DELETED: &str = "ENTITY_DELETED";
    pub const ALARM: &str = "ALARM";
}

/// Who sent the message: a device, an asset, …
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Originator {
    /// `DEVICE`, `ASSET`, `CUSTOMER`, … (ThingsBoard's entity types).
    #[serde(rename = "entityType")]
    pub entity_type: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl Originator {
    pub fn device(name: impl Into<String>) -> Self {
        Originator { entity_type: "DEVICE".into(), name: name.into(), id: None }
    }

    pub fn asset(name: impl Into<String>) -> Self {
        Originator { entity_type: "ASSET".into(), name: name.into(), id: None }
    }
}

/// A telemetry message in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Msg {
    /// Unique id. Left empty on a message a node creates, it becomes [`derived_id`] of the
    /// incoming message's id and the output's position (`"<parent>:<n>"`): deterministic, so a
    /// replay yields the same ids.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Event time in milliseconds since the Unix epoch.
    #[serde(default)]
    pub ts: i64,
    /// Message type, e.g. [`msg_type::POST_TELEMETRY_REQUEST`].
    #[serde(rename = "type")]
    pub msg_type: String,
    pub originator: Originator,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default = "empty_object")]
    pub data: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl Msg {
    /// A message of any type from `originator`, with empty metadata.
    pub fn new(msg_type: impl Into<String>, originator: Originator, data: Value) -> Self {
        Msg { id: String::new(), ts: 0, msg_type: msg_type.into(), originator, metadata: Metadata::new(), data }
    }

    /// A `POST_TELEMETRY_REQUEST` from the device `device`.
    pub fn telemetry(device: impl Into<String>, data: Value) -> Self {
        Msg::new(msg_type::POST_TELEMETRY_REQUEST, Originator::device(device), data)
    }

    /// A `POST_ATTRIBUTES_REQUEST` from the device `device`.
    pub fn attributes(device: impl Into<String>, data: Value) -> Self {
        Msg::new(msg_type::POST_ATTRIBUTES_REQUEST, Originator::device(device), data)
    }

    /// Builder: sets one metadata entry.
    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Builder: sets the event time.
    pub fn with_ts(mut self, ts: i64) -> Self {
        self.ts = ts;
        self
    }

    /// Builder: sets the id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// A metadata value, if present.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// A top-level field of `data`, if `data` is an object that has it.
    pub fn field(&self, key: &str) -> Option<&Value> {
        self.data.get(key)
    }

    /// A top-level field of `data` read as a number. Numbers sent as strings (`"33"`, as many
    /// devices do) count as numbers too.
    pub fn number(&self, key: &str) -> Option<f64> {
        as_number(self.data.get(key)?)
    }
}

/// Where a value lives in a message, as rule configs name it: `originator` (its name), `type`,
/// `ts`, `metadata.<key>` or `data.<key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldPath {
    Originator,
    Type,
    Ts,
    Metadata(String),
    Data(String),
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<FieldPath, String> {
        match text {
            "originator" => Ok(FieldPath::Originator),
            "type" => Ok(FieldPath::Type),
            "ts" => Ok(FieldPath::Ts),
            _ => match text.split_once('.') {
                Some(("metadata", key)) if !key.is_empty() => Ok(FieldPath::Metadata(key.into())),
                Some(("data", key)) if !key.is_empty() => Ok(FieldPath::Data(key.into())),
                _ => Err(format!(
                    "`{text}` is not a field: use `originator`, `type`, `ts`, `metadata.<key>` or `data.<key>`"
                )),
            },
        }
    }

    /// The value as text (numbers and booleans rendered; objects and null are not text).
    pub fn text(&self, msg: &Msg) -> Option<String> {
        match self {
            FieldPath::Originator => Some(msg.originator.name.clone()),
            FieldPath::Type => Some(msg.msg_type.clone()),
            FieldPath::Ts => Some(msg.ts.to_string()),
            FieldPath::Metadata(k) => msg.metadata.get(k).cloned(),
            FieldPath::Data(k) => match msg.data.get(k)? {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            },
        }
    }

    /// The value as a number (numeric strings count).
    pub fn number(&self, msg: &Msg) -> Option<f64> {
        match self {
            FieldPath::Ts => Some(msg.ts as f64),
            FieldPath::Data(k) => as_number(msg.data.get(k)?),
            other => other.text(msg)?.trim().parse().ok(),
        }
    }

    /// The value as JSON.
    pub fn value(&self, msg: &Msg) -> Option<Value> {
        match self {
            FieldPath::Data(k) => msg.data.get(k).cloned(),
            FieldPath::Ts => Some(Value::from(msg.ts)),
            other => other.text(msg).map(Value::String),
        }
    }

    /// The key's last part, to name it in an output (`data.panel` → `panel`).
    pub fn name(&self) -> &str {
        match self {
            FieldPath::Originator => "originator",
            FieldPath::Type => "type",
            FieldPath::Ts => "ts",
            FieldPath::Metadata(k) | FieldPath::Data(k) => k,
        }
    }
}

impl<'de> Deserialize<'de> for FieldPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        FieldPath::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The id of the `n`-th output of a node handling the message `parent`, when the node created a
/// message without an id: deterministic, so a replay produces the same ids and duplicates can be
/// recognised downstream.
pub fn derived_id(parent: &str, n: usize) -> String {
    format!("{parent}:{n}")
}

/// Reads a JSON value as a number, accepting numeric strings such as `"33.5"`.
pub fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_thingsboard_json() {
        let text = r#"{"id":"a","ts":5,"type":"POST_TELEMETRY_REQUEST","originator":{"entityType":"DEVICE","name":"D"},"metadata":{"deviceType":"T"},"data":{"x":1}}"#;
        let msg: Msg = serde_json::from_str(text).unwrap();
        assert_eq!(msg.meta("deviceType"), Some("T"));
        assert_eq!(serde_json::to_string(&msg).unwrap(), text);
    }

    #[test]
    fn numbers_sent_as_strings_read_as_numbers() {
        let msg = Msg::telemetry("D", json!({"windSpeed": "33", "t": 21.5, "bad": "x"}));
        assert_eq!(msg.number("windSpeed"), Some(33.0));
        assert_eq!(msg.number("t"), Some(21.5));
        assert_eq!(msg.number("bad"), None);
        assert_eq!(msg.number("missing"), None);
    }

    /// Telemetry values cross the engine unchanged: serde_json's default float parser can be one
    /// ulp off (11.399999999999999 read as 11.4); the SDK turns on `float_roundtrip`.
    #[test]
    fn floats_round_trip_exactly() {
        for x in [11.399999999999999f64, 0.40000000000000036, 1e-300, 123456.78901234567] {
            let text = serde_json::to_string(&json!({ "v": x })).unwrap();
            let back: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back["v"].as_f64(), Some(x), "{text}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let text = r#"{"type":"X","originator":{"entityType":"DEVICE","name":"D"},"colour":1}"#;
        let err = serde_json::from_str::<Msg>(text).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
    }
}

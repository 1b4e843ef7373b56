//! The chain's `input` form: how a flat record (no `originator`, no `deviceName`) becomes a
//! message — shared by every source that reads JSON records (a file, Kafka, MQTT).

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sluice_sdk::msg_type;

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

/// How a flat record (no `originator`, no `deviceName`) becomes a message: the chain's `input`
/// block, checked. Without one such a record is malformed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputForm {
    pub originator: Option<Template>,
    pub entity_type: Arc<str>,
    pub msg_type: Arc<str>,
}

/// `Panel ${panel}/${data.module}`: text and top-level fields of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

impl InputForm {
    /// Checks `spec`; the error names what is wrong in `input.originator`.
    pub fn new(spec: Option<&InputSpec>) -> Result<InputForm, String> {
        let Some(spec) = spec else { return Ok(InputForm::default()) };
        let mut parts = Vec::new();
        let mut rest = spec.originator.as_str();
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let end = rest[start..].find('}').ok_or_else(|| format!("`{}`: `${{` without `}}`", spec.originator))?;
            let name = &rest[start + 2..start + end];
            let name = name.strip_prefix("data.").unwrap_or(name);
            if name.is_empty() || name.contains(['$', '{']) {
                return Err(format!("`{}`: `${{{name}}}` is not a field name", spec.originator));
            }
            parts.push(Part::Field(name.to_string()));
            rest = &rest[start + end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(InputForm {
            originator: Some(Template(parts)),
            entity_type: spec.entity_type.as_deref().unwrap_or("DEVICE").into(),
            msg_type: spec.msg_type.as_deref().unwrap_or(msg_type::POST_TELEMETRY_REQUEST).into(),
        })
    }

    /// The originator's name for `record`, or why there is none.
    pub fn name(&self, template: &Template, record: &Map<String, Value>) -> Result<String, String> {
        let mut name = String::new();
        for part in &template.0 {
            match part {
                Part::Text(text) => name.push_str(text),
                Part::Field(field) => match record.get(field) {
                    Some(Value::String(s)) => name.push_str(s),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => name.push_str(&v.to_string()),
                    Some(other) => {
                        return Err(format!(
                            "`{field}` is {}, not text for the originator (the chain's `input.originator`)",
                            json_kind(other)
                        ));
                    }
                    None => return Err(format!("no `{field}`, which the chain's `input.originator` names")),
                },
            }
        }
        if name.is_empty() {
            return Err("the chain's `input.originator` gives an empty name".into());
        }
        Ok(name)
    }

    /// [`InputForm::name`] from a flat record's raw fields; `None` where that one would fail
    /// or a field needs unescaping (the record then takes the slow path, which words the error).
    pub fn name_raw(template: &Template, fields: &[(&str, &str)]) -> Option<String> {
        let field = |key: &str| fields.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let mut name = String::new();
        for part in &template.0 {
            match part {
                Part::Text(text) => name.push_str(text),
                Part::Field(key) => match field(key)? {
                    "null" => return None,
                    raw if raw.starts_with('"') => {
                        if raw.contains('\\') {
                            return None;
                        }
                        name.push_str(&raw[1..raw.len() - 1]);
                    }
                    // A number as it was written (what `Value::to_string` gives with
                    // `arbitrary_precision`), or a boolean.
                    raw => name.push_str(raw),
                },
            }
        }
        Some(name)
    }
}

/// What kind of JSON value a value is, for messages ("a string", "an object").
pub use sluice_sdk::json_kind;

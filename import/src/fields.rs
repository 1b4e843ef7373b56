//! Reading fields of a foreign JSON node with errors that name file, node and field.
//!
//! ThingsBoard exports carry many fields Sluice has no use for (layout, queue names, versions),
//! and their shapes drifted across releases, so nodes are read field by field from JSON rather
//! than through `deny_unknown_fields` structs: an unknown field is ignored, a field Sluice needs
//! with the wrong type is an error saying which.

use std::path::Path;

use serde_json::{Map, Value};

use super::error::ImportError;

/// A JSON object inside a node (`configuration`, a 1.x filter's `configuration`…).
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub file: &'a Path,
    /// `node 3`, `filters[1]`…
    pub at: &'a str,
    /// The object's path inside the node, e.g. `configuration`.
    pub path: &'a str,
    pub value: &'a Value,
}

/// What a JSON value is, for errors ("expected a string, got a number").
fn describe(value: &Value) -> &'static str {
    sluice_sdk::json_kind(value)
}

impl<'a> Fields<'a> {
    pub fn error(&self, field: &str, message: impl Into<String>) -> ImportError {
        let path = if self.path.is_empty() { field.to_string() } else { format!("{}.{field}", self.path) };
        crate::error::invalid(self.file, message).at(self.at).field(path)
    }

    /// The field, `None` when absent or null.
    pub fn get(&self, field: &str) -> Option<&'a Value> {
        self.value.get(field).filter(|v| !v.is_null())
    }

    pub fn opt_str(&self, field: &str) -> Result<Option<&'a str>, ImportError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.error(field, format!("expected a string, got {}", describe(other)))),
        }
    }

    pub fn str(&self, field: &str) -> Result<&'a str, ImportError> {
        self.opt_str(field)?.ok_or_else(|| self.error(field, "missing"))
    }

    pub fn opt_bool(&self, field: &str) -> Result<Option<bool>, ImportError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            // Some exports (and hand edits) write flags as text.
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(other) => Err(self.error(field, format!("expected a boolean, got {}", describe(other)))),
        }
    }

    /// A non-negative integer; ThingsBoard's UI saves some numbers as strings (`"acks": "-1"`).
    pub fn opt_u64(&self, field: &str) -> Result<Option<u64>, ImportError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f >= 0.0 && f.fract() == 0.0) => {
                Ok(n.as_f64().map(|f| f as u64))
            }
            Some(Value::String(s)) if s.trim().parse::<u64>().is_ok() => Ok(s.trim().parse().ok()),
            Some(other) => Err(self.error(field, format!("expected a non-negative integer, got {other}"))),
        }
    }

    /// A list of strings (absent or null: empty).
    pub fn strings(&self, field: &str) -> Result<Vec<String>, ImportError> {
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => {
                        Err(self.error(&format!("{field}[{i}]"), format!("expected a string, got {}", describe(other))))
                    }
                })
                .collect(),
            Some(other) => Err(self.error(field, format!("expected a list of strings, got {}", describe(other)))),
        }
    }

    /// An object of strings (absent or null: empty); numbers and booleans are taken as text.
    pub fn string_map(&self, field: &str) -> Result<Map<String, Value>, ImportError> {
        match self.get(field) {
            None => Ok(Map::new()),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(_) => Ok((k.clone(), v.clone())),
                    Value::Number(_) | Value::Bool(_) => Ok((k.clone(), Value::String(v.to_string()))),
                    other => {
                        Err(self.error(&format!("{field}.{k}"), format!("expected a string, got {}", describe(other))))
                    }
                })
                .collect(),
            Some(other) => Err(self.error(field, format!("expected an object, got {}", describe(other)))),
        }
    }

    /// A nested object as `Fields` (absent or null: an empty object).
    pub fn object(&self, field: &str, path: &'a str) -> Result<Fields<'a>, ImportError> {
        static EMPTY: Value = Value::Null;
        match self.value.get(field) {
            None | Some(Value::Null) => Ok(Fields { value: &EMPTY, path, ..*self }),
            Some(v @ Value::Object(_)) => Ok(Fields { value: v, path, ..*self }),
            Some(other) => Err(self.error(field, format!("expected an object, got {}", describe(other)))),
        }
    }
}

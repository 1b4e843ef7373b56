//! Chain files as code: one canonical text per chain, so that a chain diffs and merges cleanly
//! in git, and a diff in chain terms (nodes added, removed or changed, connections added or
//! removed) rather than in lines of text.
//!
//! The canonical form is the text a user wrote, re-laid: keys in a fixed order (a chain's and a
//! node's in the order the format documents them, `type` and `id` first elsewhere, the rest
//! alphabetical), a value on one line when it fits in 100 columns and one entry per line when
//! not, two-space indentation, a final newline. Nothing is added or dropped: defaults stay
//! unwritten. Nodes keep the order they were written in. Connections are grouped by the node
//! they leave and their relation; the order of targets within one relation is kept, because it
//! is the order a fan-out hands a message on.

use std::fmt;

use serde_json::Value;

use super::{ChainSpec, ConnectionSpec};

/// Where a line ends: a value is written on one line when it fits before this column.
const WIDTH: usize = 100;

/// A chain's keys, and a node's, in the order the chain format documents them.
const CHAIN_KEYS: &[&str] = &[
    "$schema",
    "name",
    "entry",
    "maxHops",
    "eventTime",
    "input",
    "connectors",
    "record",
    "tables",
    "nodes",
    "connections",
];
const NODE_KEYS: &[&str] =
    &["id", "name", "module", "chain", "sink", "connector", "config", "limits", "debug", "record"];
const CONNECTION_KEYS: &[&str] = &["from", "to", "relation"];

/// The canonical text of a chain file's JSON (checked as a chain by the caller).
pub fn canonical_text(chain: &Value) -> String {
    let mut chain = chain.clone();
    if let Some(connections) = chain.get_mut("connections").and_then(Value::as_array_mut) {
        let key = |c: &Value| {
            (c["from"].as_str().unwrap_or("").to_string(), c["relation"].as_str().unwrap_or("").to_string())
        };
        connections.sort_by_key(key);
    }
    let mut out = String::new();
    write(&mut out, &chain, 0, 0, Some(CHAIN_KEYS), Place::Chain);
    out.push('\n');
    out
}

/// The canonical text of `spec` (as the importer writes it: every field serde writes).
pub fn canonical(spec: &ChainSpec) -> Result<String, serde_json::Error> {
    Ok(canonical_text(&serde_json::to_value(spec)?))
}

/// Where in a chain file a value sits: it decides the order of an object's keys.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    Chain,
    Other,
}

fn ordered<'a>(map: &'a serde_json::Map<String, Value>, first: &[&str]) -> Vec<(&'a String, &'a Value)> {
    let rank = |k: &str| first.iter().position(|f| *f == k).unwrap_or(first.len());
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|(a, _), (b, _)| (rank(a), *a).cmp(&(rank(b), *b)));
    entries
}

/// `value` on one line: `{"a": 1, "b": [2, 3]}`.
fn inline(value: &Value, keys: Option<&[&str]>) -> String {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let entries = ordered(map, keys.unwrap_or(&["type", "id"]));
            let parts: Vec<String> =
                entries.iter().map(|(k, v)| format!("{}: {}", Value::String((*k).clone()), inline(v, None))).collect();
            format!("{{{}}}", parts.join(", "))
        }
        // An array's keys are its elements' (a chain's nodes, its connections).
        Value::Array(items) if !items.is_empty() => {
            format!("[{}]", items.iter().map(|v| inline(v, keys)).collect::<Vec<_>>().join(", "))
        }
        other => other.to_string(),
    }
}

/// Writes `value`, which starts at column `col` of a line indented `level` times.
fn write(out: &mut String, value: &Value, level: usize, col: usize, keys: Option<&[&str]>, place: Place) {
    let one_line = inline(value, keys);
    // The chain itself is always laid out; anything else on one line when it fits.
    if place != Place::Chain && col + one_line.len() <= WIDTH {
        out.push_str(&one_line);
        return;
    }
    let pad = "  ".repeat(level + 1);
    let end = "  ".repeat(level);
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            let entries = ordered(map, keys.unwrap_or(&["type", "id"]));
            for (i, (k, v)) in entries.iter().enumerate() {
                let key = format!("{pad}{}: ", Value::String((*k).clone()));
                out.push_str(&key);
                let child_keys = match (place, k.as_str()) {
                    (Place::Chain, "nodes") => Some(NODE_KEYS),
                    (Place::Chain, "connections") => Some(CONNECTION_KEYS),
                    _ => None,
                };
                write(out, v, level + 1, key.len(), child_keys, Place::Other);
                out.push_str(if i + 1 < entries.len() { ",\n" } else { "\n" });
            }
            out.push_str(&end);
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad);
                write(out, item, level + 1, pad.len(), keys, Place::Other);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&end);
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// One difference between two versions of a chain.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A chain-level field (`entry`, `maxHops`, `eventTime.latenessMs`, `connectors.kafka.brokers`…).
    Field {
        field: String,
        old: Option<Value>,
        new: Option<Value>,
    },
    NodeAdded {
        id: String,
        what: String,
    },
    NodeRemoved {
        id: String,
        what: String,
    },
    /// A field of a node present in both (`module`, `config.threshold`, `limits.deadlineMs`…).
    NodeChanged {
        id: String,
        field: String,
        old: Option<Value>,
        new: Option<Value>,
    },
    ConnectionAdded(ConnectionSpec),
    ConnectionRemoved(ConnectionSpec),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| v.as_ref().map_or("(unset)".to_string(), Value::to_string);
        match self {
            Change::Field { field, old, new } => write!(f, "~ {field}: {} → {}", show(old), show(new)),
            Change::NodeAdded { id, what } => write!(f, "+ node `{id}` ({what})"),
            Change::NodeRemoved { id, what } => write!(f, "- node `{id}` ({what})"),
            Change::NodeChanged { id, field, old, new } => {
                write!(f, "~ node `{id}`: {field}: {} → {}", show(old), show(new))
            }
            Change::ConnectionAdded(c) => write!(f, "+ connection {} -[{}]-> {}", c.from, c.relation, c.to),
            Change::ConnectionRemoved(c) => write!(f, "- connection {} -[{}]-> {}", c.from, c.relation, c.to),
        }
    }
}

/// What changed from `old` to `new`, in chain terms: chain fields, then nodes (in `new`'s
/// order, removed ones after), then connections.
pub fn diff(old: &ChainSpec, new: &ChainSpec) -> Vec<Change> {
    let mut changes = Vec::new();
    let (old_value, new_value) = (chain_fields(old), chain_fields(new));
    fields("", Some(&old_value), Some(&new_value), &mut |field, old, new| {
        changes.push(Change::Field { field, old, new });
    });
    for node in &new.nodes {
        match old.nodes.iter().find(|n| n.id == node.id) {
            None => changes.push(Change::NodeAdded { id: node.id.clone(), what: what(node) }),
            Some(before) => {
                let (a, b) = (node_fields(before), node_fields(node));
                fields("", Some(&a), Some(&b), &mut |field, old, new| {
                    changes.push(Change::NodeChanged { id: node.id.clone(), field, old, new });
                });
            }
        }
    }
    for node in old.nodes.iter().filter(|n| !new.nodes.iter().any(|m| m.id == n.id)) {
        changes.push(Change::NodeRemoved { id: node.id.clone(), what: what(node) });
    }
    for c in &new.connections {
        if !old.connections.contains(c) {
            changes.push(Change::ConnectionAdded(c.clone()));
        }
    }
    for c in &old.connections {
        if !new.connections.contains(c) {
            changes.push(Change::ConnectionRemoved(c.clone()));
        }
    }
    changes
}

/// What a node is, in a few words: its module, nested chain or sink.
fn what(node: &super::NodeSpec) -> String {
    match (&node.module, &node.chain, &node.sink) {
        (Some(module), _, _) => module.clone(),
        (_, Some(chain), _) => format!("chain {chain}"),
        (_, _, Some(sink)) => format!("sink {sink}"),
        _ => "?".into(),
    }
}

/// The chain's own fields, without its nodes and connections (and the editor-only `$schema`).
fn chain_fields(spec: &ChainSpec) -> Value {
    let mut value = serde_json::to_value(spec).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        for key in ["nodes", "connections", "$schema"] {
            map.remove(key);
        }
    }
    value
}

fn node_fields(node: &super::NodeSpec) -> Value {
    let mut value = serde_json::to_value(node).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.remove("id");
    }
    value
}

/// Calls `change(path, old, new)` for every leaf that differs: objects are walked key by key,
/// anything else (arrays included) compared whole.
fn fields(
    path: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    change: &mut dyn FnMut(String, Option<Value>, Option<Value>),
) {
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let at = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                fields(&at, a.get(key), b.get(key), change);
            }
        }
        (a, b) if a != b => change(path.to_string(), a.cloned(), b.cloned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: Value) -> ChainSpec {
        serde_json::from_value(value).expect("a chain spec")
    }

    #[test]
    fn canonical_text_groups_connections_and_keeps_fan_out_order() {
        let chain = spec(json!({
            "nodes": [{"id": "b", "sink": "output"}, {"id": "a", "module": "threshold", "config": {"z": 1, "a": 2}}],
            "entry": "a",
            "connections": [
                {"relation": "Normal", "from": "a", "to": "b"},
                {"from": "a", "to": "c", "relation": "Anomaly"},
                {"from": "a", "to": "b", "relation": "Anomaly"}
            ]
        }));
        let text = canonical(&chain).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        let order: Vec<(&str, &str)> = back["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["relation"].as_str().unwrap(), c["to"].as_str().unwrap()))
            .collect();
        assert_eq!(order, [("Anomaly", "c"), ("Anomaly", "b"), ("Normal", "b")]);
        assert!(text.starts_with("{\n  \"entry\": \"a\",\n  \"nodes\": ["), "{text}");
        assert!(text.ends_with("}\n"));
        // Idempotent.
        assert_eq!(canonical(&spec(back)).unwrap(), text);
    }

    #[test]
    fn diff_names_nodes_fields_and_connections() {
        let old = spec(json!({
            "entry": "f", "maxHops": 5,
            "nodes": [
                {"id": "f", "module": "threshold", "config": {"value": "data.t", "threshold": 100}},
                {"id": "gone", "module": "log"},
                {"id": "out", "sink": "output"}
            ],
            "connections": [{"from": "f", "to": "out", "relation": "Anomaly"}, {"from": "f", "to": "gone", "relation": "Normal"}]
        }));
        let new = spec(json!({
            "entry": "f",
            "nodes": [
                {"id": "f", "module": "threshold", "config": {"value": "data.t", "threshold": 120}},
                {"id": "out", "sink": "output"},
                {"id": "new", "module": "delay"}
            ],
            "connections": [{"from": "f", "to": "out", "relation": "Anomaly"}, {"from": "f", "to": "new", "relation": "Normal"}]
        }));
        let lines: Vec<String> = diff(&old, &new).iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "~ maxHops: 5 → (unset)",
                "~ node `f`: config.threshold: 100 → 120",
                "+ node `new` (delay)",
                "- node `gone` (log)",
                "+ connection f -[Normal]-> new",
                "- connection f -[Normal]-> gone",
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}

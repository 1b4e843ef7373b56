//! `sluice import thingsboard --relations FILE`: ThingsBoard entity relations, as its REST API
//! and exports give them (`EntityRelation`), turned into the seed of the chains' relation table.
//!
//! The file is a JSON array of
//! `{"from": {"entityType": "ASSET", "id": "…", "name": "Building A"}, "to": {…}, "type": "Contains",
//! "typeGroup": "COMMON"}`. ThingsBoard joins relations by entity id; Sluice names entities as
//! it names originators, by type and name, so each end needs a `name` — given beside or instead
//! of its `id`, or found on another entry that gives the same id with a name. An end with only
//! an id nobody names is refused, naming the file and the entry. Only the `COMMON` type group
//! is kept (the one ThingsBoard's relation rule nodes use); others are refused too.
//!
//! The seed's rows follow `sluice_sdk::entity_relations` (the layout the relation rules read):
//! one row per entity, keyed `"<entityType>:<name>"`, `{"out": [links from it], "in": [links
//! to it]}`, each link `{"type", "entityType", "name", "id"?}`. The ids the file gives are kept
//! on the links (for `check-relation`'s `entityId`) and resolve ThingsBoard `entityId`s in node
//! configurations to names ([`Relations::name_of`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::error::{FileError, ImportError, ImportErrorKind, invalid};

/// The seed file's name in the output directory, and the table it seeds.
pub const SEED_FILE: &str = "relations.jsonl";
pub const TABLE: &str = "relations";

/// The relations of a `--relations` file.
#[derive(Debug, Clone, Default)]
pub struct Relations {
    pub file: PathBuf,
    /// Row key → row, in key order.
    pub rows: BTreeMap<String, Value>,
    /// How many relations (duplicates once).
    pub count: usize,
    /// ThingsBoard entity id → (entity type, name).
    pub ids: BTreeMap<String, (String, String)>,
}

/// One end of a relation, once named.
#[derive(Debug, Clone, PartialEq, Eq)]
struct End {
    entity_type: String,
    name: String,
    id: Option<String>,
}

impl End {
    fn key(&self) -> String {
        format!("{}:{}", self.entity_type, self.name)
    }

    fn link(&self, relation_type: &str) -> Value {
        let mut link = json!({"type": relation_type, "entityType": self.entity_type, "name": self.name});
        if let Some(id) = &self.id {
            link["id"] = json!(id);
        }
        link
    }
}

impl Relations {
    /// Reads `file`; errors name it, the entry (`[3]`) and the field (`from.name`).
    pub fn read(file: &Path) -> Result<Relations, ImportError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| ImportError::new(file, ImportErrorKind::File(FileError::Io(e.to_string()))))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| ImportError::new(file, ImportErrorKind::File(FileError::syntax(&e, e.to_string()))))?;
        Self::parse(file, &value)
    }

    pub fn parse(file: &Path, value: &Value) -> Result<Relations, ImportError> {
        let Value::Array(entries) = value else {
            return Err(invalid(file, "expected a JSON array of ThingsBoard EntityRelation objects"));
        };
        // Pass 1: every id that some entry names.
        let mut ids: BTreeMap<String, (String, String)> = BTreeMap::new();
        for entry in entries {
            for side in ["from", "to"] {
                let e = &entry[side];
                if let (Some(t), Some(id), Some(name)) = (e["entityType"].as_str(), id_of(e), e["name"].as_str()) {
                    ids.entry(id.to_string()).or_insert((t.to_string(), name.to_string()));
                }
            }
        }
        // Pass 2: the relations.
        let mut rows: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
        let mut count = 0;
        for (i, entry) in entries.iter().enumerate() {
            let at = |field: &str, message: String| invalid(file, message).at(format!("[{i}]")).field(field);
            let Value::Object(_) = entry else {
                return Err(invalid(file, "expected an EntityRelation object").at(format!("[{i}]")));
            };
            let relation_type = match entry.get("type") {
                Some(Value::String(t)) if !t.trim().is_empty() => t.clone(),
                _ => return Err(at("type", "missing or empty relation type".into())),
            };
            match entry.get("typeGroup") {
                None | Some(Value::Null) => {}
                Some(Value::String(g)) if g == "COMMON" => {}
                Some(other) => {
                    return Err(at(
                        "typeGroup",
                        format!("{other}: only COMMON relations are kept (the group ThingsBoard's relation nodes use)"),
                    ));
                }
            }
            let from = end(&entry["from"], &ids).map_err(|(f, m)| at(&format!("from{f}"), m))?;
            let to = end(&entry["to"], &ids).map_err(|(f, m)| at(&format!("to{f}"), m))?;
            let out = &mut rows.entry(from.key()).or_default().0;
            let link = to.link(&relation_type);
            if out.iter().any(|l| same(l, &link)) {
                continue;
            }
            out.push(link);
            rows.entry(to.key()).or_default().1.push(from.link(&relation_type));
            count += 1;
        }
        let rows = rows
            .into_iter()
            .map(|(key, (out, incoming))| {
                let mut row = Map::new();
                if !out.is_empty() {
                    row.insert("out".into(), Value::Array(out));
                }
                if !incoming.is_empty() {
                    row.insert("in".into(), Value::Array(incoming));
                }
                (key, Value::Object(row))
            })
            .collect();
        Ok(Relations { file: file.to_path_buf(), rows, count, ids })
    }

    /// The name of the entity ThingsBoard knows by `id`, if the file names it.
    pub fn name_of(&self, id: &str) -> Option<&(String, String)> {
        self.ids.get(id)
    }

    /// The seed file's text: one `{"key", "value"}` line per row.
    pub fn seed_text(&self) -> String {
        let mut text = String::new();
        for (key, row) in &self.rows {
            text.push_str(&json!({"key": key, "value": row}).to_string());
            text.push('\n');
        }
        text
    }
}

/// Two links of the same relation (type and entity; the id does not count).
fn same(a: &Value, b: &Value) -> bool {
    a["type"] == b["type"] && a["entityType"] == b["entityType"] && a["name"] == b["name"]
}

/// An entity's id: `"id": "…"` or ThingsBoard's `"id": {"entityType": …, "id": "…"}`.
fn id_of(entity: &Value) -> Option<&str> {
    match &entity["id"] {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("id").and_then(Value::as_str),
        _ => None,
    }
}

/// One end of a relation: its type, and a name (given, or by its id); errors as (field suffix,
/// message).
fn end(entity: &Value, ids: &BTreeMap<String, (String, String)>) -> Result<End, (String, String)> {
    if !entity.is_object() {
        return Err((String::new(), "expected an entity {\"entityType\": …, \"name\": …}".into()));
    }
    let Some(entity_type) = entity["entityType"].as_str().filter(|t| !t.trim().is_empty() && !t.contains(':')) else {
        return Err((".entityType".into(), "missing or empty entity type (DEVICE, ASSET, …)".into()));
    };
    let id = id_of(entity).map(str::to_string);
    let name = match (entity["name"].as_str(), &id) {
        (Some(name), _) if !name.is_empty() => name.to_string(),
        (_, Some(id)) => match ids.get(id) {
            Some((_, name)) => name.clone(),
            None => {
                return Err((
                    ".name".into(),
                    format!(
                        "{entity_type} {id} has only an id, which no entry names: Sluice names entities as it names \
                         originators, by name — add `\"name\"` beside the id"
                    ),
                ));
            }
        },
        _ => return Err((".name".into(), "missing: give the entity's `name`".into())),
    };
    Ok(End { entity_type: entity_type.to_string(), name, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: Value) -> Result<Relations, String> {
        Relations::parse(Path::new("rel.json"), &value).map_err(|e| e.to_string())
    }

    #[test]
    fn rows_in_both_directions_with_names_resolved_by_id() {
        let r = parse(json!([
            {"from": {"entityType": "ASSET", "id": {"entityType": "ASSET", "id": "a1"}, "name": "Building A"},
             "to": {"entityType": "DEVICE", "name": "T-1"}, "type": "Contains", "typeGroup": "COMMON"},
            {"from": {"entityType": "ASSET", "id": "a1"}, "to": {"entityType": "DEVICE", "name": "T-2"}, "type": "Contains"},
            {"from": {"entityType": "ASSET", "name": "Building A"}, "to": {"entityType": "DEVICE", "name": "T-1"}, "type": "Contains"}
        ]))
        .unwrap();
        assert_eq!(r.count, 2, "a duplicate counts once");
        assert_eq!(
            r.rows["ASSET:Building A"],
            json!({"out": [{"type": "Contains", "entityType": "DEVICE", "name": "T-1"},
                           {"type": "Contains", "entityType": "DEVICE", "name": "T-2"}]})
        );
        assert_eq!(
            r.rows["DEVICE:T-2"],
            json!({"in": [{"type": "Contains", "entityType": "ASSET", "name": "Building A", "id": "a1"}]})
        );
        assert_eq!(r.name_of("a1"), Some(&("ASSET".to_string(), "Building A".to_string())));
        assert_eq!(r.seed_text().lines().count(), 3);
    }

    #[test]
    fn an_end_with_only_an_unknown_id_is_refused_naming_the_entry() {
        let err = parse(json!([
            {"from": {"entityType": "ASSET", "name": "A"}, "to": {"entityType": "DEVICE", "name": "T-1"}, "type": "Contains"},
            {"from": {"entityType": "ASSET", "name": "A"}, "to": {"entityType": "DEVICE", "id": "d9"}, "type": "Contains"}
        ]))
        .unwrap_err();
        assert!(err.starts_with("rel.json: [1]: field `to.name`: DEVICE d9 has only an id"), "{err}");
        let err =
            parse(json!([{"from": {"entityType": "ASSET", "name": "A"}, "to": {"entityType": "DEVICE", "name": "T"},
                                "type": "Contains", "typeGroup": "ALARM"}]))
            .unwrap_err();
        assert!(err.starts_with("rel.json: [0]: field `typeGroup`"), "{err}");
        assert!(parse(json!({"from": 1})).unwrap_err().contains("JSON array"));
        assert!(
            parse(json!([{"from": {"name": "A"}, "to": {}, "type": "C"}])).unwrap_err().contains("`from.entityType`")
        );
        assert!(
            parse(json!([{"from": {"entityType": "A", "name": "A"}, "to": {"entityType": "D", "name": "T"}}]))
                .unwrap_err()
                .contains("`type`")
        );
    }
}

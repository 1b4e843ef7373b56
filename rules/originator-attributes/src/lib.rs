//! Originator attributes (ThingsBoard's `TbGetAttributesNode`), read from a host table instead of
//! ThingsBoard's database: looks up the message's entry — by the originator's name, or a
//! configured key such as `data.deviceId` — in a table kept by `table-writer` (or any node calling
//! `table::put`), and copies the listed attributes into the metadata (default, under an optional
//! prefix like ThingsBoard's `cs_`/`ss_`/`shared_`) or into the data. The message goes on to
//! `Success`, unchanged when there was nothing to copy.
//!
//! Metadata values are strings: a string attribute is copied as it is, anything else as its JSON
//! text (`7`, `true`, `{"site":"HQ"}`). In data the JSON value is copied as it is. Copied keys
//! replace keys of the same name. An attribute that is `null` counts as absent.
//!
//! `Failure` (with `metadata.error`) when the message lacks its lookup key (always: that is a
//! malformed message, not a missing entry), when `tellFailureIfAbsent` is set and the entry or
//! any listed attribute is absent (the error names them), or when `to` is `data` and the data is
//! not an object.
//!
//! Related entities (ThingsBoard's `TbGetRelatedAttributeNode`): with `related`, a ThingsBoard
//! `relationsQuery`, the entry read is not the originator's but that of the first entity the
//! query finds from it in the chain's relation table (`relations`, see
//! `sluice_sdk::entity_relations`) — as `TbGetRelatedAttributeNode.findEntityAsync` with
//! `EntitiesRelatedEntityIdAsyncLoader` — looked up by that entity's name. No related entity sends
//! the message to `Failure` with ThingsBoard's error ("Failed to find related entity to message
//! originator using relation query specified in the configuration!"). The importer reads
//! ThingsBoard's server attributes (`TbEntityGetAttrNode.getAttributesAsync`: `SERVER_SCOPE`)
//! from `server_attributes`, or latest telemetry (`telemetry: true`,
//! `dataToFetch: LATEST_TELEMETRY`) from `timeseries`.
//!
//! Config:
//! ```json
//! {"table": "devices", "key": "originator", "attributes": {"location.region": "region"},
//!  "to": "metadata", "prefix": "cs_", "tellFailureIfAbsent": false}
//! ```
//! - `table` (required, non-empty): the table's name.
//! - `key` (default `"originator"`, the originator's name): where the entry's key is read —
//!   `originator`, `type`, `ts`, `metadata.<k>` or `data.<k>` (a dotted `data.a.b` reaches into
//!   objects; a number or boolean is used as its text).
//! - `attributes` (required, not empty): a list of paths into the entry — `["region",
//!   "location.site"]`, each copied under the path as written — or a map path → name
//!   (`{"location.region": "region"}`). A dotted path reaches into objects (a key that itself
//!   contains the dots wins).
//! - `to` (default `"metadata"`): `"metadata"` or `"data"` (ThingsBoard's `METADATA`/`DATA` are
//!   accepted too).
//! - `prefix` (default `""`): put before every copied name, in metadata or data.
//! - `related` (default none): a relations query (`direction`, `maxLevel`, `filters`,
//!   `fetchLastLevelOnly`, as `change-originator`'s `relationsQuery`); `key` must then stay
//!   `originator`.
//! - `tellFailureIfAbsent` (default `false`): when `true`, a missing entry or attribute sends
//!   the message to `Failure` instead of `Success`.
use std::collections::BTreeSet;

use sluice_sdk::entity_relations::{Entity, RelationsQuery};
use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub table: String,
    #[serde(default = "originator")]
    pub key: FieldPath,
    pub attributes: Attributes,
    #[serde(default)]
    pub to: Target,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub tell_failure_if_absent: bool,
    #[serde(default)]
    pub related: Option<RelationsQuery>,
}

/// The attributes to copy: paths (copied under the path as written) or path → name.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged, expecting = "a list of attribute paths or a map of attribute path to name")]
pub enum Attributes {
    List(Vec<String>),
    Renamed(serde_json::Map<String, Value>),
}

/// Where copied attributes go.
// The schema lists the aliases too (schemars does not read `alias`): a config the node takes
// must pass the load-time schema check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(extend("enum" = ["metadata", "data", "METADATA", "DATA"]))]
pub enum Target {
    #[default]
    #[serde(alias = "METADATA")]
    Metadata,
    #[serde(alias = "DATA")]
    Data,
}

fn originator() -> FieldPath {
    FieldPath::Originator
}

pub struct OriginatorAttributes {
    table: String,
    key: FieldPath,
    /// (path in the entry, name in the message, prefix included).
    copies: Vec<(String, String)>,
    to: Target,
    strict: bool,
    related: Option<RelationsQuery>,
}

/// Adds the originator's attributes from a host table to the message.
#[node(relations = ["Success"])]
impl Node for OriginatorAttributes {
    type Config = Config;

    fn init(cfg: Config) -> Result<Self> {
        if cfg.table.trim().is_empty() {
            bail_config!("table", "must name a table");
        }
        let pairs: Vec<(String, String, String)> = match cfg.attributes {
            Attributes::List(paths) => {
                paths.into_iter().enumerate().map(|(i, p)| (format!("attributes[{i}]"), p.clone(), p)).collect()
            }
            Attributes::Renamed(map) => {
                let mut pairs = Vec::new();
                for (path, name) in map {
                    let Value::String(name) = name else {
                        bail_config!(format!("attributes.{path}"), "the new name must be a string, not {name}");
                    };
                    pairs.push((format!("attributes.{path}"), path, name));
                }
                pairs
            }
        };
        if cfg.related.is_some() && !matches!(cfg.key, FieldPath::Originator) {
            bail_config!("key", "must be `originator` with `related`: the entry is the related entity's");
        }
        if pairs.is_empty() {
            bail_config!("attributes", "list at least one attribute");
        }
        let mut names = BTreeSet::new();
        let mut copies = Vec::new();
        for (field, path, name) in pairs {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                bail_config!(format!("{field}"), "`{path}` is not a key or a dotted path like `location.region`");
            }
            if name.is_empty() {
                bail_config!(format!("{field}"), "the new name is empty");
            }
            let name = format!("{}{name}", cfg.prefix);
            if !names.insert(name.clone()) {
                bail_config!(format!("{field}"), "`{name}` is copied twice");
            }
            copies.push((path, name));
        }
        Ok(OriginatorAttributes {
            table: cfg.table,
            key: cfg.key,
            copies,
            to: cfg.to,
            strict: cfg.tell_failure_if_absent,
            related: cfg.related,
        })
    }

    fn on_msg(&mut self, mut msg: Msg, out: &mut Outputs) -> Result<()> {
        let key = match &self.related {
            Some(query) => match query.first(&Entity::of(msg.originator()))? {
                Some(entity) => entity.name,
                // TbGetRelatedAttributeNode.RELATED_ENTITY_NOT_FOUND_MESSAGE
                None => bail!(
                    "Failed to find related entity to message originator using relation query specified in the configuration!"
                ),
            },
            None => match self.key.text(&msg) {
                Some(k) if !k.is_empty() => k.to_string(),
                _ => bail!("no lookup key: the message has no `{}`", path_name(&self.key)),
            },
        };
        let Some(entry) = table::get::<Value>(&self.table, &key)? else {
            if self.strict {
                bail!("`{key}` is not in table `{}`", self.table);
            }
            out.forward(relation::SUCCESS);
            return Ok(());
        };
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for (path, name) in &self.copies {
            match lookup(&entry, path) {
                Some(v) if !v.is_null() => found.push((name, v)),
                _ => missing.push(path.as_str()),
            }
        }
        if self.strict && !missing.is_empty() {
            bail!("entry `{key}` of table `{}` has no {}", self.table, missing.join(", "));
        }
        if found.is_empty() {
            out.forward(relation::SUCCESS);
            return Ok(());
        }
        match self.to {
            Target::Metadata => {
                for (name, value) in found {
                    let text = match value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    msg.set_meta(name.clone(), text);
                }
            }
            Target::Data => {
                let Value::Object(data) = msg.data_mut() else {
                    bail!("cannot copy attributes into data that is not a JSON object");
                };
                for (name, value) in found {
                    data.insert(name.clone(), value.clone());
                }
            }
        }
        out.emit(relation::SUCCESS, msg);
        Ok(())
    }
}

/// The config's spelling of a path, for error messages.
fn path_name(path: &FieldPath) -> String {
    match path {
        FieldPath::Metadata(k) => format!("metadata.{k}"),
        FieldPath::Data(k) => format!("data.{k}"),
        other => other.name().to_string(),
    }
}

/// The text at `path`; a `data.` path reaches into objects along its dots.
/// `path` inside `value`: the key itself first, then the dotted path through objects.
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(v) = value.as_object().and_then(|o| o.get(path)) {
        return Some(v);
    }
    if !path.contains('.') {
        return None;
    }
    path.split('.').try_fold(value, |v, k| v.as_object()?.get(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    /// The node with a way to fill its table on the same host: `SEED` messages put their data
    /// into `data.table` under `data.key` (`data.value`); everything else goes to the node.
    struct Seeded(OriginatorAttributes);

    impl Node for Seeded {
        type Config = Config;
        fn init(cfg: Config) -> Result<Self> {
            Ok(Seeded(OriginatorAttributes::init(cfg)?))
        }
        fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
            if msg.msg_type() == "SEED" {
                let (t, k) = (msg.data()["table"].as_str().unwrap_or(""), msg.data()["key"].as_str().unwrap_or(""));
                return table::put(t, k, &msg.data()["value"]);
            }
            self.0.on_msg(msg, out)
        }
    }

    fn seeded(config: &str, entries: &[(&str, &str, Value)]) -> TestDriver {
        let mut d = TestDriver::node_from_json::<Seeded>(config).unwrap();
        for (table, key, value) in entries {
            let seed = json!({"table": table, "key": key, "value": value});
            assert!(d.send(Msg::new("SEED", Originator::device("seed"), seed)).unwrap().outputs.is_empty());
        }
        d
    }

    fn door7() -> (&'static str, &'static str, Value) {
        (
            "devices",
            "door-7",
            json!({"deviceId": "door-7", "location": {"site": "HQ", "region": "north"},
                                     "floor": 2, "active": true, "note": null}),
        )
    }

    fn event(device: &str) -> Msg {
        Msg::telemetry(device, json!({"open": true})).with_id("e1").with_ts(9).with_meta("deviceType", "Door")
    }

    #[test]
    fn copies_listed_attributes_into_metadata_as_text() -> Result<()> {
        let config = r#"{"table": "devices", "attributes": ["location.region", "floor", "active", "location"]}"#;
        let out = seeded(config, &[door7()]).send(event("door-7"))?;
        assert_eq!(out.relations(), ["Success"]);
        let expected = event("door-7")
            .with_meta("location.region", "north")
            .with_meta("floor", "2")
            .with_meta("active", "true")
            .with_meta("location", r#"{"region":"north","site":"HQ"}"#);
        assert_eq!(out.messages(), [&expected]);
        Ok(())
    }

    #[test]
    fn renames_and_prefixes() -> Result<()> {
        let config = r#"{"table": "devices", "attributes": {"location.region": "region", "location.site": "site"},
                         "prefix": "cs_"}"#;
        let out = seeded(config, &[door7()]).send(event("door-7"))?;
        let expected = event("door-7").with_meta("cs_region", "north").with_meta("cs_site", "HQ");
        assert_eq!(out.messages(), [&expected]);
        Ok(())
    }

    #[test]
    fn copies_into_data_as_json() -> Result<()> {
        let config = r#"{"table": "devices", "attributes": {"location.region": "region", "floor": "floor",
                         "location": "where"}, "to": "DATA", "prefix": "ss_"}"#;
        let out = seeded(config, &[door7()]).send(event("door-7"))?;
        let mut expected = event("door-7");
        expected.set_data(json!({"open": true, "ss_region": "north", "ss_floor": 2,
                               "ss_where": {"site": "HQ", "region": "north"}}));
        assert_eq!(out.messages(), [&expected]);
        // Data that is not an object cannot take them.
        let out = seeded(config, &[door7()]).send(Msg::telemetry("door-7", json!([1])))?;
        assert_eq!(out.relations(), ["Failure"]);
        assert!(out.messages()[0].meta("error").unwrap_or_default().contains("not a JSON object"));
        Ok(())
    }

    #[test]
    fn copied_keys_replace_existing_ones() -> Result<()> {
        let config = r#"{"table": "devices", "attributes": {"location.region": "region"}, "to": "data"}"#;
        let msg = Msg::telemetry("door-7", json!({"region": "stale", "open": false}));
        let out = seeded(config, &[door7()]).send(msg)?;
        assert_eq!(out.messages()[0].data(), &json!({"region": "north", "open": false}));
        let config = r#"{"table": "devices", "attributes": {"location.region": "deviceType"}}"#;
        let out = seeded(config, &[door7()]).send(event("door-7"))?;
        assert_eq!(out.messages()[0].meta("deviceType"), Some("north"));
        Ok(())
    }

    #[test]
    fn looks_up_by_a_configured_key() -> Result<()> {
        let config = r#"{"table": "devices", "key": "data.deviceId", "attributes": {"location.region": "region"}}"#;
        let mut d = seeded(config, &[door7(), ("devices", "42", json!({"location": {"region": "south"}}))]);
        let via_gateway = Msg::telemetry("gateway-1", json!({"deviceId": "door-7"})).with_id("g1");
        assert_eq!(d.send(via_gateway.clone())?.messages(), [&via_gateway.clone().with_meta("region", "north")]);
        // A numeric id is looked up as its text; a missing id is a malformed message.
        let numeric = Msg::telemetry("gateway-1", json!({"deviceId": 42}));
        assert_eq!(d.send(numeric)?.messages()[0].meta("region"), Some("south"));
        for data in [json!({"x": 1}), json!({"deviceId": null}), json!({"deviceId": ""})] {
            let out = d.send(Msg::telemetry("gateway-1", data.clone()))?;
            assert_eq!(out.relations(), ["Failure"], "{data}");
            assert!(out.messages()[0].meta("error").unwrap_or_default().contains("data.deviceId"));
        }
        Ok(())
    }

    #[test]
    fn absent_entries_and_attributes_pass_unchanged_by_default() -> Result<()> {
        let config = r#"{"table": "devices", "attributes": {"location.region": "region", "model": "model",
                         "note": "note"}}"#;
        let mut d = seeded(config, &[door7()]);
        // Unknown device: the message goes on untouched.
        assert_eq!(d.send(event("door-99"))?.messages(), [&event("door-99")]);
        // Known device: what exists is copied, `model` (absent) and `note` (null) are not.
        assert_eq!(d.send(event("door-7"))?.messages(), [&event("door-7").with_meta("region", "north")]);
        // An entry with none of them.
        let mut d = seeded(config, &[("devices", "bare", json!(7))]);
        assert_eq!(d.send(event("bare"))?.messages(), [&event("bare")]);
        Ok(())
    }

    #[test]
    fn tell_failure_if_absent_names_what_is_missing() -> Result<()> {
        let config = r#"{"table": "devices", "attributes": ["location.region", "model", "note"],
                         "tellFailureIfAbsent": true}"#;
        let mut d = seeded(config, &[door7()]);
        let out = d.send(event("door-99"))?;
        assert_eq!(out.relations(), ["Failure"]);
        assert_eq!(out.messages()[0].meta("error"), Some("`door-99` is not in table `devices`"));
        let out = d.send(event("door-7"))?;
        assert_eq!(out.relations(), ["Failure"]);
        assert_eq!(out.messages()[0].meta("error"), Some("entry `door-7` of table `devices` has no model, note"));
        let config = r#"{"table": "devices", "attributes": ["location.region"], "tellFailureIfAbsent": true}"#;
        let out = seeded(config, &[door7()]).send(event("door-7"))?;
        assert_eq!(out.messages(), [&event("door-7").with_meta("location.region", "north")]);
        Ok(())
    }

    #[test]
    fn tables_are_separate_by_name() -> Result<()> {
        let config = r#"{"table": "sites", "attributes": ["region"]}"#;
        let mut d = seeded(config, &[door7(), ("sites", "door-7", json!({"region": "west"}))]);
        assert_eq!(d.send(event("door-7"))?.messages()[0].meta("region"), Some("west"));
        Ok(())
    }

    #[test]
    fn related_reads_the_first_related_entity() -> Result<()> {
        // TbGetRelatedAttributeNode (tutorial "RPC call request"): the thermostat's related fan
        // (FROM, Uses, DEVICE) and its latest `windDirection`.
        let config = r#"{"table": "timeseries", "attributes": {"windDirection": "windDirection"},
                         "related": {"direction": "FROM", "maxLevel": 1,
                                     "filters": [{"relationType": "Uses", "entityTypes": ["DEVICE"]}]}}"#;
        let link = json!({"out": [{"type": "Uses", "entityType": "DEVICE", "name": "Fan-1"}]});
        let mut d =
            seeded(config, &[("timeseries", "Fan-1", json!({"windDirection": 42})), ("relations", "DEVICE:T-1", link)]);
        let out = d.send(event("T-1"))?;
        assert_eq!(out.messages(), [&event("T-1").with_meta("windDirection", "42")]);
        let out = d.send(event("T-2"))?;
        assert_eq!(out.relations(), ["Failure"]);
        assert_eq!(
            out.messages()[0].meta("error"),
            Some(
                "Failed to find related entity to message originator using relation query specified in the configuration!"
            )
        );
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        let error = |text: &str| TestDriver::node_from_json::<OriginatorAttributes>(text).err().expect(text);
        assert!(
            error(r#"{"table": "t", "attributes": ["a"], "key": "data.x", "related": {}}"#).message.contains("`key`")
        );
        let error = |text: &str| TestDriver::node_from_json::<OriginatorAttributes>(text).err().expect(text);
        assert_eq!(error(r#"{"table": "t"}"#).field, "attributes");
        assert_eq!(error(r#"{"attributes": ["a"]}"#).field, "table");
        assert_eq!(error(r#"{"table": "t", "attributes": "region"}"#).field, "attributes");
        assert_eq!(error(r#"{"table": "t", "attributes": ["a"], "to": "server"}"#).field, "to");
        assert_eq!(error(r#"{"table": "t", "attributes": ["a"], "key": "device"}"#).field, "key");
        assert_eq!(
            error(r#"{"table": "t", "attributes": ["a"], "tellFailureIfAbsent": 1}"#).field,
            "tellFailureIfAbsent"
        );
        assert_eq!(error(r#"{"table": "t", "attributes": ["a"], "fetchTo": "DATA"}"#).field, "fetchTo");
        assert!(error(r#"{"table": "", "attributes": ["a"]}"#).message.contains("`table`"));
        assert!(error(r#"{"table": "t", "attributes": []}"#).message.contains("`attributes`"));
        assert!(error(r#"{"table": "t", "attributes": {}}"#).message.contains("`attributes`"));
        assert!(error(r#"{"table": "t", "attributes": ["a", ".b"]}"#).message.contains("`attributes[1]`"));
        assert!(error(r#"{"table": "t", "attributes": {"a": 1}}"#).message.contains("`attributes.a`"));
        assert!(error(r#"{"table": "t", "attributes": {"a": ""}}"#).message.contains("`attributes.a`"));
        assert!(error(r#"{"table": "t", "attributes": {"a": "x", "b": "x"}}"#).message.contains("`attributes.b`"));
    }
}

//! Change originator (ThingsBoard's `TbChangeOriginatorNode`, generalised): the message gets a
//! new originator whose name — and optionally entity type — come from templates (`${key}` is a
//! metadata value, `$[key]` a data field, dotted paths reach into objects). E.g. re-key wind-station
//! telemetry to the asset of its geo zone, fetched earlier by `originator-attributes` into
//! `cs_geoZone`, so that downstream nodes aggregate per zone. The changed message goes to
//! `Success`; it keeps its id, time, type, metadata and data. The new originator has no `id` (the
//! old one belonged to the old entity).
//!
//! A template value the message lacks (or `null`), or a name or type that renders empty, sends
//! the message to `Failure` with an error naming the placeholder.
//!
//! Partitioning: the engine assigns messages to workers by the originator they *entered the chain
//! with*; changing the originator here does not move the message to another partition. Nodes
//! downstream keep their state under whatever key they are configured with (window-aggregate's
//! `key`, state keyed by originator, …), which after this node is the new originator — but
//! messages for that new originator may be handled by several workers at once, so their relative
//! order across the old originators is not guaranteed.
//!
//! With `"originatorSource": "RELATED"` (ThingsBoard's `RELATED_SOURCE`), the new originator is
//! the first entity ThingsBoard's `relationsQuery` finds from the old one in the chain's relation
//! table (`relations`, filled by `create-relation` or seeded by `sluice import --relations`; see
//! `sluice_sdk::entity_relations`), as `TbChangeOriginatorNode.getNewOriginator` →
//! `EntitiesRelatedEntityIdAsyncLoader.findEntityAsync` does: searching `FROM`, the `to` of the
//! first relation, `TO`, its `from`; level by level, in the order relations were created. None
//! found sends the message to `Failure` with ThingsBoard's error, "Failed to find new
//! originator!". The new originator keeps the related entity's id when the table has one.
//!
//! Config:
//! ```json
//! {"entityType": "ASSET", "name": "${cs_geoZone}", "keepOriginal": "originalOriginator"}
//! {"originatorSource": "RELATED", "relationsQuery": {"direction": "TO", "maxLevel": 1,
//!  "filters": [{"relationType": "Contains", "entityTypes": ["ASSET"]}], "fetchLastLevelOnly": false}}
//! ```
//! - `originatorSource` (default `ENTITY`): `ENTITY` (by the templates below) or `RELATED`.
//! - `relationsQuery` (required with `RELATED`): ThingsBoard's `RelationsQuery` — `direction`
//!   `FROM`/`TO` seen from the originator, `maxLevel` (default 1; 0 is every level), `filters`
//!   (`relationType`, `entityTypes`; a relation matches any one), `fetchLastLevelOnly`.
//! - `name` (required with `ENTITY`): template of the new originator's name, e.g. `"zone-${cs_geoZone}"`,
//!   `"$[location.site]"`.
//! - `entityType` (default: the incoming originator's type): template of the new entity type,
//!   usually a literal such as `"ASSET"`, `"DEVICE"`, `"CUSTOMER"`.
//! - `keepOriginal` (default none): a metadata key that receives the old originator's name;
//!   `<key>Type` receives its entity type and, when it had one, `<key>Id` its id.
use sluice_sdk::entity_relations::{Entity, RelationsQuery};
use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub originator_source: Source,
    #[serde(default)]
    pub relations_query: Option<RelationsQuery>,
    #[serde(default)]
    pub name: Option<Template>,
    #[serde(default)]
    pub entity_type: Option<Template>,
    #[serde(default)]
    pub keep_original: Option<String>,
}

/// Where the new originator comes from (ThingsBoard's `originatorSource`; `CUSTOMER`, `TENANT`
/// and `ALARM_ORIGINATOR` need ThingsBoard's entities and are refused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Source {
    #[default]
    Entity,
    Related,
}

enum New {
    Named(Template),
    Related(RelationsQuery),
}

pub struct ChangeOriginator {
    cfg: Config,
    new: New,
}

/// Gives the message a new originator built from templates.
#[node(relations = ["Success"])]
impl Node for ChangeOriginator {
    type Config = Config;

    fn init(cfg: Config) -> Result<Self> {
        let blank = |t: &Template| {
            t.is_literal() && t.render(&Msg::telemetry("", Value::Null)).is_ok_and(|s| s.trim().is_empty())
        };
        let new = match cfg.originator_source {
            Source::Entity => match &cfg.name {
                Some(name) if blank(name) => bail_config!("name", "must not be empty"),
                Some(name) => New::Named(name.clone()),
                None => bail_config!("name", "is required (the new originator's name)"),
            },
            Source::Related => match &cfg.relations_query {
                Some(query) => New::Related(query.clone()),
                None => bail_config!("relationsQuery", "is required with originatorSource RELATED"),
            },
        };
        if cfg.entity_type.as_ref().is_some_and(blank) {
            bail_config!("entityType", "must not be empty");
        }
        if cfg.keep_original.as_ref().is_some_and(|k| k.is_empty()) {
            bail_config!("keepOriginal", "must name a metadata key");
        }
        Ok(ChangeOriginator { cfg, new })
    }

    fn on_msg(&mut self, mut msg: Msg, out: &mut Outputs) -> Result<()> {
        let name = match &self.new {
            New::Named(name) => name.render(&msg)?,
            New::Related(query) => {
                // TbChangeOriginatorNode.transform: no related entity → "Failed to find new originator!".
                let Some(found) = query.first(&Entity::of(msg.originator()))? else {
                    bail!("Failed to find new originator!");
                };
                let new = found.into_originator();
                self.replace(&mut msg, new);
                out.emit(relation::SUCCESS, msg);
                return Ok(());
            }
        };
        if name.trim().is_empty() {
            bail!("the new originator's name is empty");
        }
        let entity_type = match &self.cfg.entity_type {
            Some(t) => t.render(&msg)?,
            None => msg.originator().entity_type.clone(),
        };
        if entity_type.trim().is_empty() {
            bail!("the new originator's entity type is empty");
        }
        let new = Originator { entity_type, name, id: None };
        self.replace(&mut msg, new);
        out.emit(relation::SUCCESS, msg);
        Ok(())
    }
}

impl ChangeOriginator {
    /// Gives `msg` the originator `new`, keeping the old one in metadata when configured.
    fn replace(&self, msg: &mut Msg, new: Originator) {
        match &self.cfg.keep_original {
            Some(key) => {
                let old = std::mem::replace(msg.originator_mut(), new);
                msg.set_meta(format!("{key}Type"), old.entity_type);
                if let Some(id) = old.id {
                    msg.set_meta(format!("{key}Id"), id);
                }
                msg.set_meta(key.clone(), old.name);
            }
            None => msg.set_originator(new),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn driver(config: &str) -> TestDriver {
        TestDriver::node_from_json::<ChangeOriginator>(config).unwrap()
    }

    fn station() -> Msg {
        Msg::telemetry("WS-1", json!({"windSpeed": "33", "site": {"name": "Cape"}, "n": 7, "nothing": null}))
            .with_id("m1")
            .with_ts(1_700_000_000_000)
            .with_meta("cs_geoZone", "Zone A")
            .with_meta("deviceType", "WeatherStation")
    }

    #[test]
    fn re_keys_to_the_zone_asset_keeping_the_rest() -> Result<()> {
        let out = driver(r#"{"entityType": "ASSET", "name": "${cs_geoZone}"}"#).send(station())?;
        assert_eq!(out.relations(), ["Success"]);
        let mut expected = station();
        expected.set_originator(Originator::asset("Zone A"));
        assert_eq!(out.messages(), [&expected]);
        Ok(())
    }

    #[test]
    fn keeps_the_original_in_metadata() -> Result<()> {
        let config = r#"{"entityType": "ASSET", "name": "zone-${cs_geoZone}", "keepOriginal": "originalOriginator"}"#;
        let mut msg = station();
        msg.originator_mut().id = Some("784f394c-42b6".into());
        let out = driver(config).send(msg)?;
        let mut expected = station();
        expected.set_originator(Originator::asset("zone-Zone A"));
        let expected = expected
            .with_meta("originalOriginator", "WS-1")
            .with_meta("originalOriginatorType", "DEVICE")
            .with_meta("originalOriginatorId", "784f394c-42b6");
        assert_eq!(out.messages(), [&expected]);
        // Without an id there is no `<key>Id`.
        let out = driver(config).send(station())?;
        assert_eq!(out.messages()[0].meta("originalOriginatorId"), None);
        assert_eq!(out.messages()[0].meta("originalOriginatorType"), Some("DEVICE"));
        Ok(())
    }

    #[test]
    fn data_placeholders_and_default_type() -> Result<()> {
        // The type stays when not configured; numbers render as their JSON text.
        let out = driver(r#"{"name": "$[site.name]-$[n]-$[windSpeed]"}"#).send(station())?;
        assert_eq!(out.messages()[0].originator(), &Originator::device("Cape-7-33"));
        let out = driver(r#"{"name": "${deviceType}", "entityType": "$[kind]"}"#).send(station())?;
        assert_eq!(out.relations(), ["Failure"], "no `kind` in data");
        let mut typed = station();
        typed.data_mut()["kind"] = json!("ENTITY_VIEW");
        let out = driver(r#"{"name": "${deviceType}", "entityType": "$[kind]"}"#).send(typed)?;
        let o = out.messages()[0].originator();
        assert_eq!((o.entity_type.as_str(), o.name.as_str()), ("ENTITY_VIEW", "WeatherStation"));
        Ok(())
    }

    #[test]
    fn a_missing_value_fails_naming_it() -> Result<()> {
        let mut d = driver(r#"{"entityType": "ASSET", "name": "${cs_geoZone}"}"#);
        let mut msg = station();
        msg.remove_meta("cs_geoZone");
        let out = d.send(msg.clone())?;
        assert_eq!(out.relations(), ["Failure"]);
        assert_eq!(out.messages()[0].originator(), &Originator::device("WS-1"));
        assert!(out.messages()[0].meta("error").unwrap_or_default().contains("${cs_geoZone}"));
        // A null data value counts as missing; an empty rendered name fails too.
        let out = driver(r#"{"name": "$[nothing]"}"#).send(station())?;
        assert!(out.messages()[0].meta("error").unwrap_or_default().contains("$[nothing]"));
        let out = d.send(station().with_meta("cs_geoZone", " "))?;
        assert_eq!(out.relations(), ["Failure"]);
        assert!(out.messages()[0].meta("error").unwrap_or_default().contains("name is empty"));
        Ok(())
    }

    /// A relation table as ThingsBoard's tutorial has it: asset "Building A" Contains thermostat
    /// "T-1", which Uses the fan "Fan-1"; "Site" Contains "Building A".
    fn related(config: &str) -> TestDriver {
        let mut d = driver(config);
        let link = |t: &str, e: &str, n: &str| json!({"type": t, "entityType": e, "name": n});
        let rows = [
            ("ASSET:Site", json!({"out": [link("Contains", "ASSET", "Building A")]})),
            (
                "ASSET:Building A",
                json!({"in": [link("Contains", "ASSET", "Site")], "out": [link("Contains", "DEVICE", "T-1")]}),
            ),
            (
                "DEVICE:T-1",
                json!({"in": [link("Contains", "ASSET", "Building A")], "out": [link("Uses", "DEVICE", "Fan-1")]}),
            ),
            ("DEVICE:Fan-1", json!({"in": [link("Uses", "DEVICE", "T-1")]})),
        ];
        for (key, row) in rows {
            d.put_table("relations", key, &row).unwrap();
        }
        d
    }

    #[test]
    fn related_takes_the_first_entity_the_query_finds() -> Result<()> {
        // EntitiesRelatedEntityIdAsyncLoader.findEntityAsync: TO → the `from` of the first relation.
        let to_asset = r#"{"originatorSource": "RELATED", "relationsQuery": {"direction": "TO", "maxLevel": 1,
                           "filters": [{"relationType": "Contains", "entityTypes": ["ASSET"]}]}}"#;
        let out = related(to_asset).send(station().with_id("m1"))?;
        let mut expected = Msg::telemetry("T-1", json!({})).with_id("m1");
        let mut msg = expected.clone();
        msg.set_originator(Originator::device("T-1"));
        let out2 = related(to_asset).send(msg)?;
        expected.set_originator(Originator::asset("Building A"));
        assert_eq!(out2.relations(), ["Success"]);
        assert_eq!(out2.messages(), [&expected]);
        // WS-1 has no relations: TbChangeOriginatorNode.transform's error.
        assert_eq!(out.relations(), ["Failure"]);
        assert_eq!(out.messages()[0].meta("error"), Some("Failed to find new originator!"));
        // FROM → the `to`; two levels up with fetchLastLevelOnly → the site.
        let uses = r#"{"originatorSource": "RELATED", "relationsQuery": {"direction": "FROM",
                       "filters": [{"relationType": "Uses", "entityTypes": ["DEVICE"]}]}}"#;
        let out = related(uses).send(Msg::telemetry("T-1", json!({})))?;
        assert_eq!(out.messages()[0].originator(), &Originator::device("Fan-1"));
        let site = r#"{"originatorSource": "RELATED", "keepOriginal": "was",
                       "relationsQuery": {"direction": "TO", "maxLevel": 2, "fetchLastLevelOnly": true}}"#;
        let out = related(site).send(Msg::telemetry("T-1", json!({})))?;
        assert_eq!(out.messages()[0].originator(), &Originator::asset("Site"));
        assert_eq!(out.messages()[0].meta("was"), Some("T-1"));
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        let error = |text: &str| TestDriver::node_from_json::<ChangeOriginator>(text).err().expect(text);
        assert!(error(r#"{"originatorSource": "RELATED"}"#).message.contains("`relationsQuery`"));
        assert_eq!(
            error(r#"{"originatorSource": "RELATED", "relationsQuery": {"maxLevel": "x"}}"#).field,
            "relationsQuery.maxLevel"
        );
        let error = |text: &str| TestDriver::node_from_json::<ChangeOriginator>(text).err().expect(text);
        assert!(error(r#"{"entityType": "ASSET"}"#).message.contains("`name`"));
        assert_eq!(error(r#"{"name": "${open"}"#).field, "name");
        assert_eq!(error(r#"{"name": "x", "entityType": 3}"#).field, "entityType");
        assert_eq!(error(r#"{"name": "x", "keepOriginal": true}"#).field, "keepOriginal");
        assert_eq!(error(r#"{"name": "x", "originatorSource": "CUSTOMER"}"#).field, "originatorSource");
        assert!(error(r#"{"name": ""}"#).message.contains("`name`"));
        assert!(error(r#"{"name": "x", "entityType": " "}"#).message.contains("`entityType`"));
        assert!(error(r#"{"name": "x", "keepOriginal": ""}"#).message.contains("`keepOriginal`"));
    }
}

//! Create relation (ThingsBoard's `TbCreateRelationNode`): relates the message's originator to
//! an entity named by a template, in the chain's relation table (`relations`, see
//! `sluice_sdk::entity_relations`), where `check-relation`, `change-originator` (source
//! `RELATED`) and `originator-attributes` (`related`) find it.
//!
//! As `TbCreateRelationNode.createIfAbsent` with `TbAbstractRelationActionNode`: the entity is
//! `entityType` + `entityNamePattern` rendered against the message; `direction` `FROM` creates
//! the relation from that entity to the originator, `TO` from the originator to it
//! (`processSingleSearchDirection`); a relation that exists already is kept. The message goes on
//! unchanged to `Success` — or, with `changeOriginatorToRelatedEntity`, with the entity as its
//! originator. With `removeCurrentRelations`, the originator's other relations of `relationType`
//! in that direction are deleted first (`processListSearchDirection`: FROM → relations *to* the
//! originator, TO → relations *from* it), so the originator keeps exactly this one.
//!
//! ThingsBoard looks the entity up in its database and fails when it is missing, or creates it
//! with `createEntityIfNotExists`. Sluice keeps no entity registry: an entity exists by being
//! named, so `createEntityIfNotExists` is accepted and moot, and `entityTypePattern` (the type
//! of a created device or asset, e.g. "thermostat") is accepted and unused, as is
//! `entityCacheExpiration`. A template value the message lacks sends it to `Failure` naming the
//! placeholder (ThingsBoard leaves the placeholder in the name and then finds no entity).
//!
//! Config (ThingsBoard's `TbCreateRelationNodeConfiguration`):
//! ```json
//! {"direction": "FROM", "entityType": "ASSET", "entityNamePattern": "${building}",
//!  "relationType": "Contains", "removeCurrentRelations": false, "changeOriginatorToRelatedEntity": false}
//! ```
use sluice_sdk::entity_relations::{self as relations, Direction, Entity};
use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub direction: Direction,
    pub entity_type: String,
    pub entity_name_pattern: Template,
    #[serde(default = "contains")]
    pub relation_type: String,
    #[serde(default)]
    pub remove_current_relations: bool,
    #[serde(default)]
    pub change_originator_to_related_entity: bool,
    /// Moot: every named entity exists (accepted for ThingsBoard configs).
    #[serde(default)]
    pub create_entity_if_not_exists: bool,
    /// Unused: the type of an entity ThingsBoard would create.
    #[serde(default)]
    pub entity_type_pattern: Option<String>,
    /// Unused: ThingsBoard's entity lookup cache.
    #[serde(default)]
    pub entity_cache_expiration: Option<u64>,
}

fn contains() -> String {
    "Contains".into()
}

pub struct CreateRelation {
    cfg: Config,
}

/// Relates the originator to a named entity.
#[node(relations = ["Success"])]
impl Node for CreateRelation {
    type Config = Config;

    fn init(cfg: Config) -> Result<Self> {
        if cfg.entity_type.trim().is_empty() || cfg.entity_type.contains(':') {
            bail_config!("entityType", "must name an entity type such as ASSET or DEVICE");
        }
        if cfg.relation_type.trim().is_empty() {
            bail_config!("relationType", "must not be empty");
        }
        Ok(CreateRelation { cfg })
    }

    fn on_msg(&mut self, mut msg: Msg, out: &mut Outputs) -> Result<()> {
        let name = self.cfg.entity_name_pattern.render(&msg)?;
        if name.trim().is_empty() {
            bail!("the related entity's name is empty");
        }
        let entity = Entity::new(self.cfg.entity_type.clone(), name);
        let originator = Entity::of(msg.originator());
        let kind = &self.cfg.relation_type;
        if self.cfg.remove_current_relations {
            let current = relations::row(&originator)?;
            // FROM: relations to the originator (it is their `to`); TO: relations from it.
            let links = match self.cfg.direction {
                Direction::From => &current.incoming,
                Direction::To => &current.out,
            };
            for link in links.iter().filter(|l| &l.relation_type == kind && l.entity != entity) {
                let (from, to) = relations::oriented(self.cfg.direction, link.entity.clone(), originator.clone());
                relations::delete(&from, &to, kind)?;
            }
        }
        let (from, to) = relations::oriented(self.cfg.direction, entity.clone(), originator);
        relations::create(&from, &to, kind)?;
        if self.cfg.change_originator_to_related_entity {
            msg.set_originator(entity.into_originator());
        }
        out.emit(relation::SUCCESS, msg);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn driver(config: &str) -> TestDriver {
        TestDriver::node_from_json::<CreateRelation>(config).unwrap()
    }

    fn reading(device: &str, building: &str) -> Msg {
        Msg::telemetry(device, json!({"temperature": 21})).with_id("m1").with_meta("building", building)
    }

    fn row(d: &TestDriver, key: &str) -> Option<Value> {
        d.table(relations::TABLE, key)
    }

    #[test]
    fn from_the_entity_to_the_originator() -> Result<()> {
        // TbAbstractRelationActionNode.processSingleSearchDirection: FROM → from = entity, to = originator.
        let mut d = driver(
            r#"{"direction": "FROM", "entityType": "ASSET", "entityNamePattern": "${building}",
                               "relationType": "Contains"}"#,
        );
        let out = d.send(reading("T-1", "Building A"))?;
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(out.messages(), [&reading("T-1", "Building A")]);
        assert_eq!(
            row(&d, "ASSET:Building A"),
            Some(json!({"out": [{"type": "Contains", "entityType": "DEVICE", "name": "T-1"}]}))
        );
        assert_eq!(
            row(&d, "DEVICE:T-1"),
            Some(json!({"in": [{"type": "Contains", "entityType": "ASSET", "name": "Building A"}]}))
        );
        // createIfAbsent: an existing relation is kept, once.
        d.send(reading("T-1", "Building A"))?;
        assert_eq!(row(&d, "ASSET:Building A").unwrap()["out"].as_array().map(Vec::len), Some(1));
        Ok(())
    }

    #[test]
    fn to_the_entity_changing_the_originator() -> Result<()> {
        let mut d = driver(
            r#"{"direction": "TO", "entityType": "ASSET", "entityNamePattern": "$[site]",
                               "relationType": "LocatedIn", "changeOriginatorToRelatedEntity": true}"#,
        );
        let msg = Msg::telemetry("T-1", json!({"site": "Cape"})).with_id("m2");
        let out = d.send(msg.clone())?;
        let mut expected = msg;
        expected.set_originator(Originator::asset("Cape"));
        assert_eq!(out.messages(), [&expected]);
        assert_eq!(
            row(&d, "DEVICE:T-1"),
            Some(json!({"out": [{"type": "LocatedIn", "entityType": "ASSET", "name": "Cape"}]}))
        );
        Ok(())
    }

    #[test]
    fn remove_current_relations_keeps_only_the_new_one() -> Result<()> {
        let config = r#"{"direction": "FROM", "entityType": "ASSET", "entityNamePattern": "${building}",
                         "relationType": "Contains", "removeCurrentRelations": true}"#;
        let mut d = driver(config);
        d.send(reading("T-1", "Building A"))?;
        d.send(reading("T-1", "Building B"))?;
        assert_eq!(row(&d, "ASSET:Building A"), None, "moved out of A");
        assert_eq!(
            row(&d, "DEVICE:T-1"),
            Some(json!({"in": [{"type": "Contains", "entityType": "ASSET", "name": "Building B"}]}))
        );
        Ok(())
    }

    #[test]
    fn a_missing_name_fails_naming_the_placeholder() -> Result<()> {
        let mut d = driver(r#"{"entityType": "ASSET", "entityNamePattern": "${building}"}"#);
        let out = d.send(Msg::telemetry("T-1", json!({})))?;
        assert_eq!(out.relations(), ["Failure"]);
        assert!(out.messages()[0].meta("error").unwrap_or_default().contains("${building}"));
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        let error = |text: &str| TestDriver::node_from_json::<CreateRelation>(text).err().expect(text);
        assert_eq!(error(r#"{"entityNamePattern": "x"}"#).field, "entityType");
        assert_eq!(error(r#"{"entityType": "ASSET"}"#).field, "entityNamePattern");
        assert!(error(r#"{"entityType": "", "entityNamePattern": "x"}"#).message.contains("`entityType`"));
        assert!(
            error(r#"{"entityType": "ASSET", "entityNamePattern": "x", "relationType": " "}"#)
                .message
                .contains("`relationType`")
        );
        assert_eq!(error(r#"{"entityType": "ASSET", "entityNamePattern": "x", "direction": "UP"}"#).field, "direction");
    }
}

//! Delete relation (ThingsBoard's `TbDeleteRelationNode`): removes relations of the message's
//! originator from the chain's relation table (`relations`, see `sluice_sdk::entity_relations`).
//!
//! As `TbDeleteRelationNode` with `TbAbstractRelationActionNode`: with `deleteForSingleEntity`,
//! the one relation between the originator and the entity `entityType` + `entityNamePattern`
//! (rendered against the message) — `direction` `FROM` the entity to the originator, `TO` the
//! other way (`processSingleSearchDirection`); without it, every relation of `relationType` in
//! that direction (`processListSearchDirection`: FROM → all relations *to* the originator, TO →
//! all *from* it). A relation that does not exist is no error: the message goes on unchanged to
//! `Success` either way, as ThingsBoard's does. A template value the message lacks sends it to
//! `Failure` naming the placeholder. `entityCacheExpiration` is accepted and unused.
//!
//! Config (ThingsBoard's `TbDeleteRelationNodeConfiguration`):
//! ```json
//! {"deleteForSingleEntity": true, "direction": "FROM", "entityType": "ASSET",
//!  "entityNamePattern": "${building}", "relationType": "Contains"}
//! ```
use sluice_sdk::entity_relations::{self as relations, Direction, Entity};
use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub delete_for_single_entity: bool,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default)]
    pub entity_type: Option<String>,
    #[serde(default)]
    pub entity_name_pattern: Option<Template>,
    #[serde(default = "contains")]
    pub relation_type: String,
    /// Unused: ThingsBoard's entity lookup cache.
    #[serde(default)]
    pub entity_cache_expiration: Option<u64>,
}

fn contains() -> String {
    "Contains".into()
}

pub struct DeleteRelation {
    cfg: Config,
    /// The entity's type and name template, with `deleteForSingleEntity`.
    single: Option<(String, Template)>,
}

/// Removes relations of the originator.
#[node(relations = ["Success"])]
impl Node for DeleteRelation {
    type Config = Config;

    fn init(cfg: Config) -> Result<Self> {
        if cfg.relation_type.trim().is_empty() {
            bail_config!("relationType", "must not be empty");
        }
        let single = if cfg.delete_for_single_entity {
            let Some(entity_type) = cfg.entity_type.clone().filter(|t| !t.trim().is_empty() && !t.contains(':')) else {
                bail_config!(
                    "entityType",
                    "must name an entity type such as ASSET when `deleteForSingleEntity` is set"
                );
            };
            let Some(name) = cfg.entity_name_pattern.clone() else {
                bail_config!("entityNamePattern", "is required when `deleteForSingleEntity` is set");
            };
            Some((entity_type, name))
        } else {
            None
        };
        Ok(DeleteRelation { cfg, single })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        let originator = Entity::of(msg.originator());
        let kind = &self.cfg.relation_type;
        let others: Vec<Entity> = match &self.single {
            Some((entity_type, name)) => {
                let name = name.render(&msg)?;
                if name.trim().is_empty() {
                    bail!("the related entity's name is empty");
                }
                vec![Entity::new(entity_type.clone(), name)]
            }
            None => {
                let row = relations::row(&originator)?;
                let links = match self.cfg.direction {
                    Direction::From => row.incoming,
                    Direction::To => row.out,
                };
                links.into_iter().filter(|l| &l.relation_type == kind).map(|l| l.entity).collect()
            }
        };
        for other in others {
            let (from, to) = relations::oriented(self.cfg.direction, other, originator.clone());
            relations::delete(&from, &to, kind)?;
        }
        out.forward(relation::SUCCESS);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn seeded(config: &str) -> TestDriver {
        let mut d = TestDriver::node_from_json::<DeleteRelation>(config).unwrap();
        let link = |t: &str, e: &str, n: &str| json!({"type": t, "entityType": e, "name": n});
        d.put_table(relations::TABLE, "ASSET:Building A", &json!({"out": [link("Contains", "DEVICE", "T-1")]}))
            .unwrap();
        d.put_table(relations::TABLE, "ASSET:Building B", &json!({"out": [link("Contains", "DEVICE", "T-1")]}))
            .unwrap();
        d.put_table(
            relations::TABLE,
            "DEVICE:T-1",
            &json!({"in": [link("Contains", "ASSET", "Building A"), link("Contains", "ASSET", "Building B")],
                    "out": [link("Uses", "DEVICE", "Fan")]}),
        )
        .unwrap();
        d.put_table(relations::TABLE, "DEVICE:Fan", &json!({"in": [link("Uses", "DEVICE", "T-1")]})).unwrap();
        d
    }

    fn reading() -> Msg {
        Msg::telemetry("T-1", json!({"t": 1})).with_meta("building", "Building A")
    }

    #[test]
    fn deletes_the_one_relation_to_the_named_entity() -> Result<()> {
        let mut d = seeded(
            r#"{"deleteForSingleEntity": true, "direction": "FROM", "entityType": "ASSET",
                "entityNamePattern": "${building}", "relationType": "Contains"}"#,
        );
        let out = d.send(reading())?;
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(out.messages(), [&reading()]);
        assert_eq!(d.table(relations::TABLE, "ASSET:Building A"), None);
        assert!(d.table(relations::TABLE, "ASSET:Building B").is_some());
        // Again: nothing to delete, still Success.
        assert_eq!(d.send(reading())?.relations(), ["Success"]);
        Ok(())
    }

    #[test]
    fn deletes_every_relation_of_the_type_in_the_direction() -> Result<()> {
        let mut d = seeded(r#"{"direction": "FROM", "relationType": "Contains"}"#);
        d.send(reading())?;
        assert_eq!(d.table(relations::TABLE, "ASSET:Building A"), None);
        assert_eq!(d.table(relations::TABLE, "ASSET:Building B"), None);
        assert_eq!(
            d.table(relations::TABLE, "DEVICE:T-1"),
            Some(json!({"out": [{"type": "Uses", "entityType": "DEVICE", "name": "Fan"}]})),
            "relations of another type or direction stay"
        );
        let mut d = seeded(r#"{"direction": "TO", "relationType": "Uses"}"#);
        d.send(reading())?;
        assert_eq!(d.table(relations::TABLE, "DEVICE:Fan"), None);
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        let error = |text: &str| TestDriver::node_from_json::<DeleteRelation>(text).err().expect(text);
        assert!(error(r#"{"deleteForSingleEntity": true, "entityNamePattern": "x"}"#).message.contains("`entityType`"));
        assert!(
            error(r#"{"deleteForSingleEntity": true, "entityType": "ASSET"}"#).message.contains("`entityNamePattern`")
        );
        assert!(error(r#"{"relationType": ""}"#).message.contains("`relationType`"));
    }
}

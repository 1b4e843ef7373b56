//! Check relation (ThingsBoard's `TbCheckRelationNode`): `True` when the message's originator
//! has the configured relation in the chain's relation table (`relations`, see
//! `sluice_sdk::entity_relations`), `False` otherwise.
//!
//! As `TbCheckRelationNode.onMsg`: with `checkForSingleEntity` (`processSingle`), whether the
//! relation of `relationType` exists between the originator and one entity — `direction`
//! `FROM` that entity to the originator, `TO` from the originator to it; otherwise
//! (`processRelationsQuery`), whether `relationsQuery` finds any related entity
//! (`EntitiesRelatedEntityIdAsyncLoader.findEntityAsync` ≠ null).
//!
//! ThingsBoard names the single entity by `entityType` + `entityId`, an id of its database. A
//! Sluice message names entities by type and name, so give `entityName` (a template, rendered
//! against the message); an `entityId` alone matches only relations whose entity carries that id
//! — relations seeded from a file that gives both (`sluice import --relations`) or created by a
//! message whose originator had it. ThingsBoard 2.x exports have no `checkForSingleEntity`: when
//! it is absent, a configured entity means the single-entity check, as in those versions.
//!
//! Config (ThingsBoard's `TbCheckRelationNodeConfiguration`, plus `entityName`):
//! ```json
//! {"checkForSingleEntity": true, "direction": "FROM", "entityType": "ASSET", "entityName": "Building A",
//!  "relationType": "Contains"}
//! {"checkForSingleEntity": false, "relationsQuery": {"direction": "TO", "maxLevel": 1,
//!  "filters": [{"relationType": "Contains", "entityTypes": ["ASSET"]}]}}
//! ```
use sluice_sdk::entity_relations::{self as relations, Direction, Entity, RelationsQuery};
use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub check_for_single_entity: Option<bool>,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default)]
    pub entity_type: Option<String>,
    #[serde(default)]
    pub entity_name: Option<Template>,
    #[serde(default)]
    pub entity_id: Option<String>,
    #[serde(default = "contains")]
    pub relation_type: String,
    #[serde(default)]
    pub relations_query: Option<RelationsQuery>,
}

fn contains() -> String {
    "Contains".into()
}

enum Check {
    Single { direction: Direction, entity_type: String, name: Option<Template>, id: Option<String>, kind: String },
    Query(RelationsQuery),
}

pub struct CheckRelation {
    check: Check,
}

/// Whether the originator has the relation: `True` or `False`.
#[node(relations = ["True", "False"])]
impl Node for CheckRelation {
    type Config = Config;

    fn init(cfg: Config) -> Result<Self> {
        let names_entity = cfg.entity_name.is_some() || cfg.entity_id.is_some();
        let single = cfg.check_for_single_entity.unwrap_or(names_entity);
        let check = if single {
            let Some(entity_type) = cfg.entity_type.filter(|t| !t.trim().is_empty()) else {
                bail_config!("entityType", "is required to check for a single entity");
            };
            if !names_entity {
                bail_config!("entityName", "name the entity to check for (or its ThingsBoard `entityId`)");
            }
            if cfg.relation_type.trim().is_empty() {
                bail_config!("relationType", "must not be empty");
            }
            Check::Single {
                direction: cfg.direction,
                entity_type,
                name: cfg.entity_name,
                id: cfg.entity_id,
                kind: cfg.relation_type,
            }
        } else {
            let Some(query) = cfg.relations_query else {
                bail_config!("relationsQuery", "is required when `checkForSingleEntity` is false");
            };
            Check::Query(query)
        };
        Ok(CheckRelation { check })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        let originator = Entity::of(msg.originator());
        let found = match &self.check {
            Check::Query(query) => query.first(&originator)?.is_some(),
            Check::Single { direction, entity_type, name, id, kind } => {
                let name = name.as_ref().map(|t| t.render(&msg)).transpose()?;
                let row = relations::row(&originator)?;
                // FROM: from = the entity, to = the originator → the originator's incoming list.
                let links = match direction {
                    Direction::From => &row.incoming,
                    Direction::To => &row.out,
                };
                links.iter().any(|l| {
                    &l.relation_type == kind
                        && &l.entity.entity_type == entity_type
                        && match (&name, id) {
                            (Some(name), _) => &l.entity.name == name,
                            (None, Some(id)) => l.entity.id.as_ref() == Some(id),
                            (None, None) => false,
                        }
                })
            }
        };
        out.forward(if found { relation::TRUE } else { relation::FALSE });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn seeded(config: &str) -> TestDriver {
        let mut d = TestDriver::node_from_json::<CheckRelation>(config).unwrap();
        d.put_table(
            relations::TABLE,
            "DEVICE:T-1",
            &json!({"in": [{"type": "Contains", "entityType": "ASSET", "name": "Building A", "id": "a-1"}],
                    "out": [{"type": "Uses", "entityType": "DEVICE", "name": "Fan"}]}),
        )
        .unwrap();
        d
    }

    fn check(d: &mut TestDriver, device: &str) -> Vec<String> {
        let out = d.send(Msg::telemetry(device, json!({})).with_meta("b", "Building A")).unwrap();
        out.relations().iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn single_entity_by_name_and_direction() {
        // TbCheckRelationNode.processSingle: FROM → from = the configured entity, to = the originator.
        let mut d = seeded(
            r#"{"checkForSingleEntity": true, "direction": "FROM", "entityType": "ASSET",
                               "entityName": "${b}", "relationType": "Contains"}"#,
        );
        assert_eq!(check(&mut d, "T-1"), ["True"]);
        assert_eq!(check(&mut d, "T-2"), ["False"]);
        // The other direction, another type, another relation type: no.
        let mut d = seeded(
            r#"{"direction": "TO", "entityType": "ASSET", "entityName": "Building A",
                               "relationType": "Contains"}"#,
        );
        assert_eq!(check(&mut d, "T-1"), ["False"]);
        let mut d =
            seeded(r#"{"direction": "TO", "entityType": "DEVICE", "entityName": "Fan", "relationType": "Uses"}"#);
        assert_eq!(check(&mut d, "T-1"), ["True"]);
    }

    #[test]
    fn single_entity_by_id_matches_relations_that_carry_it() {
        let mut d =
            seeded(r#"{"direction": "FROM", "entityType": "ASSET", "entityId": "a-1", "relationType": "Contains"}"#);
        assert_eq!(check(&mut d, "T-1"), ["True"]);
        let mut d =
            seeded(r#"{"direction": "FROM", "entityType": "ASSET", "entityId": "a-2", "relationType": "Contains"}"#);
        assert_eq!(check(&mut d, "T-1"), ["False"]);
    }

    #[test]
    fn any_related_entity_by_query() {
        let config = r#"{"checkForSingleEntity": false, "relationsQuery": {"direction": "TO", "maxLevel": 1,
                         "filters": [{"relationType": "Contains", "entityTypes": ["ASSET"]}]}}"#;
        let mut d = seeded(config);
        assert_eq!(check(&mut d, "T-1"), ["True"]);
        assert_eq!(check(&mut d, "Fan"), ["False"]);
    }

    #[test]
    fn bad_config_names_the_field() {
        let error = |text: &str| TestDriver::node_from_json::<CheckRelation>(text).err().expect(text);
        assert!(error(r#"{"checkForSingleEntity": true, "entityName": "x"}"#).message.contains("`entityType`"));
        assert!(error(r#"{"checkForSingleEntity": true, "entityType": "ASSET"}"#).message.contains("`entityName`"));
        assert!(error(r#"{"checkForSingleEntity": false}"#).message.contains("`relationsQuery`"));
        assert!(error(r#"{}"#).message.contains("`relationsQuery`"));
        assert_eq!(error(r#"{"relationsQuery": {"direction": "UP"}}"#).field, "relationsQuery.direction");
    }
}

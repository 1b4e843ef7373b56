//! Entity relations (ThingsBoard's `EntityRelation`: asset "Building A" *Contains* device
//! "T-1"), kept in the chain's host table [`TABLE`] so that they are shared by the chain's
//! nodes, checkpointed with the rest of its state and survive a restart or a reload — no host
//! function of their own.
//!
//! Entities are named as Sluice names originators: an entity type (`DEVICE`, `ASSET`, …) and a
//! name. ThingsBoard's relations join entity *ids*; a Sluice message carries no id it could
//! resolve, so an id is never a key here.
//!
//! # Row layout
//! One row per entity that takes part in a relation, keyed `"<entityType>:<name>"` (see
//! [`key`]; the type never contains `:`, so the first `:` splits it), holding both directions:
//! ```json
//! {"out": [{"type": "Contains", "entityType": "DEVICE", "name": "T-1"}],
//!  "in":  [{"type": "Manages",  "entityType": "CUSTOMER", "name": "ACME"}]}
//! ```
//! `out` lists the relations *from* this entity (it is the relation's `from`), `in` those *to*
//! it. A relation is written into both rows, so every lookup — the related entities of one
//! entity in either direction, by relation type, or whether one relation exists — is one table
//! read; a relations query of `maxLevel` n reads at most one row per entity it reaches. Lists
//! keep the order relations were created in, which is the order lookups return them.
//!
//! Only ThingsBoard's `COMMON` relation type group is kept: it is the group every relation
//! node of ThingsBoard reads and writes (`RelationTypeGroup.COMMON` in
//! `TbAbstractRelationActionNode`, `TbCheckRelationNode`, `EntitiesRelatedEntityIdAsyncLoader`).
//!
//! # Concurrency
//! Creating or deleting a relation reads, changes and writes two rows. Tables are shared by all
//! workers of a chain without a compare-and-set, so two workers changing relations of the *same*
//! entity at the same instant may lose one change; messages of one originator are handled by one
//! worker, so this needs two originators relating to one entity concurrently. Seed relations
//! that many originators share (`sluice import --relations`, a chain's `tables` seed) rather
//! than creating them from concurrent traffic.
//!
//! # Partitions
//! A table row belongs to the source partition whose message last wrote it, and moves with that
//! partition when several instances share a Kafka topic (see the engine's `state::table`). A
//! relation row written from messages of several partitions (an asset many devices relate to)
//! follows only the last writer's; seeded rows belong to no partition and stay on every
//! instance. So with several instances, seed shared relations; one instance has no such limit.
use std::collections::{HashSet, VecDeque};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::host::table;
use crate::{Originator, Result};

/// The host table relations are kept in.
pub const TABLE: &str = "relations";

/// An entity, as Sluice names one: its type and name. Its ThingsBoard id, when known (an
/// originator that carries one, a seeded relation that gives one), is carried along for
/// `check-relation`'s `entityId`, but is not part of its identity: equality is type and name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entity {
    #[serde(rename = "entityType")]
    pub entity_type: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl PartialEq for Entity {
    fn eq(&self, other: &Self) -> bool {
        self.entity_type == other.entity_type && self.name == other.name
    }
}

impl Eq for Entity {}

impl std::hash::Hash for Entity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.entity_type.hash(state);
        self.name.hash(state);
    }
}

impl Entity {
    pub fn new(entity_type: impl Into<String>, name: impl Into<String>) -> Self {
        Entity { entity_type: entity_type.into(), name: name.into(), id: None }
    }

    /// The message's originator as an entity.
    pub fn of(originator: &Originator) -> Self {
        Entity { id: originator.id.clone(), ..Entity::new(originator.entity_type.clone(), originator.name.clone()) }
    }

    /// This entity as an originator.
    pub fn into_originator(self) -> Originator {
        Originator { entity_type: self.entity_type, name: self.name, id: self.id }
    }
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} '{}'", self.entity_type, self.name)
    }
}

/// The row key of an entity: `"<entityType>:<name>"`.
pub fn key(entity: &Entity) -> String {
    format!("{}:{}", entity.entity_type, entity.name)
}

/// One relation as its row lists it: the relation type and the entity at the other end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    #[serde(rename = "type")]
    pub relation_type: String,
    #[serde(flatten)]
    pub entity: Entity,
}

/// An entity's row: the relations from it (`out`) and to it (`in`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub out: Vec<Link>,
    #[serde(default, rename = "in", skip_serializing_if = "Vec::is_empty")]
    pub incoming: Vec<Link>,
}

impl Row {
    /// The links in `direction` (ThingsBoard's `EntitySearchDirection`: `FROM` follows
    /// relations from this entity, `TO` relations to it).
    pub fn links(&self, direction: Direction) -> &[Link] {
        match direction {
            Direction::From => &self.out,
            Direction::To => &self.incoming,
        }
    }
}

/// ThingsBoard's `EntitySearchDirection`, as seen from the entity a search starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Direction {
    #[default]
    From,
    To,
}

/// The `(from, to)` of a relation between a configured `entity` and the message's `originator`,
/// as ThingsBoard's relation nodes read their `direction`: `FROM` the entity to the originator,
/// `TO` the entity from the originator (`TbAbstractRelationActionNode.processSingleSearchDirection`,
/// `TbCheckRelationNode.processSingle`). Note that a relations *query*'s direction is the other
/// way round: it is seen from the originator ([`RelationsQuery`]).
pub fn oriented(direction: Direction, entity: Entity, originator: Entity) -> (Entity, Entity) {
    match direction {
        Direction::From => (entity, originator),
        Direction::To => (originator, entity),
    }
}

/// The row of `entity` (empty when it has no relations).
pub fn row(entity: &Entity) -> Result<Row> {
    Ok(table::get::<Row>(TABLE, &key(entity))?.unwrap_or_default())
}

fn put_row(entity: &Entity, row: &Row) -> Result<()> {
    if row.out.is_empty() && row.incoming.is_empty() {
        table::delete(TABLE, &key(entity));
        Ok(())
    } else {
        table::put(TABLE, &key(entity), row)
    }
}

/// Whether `from` has a relation of `relation_type` to `to`
/// (ThingsBoard's `RelationService.checkRelation`, group `COMMON`).
pub fn exists(from: &Entity, to: &Entity, relation_type: &str) -> Result<bool> {
    Ok(row(from)?.out.iter().any(|l| l.relation_type == relation_type && &l.entity == to))
}

/// Creates the relation `from` —`relation_type`→ `to` unless it exists; returns whether it was
/// created (ThingsBoard's `saveRelation` after `checkRelation`, as `TbCreateRelationNode`).
pub fn create(from: &Entity, to: &Entity, relation_type: &str) -> Result<bool> {
    let mut from_row = row(from)?;
    if from_row.out.iter().any(|l| l.relation_type == relation_type && &l.entity == to) {
        return Ok(false);
    }
    from_row.out.push(Link { relation_type: relation_type.into(), entity: to.clone() });
    // A relation of an entity to itself lives in one row: write the row once.
    let mut to_row = if from == to { from_row.clone() } else { row(to)? };
    to_row.incoming.push(Link { relation_type: relation_type.into(), entity: from.clone() });
    if from == to {
        from_row.incoming = to_row.incoming.clone();
    } else {
        put_row(to, &to_row)?;
    }
    put_row(from, &from_row)?;
    Ok(true)
}

/// Deletes the relation `from` —`relation_type`→ `to`; returns whether it existed.
pub fn delete(from: &Entity, to: &Entity, relation_type: &str) -> Result<bool> {
    let mut from_row = row(from)?;
    let before = from_row.out.len();
    from_row.out.retain(|l| !(l.relation_type == relation_type && &l.entity == to));
    if from_row.out.len() == before {
        return Ok(false);
    }
    let mut to_row = if from == to { from_row.clone() } else { row(to)? };
    to_row.incoming.retain(|l| !(l.relation_type == relation_type && &l.entity == from));
    if from == to {
        from_row.incoming = to_row.incoming;
    } else {
        put_row(to, &to_row)?;
    }
    put_row(from, &from_row)?;
    Ok(true)
}

/// One filter of a relations query (ThingsBoard's `RelationEntityTypeFilter`): a relation
/// matches when its type is `relationType` (any type when empty) and the entity at its other
/// end is of one of `entityTypes` (any when empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RelationFilter {
    #[serde(default)]
    pub relation_type: Option<String>,
    #[serde(default)]
    pub entity_types: Option<Vec<String>>,
}

impl RelationFilter {
    fn matches(&self, link: &Link) -> bool {
        self.relation_type.as_deref().is_none_or(|t| t.is_empty() || t == link.relation_type)
            && self.entity_types.as_deref().is_none_or(|ts| ts.is_empty() || ts.contains(&link.entity.entity_type))
    }
}

/// ThingsBoard's `RelationsQuery` (rule-engine `data/RelationsQuery.java`): search relations
/// from the originator in `direction`, up to `maxLevel` levels deep, keeping the relations any
/// filter matches (all when there are no filters), only those of the last level when
/// `fetchLastLevelOnly`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RelationsQuery {
    #[serde(default)]
    pub direction: Direction,
    /// Levels to follow (default 1); 0 or less follows every level, as ThingsBoard's
    /// `RelationsSearchParameters` does.
    #[serde(default = "one")]
    pub max_level: i64,
    #[serde(default)]
    pub filters: Vec<RelationFilter>,
    #[serde(default)]
    pub fetch_last_level_only: bool,
}

fn one() -> i64 {
    1
}

impl RelationsQuery {
    /// The related entities the query finds from `start`, level by level (breadth first) and,
    /// within a level, in the order relations were created. An entity is expanded once (a
    /// cycle ends the search), as `BaseRelationService.findRelationsRecursively` does.
    pub fn find(&self, start: &Entity) -> Result<Vec<Entity>> {
        let max = if self.max_level > 0 { self.max_level as u64 } else { u64::MAX };
        let mut found = Vec::new();
        let mut seen: HashSet<Entity> = HashSet::from([start.clone()]);
        let mut queue: VecDeque<(Entity, u64)> = VecDeque::from([(start.clone(), 1)]);
        while let Some((entity, level)) = queue.pop_front() {
            let row = row(&entity)?;
            for link in row.links(self.direction) {
                let last = level == max;
                let keep = !self.fetch_last_level_only || last;
                if keep && (self.filters.is_empty() || self.filters.iter().any(|f| f.matches(link))) {
                    found.push(link.entity.clone());
                }
                if !last && seen.insert(link.entity.clone()) {
                    queue.push_back((link.entity.clone(), level + 1));
                }
            }
        }
        Ok(found)
    }

    /// The first related entity (ThingsBoard's `EntitiesRelatedEntityIdAsyncLoader.findEntityAsync`:
    /// `r.get(0).getTo()` searching FROM, `getFrom()` searching TO). ThingsBoard collects the
    /// relations in a `HashSet` (`BaseRelationService.findRelationsRecursively`), so which one is
    /// first there is unspecified when several match; here it is the nearest level's earliest
    /// created, which is stable across runs.
    pub fn first(&self, start: &Entity) -> Result<Option<Entity>> {
        Ok(self.find(start)?.into_iter().next())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    fn e(t: &str, n: &str) -> Entity {
        Entity::new(t, n)
    }

    /// Runs `f` against a fresh native host (its tables empty).
    fn on_host(f: impl FnOnce() -> Result<()>) -> Result<()> {
        crate::testing::native::NativeHost::default().enter(f)
    }

    fn query(json: &str) -> RelationsQuery {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn both_rows_carry_a_relation_and_creating_twice_is_one() -> Result<()> {
        on_host(|| {
            let (building, t1) = (e("ASSET", "Building A"), e("DEVICE", "T-1"));
            assert!(create(&building, &t1, "Contains")?);
            assert!(!create(&building, &t1, "Contains")?);
            assert!(exists(&building, &t1, "Contains")?);
            assert!(!exists(&t1, &building, "Contains")?);
            let raw: serde_json::Value = table::get(TABLE, "ASSET:Building A")?.unwrap();
            assert_eq!(raw, serde_json::json!({"out": [{"type": "Contains", "entityType": "DEVICE", "name": "T-1"}]}));
            let raw: serde_json::Value = table::get(TABLE, "DEVICE:T-1")?.unwrap();
            assert_eq!(
                raw,
                serde_json::json!({"in": [{"type": "Contains", "entityType": "ASSET", "name": "Building A"}]})
            );
            assert!(delete(&building, &t1, "Contains")?);
            assert!(!delete(&building, &t1, "Contains")?);
            assert_eq!(table::get::<Row>(TABLE, "DEVICE:T-1")?, None, "an empty row is removed");
            // A relation to itself.
            assert!(create(&t1, &t1, "Self")?);
            assert_eq!(row(&t1)?.out.len() + row(&t1)?.incoming.len(), 2);
            assert!(delete(&t1, &t1, "Self")?);
            assert_eq!(table::get::<Row>(TABLE, "DEVICE:T-1")?, None);
            Ok(())
        })
    }

    #[test]
    fn queries_follow_levels_filters_and_direction() -> Result<()> {
        on_host(|| {
            let (site, building, t1, t2) =
                (e("ASSET", "Site"), e("ASSET", "Building A"), e("DEVICE", "T-1"), e("DEVICE", "T-2"));
            create(&site, &building, "Contains")?;
            create(&building, &t1, "Contains")?;
            create(&building, &t2, "Manages")?;
            create(&t1, &site, "Contains")?; // a cycle
            let q = query(
                r#"{"direction": "TO", "maxLevel": 1, "filters": [{"relationType": "Contains", "entityTypes": ["ASSET"]}]}"#,
            );
            assert_eq!(q.first(&t1)?, Some(building.clone()));
            assert_eq!(q.first(&t2)?, None, "T-2 is managed, not contained");
            let q = query(r#"{"direction": "TO", "maxLevel": 2, "fetchLastLevelOnly": true}"#);
            assert_eq!(q.find(&t1)?, vec![site.clone()]);
            let q = query(r#"{"direction": "FROM", "maxLevel": 0}"#);
            assert_eq!(q.find(&site)?, vec![building.clone(), t1.clone(), t2.clone(), site.clone()]);
            let q = query(r#"{"direction": "FROM", "filters": [{"relationType": "Manages"}]}"#);
            assert_eq!(q.find(&building)?, vec![t2.clone()]);
            Ok(())
        })
    }
}

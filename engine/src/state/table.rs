//! Tables: keyed latest-value stores a chain's nodes share by name. One node feeds a table from a
//! stream (a device registry topic, attribute updates); others look keys up to enrich events —
//! the stream–table join of Kafka Streams and Flink.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use super::window::Owner;

/// Rows of every table: name → key → (value, the partition whose message wrote it).
pub type TableRows = HashMap<String, BTreeMap<String, (Value, Owner)>>;

/// A chain's tables. A table is partitioned like its input: each row belongs to the source
/// partition that wrote it, and moves with it on a rebalance (Kafka Streams' KTable, joined
/// co-partitioned), so a table fed by a registry topic must be keyed like the stream it enriches.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    inner: Arc<Mutex<TableRows>>,
}

impl Tables {
    fn lock(&self) -> MutexGuard<'_, TableRows> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn put(&self, table: &str, key: &str, value: Value, owner: Owner) {
        self.lock().entry(table.to_string()).or_default().insert(key.to_string(), (value, owner));
    }

    pub fn delete(&self, table: &str, key: &str) {
        if let Some(t) = self.lock().get_mut(table) {
            t.remove(key);
        }
    }

    pub fn get(&self, table: &str, key: &str) -> Option<Value> {
        self.lock().get(table)?.get(key).map(|(v, _)| v.clone())
    }

    /// Every table, for a checkpoint.
    pub fn snapshot(&self) -> TableRows {
        self.lock().clone()
    }

    /// Adds rows, replacing those of the same keys (a checkpoint or a partition's share).
    pub fn restore(&self, tables: TableRows) {
        let mut all = self.lock();
        for (name, rows) in tables {
            all.entry(name).or_default().extend(rows);
        }
    }

    /// Adds the rows of `table` whose keys it does not hold, unowned (a seed: rows restored from
    /// a checkpoint or written since win); returns how many were added.
    pub fn seed(&self, table: &str, rows: &[(String, Value)]) -> usize {
        let mut all = self.lock();
        let t = all.entry(table.to_string()).or_default();
        let mut added = 0;
        for (key, value) in rows {
            if !t.contains_key(key) {
                t.insert(key.clone(), (value.clone(), super::window::UNOWNED));
                added += 1;
            }
        }
        added
    }

    /// Forgets the rows `owner` owns; returns how many.
    pub fn drop_owner(&self, owner: Owner) -> usize {
        let mut all = self.lock();
        let mut dropped = 0;
        for rows in all.values_mut() {
            let before = rows.len();
            rows.retain(|_, (_, o)| *o != owner);
            dropped += before - rows.len();
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_seed_adds_only_the_keys_the_table_lacks() {
        let tables = Tables::default();
        tables.put("relations", "DEVICE:T-1", json!({"restored": true}), 3);
        let rows = vec![("DEVICE:T-1".to_string(), json!({"seed": 1})), ("ASSET:A".to_string(), json!({"seed": 2}))];
        assert_eq!(tables.seed("relations", &rows), 1);
        assert_eq!(tables.get("relations", "DEVICE:T-1"), Some(json!({"restored": true})));
        assert_eq!(tables.get("relations", "ASSET:A"), Some(json!({"seed": 2})));
        assert_eq!(tables.snapshot()["relations"]["ASSET:A"].1, super::super::window::UNOWNED);
        assert_eq!(tables.seed("relations", &rows), 0, "seeding twice adds nothing");
    }
}

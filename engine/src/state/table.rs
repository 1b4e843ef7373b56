//! Tables: keyed latest-value stores a chain's nodes share by name. One node feeds a table from a
//! stream (a device registry topic, attribute updates); others look keys up to enrich events —
//! the stream–table join of Kafka Streams and Flink.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

#[derive(Debug, Clone, Default)]
pub struct Tables {
    inner: Arc<Mutex<HashMap<String, BTreeMap<String, Value>>>>,
}

impl Tables {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, BTreeMap<String, Value>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn put(&self, table: &str, key: &str, value: Value) {
        self.lock().entry(table.to_string()).or_default().insert(key.to_string(), value);
    }

    pub fn delete(&self, table: &str, key: &str) {
        if let Some(t) = self.lock().get_mut(table) {
            t.remove(key);
        }
    }

    pub fn get(&self, table: &str, key: &str) -> Option<Value> {
        self.lock().get(table)?.get(key).cloned()
    }

    /// Every table, for a checkpoint.
    pub fn snapshot(&self) -> HashMap<String, BTreeMap<String, Value>> {
        self.lock().clone()
    }

    pub fn restore(&self, tables: HashMap<String, BTreeMap<String, Value>>) {
        *self.lock() = tables;
    }
}

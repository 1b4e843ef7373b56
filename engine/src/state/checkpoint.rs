//! Checkpoints: all state of a chain, with the source position it reflects, in one redb
//! transaction.
//!
//! Why redb: an embedded, pure-Rust, ACID key-value store in a single file, with copy-on-write
//! B-trees and a durable commit — a checkpoint either happened completely or not at all, even
//! after `kill -9`, and there is no compaction or background thread to manage. Checkpoints are
//! periodic batched writes, which is exactly its sweet spot (an LSM store such as fjall shines
//! for constant small writes, which Sluice does not do: state lives in memory between
//! checkpoints).
//!
//! What a checkpoint holds: each node's windows (per window definition), each node's keyed
//! state, the tables, the telemetry histories, and the source's position and watermarks. Restoring it and replaying the
//! input from that position gives the same results as a run that never stopped; results already
//! written after the checkpoint are written again, with the same deterministic ids.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::StateStore;
use super::partition::PartitionState;
use super::time::Watermarks;
use super::window::{Owner, UNOWNED, WindowStore};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const WINDOWS: TableDefinition<&str, &[u8]> = TableDefinition::new("windows");
const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const TABLES: TableDefinition<&str, &[u8]> = TableDefinition::new("tables");
const TIMERS: TableDefinition<&str, i64> = TableDefinition::new("timers");
/// Telemetry histories: `series\0entity` → the entity's keys and their points (JSON).
const SERIES: TableDefinition<&str, &[u8]> = TableDefinition::new("series");
/// The partition of each owned entry of `kv` (`k` + key), `timers` (`t` + key), `tables`
/// (`b` + key) and `series` (`s` + key); windows carry theirs inside. Entries not listed are
/// unowned (older checkpoints).
const OWNERS: TableDefinition<&[u8], u32> = TableDefinition::new("owners");

/// Where the source was when the checkpoint was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// Which input this is (a file path, `stdin`, a topic): a checkpoint of another input is
    /// not resumed.
    pub source: String,
    /// Units consumed (lines of a file; the next offset of a partition).
    pub position: u64,
    pub watermarks: Watermarks,
    /// The completed watermark: windows closed up to here were emitted.
    pub completed: i64,
    /// The input ended and every window was flushed: nothing to resume.
    pub complete: bool,
    /// Next offset per Kafka partition (`"topic/partition"`), for a Kafka source.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub offsets: std::collections::BTreeMap<String, i64>,
}

#[derive(Debug, thiserror::Error)]
#[error("state in {path}: {message}")]
pub struct CheckpointError {
    pub path: PathBuf,
    pub message: String,
}

/// A checkpoint taken in memory, to be written later: a source can take it the moment the
/// pipeline is idle and resume reading at once, and write it only when every output of the
/// messages it covers is delivered (so the state on disk never runs ahead of the outputs).
#[derive(Debug, Clone, Default)]
pub struct Captured {
    position: Vec<u8>,
    windows: Vec<(String, Vec<u8>)>,
    kv: Vec<(Vec<u8>, Vec<u8>)>,
    timers: Vec<(String, i64)>,
    tables: Vec<(String, Vec<u8>)>,
    series: Vec<(String, Vec<u8>)>,
    owners: Vec<(Vec<u8>, Owner)>,
    /// The state of the source partitions the source asked for, taken at the same instant
    /// (for the Kafka source's changelog).
    pub partitions: BTreeMap<Owner, PartitionState>,
}

fn owner_key(kind: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(kind);
    k.extend_from_slice(key);
    k
}

impl Captured {
    /// Serializes all of `state` and `position`.
    pub fn of(state: &StateStore, position: &SourcePosition) -> Result<Captured, serde_json::Error> {
        let mut captured = Captured { position: serde_json::to_vec(position)?, ..Default::default() };
        for node in state.node_ids() {
            let handles = state.node(&node);
            for (key, at, owner) in handles.timers.snapshot() {
                let key = format!("{node}\0{key}");
                if owner != UNOWNED {
                    captured.owners.push((owner_key(b't', key.as_bytes()), owner));
                }
                captured.timers.push((key, at));
            }
            for store in handles.windows.lock().iter() {
                captured.windows.push((format!("{node}\0{}", store.spec.name), serde_json::to_vec(store)?));
            }
            for (k, v, owner) in handles.kv.snapshot() {
                let mut key = node.as_bytes().to_vec();
                key.push(0);
                key.extend_from_slice(&k);
                if owner != UNOWNED {
                    captured.owners.push((owner_key(b'k', &key), owner));
                }
                captured.kv.push((key, v));
            }
        }
        for (name, entries) in state.tables().snapshot() {
            for (k, (v, owner)) in entries {
                let key = format!("{name}\0{k}");
                if owner != UNOWNED {
                    captured.owners.push((owner_key(b'b', key.as_bytes()), owner));
                }
                captured.tables.push((key, serde_json::to_vec(&v)?));
            }
        }
        for (name, entities) in state.series().snapshot() {
            for (entity, (keys, owner)) in entities {
                let key = format!("{name}\0{entity}");
                if owner != UNOWNED {
                    captured.owners.push((owner_key(b's', key.as_bytes()), owner));
                }
                captured.series.push((key, serde_json::to_vec(&keys)?));
            }
        }
        Ok(captured)
    }
}

pub struct Checkpoints {
    db: Database,
    path: PathBuf,
}

impl Checkpoints {
    /// Opens (or creates) the checkpoint file `path`.
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let err = |message: String| CheckpointError { path: path.to_path_buf(), message };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let db = Database::create(path).map_err(|e| err(e.to_string()))?;
        Ok(Checkpoints { db, path: path.to_path_buf() })
    }

    fn err(&self, e: impl std::fmt::Display) -> CheckpointError {
        CheckpointError { path: self.path.clone(), message: e.to_string() }
    }

    /// Writes all of `state` and `position`, replacing the previous checkpoint atomically.
    pub fn save(&self, state: &StateStore, position: &SourcePosition) -> Result<(), CheckpointError> {
        let captured = Captured::of(state, position).map_err(|e| self.err(e))?;
        self.write(&captured)
    }

    /// Writes a captured checkpoint, replacing the previous one atomically.
    pub fn write(&self, captured: &Captured) -> Result<(), CheckpointError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        for def in [WINDOWS, TABLES, SERIES] {
            txn.delete_table(def).map_err(|e| self.err(e))?;
        }
        txn.delete_table(KV).map_err(|e| self.err(e))?;
        txn.delete_table(TIMERS).map_err(|e| self.err(e))?;
        txn.delete_table(OWNERS).map_err(|e| self.err(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            meta.insert("position", captured.position.as_slice()).map_err(|e| self.err(e))?;
            let mut windows = txn.open_table(WINDOWS).map_err(|e| self.err(e))?;
            for (key, value) in &captured.windows {
                windows.insert(key.as_str(), value.as_slice()).map_err(|e| self.err(e))?;
            }
            let mut kv = txn.open_table(KV).map_err(|e| self.err(e))?;
            for (key, value) in &captured.kv {
                kv.insert(key.as_slice(), value.as_slice()).map_err(|e| self.err(e))?;
            }
            let mut timers = txn.open_table(TIMERS).map_err(|e| self.err(e))?;
            for (key, at) in &captured.timers {
                timers.insert(key.as_str(), *at).map_err(|e| self.err(e))?;
            }
            let mut tables = txn.open_table(TABLES).map_err(|e| self.err(e))?;
            for (key, value) in &captured.tables {
                tables.insert(key.as_str(), value.as_slice()).map_err(|e| self.err(e))?;
            }
            let mut series = txn.open_table(SERIES).map_err(|e| self.err(e))?;
            for (key, value) in &captured.series {
                series.insert(key.as_str(), value.as_slice()).map_err(|e| self.err(e))?;
            }
            let mut owners = txn.open_table(OWNERS).map_err(|e| self.err(e))?;
            for (key, owner) in &captured.owners {
                owners.insert(key.as_slice(), *owner).map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// The last checkpoint's position, if any.
    pub fn position(&self) -> Result<Option<SourcePosition>, CheckpointError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        match meta.get("position").map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(|e| self.err(e))?)),
        }
    }

    /// Loads the last checkpoint's state into `state` (which should be empty).
    pub fn restore(&self, state: &StateStore) -> Result<(), CheckpointError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let mut owners: std::collections::HashMap<Vec<u8>, Owner> = Default::default();
        if let Ok(table) = txn.open_table(OWNERS) {
            for entry in table.iter().map_err(|e| self.err(e))? {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                owners.insert(k.value().to_vec(), v.value());
            }
        }
        let owner_of = |kind: u8, key: &[u8]| owners.get(&owner_key(kind, key)).copied().unwrap_or(UNOWNED);
        if let Ok(windows) = txn.open_table(WINDOWS) {
            for entry in windows.iter().map_err(|e| self.err(e))? {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                let node = k.value().split('\0').next().unwrap_or_default().to_string();
                let mut store: WindowStore = serde_json::from_slice(v.value()).map_err(|e| self.err(e))?;
                store.reindex();
                state.node(&node).windows.lock().push(store);
            }
        }
        if let Ok(kv) = txn.open_table(KV) {
            let mut by_node: std::collections::BTreeMap<String, super::kv::Entries> = Default::default();
            for entry in kv.iter().map_err(|e| self.err(e))? {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                let key = k.value();
                let split = key.iter().position(|&b| b == 0).unwrap_or(key.len());
                let node = String::from_utf8_lossy(&key[..split]).into_owned();
                let owner = owner_of(b'k', key);
                by_node.entry(node).or_default().push((
                    key[(split + 1).min(key.len())..].to_vec(),
                    v.value().to_vec(),
                    owner,
                ));
            }
            for (node, entries) in by_node {
                state.node(&node).kv.restore(entries);
            }
        }
        if let Ok(timers) = txn.open_table(TIMERS) {
            for entry in timers.iter().map_err(|e| self.err(e))? {
                let (k, at) = entry.map_err(|e| self.err(e))?;
                let owner = owner_of(b't', k.value().as_bytes());
                let (node, key) = k.value().split_once('\0').unwrap_or((k.value(), ""));
                state.node(node).timers.set(key, at.value(), owner);
            }
        }
        if let Ok(tables) = txn.open_table(TABLES) {
            let mut all: super::table::TableRows = Default::default();
            for entry in tables.iter().map_err(|e| self.err(e))? {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                let owner = owner_of(b'b', k.value().as_bytes());
                let (name, key) = k.value().split_once('\0').unwrap_or((k.value(), ""));
                let value = serde_json::from_slice(v.value()).map_err(|e| self.err(e))?;
                all.entry(name.to_string()).or_default().insert(key.to_string(), (value, owner));
            }
            state.tables().restore(all);
        }
        if let Ok(series) = txn.open_table(SERIES) {
            let mut all: super::series::SeriesRows = Default::default();
            for entry in series.iter().map_err(|e| self.err(e))? {
                let (k, v) = entry.map_err(|e| self.err(e))?;
                let owner = owner_of(b's', k.value().as_bytes());
                let (name, entity) = k.value().split_once('\0').unwrap_or((k.value(), ""));
                let keys = serde_json::from_slice(v.value()).map_err(|e| self.err(e))?;
                all.entry(name.to_string()).or_default().insert(entity.to_string(), (keys, owner));
            }
            state.series().restore(all);
        }
        Ok(())
    }
}

/// The checkpoint file of a chain: one per chain file, under the state directory.
pub fn path_for(dir: &std::path::Path, chain: &std::path::Path) -> PathBuf {
    let canonical = chain.canonicalize().unwrap_or_else(|_| chain.to_path_buf());
    let hash = sluice_core::content_hash(canonical.display().to_string().as_bytes());
    let stem = chain.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "chain".into());
    dir.join(format!("{stem}-{}.redb", &hash[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::window::{Mode, WindowKind, WindowSpec};

    #[test]
    fn a_checkpoint_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let state = StateStore::default();
        let node = state.node("avg");
        let spec = WindowSpec {
            name: "w".into(),
            kind: WindowKind::Tumbling { size_ms: 10 },
            grace_ms: 0,
            mode: Mode::Aggregate,
            early_updates: false,
        };
        let h = node.windows.define("avg", spec).unwrap();
        node.windows.lock()[h].add_value("zone", 3, 0, 2.5);
        node.windows.lock()[h].own("zone", 4);
        node.kv.put(b"k", b"v", 4);
        node.kv.put(b"old", b"v", UNOWNED);
        node.timers.set("tick", 99, 4);
        state.tables().put("registry", "d1", serde_json::json!({"region": "north"}), 4);
        let point = |ts, v| sluice_sdk::series::KeyPoint {
            key: "temperature".into(),
            ts,
            value: sluice_sdk::series::KvValue::Double(v),
        };
        state.series().append("timeseries", "DEVICE/d1", vec![point(20, 21.5), point(10, 20.0)], 4);
        let position = SourcePosition {
            source: "in.jsonl".into(),
            position: 42,
            watermarks: Watermarks::default(),
            completed: 7,
            complete: false,
            offsets: Default::default(),
        };
        let cp = Checkpoints::open(&path).unwrap();
        cp.save(&state, &position).unwrap();
        drop(cp);

        let cp = Checkpoints::open(&path).unwrap();
        assert_eq!(cp.position().unwrap(), Some(position));
        let restored = StateStore::default();
        cp.restore(&restored).unwrap();
        let node = restored.node("avg");
        assert_eq!(node.kv.get(b"k"), Some(b"v".to_vec()));
        assert_eq!(
            node.kv.snapshot(),
            vec![(b"k".to_vec(), b"v".to_vec(), 4), (b"old".to_vec(), b"v".to_vec(), UNOWNED)]
        );
        assert_eq!(node.timers.take_due(100), vec![(99, "tick".to_string(), 4)]);
        assert_eq!(restored.tables().get("registry", "d1"), Some(serde_json::json!({"region": "north"})));
        assert_eq!(restored.tables().snapshot()["registry"]["d1"].1, 4, "owners survive a checkpoint");
        assert_eq!(restored.series().snapshot(), state.series().snapshot(), "histories and their owners");
        assert_eq!(restored.series().points(), 2);
        let closed = node.windows.lock()[0].due(i64::MAX);
        assert_eq!((closed[0].key.as_str(), closed[0].acc.sum, closed[0].owner), ("zone", 2.5, 4));
    }
}

//! One source partition's share of the state: what moves between instances when a consumer
//! group rebalances.
//!
//! Every entry of every store — a key's windows, a node's keyed value, a timer, a table row, an
//! entity's telemetry history —
//! belongs to the source partition of the message that last wrote it (windows and timers pass
//! their partition on to what they emit). When the scale-out contract holds (a stateful node
//! keys by its input's partitioning key), a key's entries always come from one partition, so
//! "the state of partition 3" is well defined: [`StateStore::split`] takes it out,
//! [`StateStore::absorb`] puts it into another instance, [`StateStore::drop_owner`] forgets it
//! where it no longer belongs.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StateStore;
use super::window::{Owner, WindowStore};

/// The entries of one partition, by node; serializable (the changelog carries it as JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Node → its windows of this partition's keys (one store per window definition).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub windows: BTreeMap<String, Vec<WindowStore>>,
    /// Node → keyed values (base64 key, base64 value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kv: BTreeMap<String, Vec<(String, String)>>,
    /// Node → timers (key, when).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timers: BTreeMap<String, Vec<(String, i64)>>,
    /// Table → rows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tables: BTreeMap<String, BTreeMap<String, Value>>,
    /// Series → entity → its telemetry histories.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub series: BTreeMap<String, BTreeMap<String, super::series::Keys>>,
}

impl PartitionState {
    /// How many entries (window keys, values, timers, rows): for logs.
    pub fn len(&self) -> usize {
        let windows: usize = self.windows.values().flatten().map(WindowStore::key_count).sum();
        windows
            + self.kv.values().map(Vec::len).sum::<usize>()
            + self.timers.values().map(Vec::len).sum::<usize>()
            + self.tables.values().map(BTreeMap::len).sum::<usize>()
            + self.series.values().map(BTreeMap::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, thiserror::Error)]
#[error("partition state: node `{node}`: {message}")]
pub struct PartitionStateError {
    pub node: String,
    pub message: String,
}

impl StateStore {
    /// The state each of `owners` owns, taken in one pass (copies: the store is unchanged).
    /// Every owner asked for is in the result, with an empty state if it owns nothing.
    pub fn split(&self, owners: &BTreeSet<Owner>) -> BTreeMap<Owner, PartitionState> {
        let mut out: BTreeMap<Owner, PartitionState> = owners.iter().map(|o| (*o, PartitionState::default())).collect();
        for node in self.node_ids() {
            let handles = self.node(&node);
            for store in handles.windows.lock().iter() {
                for (owner, part) in store.split(owners) {
                    if let Some(state) = out.get_mut(&owner) {
                        state.windows.entry(node.clone()).or_default().push(part);
                    }
                }
            }
            for (k, v, owner) in handles.kv.snapshot() {
                if let Some(state) = out.get_mut(&owner) {
                    state.kv.entry(node.clone()).or_default().push((BASE64.encode(k), BASE64.encode(v)));
                }
            }
            for (key, at, owner) in handles.timers.snapshot() {
                if let Some(state) = out.get_mut(&owner) {
                    state.timers.entry(node.clone()).or_default().push((key, at));
                }
            }
        }
        for (name, rows) in self.tables().snapshot() {
            for (key, (value, owner)) in rows {
                if let Some(state) = out.get_mut(&owner) {
                    state.tables.entry(name.clone()).or_default().insert(key, value);
                }
            }
        }
        for (name, entities) in self.series().snapshot() {
            for (entity, (keys, owner)) in entities {
                if let Some(state) = out.get_mut(&owner) {
                    state.series.entry(name.clone()).or_default().insert(entity, keys);
                }
            }
        }
        out
    }

    /// Puts a partition's state (from the changelog) into this store, owned by `owner`; its
    /// keys replace any this store holds. Windows of a definition the node has not declared yet
    /// are added as they are: the node's `window_define` finds them by name.
    pub fn absorb(&self, owner: Owner, state: PartitionState) -> Result<(), PartitionStateError> {
        for (node, stores) in state.windows {
            let handles = self.node(&node);
            let mut mine = handles.windows.lock();
            for mut incoming in stores {
                incoming.reindex();
                incoming.own_all(owner);
                match mine.iter_mut().find(|s| s.spec.name == incoming.spec.name) {
                    Some(existing) if existing.spec != incoming.spec => {
                        return Err(PartitionStateError {
                            node,
                            message: format!(
                                "window `{}` is defined differently here than where its state was written",
                                incoming.spec.name
                            ),
                        });
                    }
                    Some(existing) => existing.absorb(incoming),
                    None => mine.push(incoming),
                }
            }
        }
        for (node, entries) in state.kv {
            let mut decoded = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let bad = |e: base64::DecodeError| PartitionStateError { node: node.clone(), message: e.to_string() };
                decoded.push((BASE64.decode(k).map_err(bad)?, BASE64.decode(v).map_err(bad)?, owner));
            }
            self.node(&node).kv.restore(decoded);
        }
        for (node, timers) in state.timers {
            let handles = self.node(&node);
            for (key, at) in timers {
                handles.timers.set(&key, at, owner);
            }
        }
        let rows = state
            .tables
            .into_iter()
            .map(|(name, rows)| (name, rows.into_iter().map(|(k, v)| (k, (v, owner))).collect()))
            .collect();
        self.tables().restore(rows);
        let series = state
            .series
            .into_iter()
            .map(|(name, entities)| (name, entities.into_iter().map(|(e, keys)| (e, (keys, owner))).collect()))
            .collect();
        self.series().restore(series);
        Ok(())
    }

    /// Forgets everything `owner` owns (its partition now belongs to another instance); returns
    /// how many entries.
    pub fn drop_owner(&self, owner: Owner) -> usize {
        let mut dropped = 0;
        for node in self.node_ids() {
            let handles = self.node(&node);
            dropped += handles.windows.lock().iter_mut().map(|s| s.drop_owner(owner)).sum::<usize>();
            dropped += handles.kv.drop_owner(owner);
            dropped += handles.timers.drop_owner(owner);
        }
        dropped + self.tables().drop_owner(owner) + self.series().drop_owner(owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::window::{Mode, WindowKind, WindowSpec};
    use serde_json::json;

    fn spec() -> WindowSpec {
        WindowSpec {
            name: "w".into(),
            kind: WindowKind::Tumbling { size_ms: 10 },
            grace_ms: 0,
            mode: Mode::Aggregate,
            early_updates: false,
        }
    }

    /// Two instances: partition 7's state leaves the first whole (windows, values, timers,
    /// rows) and arrives in the second; partition 8's stays.
    #[test]
    fn a_partitions_state_moves_whole() {
        let a = StateStore::default();
        let node = a.node("avg");
        let h = node.windows.define("avg", spec()).unwrap();
        for (key, owner, v) in [("dev-7", 7, 1.0), ("dev-8", 8, 2.0), ("dev-7", 7, 3.0)] {
            node.windows.lock()[h].add_value(key, 1, 0, v);
            node.windows.lock()[h].own(key, owner);
        }
        node.kv.put(b"dev-7", b"seven", 7);
        node.kv.put(b"dev-8", b"eight", 8);
        node.timers.set("dev-7", 99, 7);
        a.tables().put("registry", "dev-7", json!({"zone": "A"}), 7);
        a.tables().put("registry", "dev-8", json!({"zone": "B"}), 8);
        let point =
            |ts| sluice_sdk::series::KeyPoint { key: "t".into(), ts, value: sluice_sdk::series::KvValue::Long(ts) };
        a.series().append("timeseries", "DEVICE/dev-7", vec![point(1), point(2)], 7);
        a.series().append("timeseries", "DEVICE/dev-8", vec![point(3)], 8);

        let mut parts = a.split(&BTreeSet::from([7, 9]));
        assert!(parts[&9].is_empty(), "partition 9 owns nothing");
        let moved: PartitionState =
            serde_json::from_str(&serde_json::to_string(&parts.remove(&7).unwrap()).unwrap()).unwrap();
        assert_eq!(moved.len(), 5);
        assert_eq!(a.drop_owner(7), 5);

        let b = StateStore::default();
        b.absorb(7, moved).unwrap();
        let node_b = b.node("avg");
        assert_eq!(node_b.windows.define("avg", spec()), Ok(0), "the moved window is found by name");
        let closed = node_b.windows.lock()[0].due(100);
        assert_eq!(
            closed.iter().map(|c| (c.key.as_str(), c.acc.sum, c.owner)).collect::<Vec<_>>(),
            vec![("dev-7", 4.0, 7)]
        );
        assert_eq!(node_b.kv.get(b"dev-7"), Some(b"seven".to_vec()));
        assert_eq!(node_b.timers.take_due(100), vec![(99, "dev-7".to_string(), 7)]);
        assert_eq!(b.tables().get("registry", "dev-7"), Some(json!({"zone": "A"})));
        assert_eq!(b.tables().get("registry", "dev-8"), None);
        assert_eq!(b.series().points(), 2, "dev-7's history moved, dev-8's did not");
        assert_eq!(a.series().points(), 1);

        let left = a.node("avg");
        assert_eq!(left.kv.get(b"dev-7"), None);
        assert_eq!(left.kv.get(b"dev-8"), Some(b"eight".to_vec()));
        let closed = left.windows.lock()[0].due(100);
        assert_eq!(closed.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(), vec!["dev-8"]);
        assert_eq!(a.tables().get("registry", "dev-8"), Some(json!({"zone": "B"})));
    }

    #[test]
    fn a_window_defined_differently_is_refused() {
        let a = StateStore::default();
        let node = a.node("avg");
        let h = node.windows.define("avg", spec()).unwrap();
        node.windows.lock()[h].add_value("k", 1, 0, 1.0);
        node.windows.lock()[h].own("k", 1);
        let part = a.split(&BTreeSet::from([1])).remove(&1).unwrap();
        let b = StateStore::default();
        b.node("avg").windows.define("avg", WindowSpec { grace_ms: 5, ..spec() }).unwrap();
        let err = b.absorb(1, part).unwrap_err();
        assert_eq!(err.node, "avg");
        assert!(err.message.contains("window `w`"), "{err}");
    }
}

//! State the host keeps for nodes. No wasmtime types here: the runtime's host functions are thin
//! adapters over these stores.
//!
//! State belongs to the node id, not to a module instance: a trap (which replaces the instance)
//! or a reload of the module leaves it in place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::series::{Limits, Series};
use super::table::Tables;
use super::window::{Owner, WindowSpec, WindowStore};

/// Key/value pairs of a node's keyed state with their partitions, as a checkpoint holds them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>, Owner)>;

/// Plain keyed state of one node: bytes to bytes, each entry owned by the source partition
/// that last wrote it.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    inner: Arc<Mutex<Values>>,
}

/// key → (value, owner).
type Values = HashMap<Vec<u8>, (Vec<u8>, Owner)>;

impl NodeState {
    fn lock(&self) -> MutexGuard<'_, Values> {
        // A panic while holding the lock cannot leave a map half-written: every operation below
        // is a single call on the map. So a poisoned lock is still a consistent map.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lock().get(key).map(|(v, _)| v.clone())
    }

    pub fn put(&self, key: &[u8], value: &[u8], owner: Owner) {
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(entry) => {
                entry.0.clear();
                entry.0.extend_from_slice(value);
                entry.1 = owner;
            }
            None => {
                map.insert(key.to_vec(), (value.to_vec(), owner));
            }
        }
    }

    pub fn delete(&self, key: &[u8]) {
        self.lock().remove(key);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Every entry, for a checkpoint.
    pub fn snapshot(&self) -> Entries {
        let mut entries: Vec<_> = self.lock().iter().map(|(k, (v, o))| (k.clone(), v.clone(), *o)).collect();
        entries.sort();
        entries
    }

    /// Adds `entries`, replacing values of the same keys (a checkpoint or a partition's share).
    pub fn restore(&self, entries: Entries) {
        self.lock().extend(entries.into_iter().map(|(k, v, o)| (k, (v, o))));
    }

    /// Forgets the entries `owner` owns; returns how many.
    pub fn drop_owner(&self, owner: Owner) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, (_, o)| *o != owner);
        before - map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The windows one node declared, by handle (the order of declaration).
#[derive(Debug, Clone, Default)]
pub struct NodeWindows {
    inner: Arc<Mutex<Vec<WindowStore>>>,
}

impl NodeWindows {
    pub fn lock(&self) -> MutexGuard<'_, Vec<WindowStore>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Declares a window: a known name with the same definition reattaches its state; with a
    /// different one it is refused, since the stored state was built under the old definition.
    pub fn define(&self, node: &str, spec: WindowSpec) -> Result<usize, String> {
        spec.validate()?;
        let mut stores = self.lock();
        if let Some(i) = stores.iter().position(|s| s.spec.name == spec.name) {
            if stores[i].spec != spec {
                return Err(format!(
                    "node `{node}`: window `{}` has state built with {}; the module now declares {}. The state \
                     schema changed: keep the old definition, rename the window, or delete the state directory",
                    spec.name,
                    serde_json::to_string(&stores[i].spec).unwrap_or_else(|_| format!("{:?}", stores[i].spec)),
                    serde_json::to_string(&spec).unwrap_or_else(|_| format!("{spec:?}"))
                ));
            }
            return Ok(i);
        }
        stores.push(WindowStore::new(spec));
        Ok(stores.len() - 1)
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Processing-time timers of one node: key → when it fires (ms), and the partition whose
/// message set it.
#[derive(Debug, Clone, Default)]
pub struct NodeTimers {
    inner: Arc<Mutex<HashMap<String, (i64, Owner)>>>,
}

/// A timer that came due: when it was set for, its key, its partition.
pub type DueTimer = (i64, String, Owner);

impl NodeTimers {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (i64, Owner)>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set(&self, key: &str, at: i64, owner: Owner) {
        self.lock().insert(key.to_string(), (at, owner));
    }

    pub fn cancel(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Removes and returns the timers due at `now`, earliest first (then by key).
    pub fn take_due(&self, now: i64) -> Vec<DueTimer> {
        let mut timers = self.lock();
        let mut due: Vec<DueTimer> =
            timers.iter().filter(|(_, (at, _))| *at <= now).map(|(k, (at, o))| (*at, k.clone(), *o)).collect();
        due.sort();
        for (_, key, _) in &due {
            timers.remove(key);
        }
        due
    }

    /// Forgets the timers `owner` owns; returns how many.
    pub fn drop_owner(&self, owner: Owner) -> usize {
        let mut timers = self.lock();
        let before = timers.len();
        timers.retain(|_, (_, o)| *o != owner);
        before - timers.len()
    }

    /// How many timers are waiting to fire.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn snapshot(&self) -> Vec<(String, i64, Owner)> {
        let mut all: Vec<_> = self.lock().iter().map(|(k, (at, o))| (k.clone(), *at, *o)).collect();
        all.sort();
        all
    }
}

/// What a node instance reaches of the host's state.
#[derive(Debug, Clone, Default)]
pub struct NodeHandles {
    pub kv: NodeState,
    pub windows: NodeWindows,
    pub timers: NodeTimers,
    pub tables: Tables,
    /// The chain's telemetry histories.
    pub series: Series,
}

/// One node's state: keyed values, windows, timers.
type NodeEntry = (NodeState, NodeWindows, NodeTimers);

/// The state of every node of a running chain, by node id, and the chain's tables.
#[derive(Debug, Clone, Default)]
pub struct StateStore {
    nodes: Arc<Mutex<HashMap<String, NodeEntry>>>,
    tables: Tables,
    series: Series,
}

impl StateStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, NodeEntry>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state of `node`, created empty on first use.
    pub fn node(&self, node: &str) -> NodeHandles {
        let mut nodes = self.lock();
        let (kv, windows, timers) = nodes.entry(node.to_string()).or_default().clone();
        NodeHandles { kv, windows, timers, tables: self.tables.clone(), series: self.series.clone() }
    }

    /// An empty store whose telemetry histories keep `limits` (`[state]` in `sluice.toml`).
    pub fn with_series_limits(limits: Limits) -> Self {
        StateStore { series: Series::new(limits), ..Default::default() }
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    pub fn series(&self) -> &Series {
        &self.series
    }

    /// Timers waiting to fire, over every node. A finite run stays alive while this is not zero
    /// (a delay still holding a message, a generator still generating).
    pub fn pending_timers(&self) -> usize {
        self.lock().values().map(|(_, _, timers)| timers.len()).sum()
    }

    /// Forgets `node`'s state (a node removed from the chain, past its retention).
    pub fn remove_node(&self, node: &str) {
        self.lock().remove(node);
    }

    /// Node ids with state, sorted.
    /// Whether `node` holds anything: keyed values, open windows or pending timers (tables
    /// belong to the chain, not to a node).
    pub fn holds(&self, node: &str) -> bool {
        let nodes = self.lock();
        nodes.get(node).is_some_and(|(kv, windows, timers)| {
            !kv.is_empty() || !timers.is_empty() || windows.lock().iter().any(|w| w.open_count() > 0)
        })
    }

    pub fn node_ids(&self) -> Vec<String> {
        let mut ids: Vec<_> = self.lock().keys().cloned().collect();
        ids.sort();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::window::{Mode, WindowKind};

    fn spec(size_ms: u64) -> WindowSpec {
        WindowSpec {
            name: "avg".into(),
            kind: WindowKind::Tumbling { size_ms },
            grace_ms: 0,
            mode: Mode::Aggregate,
            early_updates: false,
        }
    }

    /// A module redeclaring a window with another definition gets a clear error, never the old
    /// state read under the new shape; the same definition reattaches the state.
    #[test]
    fn a_changed_window_definition_is_refused() {
        let windows = NodeWindows::default();
        let handle = windows.define("zone-average", spec(10_000)).unwrap();
        windows.lock()[handle].add_value("A", 1, 0, 1.0);
        assert_eq!(windows.define("zone-average", spec(10_000)), Ok(handle));
        let err = windows.define("zone-average", spec(60_000)).unwrap_err();
        assert!(err.starts_with("node `zone-average`: window `avg` has state built with"), "{err}");
        assert!(err.contains("state schema changed"), "{err}");
        assert!(err.contains("10000") && err.contains("60000"), "{err}");
        assert_eq!(windows.lock()[handle].open_count(), 1, "the state is untouched");
    }
}

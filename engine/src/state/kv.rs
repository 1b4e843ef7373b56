//! State the host keeps for nodes. No wasmtime types here: the runtime's host functions are thin
//! adapters over these stores.
//!
//! State belongs to the node id, not to a module instance: a trap (which replaces the instance)
//! or a reload of the module leaves it in place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::table::Tables;
use super::window::{WindowSpec, WindowStore};

/// Key/value pairs of a node's keyed state, as a checkpoint holds them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Plain keyed state of one node: bytes to bytes.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    inner: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>,
}

impl NodeState {
    fn lock(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Vec<u8>>> {
        // A panic while holding the lock cannot leave a map half-written: every operation below
        // is a single call on the map. So a poisoned lock is still a consistent map.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.lock().get(key).cloned()
    }

    pub fn put(&self, key: &[u8], value: &[u8]) {
        self.lock().insert(key.to_vec(), value.to_vec());
    }

    pub fn delete(&self, key: &[u8]) {
        self.lock().remove(key);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Every entry, for a checkpoint.
    pub fn snapshot(&self) -> Entries {
        let mut entries: Vec<_> = self.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        entries.sort();
        entries
    }

    pub fn restore(&self, entries: Entries) {
        *self.lock() = entries.into_iter().collect();
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
                    serde_json::to_string(&stores[i].spec).unwrap_or_default(),
                    serde_json::to_string(&spec).unwrap_or_default()
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

/// What a node instance reaches of the host's state.
#[derive(Debug, Clone, Default)]
pub struct NodeHandles {
    pub kv: NodeState,
    pub windows: NodeWindows,
    pub tables: Tables,
}

/// The state of every node of a running chain, by node id, and the chain's tables.
#[derive(Debug, Clone, Default)]
pub struct StateStore {
    nodes: Arc<Mutex<HashMap<String, (NodeState, NodeWindows)>>>,
    tables: Tables,
}

impl StateStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (NodeState, NodeWindows)>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state of `node`, created empty on first use.
    pub fn node(&self, node: &str) -> NodeHandles {
        let mut nodes = self.lock();
        let (kv, windows) = nodes.entry(node.to_string()).or_default().clone();
        NodeHandles { kv, windows, tables: self.tables.clone() }
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Node ids with state, sorted.
    pub fn node_ids(&self) -> Vec<String> {
        let mut ids: Vec<_> = self.lock().keys().cloned().collect();
        ids.sort();
        ids
    }
}

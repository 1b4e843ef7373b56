//! State the host keeps for nodes. No wasmtime types here: the runtime's host functions are thin
//! adapters over these stores.
//!
//! State belongs to the node id, not to a module instance: a trap (which replaces the instance)
//! or a reload of the module leaves it in place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

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

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The state of every node of a running chain, by node id.
#[derive(Debug, Clone, Default)]
pub struct StateStore {
    nodes: Arc<Mutex<HashMap<String, NodeState>>>,
}

impl StateStore {
    /// The state of `node`, created empty on first use.
    pub fn node(&self, node: &str) -> NodeState {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.entry(node.to_string()).or_default().clone()
    }
}

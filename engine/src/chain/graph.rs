//! The validated chain the executor runs: nodes in a flat vector, routes resolved to indices,
//! nested chains inlined. Everything here has already been checked by [`super::load`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::state::time::{EventTimeSpec, TimeField};

/// Index of a node in [`Chain::nodes`].
pub type NodeIdx = usize;

/// A loaded, validated chain.
#[derive(Debug)]
pub struct Chain {
    pub file: PathBuf,
    /// Every chain file this one was built from: `file` and its nested chains (what a hot
    /// reload watches).
    pub files: Vec<PathBuf>,
    pub name: String,
    pub entry: NodeIdx,
    /// Most node visits one message may make (see `ChainSpec::max_hops`).
    pub max_hops: u32,
    pub event_time: EventTimeSpec,
    pub time_field: TimeField,
    /// How flat input records become messages (`input`).
    pub input: sluice_core::input::InputForm,
    /// The flight recorder's settings (the root chain file's `record`).
    pub record: sluice_core::spec::RecordSpec,
    /// Rule nodes upstream first (index order where connections form a cycle): windows fire in
    /// this order, so results of an upstream window reach a downstream one before it closes.
    pub fire_order: Vec<NodeIdx>,
    pub nodes: Vec<GraphNode>,
    /// The rows to seed host tables with at start (`tables` of the chain file and its nested
    /// chains), read at load.
    pub seeds: Vec<super::seed::TableSeed>,
}

#[derive(Debug)]
pub struct GraphNode {
    /// The node's id; nodes of a nested chain are qualified by the chain node's id
    /// (`enrich/lookup`).
    pub id: String,
    pub name: Option<String>,
    pub kind: NodeKind,
    /// Relation → targets, in the order the connections were written.
    pub routes: HashMap<String, Vec<NodeIdx>>,
    /// For a node of a nested chain: the chain node whose connections take the outputs this
    /// nested chain leaves unconnected.
    pub exit: Option<NodeIdx>,
    pub debug: bool,
    /// Kept in the flight recorder (the node's `record` and its chain file's `record.enabled`).
    pub record: bool,
}

#[derive(Debug)]
pub enum NodeKind {
    /// A WASM rule node.
    Rule(RuleNode),
    /// Hands the message to a nested chain's entry node.
    Chain { entry: NodeIdx },
    /// A host sink.
    Sink(SinkKind),
}

pub use crate::runtime::RuleNode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// The run's output stream (`sluice run --output`).
    Output,
}

impl Chain {
    /// The connectors granted to this chain's nodes (nested chains' included), each once, by
    /// name: what `/metrics` and the run summary report on.
    pub fn connectors(&self) -> Vec<sluice_connectors::Granted> {
        let mut seen: Vec<sluice_connectors::Granted> = Vec::new();
        for node in &self.nodes {
            if let NodeKind::Rule(RuleNode { connector: Some(granted), .. }) = &node.kind
                && !seen.iter().any(|g| Arc::ptr_eq(&g.connector, &granted.connector))
            {
                seen.push(granted.clone());
            }
        }
        seen.sort_by(|a, b| a.name.cmp(&b.name));
        seen
    }
}

impl SinkKind {
    pub fn parse(name: &str) -> Option<SinkKind> {
        match name {
            "output" => Some(SinkKind::Output),
            _ => None,
        }
    }

    pub const NAMES: &[&str] = &["output"];
}

impl Chain {
    /// Where an output of `from` labelled `relation` goes: the connections of `from`, or, for a
    /// node of a nested chain with no such connection, those of the enclosing chain node (and so
    /// outwards). `None` when nothing takes it.
    pub fn targets(&self, from: NodeIdx, relation: &str) -> Option<&[NodeIdx]> {
        let mut at = from;
        loop {
            let node = &self.nodes[at];
            if let Some(targets) = node.routes.get(relation) {
                return Some(targets);
            }
            at = node.exit?;
        }
    }

    /// Where a message at node `i` can go next in the flattened graph: its connections, a chain
    /// node's nested entry, and — for a node of a nested chain — whatever the enclosing chain
    /// nodes connect (outputs the nested chain leaves unconnected go there).
    pub fn successors(nodes: &[GraphNode], i: NodeIdx) -> Vec<NodeIdx> {
        let mut out: Vec<NodeIdx> = nodes[i].routes.values().flatten().copied().collect();
        if let NodeKind::Chain { entry } = nodes[i].kind {
            out.push(entry);
        }
        let mut exit = nodes[i].exit;
        while let Some(e) = exit {
            out.extend(nodes[e].routes.values().flatten().copied());
            exit = nodes[e].exit;
        }
        out
    }

    /// Topological order of the nodes (Kahn), or index order if there is a cycle.
    pub fn topological_order(nodes: &[GraphNode]) -> Vec<NodeIdx> {
        let successors = |i| Chain::successors(nodes, i);
        let mut indegree = vec![0usize; nodes.len()];
        for i in 0..nodes.len() {
            for s in successors(i) {
                indegree[s] += 1;
            }
        }
        let mut ready: std::collections::VecDeque<NodeIdx> = (0..nodes.len()).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(nodes.len());
        while let Some(i) = ready.pop_front() {
            order.push(i);
            for s in successors(i) {
                indegree[s] -= 1;
                if indegree[s] == 0 {
                    ready.push_back(s);
                }
            }
        }
        if order.len() < nodes.len() { (0..nodes.len()).collect() } else { order }
    }

    /// Finds a node by its (qualified) id.
    pub fn find(&self, id: &str) -> Option<NodeIdx> {
        self.nodes.iter().position(|n| n.id == id)
    }
}

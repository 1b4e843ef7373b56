//! The validated chain the executor runs: nodes in a flat vector, routes resolved to indices,
//! nested chains inlined. Everything here has already been checked by [`super::load`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::runtime::{Limits, Module};

/// Index of a node in [`Chain::nodes`].
pub type NodeIdx = usize;

/// A loaded, validated chain.
#[derive(Debug)]
pub struct Chain {
    pub file: PathBuf,
    pub name: String,
    pub entry: NodeIdx,
    /// Most node visits one message may make (see `ChainSpec::max_hops`).
    pub max_hops: u32,
    pub nodes: Vec<GraphNode>,
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

#[derive(Debug)]
pub struct RuleNode {
    pub module: Arc<Module>,
    /// The node's config as JSON, handed to `sluice_init`.
    pub config: Vec<u8>,
    pub limits: Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// The run's output stream (`sluice run --output`).
    Output,
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

    /// Finds a node by its (qualified) id.
    pub fn find(&self, id: &str) -> Option<NodeIdx> {
        self.nodes.iter().position(|n| n.id == id)
    }
}

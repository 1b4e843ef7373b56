//! Replay: a recorded input run again through a node of the running chain — or of an edited
//! chain file — and everything downstream of it, in isolation, to see what it would output now.
//! This is how a rule is fixed: see the failing message in the flight recorder, edit the chain
//! (or the rule), replay, save (hot reload).
//!
//! Isolation is what makes it safe on a production engine:
//! - **state**: the run reads and writes a copy of the running state (taken through a
//!   checkpoint written to a scratch file), so a replay changes nothing of the real state;
//! - **actions**: without `live`, no node has its connector — an action call fails, and the
//!   replay shows the request it would have made failing with "no connector" on `Failure`;
//! - **outputs**: messages reaching the output sink are collected and shown, not written.
//!
//! Windows see the input with no watermark: it joins its window in the copy, and nothing closes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use sluice_sdk::TbMsg;

use super::recorder::{Body, Recorder};
use super::worker::Worker;
use super::{Envelope, Sinks};
use crate::chain::{Chain, NodeKind};
use crate::runtime::Runtime;
use crate::state::StateStore;
use crate::state::checkpoint::{Captured, Checkpoints, SourcePosition};
use sluice_core::{Ack, SinkItem};

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no node `{node}` in {}", file.display())]
    NoNode { node: String, file: std::path::PathBuf },
    #[error("cannot copy the running state: {0}")]
    State(String),
}

/// What a replay produced.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    /// The node replayed.
    pub node: String,
    /// Its outputs, in order, with their relations.
    pub outputs: Vec<(String, Body)>,
    /// What it failed with, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The outputs of every node downstream that ran, by node id.
    pub downstream: BTreeMap<String, Vec<(String, Body)>>,
    /// Messages that reached the output sink (not written anywhere).
    pub sink: Vec<Body>,
    /// Whether actions were executed (`live`).
    pub live: bool,
}

/// Runs `input` through `node` of `chain` (and on downstream) against a copy of `state`.
pub fn replay(
    runtime: Arc<Runtime>,
    mut chain: Chain,
    state: &StateStore,
    node: &str,
    input: TbMsg,
    live: bool,
) -> Result<Replayed, ReplayError> {
    let idx = chain.find(node).ok_or_else(|| ReplayError::NoNode { node: node.into(), file: chain.file.clone() })?;
    chain.entry = idx;
    chain.record =
        sluice_core::spec::RecordSpec { enabled: true, events: 1000, failures: 1000, max_body_bytes: 1 << 20 };
    for n in &mut chain.nodes {
        n.record = true;
        if !live && let NodeKind::Rule(rule) = &mut n.kind {
            rule.connector = None;
        }
    }
    let copy = copy_state(state)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1024);
    let sinks = Sinks { output: Some(tx), dead_letter: None };
    let recorder = Recorder::new(1, chain.record.clone());
    let chain = Arc::new(chain);
    let mut worker = Worker::standalone_with_state(runtime, chain.clone(), sinks, copy).recording(recorder.clone(), 0);
    let msg: sluice_core::message::Message = input.into();
    let key = Envelope::key_of(msg.entity_type(), msg.name());
    worker.process(Envelope::new(Arc::new(msg), key, Ack::none()));
    drop(worker);
    let sink = rx.try_iter().flat_map(SinkItem::into_msgs).map(|(msg, _)| Body::of(&msg, usize::MAX)).collect();
    let outputs_of = |id: &str| {
        recorder.events(id).and_then(|e| e.events.into_iter().next()).map(|e| {
            let outputs = e.outputs.into_iter().map(|o| (o.relation, o.msg)).collect::<Vec<_>>();
            (outputs, e.error)
        })
    };
    let (outputs, error) = outputs_of(node).unwrap_or_default();
    let downstream = chain
        .nodes
        .iter()
        .filter(|n| n.id != node && matches!(n.kind, NodeKind::Rule(_)))
        .filter_map(|n| outputs_of(&n.id).map(|(outputs, _)| (n.id.clone(), outputs)))
        .collect();
    Ok(Replayed { node: node.into(), outputs, error, downstream, sink, live })
}

/// A copy of `state`, through a checkpoint written to a scratch file and read back (the same
/// code that saves and restores a run's state).
pub fn copy_state(state: &StateStore) -> Result<StateStore, ReplayError> {
    let failed = |e: String| ReplayError::State(e);
    let dir = tempfile::tempdir().map_err(|e| failed(e.to_string()))?;
    let position = SourcePosition {
        source: "replay".into(),
        position: 0,
        watermarks: Default::default(),
        completed: 0,
        complete: false,
        offsets: Default::default(),
    };
    let captured = Captured::of(state, &position).map_err(|e| failed(e.to_string()))?;
    let checkpoints = Checkpoints::open(&dir.path().join("copy.redb")).map_err(|e| failed(e.to_string()))?;
    checkpoints.write(&captured).map_err(|e| failed(e.to_string()))?;
    let copy = StateStore::default();
    checkpoints.restore(&copy).map_err(|e| failed(e.to_string()))?;
    Ok(copy)
}

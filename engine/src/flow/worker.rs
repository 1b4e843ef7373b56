//! A worker: one OS thread that owns an instance of every rule node it has used and runs each
//! message it is handed through the whole chain, depth first.
//!
//! Running a message to completion on one thread is what keeps per-originator order (the router
//! sends an originator's messages to one worker) and what lets a node instance be reused for
//! every message without locks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::stats::{NodeStats, RunStats};
use super::{Envelope, Sinks};
use crate::chain::{Chain, NodeIdx, NodeKind, RuleNode, SinkKind};
use crate::host::{Clock, Emitted};
use crate::runtime::{NodeError, NodeErrorKind, NodeInstance, Runtime};
use crate::state::StateStore;
use sluice_sdk::relation::FAILURE;

/// Crash bookkeeping shared by every worker's instance of a node.
#[derive(Debug, Default)]
pub struct NodeHealth {
    pub consecutive_crashes: AtomicU32,
    pub disabled: AtomicBool,
}

/// Runs messages through a chain on the calling thread. [`super::Pipeline`] runs one per worker
/// thread; it is public so that benchmarks and embedders can drive a chain synchronously.
pub struct Worker {
    runtime: Arc<Runtime>,
    chain: Arc<Chain>,
    health: Arc<Vec<NodeHealth>>,
    state: StateStore,
    clock: Clock,
    sinks: Sinks,
    instances: Vec<Option<NodeInstance>>,
    stats: Vec<NodeStats>,
    output_count: u64,
    /// Reused output buffer of node calls.
    outputs: Vec<(String, Emitted)>,
}

impl Worker {
    pub(super) fn new(
        runtime: Arc<Runtime>,
        chain: Arc<Chain>,
        health: Arc<Vec<NodeHealth>>,
        state: StateStore,
        clock: Clock,
        sinks: Sinks,
    ) -> Self {
        let n = chain.nodes.len();
        Worker {
            runtime,
            chain,
            health,
            state,
            clock,
            sinks,
            instances: (0..n).map(|_| None).collect(),
            stats: vec![NodeStats::default(); n],
            output_count: 0,
            outputs: Vec::new(),
        }
    }

    /// A worker with its own crash bookkeeping (for use outside a [`super::Pipeline`]).
    pub fn standalone(runtime: Arc<Runtime>, chain: Arc<Chain>, sinks: Sinks) -> Self {
        let health = Arc::new(chain.nodes.iter().map(|_| NodeHealth::default()).collect());
        Worker::new(runtime, chain, health, StateStore::default(), Clock::System, sinks)
    }

    pub(super) fn run(mut self, mut inbox: mpsc::Receiver<Envelope>) -> RunStats {
        while let Some(envelope) = inbox.blocking_recv() {
            self.process(envelope);
        }
        self.into_stats()
    }

    /// The counts so far.
    pub fn into_stats(self) -> RunStats {
        let mut stats = RunStats { output: self.output_count, ..Default::default() };
        for ((node, health), mut s) in self.chain.nodes.iter().zip(self.health.iter()).zip(self.stats) {
            s.disabled = health.disabled.load(Ordering::Relaxed);
            stats.nodes.insert(node.id.clone(), s);
        }
        stats
    }

    /// Runs one message through the chain.
    pub fn process(&mut self, envelope: Envelope) {
        let chain = self.chain.clone();
        let mut pending: Vec<(NodeIdx, Bytes, u32)> = vec![(chain.entry, envelope.msg, 1)];
        while let Some((idx, msg, hops)) = pending.pop() {
            let node = &chain.nodes[idx];
            self.stats[idx].received += 1;
            if node.debug {
                tracing::info!(target: "sluice::debug", node = %node.id, event = "in", msg = %String::from_utf8_lossy(&msg));
            }
            let rule = match &node.kind {
                NodeKind::Sink(SinkKind::Output) => {
                    self.output_count += 1;
                    if let Some(out) = &self.sinks.output
                        && out.blocking_send((msg, envelope.ack.clone())).is_err()
                    {
                        tracing::error!(node = %node.id, "output sink closed: message not written");
                    }
                    continue;
                }
                NodeKind::Chain { entry } => {
                    self.push(&mut pending, idx, *entry, msg, hops);
                    continue;
                }
                NodeKind::Rule(rule) => rule,
            };
            let outputs = match self.call(idx, rule, &msg) {
                Ok(()) => std::mem::take(&mut self.outputs),
                Err(err) => {
                    self.stats[idx].failures += 1;
                    vec![(FAILURE.to_string(), Emitted::Msg(with_error(&msg, &err)))]
                }
            };
            // Pushed in reverse so that outputs are processed in the order they were emitted.
            for (n, (relation, emitted)) in outputs.into_iter().enumerate().rev() {
                let (relation, out_msg) = match emitted {
                    Emitted::Forward => (relation, msg.clone()),
                    Emitted::Msg(bytes) => match ensure_id(bytes, &msg, n) {
                        Ok(checked) => (relation, Bytes::from(checked)),
                        Err(error) => {
                            self.stats[idx].failures += 1;
                            let err = NodeError { node: node.id.clone(), kind: NodeErrorKind::Abi(error) };
                            (FAILURE.to_string(), Bytes::from(with_error(&msg, &err)))
                        }
                    },
                };
                if node.debug {
                    tracing::info!(target: "sluice::debug", node = %node.id, event = "out", %relation,
                        msg = %String::from_utf8_lossy(&out_msg));
                }
                *self.stats[idx].outputs.entry_ref(&relation) += 1;
                match chain.targets(idx, &relation) {
                    Some(targets) => {
                        for &target in targets.iter().rev() {
                            self.push(&mut pending, idx, target, out_msg.clone(), hops);
                        }
                    }
                    None if relation == FAILURE => {
                        self.stats[idx].unhandled_failures += 1;
                        let error = error_of(&out_msg);
                        tracing::warn!(node = %node.id, %error, "failure with no Failure connection");
                    }
                    None => *self.stats[idx].dropped.entry_ref(&relation) += 1,
                }
            }
        }
    }

    fn push(&mut self, pending: &mut Vec<(NodeIdx, Bytes, u32)>, from: NodeIdx, to: NodeIdx, msg: Bytes, hops: u32) {
        if hops >= self.chain.max_hops {
            self.stats[from].hop_limit += 1;
            tracing::warn!(node = %self.chain.nodes[from].id, max_hops = self.chain.max_hops,
                "message exceeded the chain's maxHops: stopped");
            return;
        }
        pending.push((to, msg, hops + 1));
    }

    /// Calls the rule node `idx` with `msg`; outputs land in `self.outputs`.
    fn call(&mut self, idx: NodeIdx, rule: &RuleNode, msg: &[u8]) -> Result<(), NodeError> {
        let health = &self.health[idx];
        let id = &self.chain.nodes[idx].id;
        if health.disabled.load(Ordering::Relaxed) {
            return Err(NodeError { node: id.clone(), kind: NodeErrorKind::Disabled(rule.limits.disable_after) });
        }
        let result = match &mut self.instances[idx] {
            Some(instance) => instance.call(msg, &mut self.outputs),
            slot @ None => {
                let state = self.state.node(id);
                let clock = self.clock.clone();
                match self.runtime.instantiate(
                    &rule.module,
                    id.as_str().into(),
                    &rule.config,
                    rule.limits,
                    state,
                    clock,
                ) {
                    Ok(fresh) => slot.insert(fresh).call(msg, &mut self.outputs),
                    // A node whose init passed at load but fails now (it traps, or depends on
                    // something that changed) counts as crashing, so that it can be disabled.
                    Err(err) => Err(NodeError {
                        node: err.node,
                        kind: NodeErrorKind::Trap(format!("init failed: {}", err.kind)),
                    }),
                }
            }
        };
        match result {
            Ok(()) => {
                health.consecutive_crashes.store(0, Ordering::Relaxed);
                Ok(())
            }
            Err(err) if err.kind.is_crash() => {
                self.instances[idx] = None;
                self.stats[idx].crashes += 1;
                let crashes = health.consecutive_crashes.fetch_add(1, Ordering::Relaxed) + 1;
                let limit = rule.limits.disable_after;
                tracing::warn!(node = %id, error = %err.kind, crashes, "node crashed; a fresh instance takes the next message");
                if limit > 0 && crashes >= limit && !health.disabled.swap(true, Ordering::Relaxed) {
                    tracing::error!(node = %id, crashes, "node disabled after consecutive crashes");
                }
                Err(err)
            }
            Err(err) => Err(err),
        }
    }
}

/// `entry_ref` for `BTreeMap<String, u64>`: no allocation when the key exists.
trait EntryRef {
    fn entry_ref(&mut self, key: &str) -> &mut u64;
}

impl EntryRef for std::collections::BTreeMap<String, u64> {
    fn entry_ref(&mut self, key: &str) -> &mut u64 {
        if !self.contains_key(key) {
            self.insert(key.to_string(), 0);
        }
        self.get_mut(key).expect("inserted above")
    }
}

/// The message with `metadata.error` set, for the `Failure` relation.
fn with_error(msg: &[u8], err: &NodeError) -> Vec<u8> {
    let text = err.kind.to_string();
    if let Ok(mut parsed) = serde_json::from_slice::<sluice_sdk::Msg>(msg) {
        parsed.metadata.insert("error".into(), text);
        return serde_json::to_vec(&parsed).unwrap_or_else(|_| msg.to_vec());
    }
    // Not a TbMsg (a foreign guest's output): set the field on whatever JSON it is.
    match serde_json::from_slice::<serde_json::Value>(msg) {
        Ok(mut value) => {
            if !value["metadata"].is_object() {
                value["metadata"] = serde_json::json!({});
            }
            value["metadata"]["error"] = serde_json::Value::String(text);
            serde_json::to_vec(&value).unwrap_or_else(|_| msg.to_vec())
        }
        Err(_) => msg.to_vec(),
    }
}

fn error_of(msg: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(msg)
        .ok()
        .and_then(|v| v["metadata"]["error"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Checks an emitted message. sluice-sdk always writes `{"id":"<non-empty>",…` from a `Msg`, so
/// that shape passes untouched (the hot path). Anything else — a guest in another language — is
/// parsed: it must be a TbMsg, and gets the deterministic id the SDK would have given it.
fn ensure_id(bytes: Vec<u8>, parent: &[u8], n: usize) -> Result<Vec<u8>, String> {
    const SDK_PREFIX: &[u8] = b"{\"id\":\"";
    if bytes.starts_with(SDK_PREFIX) && bytes.get(SDK_PREFIX.len()).is_some_and(|&b| b != b'"') {
        return Ok(bytes);
    }
    let mut msg: sluice_sdk::Msg =
        serde_json::from_slice(&bytes).map_err(|e| format!("node emitted something that is not a message: {e}"))?;
    if msg.id.is_empty() {
        #[derive(serde::Deserialize)]
        struct IdOnly {
            #[serde(default)]
            id: String,
        }
        let parent_id = serde_json::from_slice::<IdOnly>(parent).map(|p| p.id).unwrap_or_default();
        msg.id = sluice_sdk::derived_id(&parent_id, n);
    }
    serde_json::to_vec(&msg).map_err(|e| e.to_string())
}

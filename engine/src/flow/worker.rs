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

pub(super) struct Worker {
    pub runtime: Arc<Runtime>,
    pub chain: Arc<Chain>,
    pub health: Arc<Vec<NodeHealth>>,
    pub state: StateStore,
    pub clock: Clock,
    pub sinks: Sinks,
    pub instances: Vec<Option<NodeInstance>>,
    pub stats: Vec<NodeStats>,
    pub output_count: u64,
    /// Reused output buffer of node calls.
    pub outputs: Vec<(String, Emitted)>,
}

impl Worker {
    pub fn new(
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

    pub fn run(mut self, mut inbox: mpsc::Receiver<Envelope>) -> RunStats {
        while let Some(envelope) = inbox.blocking_recv() {
            self.process(envelope);
        }
        self.into_stats()
    }

    fn into_stats(self) -> RunStats {
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
                let out_msg = match emitted {
                    Emitted::Forward => msg.clone(),
                    Emitted::Msg(bytes) => Bytes::from(ensure_id(bytes, &msg, n)),
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
        let instance = match &mut self.instances[idx] {
            Some(instance) => instance,
            slot @ None => {
                let state = self.state.node(id);
                let fresh = self.runtime.instantiate(
                    &rule.module,
                    id.as_str().into(),
                    &rule.config,
                    rule.limits,
                    state,
                    self.clock.clone(),
                )?;
                slot.insert(fresh)
            }
        };
        match instance.call(msg, &mut self.outputs) {
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

/// A node that is not built with sluice-sdk may emit a message without an id: give it the same
/// deterministic id the SDK would have.
fn ensure_id(bytes: Vec<u8>, parent: &[u8], n: usize) -> Vec<u8> {
    if bytes.starts_with(b"{\"id\":\"") {
        return bytes;
    }
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return bytes };
    if value.get("id").and_then(|v| v.as_str()).is_some_and(|s| !s.is_empty()) {
        return bytes;
    }
    #[derive(serde::Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: String,
    }
    let parent_id = serde_json::from_slice::<IdOnly>(parent).map(|p| p.id).unwrap_or_default();
    value["id"] = serde_json::Value::String(sluice_sdk::derived_id(&parent_id, n));
    serde_json::to_vec(&value).unwrap_or(bytes)
}

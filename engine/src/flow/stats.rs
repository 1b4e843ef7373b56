//! What happened to messages, per node: the counts behind "never silently".

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::state::StateStore;
use sluice_core::metrics::{DynamicFamily, Metrics, Sample};

/// Counts for one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeStats {
    /// Messages that reached the node.
    pub received: u64,
    /// Outputs by relation (including `Failure` outputs the host made from errors).
    pub outputs: BTreeMap<String, u64>,
    /// Outputs no connection took, by relation (counted, never silently lost).
    pub dropped: BTreeMap<String, u64>,
    /// `failures` by kind ([`crate::runtime::NodeErrorKind::label`]: `error`, `trap`,
    /// `deadline`, `memory`…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failure_kinds: BTreeMap<String, u64>,
    /// Messages the node failed on (guest error, crash, disabled): sent to `Failure`.
    pub failures: u64,
    /// Crashes: traps, deadlines, out-of-memory. Each replaced the instance.
    pub crashes: u64,
    /// Failures with no `Failure` connection (logged).
    pub unhandled_failures: u64,
    /// Of those, written to the dead-letter sink.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dead_lettered: u64,
    /// Messages stopped because they exceeded the chain's `maxHops`.
    pub hop_limit: u64,
    /// Set once the node was disabled for repeated crashes.
    pub disabled: bool,
    /// Events that came after all their windows had closed.
    pub late: u64,
    /// Windows handed to the node (`on_window`), timers (`on_timer`), and those it failed on.
    pub windows_fired: u64,
    pub timers_fired: u64,
    pub window_failures: u64,
    /// How long its recorded calls took (`/metrics` only: not in `--stats`).
    #[serde(skip)]
    pub latency: Latency,
}

/// Upper bounds (seconds) of the call-latency buckets.
pub const LATENCY_BOUNDS: [f64; 14] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A node's call durations, bucketed by [`LATENCY_BOUNDS`] (the last slot: longer than all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latency {
    pub buckets: [u64; LATENCY_BOUNDS.len() + 1],
    pub sum_ns: u64,
}

impl Latency {
    pub fn observe(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = LATENCY_BOUNDS.iter().position(|b| secs <= *b).unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i] += 1;
        self.sum_ns = self.sum_ns.saturating_add(took.as_nanos() as u64);
    }

    fn merge(&mut self, other: &Latency) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum_ns += other.sum_ns;
    }

    /// As the metrics registry renders it.
    pub fn histogram(&self) -> sluice_core::metrics::Histogram {
        sluice_core::metrics::Histogram {
            counts: self.buckets[..LATENCY_BOUNDS.len()].to_vec(),
            count: self.buckets.iter().sum(),
            sum: self.sum_ns as f64 / 1e9,
        }
    }
}

/// Counts for a whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunStats {
    pub nodes: BTreeMap<String, NodeStats>,
    /// Messages written to the `output` sink.
    pub output: u64,
}

impl RunStats {
    pub fn merge(&mut self, other: RunStats) {
        self.output += other.output;
        for (id, n) in other.nodes {
            let mine = self.nodes.entry(id).or_default();
            mine.received += n.received;
            mine.failures += n.failures;
            mine.crashes += n.crashes;
            mine.unhandled_failures += n.unhandled_failures;
            mine.dead_lettered += n.dead_lettered;
            mine.hop_limit += n.hop_limit;
            mine.disabled |= n.disabled;
            mine.late += n.late;
            mine.windows_fired += n.windows_fired;
            mine.timers_fired += n.timers_fired;
            mine.window_failures += n.window_failures;
            mine.latency.merge(&n.latency);
            for (r, c) in n.outputs {
                *mine.outputs.entry(r).or_default() += c;
            }
            for (k, c) in n.failure_kinds {
                *mine.failure_kinds.entry(k).or_default() += c;
            }
            for (r, c) in n.dropped {
                *mine.dropped.entry(r).or_default() += c;
            }
        }
    }

    pub fn node(&self, id: &str) -> NodeStats {
        self.nodes.get(id).cloned().unwrap_or_default()
    }

    /// What the run could not do: the reasons a finite run does not exit 0.
    pub fn problems(&self) -> Problems {
        let mut problems = Problems::default();
        for (id, n) in &self.nodes {
            if n.disabled {
                problems.disabled_nodes.push(id.clone());
            }
            problems.dead_lettered += n.dead_lettered;
            problems.lost += n.unhandled_failures.saturating_sub(n.dead_lettered);
            problems.window_failures += n.window_failures;
            problems.hop_limit += n.hop_limit;
        }
        problems
    }
}

/// How often a busy worker publishes its counts for [`LiveStats`] (an idle one publishes on the
/// pipeline's tick, and every worker once more when it stops).
pub const PUBLISH_EVERY: Duration = Duration::from_millis(200);

/// The counts of a running pipeline, per node: what each worker last published, merged, with
/// the late events the window stores counted. Workers keep their counts to themselves while
/// they run (no lock, no shared counter per message) and publish a copy every
/// [`PUBLISH_EVERY`] and when they stop; so once a pipeline has stopped, [`LiveStats::snapshot`]
/// is exactly the [`RunStats`] it returned.
#[derive(Clone)]
pub struct LiveStats {
    slots: Arc<Vec<Mutex<RunStats>>>,
    state: StateStore,
}

impl LiveStats {
    pub(crate) fn new(workers: usize, state: StateStore) -> Self {
        LiveStats { slots: Arc::new((0..workers).map(|_| Mutex::new(RunStats::default())).collect()), state }
    }

    /// Worker `worker`'s counts as of now.
    pub(crate) fn publish(&self, worker: usize, stats: RunStats) {
        if let Some(slot) = self.slots.get(worker) {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = stats;
        }
    }

    /// Every worker's last published counts, merged, with late events added.
    pub fn snapshot(&self) -> RunStats {
        let mut stats = RunStats::default();
        for slot in self.slots.iter() {
            stats.merge(slot.lock().unwrap_or_else(|p| p.into_inner()).clone());
        }
        add_late(&mut stats, &self.state);
        stats
    }

    /// Registers the per-node families on `metrics`, each sample labelled with `chain` and the
    /// node's id (and the relation, for outputs and drops).
    pub fn register(&self, metrics: &Metrics, chain: &str) {
        type Read = fn(&NodeStats) -> u64;
        let per_node: [(&'static str, &'static str, Read); 10] = [
            ("sluice_node_received_total", "Messages that reached the node.", |n| n.received),
            ("sluice_node_failures_total", "Messages the node failed on (sent to Failure).", |n| n.failures),
            ("sluice_node_crashes_total", "Traps, deadlines and out-of-memory (each replaced the instance).", |n| {
                n.crashes
            }),
            ("sluice_node_unhandled_failures_total", "Failures with no Failure connection.", |n| n.unhandled_failures),
            ("sluice_node_dead_lettered_total", "Failures written to the dead-letter sink.", |n| n.dead_lettered),
            ("sluice_node_hop_limit_total", "Messages stopped by the chain's maxHops.", |n| n.hop_limit),
            ("sluice_node_late_total", "Events that came after all their windows had closed.", |n| n.late),
            ("sluice_node_windows_fired_total", "Windows handed to the node (on_window).", |n| n.windows_fired),
            ("sluice_node_timers_fired_total", "Timers handed to the node (on_timer).", |n| n.timers_fired),
            ("sluice_node_window_failures_total", "Window and timer calls the node failed.", |n| n.window_failures),
        ];
        for (name, help, read) in per_node {
            self.register_counter(metrics, chain, name, help, move |id, n, samples| {
                samples.push((vec![("node", id.to_string())], read(n) as f64));
            });
        }
        self.register_counter(
            metrics,
            chain,
            "sluice_node_failures_by_kind_total",
            "Messages the node failed on, by kind: error (the node returned one), trap, deadline, memory, abi, disabled.",
            |id, n, samples| {
                for (kind, count) in &n.failure_kinds {
                    samples.push((vec![("node", id.to_string()), ("kind", kind.clone())], *count as f64));
                }
            },
        );
        type ByRelation = fn(&NodeStats) -> &BTreeMap<String, u64>;
        let by_relation: [(&'static str, &'static str, ByRelation); 2] = [
            ("sluice_node_outputs_total", "Outputs of the node by relation (Failure outputs included).", |n| {
                &n.outputs
            }),
            ("sluice_node_dropped_total", "Outputs no connection took, by relation.", |n| &n.dropped),
        ];
        for (name, help, read) in by_relation {
            self.register_counter(metrics, chain, name, help, move |id, n, samples| {
                for (relation, count) in read(n) {
                    samples.push((vec![("node", id.to_string()), ("relation", relation.clone())], *count as f64));
                }
            });
        }
        // What each node holds in its state, now.
        type Held = fn(&crate::state::NodeHandles) -> usize;
        let held: [(&'static str, &'static str, Held); 3] = [
            ("sluice_node_open_windows", "Windows open in the node's state (over every key).", |h| {
                h.windows.lock().iter().map(|w| w.open_count()).sum()
            }),
            ("sluice_node_state_entries", "Keyed values in the node's state.", |h| h.kv.len()),
            ("sluice_node_timers_pending", "Timers armed in the node's state.", |h| h.timers.len()),
        ];
        for (name, help, read) in held {
            let (state, chain) = (self.state.clone(), chain.to_string());
            metrics.register_dynamic(DynamicFamily {
                name,
                help,
                kind: "gauge",
                samples: Box::new(move || {
                    state
                        .node_ids()
                        .into_iter()
                        .map(|id| {
                            let value = read(&state.node(&id)) as f64;
                            (vec![("chain", chain.clone()), ("node", id)], value)
                        })
                        .collect()
                }),
            });
        }
        let (live, label) = (self.clone(), chain.to_string());
        metrics.register_histogram(sluice_core::metrics::HistogramFamily {
            name: "sluice_node_call_seconds",
            help: "How long the node's calls took (messages, windows and timers).",
            bounds: &LATENCY_BOUNDS,
            samples: Box::new(move || {
                let stats = live.snapshot();
                stats
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.latency.buckets.iter().any(|c| *c > 0))
                    .map(|(id, n)| (vec![("chain", label.clone()), ("node", id.clone())], n.latency.histogram()))
                    .collect()
            }),
        });
        let (live, chain) = (self.clone(), chain.to_string());
        metrics.register_dynamic(DynamicFamily {
            name: "sluice_output_messages_total",
            help: "Messages the chain wrote to its output sink.",
            kind: "counter",
            samples: Box::new(move || vec![(vec![("chain", chain.clone())], live.snapshot().output as f64)]),
        });
    }
}

impl LiveStats {
    /// Registers the counter family `name`: `samples` adds each node's samples (their labels
    /// but `chain`) from a snapshot taken per scrape.
    fn register_counter(
        &self,
        metrics: &Metrics,
        chain: &str,
        name: &'static str,
        help: &'static str,
        samples: impl Fn(&str, &NodeStats, &mut Vec<Sample>) + Send + Sync + 'static,
    ) {
        let (live, chain) = (self.clone(), chain.to_string());
        metrics.register_dynamic(DynamicFamily {
            name,
            help,
            kind: "counter",
            samples: Box::new(move || {
                let mut out = Vec::new();
                for (id, n) in &live.snapshot().nodes {
                    samples(id, n, &mut out);
                }
                for (labels, _) in &mut out {
                    labels.insert(0, ("chain", chain.clone()));
                }
                out
            }),
        });
    }
}

/// Adds the late events the window stores of `state` counted to each node's stats.
pub(crate) fn add_late(stats: &mut RunStats, state: &StateStore) {
    for id in state.node_ids() {
        let late: u64 = state.node(&id).windows.lock().iter().map(|s| s.late).sum();
        if late > 0 {
            stats.nodes.entry(id).or_default().late += late;
        }
    }
}

/// What a run could not do, summed over nodes: a node disabled for repeated crashes, messages
/// that went to the dead-letter sink, failures that went nowhere, window and timer calls that
/// failed (their results are missing), messages stopped by `maxHops`. A finite run with any of
/// these exits non-zero (unless told `--allow-failures`), so that it never looks successful.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Problems {
    /// Nodes disabled after `disableAfter` consecutive crashes (they failed every message since).
    pub disabled_nodes: Vec<String>,
    /// Failures with no `Failure` connection, written to the dead-letter sink.
    pub dead_lettered: u64,
    /// Failures with no `Failure` connection and no dead-letter sink: logged and counted only.
    pub lost: u64,
    /// `on_window` / `on_timer` calls that failed: their results are missing.
    pub window_failures: u64,
    /// Messages stopped because they exceeded the chain's `maxHops`.
    pub hop_limit: u64,
}

impl Problems {
    pub fn is_empty(&self) -> bool {
        *self == Problems::default()
    }
}

impl std::fmt::Display for Problems {
    /// `1 node disabled (windows), 3 failures lost (no Failure connection, no dead-letter sink)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.disabled_nodes.is_empty() {
            let n = self.disabled_nodes.len();
            let s = if n == 1 { "" } else { "s" };
            parts.push(format!("{n} node{s} disabled after repeated crashes ({})", self.disabled_nodes.join(", ")));
        }
        if self.dead_lettered > 0 {
            parts.push(format!("{} message(s) dead-lettered", self.dead_lettered));
        }
        if self.lost > 0 {
            parts.push(format!(
                "{} failure(s) lost (no Failure connection and no dead-letter sink; see the warnings)",
                self.lost
            ));
        }
        if self.window_failures > 0 {
            parts.push(format!("{} window/timer call(s) failed (their results are missing)", self.window_failures));
        }
        if self.hop_limit > 0 {
            parts.push(format!("{} message(s) stopped by maxHops", self.hop_limit));
        }
        if parts.is_empty() { f.write_str("no failures") } else { f.write_str(&parts.join(", ")) }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_sum_over_nodes_and_separate_dead_letters_from_losses() {
        let mut stats = RunStats::default();
        let node = |unhandled, dead, disabled| NodeStats {
            unhandled_failures: unhandled,
            dead_lettered: dead,
            disabled,
            ..Default::default()
        };
        stats.nodes.insert("a".into(), node(5, 5, false));
        stats.nodes.insert("b".into(), node(3, 0, true));
        stats.nodes.insert("c".into(), NodeStats { window_failures: 2, hop_limit: 1, ..Default::default() });
        let problems = stats.problems();
        assert_eq!(
            problems,
            Problems { disabled_nodes: vec!["b".into()], dead_lettered: 5, lost: 3, window_failures: 2, hop_limit: 1 }
        );
        let text = problems.to_string();
        assert!(text.contains("1 node disabled after repeated crashes (b)"), "{text}");
        assert!(text.contains("5 message(s) dead-lettered") && text.contains("3 failure(s) lost"), "{text}");
        assert!(RunStats::default().problems().is_empty());
    }
}

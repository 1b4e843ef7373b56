//! What happened to messages, per node: the counts behind "never silently".

use std::collections::BTreeMap;

use serde::Serialize;

/// Counts for one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeStats {
    /// Messages that reached the node.
    pub received: u64,
    /// Outputs by relation (including `Failure` outputs the host made from errors).
    pub outputs: BTreeMap<String, u64>,
    /// Outputs no connection took, by relation (counted, never silently lost).
    pub dropped: BTreeMap<String, u64>,
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
            for (r, c) in n.outputs {
                *mine.outputs.entry(r).or_default() += c;
            }
            for (r, c) in n.dropped {
                *mine.dropped.entry(r).or_default() += c;
            }
        }
    }

    pub fn node(&self, id: &str) -> NodeStats {
        self.nodes.get(id).cloned().unwrap_or_default()
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

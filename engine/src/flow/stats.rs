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

//! Sandbox limits per node: a deadline per call (epoch interruption), a memory cap (a store
//! resource limiter) and how many consecutive crashes disable the node.

use std::time::Duration;

/// Default deadline for one message. Generous for telemetry rules (µs each), tight enough that a
/// runaway loop costs a fraction of a second.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(200);
/// Deadline for `init` (a script node may compile its script there).
pub const INIT_DEADLINE: Duration = Duration::from_secs(10);
/// Default linear-memory cap.
pub const DEFAULT_MEMORY: usize = 128 << 20;
/// Largest cap a chain may set (`limits.memoryMb`).
pub const MAX_MEMORY: usize = 4096 << 20;
/// Default: disable a node after this many consecutive crashes (ThingsBoard blacklists a script
/// after repeated errors in the same way).
pub const DEFAULT_DISABLE_AFTER: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    pub deadline: Duration,
    pub memory_bytes: usize,
    /// 0: never disable.
    pub disable_after: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { deadline: DEFAULT_DEADLINE, memory_bytes: DEFAULT_MEMORY, disable_after: DEFAULT_DISABLE_AFTER }
    }
}

impl Limits {
    /// The spec's values over the defaults.
    pub fn from_spec(spec: Option<&LimitsSpec>) -> Result<Limits, (&'static str, String)> {
        let mut limits = Limits::default();
        let Some(spec) = spec else { return Ok(limits) };
        if let Some(ms) = spec.deadline_ms {
            if ms == 0 {
                return Err(("limits.deadlineMs", "must be at least 1".into()));
            }
            limits.deadline = Duration::from_millis(ms);
        }
        if let Some(mb) = spec.memory_mb {
            if !(1..=(MAX_MEMORY >> 20) as u64).contains(&mb) {
                return Err(("limits.memoryMb", format!("{mb} is outside 1..=4096")));
            }
            limits.memory_bytes = (mb as usize) << 20;
        }
        if let Some(n) = spec.disable_after {
            limits.disable_after = n;
        }
        Ok(limits)
    }
}

pub use crate::host::sandbox::MemoryCap;

pub use sluice_core::spec::LimitsSpec;

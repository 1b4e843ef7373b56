//! What the store enforces on a guest, as the host functions see it: the epoch ticks a deadline
//! is counted in (an action call gives back the time it spent blocked), and the memory cap.

use std::time::Duration;

/// How often the epoch advances: the granularity of deadlines.
pub const TICK: Duration = Duration::from_millis(1);

/// Epoch ticks for a deadline (rounded up, plus one for the tick in progress).
pub(crate) fn ticks(deadline: Duration) -> u64 {
    (deadline.as_nanos().div_ceil(TICK.as_nanos()) as u64).saturating_add(1)
}

/// The store's resource limiter: refuses memory growth past the cap, and remembers that it did,
/// so the trap that follows (Rust aborts on a failed allocation) is reported as out of memory.
#[derive(Debug)]
pub struct MemoryCap {
    pub cap: usize,
    pub hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

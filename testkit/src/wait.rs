//! Waiting for something that should happen, with a bound: a hang guard, not a speed check.

use std::time::{Duration, Instant};

/// Longest wait for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `done` every few milliseconds until it holds; panics naming `what` after [`PATIENCE`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < PATIENCE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

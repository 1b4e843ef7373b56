//! The time source: processing time, as the host, the sources and the windows see it. A test
//! sets it by hand; a guest has no clock of its own (it asks the host, `now_ms`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// The time source guests see.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A clock a test sets by hand.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            Clock::Manual(ms) => ms.load(Ordering::Relaxed),
        }
    }
}

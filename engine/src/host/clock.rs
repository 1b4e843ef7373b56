//! `now_ms() -> i64`: processing time. The host owns time so that tests (and, later, event-time
//! processing) can decide what "now" is; a guest has no clock of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use wasmtime::{Caller, Linker};

use super::HostState;

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

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("sluice", "now_ms", |caller: Caller<'_, HostState>| caller.data().clock.now_ms())?;
    Ok(())
}

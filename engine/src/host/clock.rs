//! `now_ms() -> i64`: processing time. The host owns time ([`Clock`]) so that tests (and
//! event-time processing) decide what "now" is; a guest has no clock of its own.

use wasmtime::{Caller, Linker};

use super::HostState;
pub use crate::core::Clock;

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("sluice", "now_ms", |caller: Caller<'_, HostState>| caller.data().clock.now_ms())?;
    Ok(())
}

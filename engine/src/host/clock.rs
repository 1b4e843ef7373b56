//! `now_ms() -> i64`: processing time. The host owns time ([`Clock`]) so that tests (and
//! event-time processing) decide what "now" is; a guest has no clock of its own.

use wasmtime::{Caller, Linker};

pub use sluice_core::Clock;

/// Adds `now_ms`; `clock` projects the store's data into the node's clock.
pub fn add_to_linker<T, F>(linker: &mut Linker<T>, clock: F) -> wasmtime::Result<()>
where
    T: 'static,
    F: Fn(&T) -> &Clock + Send + Sync + Copy + 'static,
{
    linker.func_wrap("sluice", "now_ms", move |caller: Caller<'_, T>| clock(caller.data()).now_ms())?;
    Ok(())
}

//! Processing-time timers: `timer_set(key, at_ms)` arms (or moves) the node's timer `key`,
//! `timer_cancel(key)` disarms it. A due timer is handed to the optional `sluice_on_timer`
//! export by the worker. Timers are the node's state: they belong to the partition of the
//! message that set them, are checkpointed, and move with it.

use wasmtime::{Caller, Linker};

use super::{HostState, split, string};

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("sluice", "timer_set", |mut caller: Caller<'_, HostState>, kp: u32, kl: u32, at: i64| {
        let (memory, host) = split(&mut caller)?;
        host.state.timers.set(&string(memory, kp, kl)?, at, host.partition);
        Ok(())
    })?;
    linker.func_wrap("sluice", "timer_cancel", |mut caller: Caller<'_, HostState>, kp: u32, kl: u32| {
        let (memory, host) = split(&mut caller)?;
        host.state.timers.cancel(&string(memory, kp, kl)?);
        Ok(())
    })?;
    Ok(())
}

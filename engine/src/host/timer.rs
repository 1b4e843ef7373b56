//! Processing-time timers: `timer_set(key, at_ms)` arms (or moves) the node's timer `key`,
//! `timer_cancel(key)` disarms it. A due timer is handed to the optional `sluice_on_timer`
//! export by the worker. Timers are the node's state: they belong to the partition of the
//! message that set them, are checkpointed, and move with it.

use wasmtime::{Caller, Linker};

use super::{Call, GuestData, split, string};
use crate::state::NodeHandles;

/// Adds the timer functions; `keyed` projects the store's data into the node's state and the
/// current call (whose partition owns the timer).
pub fn add_to_linker<T, F>(linker: &mut Linker<T>, keyed: F) -> wasmtime::Result<()>
where
    T: GuestData,
    F: Fn(&mut T) -> (&NodeHandles, &mut Call) + Send + Sync + Copy + 'static,
{
    linker.func_wrap("sluice", "timer_set", move |mut caller: Caller<'_, T>, kp: u32, kl: u32, at: i64| {
        let (memory, data) = split(&mut caller)?;
        let (state, call) = keyed(data);
        state.timers.set(&string(memory, kp, kl)?, at, call.partition);
        Ok(())
    })?;
    linker.func_wrap("sluice", "timer_cancel", move |mut caller: Caller<'_, T>, kp: u32, kl: u32| {
        let (memory, data) = split(&mut caller)?;
        let (state, _) = keyed(data);
        state.timers.cancel(&string(memory, kp, kl)?);
        Ok(())
    })?;
    Ok(())
}

//! Keyed state: `state_get(key) -> len | -1` stages the value, `take_value(dst)` copies it into a
//! buffer the guest allocated for exactly that length; `state_put`, `state_delete`.
//!
//! `take_value` is here because keyed state was its first user; it hands over whatever a host
//! call staged in the [`Call`] (a table value, window folds, an action's answer, an error text).

use wasmtime::{Caller, Linker};

use super::{Call, GuestData, slice, split};
use crate::state::NodeHandles;

/// Adds the keyed-state functions and `take_value`; `keyed` projects the store's data into the
/// node's state and the current call.
pub fn add_to_linker<T, F>(linker: &mut Linker<T>, keyed: F) -> wasmtime::Result<()>
where
    T: GuestData,
    F: Fn(&mut T) -> (&NodeHandles, &mut Call) + Send + Sync + Copy + 'static,
{
    linker.func_wrap("sluice", "state_get", move |mut caller: Caller<'_, T>, ptr: u32, len: u32| {
        let (memory, data) = split(&mut caller)?;
        let (state, call) = keyed(data);
        let key = slice(memory, ptr, len)?;
        call.staged = state.kv.get(key);
        Ok(call.staged.as_ref().map_or(-1, |v| v.len() as i64))
    })?;
    linker.func_wrap("sluice", "take_value", move |mut caller: Caller<'_, T>, dst: u32| {
        let (memory, data) = split(&mut caller)?;
        let (_, call) = keyed(data);
        let value = call.staged.take().ok_or_else(|| wasmtime::Error::msg("take_value without state_get"))?;
        let start = dst as usize;
        let target = memory
            .get_mut(start..start + value.len())
            .ok_or_else(|| wasmtime::Error::msg("take_value: destination out of bounds"))?;
        target.copy_from_slice(&value);
        Ok(())
    })?;
    linker.func_wrap("sluice", "state_put", move |mut caller: Caller<'_, T>, kp: u32, kl: u32, vp: u32, vl: u32| {
        let (memory, data) = split(&mut caller)?;
        let (state, call) = keyed(data);
        state.kv.put(slice(memory, kp, kl)?, slice(memory, vp, vl)?, call.partition);
        Ok(())
    })?;
    linker.func_wrap("sluice", "state_delete", move |mut caller: Caller<'_, T>, ptr: u32, len: u32| {
        let (memory, data) = split(&mut caller)?;
        let (state, _) = keyed(data);
        state.kv.delete(slice(memory, ptr, len)?);
        Ok(())
    })?;
    Ok(())
}

//! Keyed state: `state_get(key) -> len | -1` stages the value, `take_value(dst)` copies it into a
//! buffer the guest allocated for exactly that length; `state_put`, `state_delete`.

use wasmtime::{Caller, Linker};

use super::{HostState, slice, split};

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("sluice", "state_get", |mut caller: Caller<'_, HostState>, ptr: u32, len: u32| {
        let (memory, host) = split(&mut caller)?;
        let key = slice(memory, ptr, len)?;
        host.staged = host.state.kv.get(key);
        Ok(host.staged.as_ref().map_or(-1, |v| v.len() as i64))
    })?;
    linker.func_wrap("sluice", "take_value", |mut caller: Caller<'_, HostState>, dst: u32| {
        let (memory, host) = split(&mut caller)?;
        let value = host.staged.take().ok_or_else(|| wasmtime::Error::msg("take_value without state_get"))?;
        let start = dst as usize;
        let target = memory
            .get_mut(start..start + value.len())
            .ok_or_else(|| wasmtime::Error::msg("take_value: destination out of bounds"))?;
        target.copy_from_slice(&value);
        Ok(())
    })?;
    linker.func_wrap(
        "sluice",
        "state_put",
        |mut caller: Caller<'_, HostState>, kp: u32, kl: u32, vp: u32, vl: u32| {
            let (memory, host) = split(&mut caller)?;
            host.state.kv.put(slice(memory, kp, kl)?, slice(memory, vp, vl)?, host.partition);
            Ok(())
        },
    )?;
    linker.func_wrap("sluice", "state_delete", |mut caller: Caller<'_, HostState>, ptr: u32, len: u32| {
        let (memory, host) = split(&mut caller)?;
        host.state.kv.delete(slice(memory, ptr, len)?);
        Ok(())
    })?;
    Ok(())
}

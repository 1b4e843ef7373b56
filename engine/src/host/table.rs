//! Tables: `table_get(name, key) -> len | -1` (value staged for `take_value`), `table_put`,
//! `table_delete`. Values are JSON. And processing-time timers: `timer_set(key, at_ms)`,
//! `timer_cancel(key)`, fired through the optional `sluice_on_timer` export.

use wasmtime::{Caller, Linker};

use super::{HostState, slice, split, string};

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "sluice",
        "table_get",
        |mut caller: Caller<'_, HostState>, np: u32, nl: u32, kp: u32, kl: u32| {
            let (memory, host) = split(&mut caller)?;
            let (name, key) = (string(memory, np, nl)?, string(memory, kp, kl)?);
            host.staged = host.state.tables.get(&name, &key).map(|v| serde_json::to_vec(&v).unwrap_or_default());
            Ok(host.staged.as_ref().map_or(-1, |v| v.len() as i64))
        },
    )?;
    linker.func_wrap(
        "sluice",
        "table_put",
        |mut caller: Caller<'_, HostState>, np: u32, nl: u32, kp: u32, kl: u32, vp: u32, vl: u32| {
            let (memory, host) = split(&mut caller)?;
            let (name, key) = (string(memory, np, nl)?, string(memory, kp, kl)?);
            let value: serde_json::Value = serde_json::from_slice(slice(memory, vp, vl)?)
                .map_err(|e| wasmtime::Error::msg(format!("table value is not JSON: {e}")))?;
            host.state.tables.put(&name, &key, value, host.partition);
            Ok(())
        },
    )?;
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
    linker.func_wrap(
        "sluice",
        "table_delete",
        |mut caller: Caller<'_, HostState>, np: u32, nl: u32, kp: u32, kl: u32| {
            let (memory, host) = split(&mut caller)?;
            let (name, key) = (string(memory, np, nl)?, string(memory, kp, kl)?);
            host.state.tables.delete(&name, &key);
            Ok(())
        },
    )?;
    Ok(())
}

//! Tables: `table_get(name, key) -> len | -1` (value staged for `take_value`), `table_put`,
//! `table_delete`. Values are JSON, shared by every node of the chain.

use wasmtime::{Caller, Linker};

use super::{HostState, slice, split, string};

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "sluice",
        "table_get",
        |mut caller: Caller<'_, HostState>, np: u32, nl: u32, kp: u32, kl: u32| {
            let (memory, host) = split(&mut caller)?;
            let (name, key) = (string(memory, np, nl)?, string(memory, kp, kl)?);
            host.staged = match host.state.tables.get(&name, &key) {
                None => None,
                Some(v) => Some(
                    serde_json::to_vec(&v)
                        .map_err(|e| wasmtime::Error::msg(format!("table value cannot be serialized: {e}")))?,
                ),
            };
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

//! Tables: `table_get(name, key) -> len | -1` (value staged for `take_value`), `table_put`,
//! `table_delete`. Values are JSON, shared by every node of the chain.

use wasmtime::{Caller, Linker};

use super::{Call, GuestData, slice, split, string};
use crate::state::NodeHandles;

/// Adds the table functions; `keyed` projects the store's data into the node's state (the
/// chain's tables) and the current call.
pub fn add_to_linker<T, F>(linker: &mut Linker<T>, keyed: F) -> wasmtime::Result<()>
where
    T: GuestData,
    F: Fn(&mut T) -> (&NodeHandles, &mut Call) + Send + Sync + Copy + 'static,
{
    linker.func_wrap("sluice", "table_get", move |mut caller: Caller<'_, T>, np: u32, nl: u32, kp: u32, kl: u32| {
        let (memory, data) = split(&mut caller)?;
        let (state, call) = keyed(data);
        let (name, key) = (string(memory, np, nl)?, string(memory, kp, kl)?);
        call.staged = match state.tables.get(&name, &key) {
            None => None,
            Some(v) => Some(
                serde_json::to_vec(&v)
                    .map_err(|e| wasmtime::Error::msg(format!("table value cannot be serialized: {e}")))?,
            ),
        };
        Ok(call.staged.as_ref().map_or(-1, |v| v.len() as i64))
    })?;
    linker.func_wrap(
        "sluice",
        "table_put",
        move |mut caller: Caller<'_, T>, np: u32, nl: u32, kp: u32, kl: u32, vp: u32, vl: u32| {
            let (memory, data) = split(&mut caller)?;
            let (state, call) = keyed(data);
            let (name, key) = (string(memory, np, nl)?, string(memory, kp, kl)?);
            let value: serde_json::Value = serde_json::from_slice(slice(memory, vp, vl)?)
                .map_err(|e| wasmtime::Error::msg(format!("table value is not JSON: {e}")))?;
            state.tables.put(&name, &key, value, call.partition);
            Ok(())
        },
    )?;
    linker.func_wrap(
        "sluice",
        "table_delete",
        move |mut caller: Caller<'_, T>, np: u32, nl: u32, kp: u32, kl: u32| {
            let (memory, data) = split(&mut caller)?;
            let (state, _) = keyed(data);
            let (name, key) = (string(memory, np, nl)?, string(memory, kp, kl)?);
            state.tables.delete(&name, &key);
            Ok(())
        },
    )?;
    Ok(())
}

//! `emit(rel, msg)`, `forward(rel)` and `fail(text)`: how a guest answers a message.
//!
//! Outputs are collected for the current call and routed by the executor only when the call
//! returns successfully, so a guest that traps half-way emits nothing.

use wasmtime::{Caller, Linker};

use super::{HostState, slice, split, string};

/// One output's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emitted {
    /// The incoming message unchanged (no bytes crossed the boundary).
    Forward,
    /// New message JSON.
    Msg(Vec<u8>),
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "sluice",
        "emit",
        |mut caller: Caller<'_, HostState>, rel_ptr: u32, rel_len: u32, msg_ptr: u32, msg_len: u32| {
            let (memory, host) = split(&mut caller)?;
            let relation = string(memory, rel_ptr, rel_len)?;
            let msg = slice(memory, msg_ptr, msg_len)?.to_vec();
            host.outputs.push((relation, Emitted::Msg(msg)));
            Ok(())
        },
    )?;
    linker.func_wrap("sluice", "forward", |mut caller: Caller<'_, HostState>, rel_ptr: u32, rel_len: u32| {
        let (memory, host) = split(&mut caller)?;
        let relation = string(memory, rel_ptr, rel_len)?;
        host.outputs.push((relation, Emitted::Forward));
        Ok(())
    })?;
    linker.func_wrap("sluice", "fail", |mut caller: Caller<'_, HostState>, ptr: u32, len: u32| {
        let (memory, host) = split(&mut caller)?;
        host.failure = Some(string(memory, ptr, len)?);
        Ok(())
    })?;
    Ok(())
}

//! `log(level, ptr, len)`: a guest's log line, as a tracing event carrying the node id.

use wasmtime::{Caller, Linker};

use super::{HostState, split, string};

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("sluice", "log", |mut caller: Caller<'_, HostState>, level: u32, ptr: u32, len: u32| {
        let (memory, host) = split(&mut caller)?;
        let text = string(memory, ptr, len)?;
        let node = &*host.node;
        match level {
            0 => tracing::trace!(target: "sluice::guest", node, "{text}"),
            1 => tracing::debug!(target: "sluice::guest", node, "{text}"),
            2 => tracing::info!(target: "sluice::guest", node, "{text}"),
            3 => tracing::warn!(target: "sluice::guest", node, "{text}"),
            _ => tracing::error!(target: "sluice::guest", node, "{text}"),
        }
        Ok(())
    })?;
    Ok(())
}

//! `log(level, ptr, len)`: a guest's log line, as a tracing event carrying the node id.

use std::sync::Arc;

use wasmtime::{Caller, Linker};

use super::{GuestData, split, string};

/// Adds `log`; `node` projects the store's data into the node's name.
pub fn add_to_linker<T, F>(linker: &mut Linker<T>, node: F) -> wasmtime::Result<()>
where
    T: GuestData,
    F: Fn(&T) -> &Arc<str> + Send + Sync + Copy + 'static,
{
    linker.func_wrap("sluice", "log", move |mut caller: Caller<'_, T>, level: u32, ptr: u32, len: u32| {
        let (memory, data) = split(&mut caller)?;
        let text = string(memory, ptr, len)?;
        let node = &**node(data);
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

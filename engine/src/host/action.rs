//! `action_call(req, len) -> i64`: hands the request (JSON) to the connector the chain granted
//! this node. A result `n >= 0` means the answer (JSON, `n` bytes) is staged for `take_value`;
//! `n < 0` means it failed and the reason (`-n - 1` bytes of text) is staged instead.

use wasmtime::{Caller, Linker};

use super::{HostState, slice, split};

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("sluice", "action_call", |mut caller: Caller<'_, HostState>, ptr: u32, len: u32| {
        let (memory, host) = split(&mut caller)?;
        let request = serde_json::from_slice::<serde_json::Value>(slice(memory, ptr, len)?)
            .map_err(|e| format!("the action request is not JSON: {e}"));
        let answer = match (&host.action, request) {
            (_, Err(e)) => Err(e),
            (None, _) => Err(format!(
                "node `{}` has no connector: grant it one in the chain (`\"connector\": NAME`, NAME declared under \
                 `connectors`)",
                host.node
            )),
            (Some(granted), Ok(request)) => granted.call(&host.node, &request, &host.ack),
        };
        Ok(match answer {
            Ok(value) => {
                let bytes = serde_json::to_vec(&value).unwrap_or_default();
                let n = bytes.len() as i64;
                host.staged = Some(bytes);
                n
            }
            Err(reason) => {
                tracing::debug!(node = %host.node, %reason, "action failed");
                let bytes = reason.into_bytes();
                let n = bytes.len() as i64;
                host.staged = Some(bytes);
                -n - 1
            }
        })
    })?;
    Ok(())
}

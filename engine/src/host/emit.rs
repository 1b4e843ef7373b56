//! `forward(h, rel)`, `emit(rel, draft)`, `emit_json(rel, msg)` and `fail(text)`: how a guest
//! answers a message.
//!
//! Outputs are collected for the current call and routed by the executor only when the call
//! returns successfully, so a guest that traps half-way emits nothing.

use std::borrow::Cow;

use sluice_sdk::TbMsg;
use wasmtime::{Caller, Linker};

use super::msg::Input;
use super::{Call, GuestData, slice, split, string};

/// The relation an output goes on. ThingsBoard's common relations are static strings, so
/// emitting one allocates nothing.
pub type Relation = Cow<'static, str>;

/// The relation named by `bytes` (guest text, lossily UTF-8).
pub fn relation(bytes: &[u8]) -> Relation {
    const COMMON: [&str; 12] = [
        "Success",
        "Failure",
        "True",
        "False",
        "Late",
        "Anomaly",
        "Normal",
        "Other",
        "Post telemetry",
        "Post attributes",
        "Attributes Updated",
        "RPC Request from Device",
    ];
    match COMMON.iter().find(|r| r.as_bytes() == bytes) {
        Some(r) => Cow::Borrowed(r),
        None => Cow::Owned(String::from_utf8_lossy(bytes).into_owned()),
    }
}

/// One output's message.
#[derive(Debug, Clone, PartialEq)]
pub enum Emitted {
    /// The incoming message unchanged: the same shared message goes on, nothing is copied.
    Forward,
    /// A changed copy of the incoming message (a draft).
    Draft(TbMsg),
    /// A message the guest wrote out as JSON (a new one, or any message of a foreign guest).
    Json(Vec<u8>),
}

/// Adds the answering functions; `call` projects the store's data into the current call.
pub fn add_to_linker<T, F>(linker: &mut Linker<T>, call: F) -> wasmtime::Result<()>
where
    T: GuestData,
    F: Fn(&mut T) -> &mut Call + Send + Sync + Copy + 'static,
{
    linker.func_wrap(
        "sluice",
        "emit_json",
        move |mut caller: Caller<'_, T>, rel_ptr: u32, rel_len: u32, msg_ptr: u32, msg_len: u32| {
            let (memory, data) = split(&mut caller)?;
            let host = call(data);
            let relation = relation(slice(memory, rel_ptr, rel_len)?);
            let msg = slice(memory, msg_ptr, msg_len)?.to_vec();
            host.outputs.push((relation, Emitted::Json(msg)));
            Ok(())
        },
    )?;
    linker.func_wrap("sluice", "emit", move |mut caller: Caller<'_, T>, rel_ptr: u32, rel_len: u32, o: u32| {
        let (memory, data) = split(&mut caller)?;
        let host = call(data);
        let relation = relation(slice(memory, rel_ptr, rel_len)?);
        super::msg::draft(host, o)?;
        let draft = host.drafts[o as usize].take().unwrap_or_default();
        host.outputs.push((relation, Emitted::Draft(draft)));
        Ok(())
    })?;
    linker.func_wrap("sluice", "forward", move |mut caller: Caller<'_, T>, h: u32, rel_ptr: u32, rel_len: u32| {
        let (memory, data) = split(&mut caller)?;
        let host = call(data);
        match host.input {
            Input::Msg(_) if h == host.handle => {}
            _ => {
                return Err(wasmtime::Error::msg(format!(
                    "forward of message handle {h}: not the message of this call"
                )));
            }
        }
        let relation = relation(slice(memory, rel_ptr, rel_len)?);
        host.outputs.push((relation, Emitted::Forward));
        Ok(())
    })?;
    linker.func_wrap("sluice", "fail", move |mut caller: Caller<'_, T>, ptr: u32, len: u32| {
        let (memory, data) = split(&mut caller)?;
        let host = call(data);
        host.failure = Some(string(memory, ptr, len)?);
        Ok(())
    })?;
    Ok(())
}

//! Reading the message in hand, and drafting changed copies of it (ABI v2, `ABI.md` "Reading the
//! message"): `msg_str`, `msg_number`, `msg_has`, `msg_ts`, `out_copy`, `out_set`, `out_set_ts`,
//! `out_remove`.
//!
//! Why this shape: the engine keeps each message parsed once, as a [`TbMsg`] shared by every node
//! it passes. A node reads the parts it needs straight out of it — a metadata value is one copy
//! into the guest's buffer, a number is not even that — instead of the whole message being
//! written out as JSON and parsed again in every guest (ABI v1, where that was most of the cost
//! of a chain). A node that changes the message asks for a draft, a copy of the host's message,
//! and sets only the parts it changed.
//!
//! The handle a guest passes must be the one of the current call: a view kept past its call
//! (its handle is stale) traps with a message that says so, instead of reading another message.

use std::sync::Arc;

use sluice_sdk::TbMsg;
use sluice_sdk::msg::field;
use wasmtime::{Caller, Linker};

use sluice_core::message::Message;

use super::{Call, GuestData, slice, split};

/// What the current call was handed.
#[derive(Debug, Clone, Default)]
pub enum Input {
    #[default]
    None,
    /// A message, readable through its handle.
    Msg(Arc<Message>),
    /// A closed window or a due timer, as the JSON the guest was given.
    Json(bytes::Bytes),
}

impl Input {
    /// The id of what the call handles (it keys the call's actions for idempotency).
    pub fn id(&self) -> String {
        #[derive(serde::Deserialize)]
        struct IdOnly<'a> {
            #[serde(borrow, default)]
            id: std::borrow::Cow<'a, str>,
        }
        match self {
            Input::None => String::new(),
            Input::Msg(msg) => msg.id().into_owned(),
            Input::Json(json) => serde_json::from_slice::<IdOnly>(json).map(|m| m.id.into_owned()).unwrap_or_default(),
        }
    }
}

/// The message of the current call (`input`, numbered `number`), if `handle` names it.
fn current(input: &Input, number: u32, handle: u32) -> wasmtime::Result<&Message> {
    match input {
        Input::Msg(msg) if handle == number => Ok(msg),
        Input::Msg(_) => Err(wasmtime::Error::msg(format!(
            "message handle {handle} is stale (this call's message is {number}): a message can be read only during \
             the call that received it; keep a clone to use it later"
        ))),
        _ => Err(wasmtime::Error::msg(format!("message handle {handle}: this call has no incoming message"))),
    }
}

/// A guest string (UTF-8, borrowed from guest memory), or a trap.
fn text(memory: &[u8], ptr: u32, len: u32) -> wasmtime::Result<&str> {
    std::str::from_utf8(slice(memory, ptr, len)?)
        .map_err(|e| wasmtime::Error::msg(format!("guest passed non-UTF-8 text: {e}")))
}

/// A part of `msg` as text: borrowed where the message holds it as text, else written into `out`
/// (numbers, JSON).
fn part<'m>(msg: &'m Message, code: u32, key: &str, out: &'m mut Vec<u8>) -> wasmtime::Result<Option<&'m [u8]>> {
    use std::borrow::Cow;
    let json = |e: serde_json::Error| wasmtime::Error::msg(format!("cannot write the message part as JSON: {e}"));
    out.clear();
    let text = |text: Option<Cow<'m, str>>, out: &'m mut Vec<u8>| match text {
        None => None,
        Some(Cow::Borrowed(s)) => Some(s.as_bytes()),
        Some(Cow::Owned(s)) => {
            out.extend_from_slice(s.as_bytes());
            Some(&out[..])
        }
    };
    match code {
        field::ID => return Ok(text(Some(msg.id()), out)),
        field::TYPE => return Ok(Some(msg.msg_type().as_bytes())),
        field::ENTITY_TYPE => return Ok(Some(msg.entity_type().as_bytes())),
        field::NAME => return Ok(Some(msg.name().as_bytes())),
        field::META => return Ok(text(msg.meta(key), out)),
        field::DATA_TEXT => return Ok(text(msg.data(key).and_then(|f| f.text()), out)),
        field::DATA_JSON => match msg.data(key) {
            Some(f) => f.write_json(out).map_err(json)?,
            None => return Ok(None),
        },
        field::DATA => serde_json::to_writer(&mut *out, &msg.tb().data).map_err(json)?,
        field::METADATA => serde_json::to_writer(&mut *out, &msg.tb().metadata).map_err(json)?,
        field::ORIGINATOR => serde_json::to_writer(&mut *out, &msg.tb().originator).map_err(json)?,
        other => return Err(wasmtime::Error::msg(format!("unknown message field code {other}"))),
    }
    Ok(Some(&out[..]))
}

/// Sets a part of a draft from guest text: text parts as they are, JSON parts parsed.
fn set_part(draft: &mut TbMsg, code: u32, key: &str, value: &[u8]) -> Result<(), String> {
    let utf8 = || std::str::from_utf8(value).map(str::to_string).map_err(|e| format!("not UTF-8: {e}"));
    let json = |what: &str| format!("the {what} set is not valid JSON");
    match code {
        field::ID => draft.id = utf8()?,
        field::TYPE => draft.msg_type = utf8()?,
        field::ENTITY_TYPE => draft.originator.entity_type = utf8()?,
        field::NAME => draft.originator.name = utf8()?,
        field::META => {
            draft.metadata.insert(key.to_string(), utf8()?);
        }
        field::DATA_JSON => {
            let value = serde_json::from_slice(value).map_err(|e| format!("{}: {e}", json("data field")))?;
            match &mut draft.data {
                serde_json::Value::Object(map) => {
                    map.insert(key.to_string(), value);
                }
                other => *other = serde_json::json!({ key: value }),
            }
        }
        field::DATA => draft.data = serde_json::from_slice(value).map_err(|e| format!("{}: {e}", json("data")))?,
        field::METADATA => {
            draft.metadata = serde_json::from_slice(value).map_err(|e| format!("{}: {e}", json("metadata")))?
        }
        field::ORIGINATOR => {
            draft.originator = serde_json::from_slice(value).map_err(|e| format!("{}: {e}", json("originator")))?
        }
        other => return Err(format!("field code {other} cannot be set")),
    }
    Ok(())
}

/// Adds the message functions; `call` projects the store's data into the current call.
pub fn add_to_linker<T, F>(linker: &mut Linker<T>, call: F) -> wasmtime::Result<()>
where
    T: GuestData,
    F: Fn(&mut T) -> &mut Call + Send + Sync + Copy + 'static,
{
    linker.func_wrap(
        "sluice",
        "msg_str",
        move |mut caller: Caller<'_, T>, h: u32, code: u32, key_ptr: u32, key_len: u32, dst: u32, cap: u32| {
            let (memory, data) = split(&mut caller)?;
            let host = call(data);
            let key = text(memory, key_ptr, key_len)?;
            let msg = current(&host.input, host.handle, h)?;
            Ok(match part(msg, code, key, &mut host.scratch)? {
                None => -1,
                Some(bytes) => {
                    let n = bytes.len().min(cap as usize);
                    let start = dst as usize;
                    let target = memory.get_mut(start..start + n).ok_or_else(|| {
                        wasmtime::Error::msg(format!("guest passed an out-of-bounds buffer {dst}+{cap}"))
                    })?;
                    target.copy_from_slice(&bytes[..n]);
                    bytes.len() as i64
                }
            })
        },
    )?;
    linker.func_wrap(
        "sluice",
        "msg_number",
        move |mut caller: Caller<'_, T>, h: u32, code: u32, key_ptr: u32, key_len: u32| {
            let (memory, data) = split(&mut caller)?;
            let host = call(data);
            let key = text(memory, key_ptr, key_len)?;
            let msg = current(&host.input, host.handle, h)?;
            let number = match code {
                field::DATA_TEXT | field::DATA_JSON => msg.data(key).and_then(|f| f.number()),
                field::META => msg.meta(key).and_then(|v| v.trim().parse().ok()),
                other => return Err(wasmtime::Error::msg(format!("field code {other} is not read as a number"))),
            };
            Ok(number.unwrap_or(f64::NAN))
        },
    )?;
    linker.func_wrap(
        "sluice",
        "msg_has",
        move |mut caller: Caller<'_, T>, h: u32, code: u32, key_ptr: u32, key_len: u32| {
            let (memory, data) = split(&mut caller)?;
            let host = call(data);
            let key = text(memory, key_ptr, key_len)?;
            let msg = current(&host.input, host.handle, h)?;
            use sluice_sdk::abi::{HAS_NONE, HAS_VALUE};
            Ok(match code {
                field::DATA_TEXT | field::DATA_JSON => msg.data(key).map_or(HAS_NONE, |f| f.presence()),
                field::META if msg.meta(key).is_some() => HAS_VALUE,
                field::META => HAS_NONE,
                _ => HAS_VALUE,
            })
        },
    )?;
    linker.func_wrap("sluice", "msg_ts", move |mut caller: Caller<'_, T>, h: u32| {
        let host = call(caller.data_mut());
        Ok(current(&host.input, host.handle, h)?.ts())
    })?;
    linker.func_wrap("sluice", "out_copy", move |mut caller: Caller<'_, T>, h: u32| {
        let host = call(caller.data_mut());
        let draft = current(&host.input, host.handle, h)?.to_tb();
        host.drafts.push(Some(draft));
        Ok((host.drafts.len() - 1) as u32)
    })?;
    linker.func_wrap(
        "sluice",
        "out_set",
        move |mut caller: Caller<'_, T>, o: u32, code: u32, key_ptr: u32, key_len: u32, val_ptr: u32, val_len: u32| {
            let (memory, data) = split(&mut caller)?;
            let host = call(data);
            let key = text(memory, key_ptr, key_len)?;
            let value = slice(memory, val_ptr, val_len)?;
            let draft = draft(host, o)?;
            set_part(draft, code, key, value).map_err(|e| wasmtime::Error::msg(format!("out_set: {e}")))
        },
    )?;
    linker.func_wrap("sluice", "out_set_ts", move |mut caller: Caller<'_, T>, o: u32, ts: i64| {
        draft(call(caller.data_mut()), o)?.ts = ts;
        Ok(())
    })?;
    linker.func_wrap(
        "sluice",
        "out_remove",
        move |mut caller: Caller<'_, T>, o: u32, code: u32, key_ptr: u32, key_len: u32| {
            let (memory, data) = split(&mut caller)?;
            let host = call(data);
            let key = text(memory, key_ptr, key_len)?;
            let draft = draft(host, o)?;
            match code {
                field::META => {
                    draft.metadata.remove(key);
                }
                field::DATA_JSON | field::DATA_TEXT => {
                    if let serde_json::Value::Object(map) = &mut draft.data {
                        map.remove(key);
                    }
                }
                other => {
                    return Err(wasmtime::Error::msg(format!("out_remove: field code {other} cannot be removed")));
                }
            }
            Ok(())
        },
    )?;
    Ok(())
}

/// The draft `o` of the current call, not yet emitted.
pub(super) fn draft(host: &mut Call, o: u32) -> wasmtime::Result<&mut TbMsg> {
    host.drafts
        .get_mut(o as usize)
        .and_then(Option::as_mut)
        .ok_or_else(|| wasmtime::Error::msg(format!("draft {o} does not exist or was already emitted")))
}

//! Windows: `window_define(spec) -> handle`, `window_add`, `window_item`, `window_fold_get/put`,
//! `watermark()`. The stores live in [`crate::state`]; these functions only move bytes and apply
//! the watermark stamped on the message being handled.
//!
//! Results: `>= 0` success (`window_add`/`window_item`/`window_fold_put`: 0 accepted, 1 late),
//! `< 0` an error whose text (of length `-result`) is staged for `take_value`.
//! `window_fold_get` returns the staged length of the accumulators, `-1` when late, and
//! `-1 - len` for an error.

use std::sync::Arc;

use wasmtime::{Caller, Linker};

use super::{Call, GuestData, slice, split, string};
use crate::state::NodeHandles;
use crate::state::window::{Added, Side, WindowSpec};

/// Stages an error text and returns its negated length.
fn staged_error(call: &mut Call, text: String) -> i32 {
    let len = text.len().max(1) as i32;
    call.staged = Some(if text.is_empty() { b"?".to_vec() } else { text.into_bytes() });
    -len
}

/// 0 accepted (queuing early updates), 1 late.
fn outcome(
    call: &mut Call,
    handle: usize,
    key: &str,
    added: Added,
    stores: &[crate::state::window::WindowStore],
) -> i32 {
    match added {
        Added::Late => 1,
        Added::Windows(windows) => {
            let store = &stores[handle];
            if store.spec.early_updates {
                call.early.extend(windows.iter().filter_map(|(start, _)| store.peek(key, *start)));
            }
            0
        }
    }
}

/// Adds the window functions; `windows` projects the store's data into the node's name, its
/// state and the current call (watermark, partition, early updates, staged errors).
pub fn add_to_linker<T, F>(linker: &mut Linker<T>, windows: F) -> wasmtime::Result<()>
where
    T: GuestData,
    F: Fn(&mut T) -> (&Arc<str>, &NodeHandles, &mut Call) + Send + Sync + Copy + 'static,
{
    linker.func_wrap("sluice", "watermark", move |mut caller: Caller<'_, T>| windows(caller.data_mut()).2.watermark)?;
    linker.func_wrap("sluice", "window_define", move |mut caller: Caller<'_, T>, ptr: u32, len: u32| {
        if caller.get_export("sluice_on_window").is_none() {
            let (_, _, call) = windows(caller.data_mut());
            return Ok(staged_error(call, "a node with windows must export `sluice_on_window`".into()));
        }
        let (memory, data) = split(&mut caller)?;
        let (node, state, call) = windows(data);
        let spec: Result<WindowSpec, _> = serde_json::from_slice(slice(memory, ptr, len)?);
        let result =
            spec.map_err(|e| format!("window definition: {e}")).and_then(|spec| state.windows.define(node, spec));
        Ok(match result {
            Ok(handle) => handle as i32,
            Err(text) => staged_error(call, text),
        })
    })?;
    linker.func_wrap(
        "sluice",
        "window_add",
        move |mut caller: Caller<'_, T>, handle: i32, kp: u32, kl: u32, ts: i64, value: f64| {
            let (memory, data) = split(&mut caller)?;
            let (_, state, call) = windows(data);
            // The hot path: the key is read in place, not copied.
            let key = std::str::from_utf8(slice(memory, kp, kl)?)
                .map_err(|e| wasmtime::Error::msg(format!("window key is not UTF-8: {e}")))?;
            let mut stores = state.windows.lock();
            let Some(store) = stores.get_mut(handle as usize) else {
                drop(stores);
                return Ok(staged_error(call, format!("no window with handle {handle}")));
            };
            let added = store.add_value(key, ts, call.watermark, value);
            store.own(key, call.partition);
            Ok(outcome(call, handle as usize, key, added, &stores))
        },
    )?;
    linker.func_wrap(
        "sluice",
        "window_item",
        move |mut caller: Caller<'_, T>, handle: i32, kp: u32, kl: u32, ts: i64, side: i32, ip: u32, il: u32| {
            let (memory, data) = split(&mut caller)?;
            let (_, state, call) = windows(data);
            let key = string(memory, kp, kl)?;
            let item: serde_json::Value = match serde_json::from_slice(slice(memory, ip, il)?) {
                Ok(item) => item,
                Err(e) => return Ok(staged_error(call, format!("window item is not JSON: {e}"))),
            };
            let side = if side == 0 { Side::Left } else { Side::Right };
            let mut stores = state.windows.lock();
            let Some(store) = stores.get_mut(handle as usize) else {
                drop(stores);
                return Ok(staged_error(call, format!("no window with handle {handle}")));
            };
            let added = store.add_item(&key, ts, call.watermark, side, &item);
            store.own(&key, call.partition);
            Ok(outcome(call, handle as usize, &key, added, &stores))
        },
    )?;
    linker.func_wrap(
        "sluice",
        "window_fold_get",
        move |mut caller: Caller<'_, T>, handle: i32, kp: u32, kl: u32, ts: i64| {
            let (memory, data) = split(&mut caller)?;
            let (_, state, call) = windows(data);
            let key = string(memory, kp, kl)?;
            let stores = state.windows.lock();
            let Some(store) = stores.get(handle as usize) else {
                drop(stores);
                return Ok(staged_error(call, format!("no window with handle {handle}")) as i64 - 1);
            };
            Ok(match store.folds(&key, ts, call.watermark) {
                None => -1,
                Some(folds) => {
                    let bytes = serde_json::to_vec(&folds)
                        .map_err(|e| wasmtime::Error::msg(format!("window folds cannot be serialized: {e}")))?;
                    let len = bytes.len() as i64;
                    call.staged = Some(bytes);
                    len
                }
            })
        },
    )?;
    linker.func_wrap(
        "sluice",
        "window_fold_put",
        move |mut caller: Caller<'_, T>, handle: i32, kp: u32, kl: u32, ts: i64, vp: u32, vl: u32| {
            let (memory, data) = split(&mut caller)?;
            let (_, state, call) = windows(data);
            let key = string(memory, kp, kl)?;
            let values: Vec<serde_json::Value> = match serde_json::from_slice(slice(memory, vp, vl)?) {
                Ok(v) => v,
                Err(e) => return Ok(staged_error(call, format!("accumulators are not a JSON array: {e}"))),
            };
            let mut stores = state.windows.lock();
            let Some(store) = stores.get_mut(handle as usize) else {
                drop(stores);
                return Ok(staged_error(call, format!("no window with handle {handle}")));
            };
            let added = store.put_folds(&key, ts, call.watermark, values);
            store.own(&key, call.partition);
            Ok(outcome(call, handle as usize, &key, added, &stores))
        },
    )?;
    Ok(())
}

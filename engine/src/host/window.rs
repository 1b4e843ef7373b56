//! Windows: `window_define(spec) -> handle`, `window_add`, `window_item`, `window_fold_get/put`,
//! `watermark()`. The stores live in [`crate::state`]; these functions only move bytes and apply
//! the watermark stamped on the message being handled.
//!
//! Results: `>= 0` success (`window_add`/`window_item`/`window_fold_put`: 0 accepted, 1 late),
//! `< 0` an error whose text (of length `-result`) is staged for `take_value`.
//! `window_fold_get` returns the staged length of the accumulators, `-1` when late, and
//! `-1 - len` for an error.

use wasmtime::{Caller, Linker};

use super::{HostState, slice, split, string};
use crate::state::window::{Added, Side, WindowSpec};

/// Stages an error text and returns its negated length.
fn staged_error(host: &mut HostState, text: String) -> i32 {
    let len = text.len().max(1) as i32;
    host.staged = Some(if text.is_empty() { b"?".to_vec() } else { text.into_bytes() });
    -len
}

/// 0 accepted (queuing early updates), 1 late.
fn outcome(
    host: &mut HostState,
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
                host.early.extend(windows.iter().filter_map(|(start, _)| store.peek(key, *start)));
            }
            0
        }
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("sluice", "watermark", |caller: Caller<'_, HostState>| caller.data().watermark)?;
    linker.func_wrap("sluice", "window_define", |mut caller: Caller<'_, HostState>, ptr: u32, len: u32| {
        if caller.get_export("sluice_on_window").is_none() {
            let host = caller.data_mut();
            return Ok(staged_error(host, "a node with windows must export `sluice_on_window`".into()));
        }
        let (memory, host) = split(&mut caller)?;
        let spec: Result<WindowSpec, _> = serde_json::from_slice(slice(memory, ptr, len)?);
        let result = spec.map_err(|e| format!("window definition: {e}")).and_then(|spec| {
            let node = host.node.clone();
            host.state.windows.define(&node, spec)
        });
        Ok(match result {
            Ok(handle) => handle as i32,
            Err(text) => staged_error(host, text),
        })
    })?;
    linker.func_wrap(
        "sluice",
        "window_add",
        |mut caller: Caller<'_, HostState>, handle: i32, kp: u32, kl: u32, ts: i64, value: f64| {
            let (memory, host) = split(&mut caller)?;
            // The hot path: the key is read in place, not copied.
            let key = std::str::from_utf8(slice(memory, kp, kl)?)
                .map_err(|e| wasmtime::Error::msg(format!("window key is not UTF-8: {e}")))?;
            let windows = host.state.windows.clone();
            let mut stores = windows.lock();
            let Some(store) = stores.get_mut(handle as usize) else {
                drop(stores);
                return Ok(staged_error(host, format!("no window with handle {handle}")));
            };
            let added = store.add_value(key, ts, host.watermark, value);
            store.own(key, host.partition);
            Ok(outcome(host, handle as usize, key, added, &stores))
        },
    )?;
    linker.func_wrap(
        "sluice",
        "window_item",
        |mut caller: Caller<'_, HostState>, handle: i32, kp: u32, kl: u32, ts: i64, side: i32, ip: u32, il: u32| {
            let (memory, host) = split(&mut caller)?;
            let key = string(memory, kp, kl)?;
            let item: serde_json::Value = match serde_json::from_slice(slice(memory, ip, il)?) {
                Ok(item) => item,
                Err(e) => return Ok(staged_error(host, format!("window item is not JSON: {e}"))),
            };
            let side = if side == 0 { Side::Left } else { Side::Right };
            let windows = host.state.windows.clone();
            let mut stores = windows.lock();
            let Some(store) = stores.get_mut(handle as usize) else {
                drop(stores);
                return Ok(staged_error(host, format!("no window with handle {handle}")));
            };
            let added = store.add_item(&key, ts, host.watermark, side, &item);
            store.own(&key, host.partition);
            Ok(outcome(host, handle as usize, &key, added, &stores))
        },
    )?;
    linker.func_wrap(
        "sluice",
        "window_fold_get",
        |mut caller: Caller<'_, HostState>, handle: i32, kp: u32, kl: u32, ts: i64| {
            let (memory, host) = split(&mut caller)?;
            let key = string(memory, kp, kl)?;
            let windows = host.state.windows.clone();
            let stores = windows.lock();
            let Some(store) = stores.get(handle as usize) else {
                drop(stores);
                return Ok(staged_error(host, format!("no window with handle {handle}")) as i64 - 1);
            };
            Ok(match store.folds(&key, ts, host.watermark) {
                None => -1,
                Some(folds) => {
                    let bytes = serde_json::to_vec(&folds)
                        .map_err(|e| wasmtime::Error::msg(format!("window folds cannot be serialized: {e}")))?;
                    let len = bytes.len() as i64;
                    host.staged = Some(bytes);
                    len
                }
            })
        },
    )?;
    linker.func_wrap(
        "sluice",
        "window_fold_put",
        |mut caller: Caller<'_, HostState>, handle: i32, kp: u32, kl: u32, ts: i64, vp: u32, vl: u32| {
            let (memory, host) = split(&mut caller)?;
            let key = string(memory, kp, kl)?;
            let values: Vec<serde_json::Value> = match serde_json::from_slice(slice(memory, vp, vl)?) {
                Ok(v) => v,
                Err(e) => return Ok(staged_error(host, format!("accumulators are not a JSON array: {e}"))),
            };
            let windows = host.state.windows.clone();
            let mut stores = windows.lock();
            let Some(store) = stores.get_mut(handle as usize) else {
                drop(stores);
                return Ok(staged_error(host, format!("no window with handle {handle}")));
            };
            let added = store.put_folds(&key, ts, host.watermark, values);
            store.own(&key, host.partition);
            Ok(outcome(host, handle as usize, &key, added, &stores))
        },
    )?;
    Ok(())
}

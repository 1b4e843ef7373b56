//! Telemetry history (`ABI.md` §13b): `series_append(name, entity, points) -> i32` saves points,
//! `series_query(name, entity, query) -> i64` stages what a query found for `take_value`. The
//! store is [`crate::state::series`]; these functions only move bytes.
//!
//! Results: `series_append` `0`, or `< 0` an error whose text (of length `-result`) is staged;
//! `series_query` the length `>= 0` of the staged answer (a JSON object, key → points), or `< 0`
//! an error text of length `-result`. A point list or query that is not what the ABI says is an
//! error the guest sees (its message goes to `Failure`), not a trap.

use wasmtime::{Caller, Linker};

use super::{Call, GuestData, slice, split, string};
use crate::state::NodeHandles;
use crate::state::series::{KeyPoint, Query};

/// Stages an error text and returns its negated length.
fn staged_error(call: &mut Call, text: String) -> i64 {
    let text = if text.is_empty() { "?".to_string() } else { text };
    let len = text.len() as i64;
    call.staged = Some(text.into_bytes());
    -len
}

/// Adds the series functions; `keyed` projects the store's data into the node's state (the
/// chain's histories) and the current call (its partition owns what is written; an answer is
/// staged in it).
pub fn add_to_linker<T, F>(linker: &mut Linker<T>, keyed: F) -> wasmtime::Result<()>
where
    T: GuestData,
    F: Fn(&mut T) -> (&NodeHandles, &mut Call) + Send + Sync + Copy + 'static,
{
    linker.func_wrap(
        "sluice",
        "series_append",
        move |mut caller: Caller<'_, T>, np: u32, nl: u32, ep: u32, el: u32, pp: u32, pl: u32| {
            let (memory, data) = split(&mut caller)?;
            let (state, call) = keyed(data);
            let (name, entity) = (string(memory, np, nl)?, string(memory, ep, el)?);
            let points: Vec<KeyPoint> = match serde_json::from_slice(slice(memory, pp, pl)?) {
                Ok(points) => points,
                Err(e) => return Ok(staged_error(call, format!("points are not a JSON list of points: {e}")) as i32),
            };
            state.series.append(&name, &entity, points, call.partition);
            Ok(0i32)
        },
    )?;
    linker.func_wrap(
        "sluice",
        "series_query",
        move |mut caller: Caller<'_, T>, np: u32, nl: u32, ep: u32, el: u32, qp: u32, ql: u32| {
            let (memory, data) = split(&mut caller)?;
            let (state, call) = keyed(data);
            let (name, entity) = (string(memory, np, nl)?, string(memory, ep, el)?);
            let query: Query = match serde_json::from_slice(slice(memory, qp, ql)?) {
                Ok(query) => query,
                Err(e) => return Ok(staged_error(call, format!("not a series query: {e}"))),
            };
            let answer = serde_json::to_vec(&state.series.query(&name, &entity, &query))
                .map_err(|e| wasmtime::Error::msg(format!("series answer cannot be serialized: {e}")))?;
            let len = answer.len() as i64;
            call.staged = Some(answer);
            Ok(len)
        },
    )?;
    Ok(())
}

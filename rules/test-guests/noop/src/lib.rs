//! Test guest: forwards every message on `True`. Measures the bare per-call cost.
use sluice_sdk::prelude::*;

#[filter]
fn noop(_msg: &Msg) -> Result<bool> {
    Ok(true)
}

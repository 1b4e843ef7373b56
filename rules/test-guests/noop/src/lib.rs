//! Test guest: forwards every message on `Success`. Measures the bare per-call cost.
use sluice_sdk::prelude::*;

#[filter]
fn noop(_msg: &Msg) -> Result<bool> {
    Ok(true)
}

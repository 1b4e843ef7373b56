//! Placeholder while the node is being written: forwards every message on `True`.
use sluice_sdk::prelude::*;

#[filter]
pub fn script(_msg: &Msg, _cfg: &NoConfig) -> Result<bool> {
    Ok(true)
}

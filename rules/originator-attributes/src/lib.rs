//! Placeholder while the node is being written: forwards every message on `True`.
use sluice_sdk::prelude::*;

#[filter]
pub fn originator_attributes(_msg: &Msg, _cfg: &NoConfig) -> Result<bool> {
    Ok(true)
}

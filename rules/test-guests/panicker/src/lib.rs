//! Hostile test guest: panics on a message whose data has `"panic": true`; returns an `Err` on
//! `"fail": true`; forwards everything else on `True`.
use sluice_sdk::prelude::*;

#[filter]
fn panicker(msg: &Msg) -> Result<bool> {
    if msg.field("panic") == Some(&Value::Bool(true)) {
        panic!("asked to panic by {}", msg.originator_name());
    }
    if msg.field("fail") == Some(&Value::Bool(true)) {
        bail!("asked to fail by {}", msg.originator_name());
    }
    Ok(true)
}

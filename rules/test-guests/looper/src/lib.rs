//! Hostile test guest: loops forever on a message whose data has `"loop": true`.
use sluice_sdk::prelude::*;

#[filter]
fn looper(msg: &Msg) -> Result<bool> {
    if msg.field("loop") == Some(&Value::Bool(true)) {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    Ok(true)
}

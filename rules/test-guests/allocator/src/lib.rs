//! Hostile test guest: allocates without bound on a message whose data has `"grow": true`.
use sluice_sdk::prelude::*;

#[filter]
fn allocator(msg: &Msg) -> Result<bool> {
    if msg.field("grow") == Some(&Value::Bool(true)) {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
    Ok(true)
}

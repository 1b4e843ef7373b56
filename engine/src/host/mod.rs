//! Host services: the only imports a guest gets (module `sluice`). Each capability adds its
//! functions to the linker from its own file; [`HostState`] is what they share per instance.
//!
//! Guest pointers are checked against the guest's memory on every call: a bad pointer is a trap
//! in that guest, never a host crash.

pub mod action;
pub mod clock;
pub mod emit;
pub mod log;
pub mod msg;
pub mod sandbox;
pub mod state;
pub mod table;
pub mod timer;
pub mod window;

use std::sync::Arc;

use wasmtime::{Caller, Linker, Memory};

pub use clock::Clock;
pub use emit::{Emitted, Relation};

use crate::state::NodeHandles;
use crate::state::window::Closed;
use sandbox::MemoryCap;

/// Per-instance data of the store.
pub struct HostState {
    /// The node this instance runs, for logs and errors.
    pub node: Arc<str>,
    pub memory: Option<Memory>,
    pub limiter: MemoryCap,
    /// Outputs of the current call, in emission order.
    pub outputs: Vec<(Relation, Emitted)>,
    /// The text the guest passed to `fail` during the current call.
    pub failure: Option<String>,
    /// A value `state_get` found, waiting for `take_value`.
    pub staged: Option<Vec<u8>>,
    pub state: NodeHandles,
    pub clock: Clock,
    /// The watermark stamped on the message being handled.
    pub watermark: i64,
    /// The source partition of the message (or window, or timer) being handled: state the
    /// call writes belongs to it, and moves with it on a rebalance.
    pub partition: crate::state::window::Owner,
    /// Early updates the current call caused, handed to `sluice_on_window` after it.
    pub early: Vec<Closed>,
    /// The connector the chain granted this node (`action_call`), if any.
    pub action: Option<crate::connectors::Granted>,
    /// What the current call was handed (a message, a window, a timer): its `id` keys the
    /// call's actions for idempotency.
    pub input: msg::Input,
    /// The number of the current call: the handle of its message (ABI v2).
    pub handle: u32,
    /// Changed copies of the message the current call asked for (`out_copy`), until emitted.
    pub drafts: Vec<Option<sluice_sdk::TbMsg>>,
    /// Reused for message parts written out for the guest (numbers, JSON).
    pub scratch: Vec<u8>,
    /// The current call's deadline and the time it spent blocked in host calls.
    pub budget: action::Budget,
    /// The ack handle of the message being handled: a connector that delivers asynchronously
    /// (Kafka) holds a clone until the broker confirms, so the source commits only then.
    pub ack: crate::core::Ack,
}

impl HostState {
    pub fn new(node: Arc<str>, memory_cap: usize, state: NodeHandles, clock: Clock) -> Self {
        HostState {
            node,
            memory: None,
            limiter: MemoryCap { cap: memory_cap, hit: false },
            outputs: Vec::new(),
            failure: None,
            staged: None,
            state,
            clock,
            watermark: crate::state::time::NO_WATERMARK,
            partition: crate::state::window::UNOWNED,
            early: Vec::new(),
            action: None,
            input: msg::Input::None,
            handle: 0,
            drafts: Vec::new(),
            scratch: Vec::new(),
            budget: action::Budget::default(),
            ack: crate::core::Ack::none(),
        }
    }
}

/// Adds every host service to `linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    log::add_to_linker(linker)?;
    clock::add_to_linker(linker)?;
    emit::add_to_linker(linker)?;
    msg::add_to_linker(linker)?;
    state::add_to_linker(linker)?;
    window::add_to_linker(linker)?;
    table::add_to_linker(linker)?;
    timer::add_to_linker(linker)?;
    action::add_to_linker(linker)?;
    Ok(())
}

/// The guest's memory and the host state, for a host function's use.
fn split<'a>(caller: &'a mut Caller<'_, HostState>) -> wasmtime::Result<(&'a mut [u8], &'a mut HostState)> {
    let memory = caller.data().memory.ok_or_else(|| wasmtime::Error::msg("guest memory not bound"))?;
    Ok(memory.data_and_store_mut(caller))
}

/// `len` bytes of guest memory at `ptr`, or a trap.
fn slice(memory: &[u8], ptr: u32, len: u32) -> wasmtime::Result<&[u8]> {
    let start = ptr as usize;
    memory
        .get(start..start + len as usize)
        .ok_or_else(|| wasmtime::Error::msg(format!("guest passed an out-of-bounds slice {ptr}+{len}")))
}

/// A guest string, or a trap.
fn string(memory: &[u8], ptr: u32, len: u32) -> wasmtime::Result<String> {
    let bytes = slice(memory, ptr, len)?;
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

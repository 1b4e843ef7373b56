//! Host services: the only imports a guest gets (module `sluice`). Each capability adds its
//! functions to the linker from its own file, with a projection into the part of the store's
//! data it works on — wasmtime's `add_to_linker(linker, |s| &mut s.part)` pattern. A capability
//! cannot reach what it was not given: the log sees the node's name, the clock the clock, the
//! message functions the current [`Call`], state and timers the node's [`NodeHandles`] and the
//! call, actions the granted connector ([`Action`]).
//!
//! [`HostState`] is the store's data, made of those parts; [`add_to_linker`] projects each
//! capability into its own.
//!
//! Guest pointers are checked against the guest's memory on every call: a bad pointer is a trap
//! in that guest, never a host crash.

pub mod action;
pub mod clock;
pub mod emit;
pub mod log;
pub mod msg;
pub mod sandbox;
pub mod series;
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

/// Store data whose guest memory host functions can reach (every capability needs the guest's
/// memory to read its arguments, whatever part of the data it works on).
pub trait GuestData: Send + 'static {
    fn memory(&self) -> Option<Memory>;
}

/// Per-instance data of the store: one part per capability.
pub struct HostState {
    /// The node this instance runs (for logs and errors), its memory and its memory cap.
    pub node: Arc<str>,
    pub memory: Option<Memory>,
    pub limiter: MemoryCap,
    /// The call under way: what it was handed and what it answered.
    pub call: Call,
    /// The node's state: keyed values, windows, timers, and the chain's tables.
    pub state: NodeHandles,
    pub clock: Clock,
    /// The connector the chain granted this node, and what a call to it may spend.
    pub action: Action,
}

/// The call under way: what it was handed, where it stands in event time, and what it
/// answered so far. Reset by the instance at the start of every call.
pub struct Call {
    /// What the current call was handed (a message, a window, a timer): its `id` keys the
    /// call's actions for idempotency.
    pub input: msg::Input,
    /// The number of the current call: the handle of its message (ABI v2).
    pub handle: u32,
    /// Changed copies of the message the current call asked for (`out_copy`), until emitted.
    pub drafts: Vec<Option<sluice_sdk::TbMsg>>,
    /// Outputs of the current call, in emission order.
    pub outputs: Vec<(Relation, Emitted)>,
    /// The text the guest passed to `fail` during the current call.
    pub failure: Option<String>,
    /// A value a host call found (state, a table, folds, an action's answer, an error text),
    /// waiting for `take_value`.
    pub staged: Option<Vec<u8>>,
    /// Reused for message parts written out for the guest (numbers, JSON).
    pub scratch: Vec<u8>,
    /// The watermark stamped on the message being handled.
    pub watermark: i64,
    /// The source partition of the message (or window, or timer) being handled: state the
    /// call writes belongs to it, and moves with it on a rebalance.
    pub partition: crate::state::window::Owner,
    /// Early updates the current call caused, handed to `sluice_on_window` after it.
    pub early: Vec<Closed>,
}

impl Default for Call {
    fn default() -> Self {
        Call {
            input: msg::Input::None,
            handle: 0,
            drafts: Vec::new(),
            outputs: Vec::new(),
            failure: None,
            staged: None,
            scratch: Vec::new(),
            watermark: crate::state::time::NO_WATERMARK,
            partition: crate::state::window::UNOWNED,
            early: Vec::new(),
        }
    }
}

/// An action node's part: its connector, and what a call to it may spend.
pub struct Action {
    /// The connector the chain granted this node (`action_call`), if any.
    pub granted: Option<sluice_connectors::Granted>,
    /// The current call's deadline and the time it spent blocked in host calls.
    pub budget: action::Budget,
    /// The ack handle of the message being handled: a connector that delivers asynchronously
    /// (Kafka) holds a clone until the broker confirms, so the source commits only then.
    pub ack: sluice_core::Ack,
}

impl Default for Action {
    fn default() -> Self {
        Action { granted: None, budget: action::Budget::default(), ack: sluice_core::Ack::none() }
    }
}

impl HostState {
    pub fn new(node: Arc<str>, memory_cap: usize, state: NodeHandles, clock: Clock) -> Self {
        HostState {
            node,
            memory: None,
            limiter: MemoryCap { cap: memory_cap, hit: false },
            call: Call::default(),
            state,
            clock,
            action: Action::default(),
        }
    }

    /// The projection of state, tables, series and timers: the node's state, and the call (its
    /// partition owns what is written; a read is staged in it).
    fn keyed(&mut self) -> (&NodeHandles, &mut Call) {
        (&self.state, &mut self.call)
    }

    /// The projection of windows: the node's name (a window is defined per node), its state
    /// and the call (watermark, partition, early updates, staged errors).
    fn windows(&mut self) -> (&Arc<str>, &NodeHandles, &mut Call) {
        (&self.node, &self.state, &mut self.call)
    }

    /// The projection of actions: the node's name, its connector, and the call (the input's id
    /// keys the request; the answer is staged).
    fn actions(&mut self) -> (&Arc<str>, &mut Action, &mut Call) {
        (&self.node, &mut self.action, &mut self.call)
    }
}

impl GuestData for HostState {
    fn memory(&self) -> Option<Memory> {
        self.memory
    }
}

/// Adds every host service to `linker`, each with its projection.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    log::add_to_linker(linker, |s: &HostState| &s.node)?;
    clock::add_to_linker(linker, |s: &HostState| &s.clock)?;
    emit::add_to_linker(linker, |s: &mut HostState| &mut s.call)?;
    msg::add_to_linker(linker, |s: &mut HostState| &mut s.call)?;
    state::add_to_linker(linker, HostState::keyed)?;
    table::add_to_linker(linker, HostState::keyed)?;
    series::add_to_linker(linker, HostState::keyed)?;
    timer::add_to_linker(linker, HostState::keyed)?;
    window::add_to_linker(linker, HostState::windows)?;
    action::add_to_linker(linker, HostState::actions)?;
    Ok(())
}

/// The guest's memory and the store's data, for a host function's use (it then projects the
/// data into its part).
fn split<'a, T: GuestData>(caller: &'a mut Caller<'_, T>) -> wasmtime::Result<(&'a mut [u8], &'a mut T)> {
    let memory = caller.data().memory().ok_or_else(|| wasmtime::Error::msg("guest memory not bound"))?;
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

//! One running instance of a node's module: its own store (memory, limits, host state), created
//! cheaply from the module's `InstancePre` and reused for every message until it crashes.

use std::time::Duration;

use wasmtime::{Engine, InstancePre, Memory, Store, Trap, TypedFunc};

use super::limits::{INIT_DEADLINE, Limits};
use super::{NodeError, NodeErrorKind, ticks};
use crate::host::action::Budget;
use crate::host::msg::Input;
use crate::host::{Emitted, HostState, Relation};
use bytes::Bytes;
use sluice_sdk::abi::{STATUS_CONFIG_ERROR, STATUS_ERROR, STATUS_OK};
use std::sync::Arc;

pub struct NodeInstance {
    store: Store<HostState>,
    memory: Memory,
    reserve: TypedFunc<u32, u32>,
    on_msg: TypedFunc<u32, u32>,
    on_window: Option<TypedFunc<u32, u32>>,
    on_timer: Option<TypedFunc<u32, u32>>,
    /// The guest's input buffer (see `sluice_reserve`), so most calls need no extra round trip.
    buf_ptr: u32,
    buf_cap: u32,
    deadline: Duration,
    deadline_ticks: u64,
}

impl NodeInstance {
    /// Instantiates and runs `sluice_init` with `config`.
    pub(super) fn new(
        engine: &Engine,
        pre: &InstancePre<HostState>,
        host: HostState,
        config: &[u8],
        limits: Limits,
    ) -> Result<Self, NodeError> {
        let node = host.node.to_string();
        let err = |kind| NodeError { node: node.clone(), kind };
        let mut store = Store::new(engine, host);
        store.limiter(|h| &mut h.limiter);
        store.set_epoch_deadline(ticks(INIT_DEADLINE));
        let instance = pre.instantiate(&mut store).map_err(|e| err(NodeErrorKind::Trap(e.to_string())))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| err(NodeErrorKind::Abi("no exported memory".into())))?;
        store.data_mut().memory = Some(memory);
        let typed = |store: &mut Store<HostState>, name: &str| {
            instance.get_typed_func::<u32, u32>(store, name).map_err(|e| err(NodeErrorKind::Abi(e.to_string())))
        };
        let reserve = typed(&mut store, "sluice_reserve")?;
        let init = typed(&mut store, "sluice_init")?;
        let on_msg = typed(&mut store, "sluice_on_msg")?;
        let on_window = instance.get_typed_func::<u32, u32>(&mut store, "sluice_on_window").ok();
        let on_timer = instance.get_typed_func::<u32, u32>(&mut store, "sluice_on_timer").ok();
        let mut this = NodeInstance {
            store,
            memory,
            reserve,
            on_msg,
            on_window,
            on_timer,
            buf_ptr: 0,
            buf_cap: 0,
            deadline: limits.deadline,
            deadline_ticks: ticks(limits.deadline),
        };
        let status = this.invoke(init, &Bytes::copy_from_slice(config), INIT_DEADLINE)?;
        let failure = this.store.data_mut().call.failure.take().unwrap_or_default();
        match status {
            STATUS_OK => Ok(this),
            STATUS_CONFIG_ERROR => {
                let parsed: serde_json::Value = serde_json::from_str(&failure).unwrap_or_default();
                let field = parsed["field"].as_str().unwrap_or_default().to_string();
                let message = parsed["message"].as_str().map_or(failure.clone(), str::to_string);
                Err(err(NodeErrorKind::Config { field, message }))
            }
            // The rules' convention for a refused value, `config field `F`: why`, names the field.
            STATUS_ERROR => Err(err(match config_field(&failure) {
                Some((field, message)) => NodeErrorKind::Config { field: field.into(), message: message.into() },
                None => NodeErrorKind::Init(failure),
            })),
            other => Err(err(NodeErrorKind::Abi(format!("sluice_init returned unknown status {other}")))),
        }
    }

    /// Prepares the store for a call handed `input`, under `deadline` (of guest time: time
    /// blocked in host calls is given back, see `host::action`).
    fn begin(&mut self, input: Input, deadline: Duration) {
        self.store.set_epoch_deadline(if deadline == self.deadline { self.deadline_ticks } else { ticks(deadline) });
        let host = self.store.data_mut();
        host.call.outputs.clear();
        host.call.drafts.clear();
        host.call.failure = None;
        host.limiter.hit = false;
        host.call.input = input;
        host.call.handle = host.call.handle.wrapping_add(1);
        // The clock is read only for a node that may block in an action (most never do).
        if host.action.granted.is_some() {
            host.action.budget = Budget::start(deadline);
        }
    }

    /// Copies `input` into the guest and calls `func(len)` under `deadline`.
    fn invoke(&mut self, func: TypedFunc<u32, u32>, input: &Bytes, deadline: Duration) -> Result<u32, NodeError> {
        let node = self.store.data().node.clone();
        let len = u32::try_from(input.len())
            .map_err(|_| NodeError { node: node.to_string(), kind: NodeErrorKind::Guest("input over 4 GiB".into()) })?;
        self.begin(Input::Json(input.clone()), deadline);
        let result = (|| {
            if len > self.buf_cap {
                self.buf_ptr = self.reserve.call(&mut self.store, len)?;
                self.buf_cap = len;
            }
            self.memory.write(&mut self.store, self.buf_ptr as usize, input)?;
            func.call(&mut self.store, len)
        })();
        self.store.data_mut().call.input = Input::None;
        result.map_err(|e| NodeError { node: node.to_string(), kind: self.classify(e, deadline) })
    }

    fn classify(&mut self, error: wasmtime::Error, deadline: Duration) -> NodeErrorKind {
        let host = self.store.data_mut();
        if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return NodeErrorKind::Deadline(deadline);
        }
        if std::mem::take(&mut host.limiter.hit) {
            return NodeErrorKind::OutOfMemory { cap_mb: host.limiter.cap >> 20 };
        }
        // A trap's code, or the root cause of a host function's error (an out-of-bounds slice…),
        // not the wasm backtrace around it.
        let what = match error.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => error.root_cause().to_string(),
        };
        match host.call.failure.take() {
            Some(said) => NodeErrorKind::Trap(format!("{what}; {said}")),
            None => NodeErrorKind::Trap(what),
        }
    }

    /// Runs one message (ABI v2: the guest reads it through its handle). On success `outputs` holds what the guest emitted, in order; a guest
    /// `Err` is [`NodeErrorKind::Guest`]; a crash leaves this instance unusable (the caller
    /// replaces it).
    pub fn call(
        &mut self,
        msg: &Arc<sluice_core::message::Message>,
        outputs: &mut Vec<(Relation, Emitted)>,
    ) -> Result<(), NodeError> {
        self.begin(Input::Msg(msg.clone()), self.deadline);
        let handle = self.store.data().call.handle;
        let result = self.on_msg.call(&mut self.store, handle);
        self.store.data_mut().call.input = Input::None;
        let status = result.map_err(|e| {
            let node = self.store.data().node.to_string();
            NodeError { node, kind: self.classify(e, self.deadline) }
        })?;
        self.finish(status, outputs)
    }

    /// Sets the ack handle of the message the next call handles (`Ack::none()` after it: an
    /// instance must not keep a message pending).
    /// Only a node with a connector uses it (an action holds the message's ack while it
    /// waits): for any other the handle is not cloned, which saves a contended count a call.
    pub fn set_ack(&mut self, ack: &sluice_core::Ack) {
        let host = self.store.data_mut();
        if host.action.granted.is_some() {
            host.action.ack = ack.clone();
        }
    }

    /// Sets the watermark the next calls see (the one stamped on the message being handled).
    pub fn set_watermark(&mut self, watermark: i64) {
        self.store.data_mut().call.watermark = watermark;
    }

    /// Sets the source partition the next calls' state writes belong to.
    pub fn set_partition(&mut self, partition: crate::state::window::Owner) {
        self.store.data_mut().call.partition = partition;
    }

    /// Early updates the last call caused.
    pub fn take_early(&mut self) -> Vec<crate::state::window::Closed> {
        std::mem::take(&mut self.store.data_mut().call.early)
    }

    /// Hands a closed window (JSON of a `ClosedWindow`) to the guest.
    pub fn call_window(&mut self, window: &Bytes, outputs: &mut Vec<(Relation, Emitted)>) -> Result<(), NodeError> {
        let Some(on_window) = self.on_window.clone() else {
            let node = self.store.data().node.to_string();
            return Err(NodeError { node, kind: NodeErrorKind::Abi("module has no `sluice_on_window` export".into()) });
        };
        let status = self.invoke(on_window, window, self.deadline)?;
        self.finish(status, outputs)
    }

    /// Hands a due timer (JSON of a `Timer`) to the guest.
    pub fn call_timer(&mut self, timer: &Bytes, outputs: &mut Vec<(Relation, Emitted)>) -> Result<(), NodeError> {
        let Some(on_timer) = self.on_timer.clone() else {
            let node = self.store.data().node.to_string();
            return Err(NodeError { node, kind: NodeErrorKind::Abi("module has no `sluice_on_timer` export".into()) });
        };
        let status = self.invoke(on_timer, timer, self.deadline)?;
        self.finish(status, outputs)
    }

    fn finish(&mut self, status: u32, outputs: &mut Vec<(Relation, Emitted)>) -> Result<(), NodeError> {
        let host = self.store.data_mut();
        match status {
            STATUS_OK => {
                outputs.clear();
                std::mem::swap(outputs, &mut host.call.outputs);
                Ok(())
            }
            STATUS_ERROR => Err(NodeError {
                node: host.node.to_string(),
                kind: NodeErrorKind::Guest(host.call.failure.take().unwrap_or_else(|| "unspecified error".into())),
            }),
            other => Err(NodeError {
                node: host.node.to_string(),
                kind: NodeErrorKind::Abi(format!("sluice_on_msg returned unknown status {other}")),
            }),
        }
    }
}

/// `config field `F`: why` — how rule nodes word an `init` error about one field of their config
/// (the SDK's `bail!`) — split into the field and the reason.
fn config_field(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("config field `")?;
    let (field, message) = rest.split_once("`: ")?;
    (!field.is_empty() && !field.contains('`')).then_some((field, message))
}

#[cfg(test)]
mod tests {
    use super::config_field;

    #[test]
    fn an_init_error_about_a_field_names_it() {
        assert_eq!(config_field("config field `script`: SyntaxError: x"), Some(("script", "SyntaxError: x")));
        assert_eq!(config_field("config field `data.v.linear`: bad"), Some(("data.v.linear", "bad")));
        assert_eq!(config_field("cannot start the JavaScript engine"), None);
        assert_eq!(config_field("config field ``: x"), None);
    }
}

//! The wasm side of the ABI (see `ABI.md`): raw imports and the exports the macros emit.
//!
//! This file and the code the SDK's macros emit are the only places in a guest with `unsafe`.
//! Nothing here is for rule authors; it is public only so macro output can reach it.

/// Version of the contract in `ABI.md`. The engine refuses a module reporting another one.
pub const ABI_VERSION: u32 = 1;

/// `sluice_init` / `sluice_on_msg` status codes.
pub const STATUS_OK: u32 = 0;
/// The node returned an error; its text was passed to `fail`.
pub const STATUS_ERROR: u32 = 1;
/// The config did not parse; `fail` got `{"field": …, "message": …}` as JSON.
pub const STATUS_CONFIG_ERROR: u32 = 2;

/// Talc instead of dlmalloc: every message allocates a dozen small strings and maps (id,
/// originator, metadata, data), and this allocator makes them several times cheaper in wasm.
#[cfg(all(feature = "talc", target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// Reads the message the host hands to `sluice_on_msg` (JSON of a [`crate::Msg`]). Plain
/// functions, compiled natively too, so that they can be tested and fuzzed off wasm.
pub fn decode_msg(input: &[u8]) -> Result<crate::Msg, String> {
    serde_json::from_slice(input).map_err(|err| format!("message does not parse: {err}"))
}

/// Reads the due timer the host hands to `sluice_on_timer`.
pub fn decode_timer(input: &[u8]) -> Result<crate::windows::Timer, String> {
    serde_json::from_slice(input).map_err(|err| format!("timer does not parse: {err}"))
}

/// Reads the closed window the host hands to `sluice_on_window`.
pub fn decode_window(input: &[u8]) -> Result<crate::ClosedWindow, String> {
    serde_json::from_slice(input).map_err(|err| format!("window does not parse: {err}"))
}

#[cfg(target_arch = "wasm32")]
pub(crate) mod imports {
    #[link(wasm_import_module = "sluice")]
    unsafe extern "C" {
        pub fn log(level: u32, ptr: *const u8, len: usize);
        pub fn now_ms() -> i64;
        pub fn emit(rel_ptr: *const u8, rel_len: usize, msg_ptr: *const u8, msg_len: usize);
        pub fn forward(rel_ptr: *const u8, rel_len: usize);
        pub fn fail(ptr: *const u8, len: usize);
        pub fn state_get(key_ptr: *const u8, key_len: usize) -> i64;
        pub fn take_value(dst: *mut u8);
        pub fn state_put(key_ptr: *const u8, key_len: usize, val_ptr: *const u8, val_len: usize);
        pub fn state_delete(key_ptr: *const u8, key_len: usize);
        pub fn watermark() -> i64;
        pub fn window_define(spec_ptr: *const u8, spec_len: usize) -> i32;
        pub fn window_add(handle: i32, key_ptr: *const u8, key_len: usize, ts: i64, value: f64) -> i32;
        pub fn window_item(
            handle: i32,
            key_ptr: *const u8,
            key_len: usize,
            ts: i64,
            side: i32,
            item_ptr: *const u8,
            item_len: usize,
        ) -> i32;
        pub fn window_fold_get(handle: i32, key_ptr: *const u8, key_len: usize, ts: i64) -> i64;
        pub fn window_fold_put(
            handle: i32,
            key_ptr: *const u8,
            key_len: usize,
            ts: i64,
            vals_ptr: *const u8,
            vals_len: usize,
        ) -> i32;
        pub fn table_get(name_ptr: *const u8, name_len: usize, key_ptr: *const u8, key_len: usize) -> i64;
        pub fn table_put(
            name_ptr: *const u8,
            name_len: usize,
            key_ptr: *const u8,
            key_len: usize,
            val_ptr: *const u8,
            val_len: usize,
        );
        pub fn table_delete(name_ptr: *const u8, name_len: usize, key_ptr: *const u8, key_len: usize);
        pub fn timer_set(key_ptr: *const u8, key_len: usize, at_ms: i64);
        pub fn timer_cancel(key_ptr: *const u8, key_len: usize);
        pub fn action_call(req_ptr: *const u8, req_len: usize) -> i64;
    }

    /// Copies the value the last call staged (its length known from that call's result).
    pub fn take_staged(len: usize) -> Vec<u8> {
        let mut value = vec![0u8; len];
        // SAFETY: the host writes exactly `len` bytes, the length it announced, into this buffer.
        unsafe { take_value(value.as_mut_ptr()) };
        value
    }
}

#[cfg(target_arch = "wasm32")]
pub use glue::*;

#[cfg(target_arch = "wasm32")]
mod glue {
    use std::cell::RefCell;

    use super::{STATUS_CONFIG_ERROR, STATUS_ERROR, STATUS_OK, imports};
    use crate::{Msg, Node, Output, Outputs};

    /// A cell usable from a `static` in a single-threaded wasm module.
    pub struct GuestCell<T>(RefCell<T>);

    // SAFETY: wasm32-unknown-unknown without the `atomics` feature has exactly one thread, so a
    // value in a static can never be reached from two threads.
    unsafe impl<T> Sync for GuestCell<T> {}

    impl<T> GuestCell<T> {
        pub const fn new(value: T) -> Self {
            GuestCell(RefCell::new(value))
        }
    }

    /// Where the host writes configs and messages; grown on request by `sluice_reserve`.
    static INPUT: GuestCell<Vec<u8>> = GuestCell::new(Vec::new());
    /// Reused for serializing outputs, so a steady stream allocates nothing per message.
    static OUTPUT: GuestCell<Vec<u8>> = GuestCell::new(Vec::new());

    pub(crate) fn fail(text: &str) {
        // SAFETY: pointer and length describe a live, initialised byte slice.
        unsafe { imports::fail(text.as_ptr(), text.len()) }
    }

    /// `sluice_reserve(len) -> ptr`: makes the input buffer at least `len` bytes long.
    pub fn reserve(len: u32) -> u32 {
        let mut input = INPUT.0.borrow_mut();
        if input.len() < len as usize {
            input.resize(len as usize, 0);
        }
        input.as_mut_ptr() as u32
    }

    fn install_panic_hook() {
        std::panic::set_hook(Box::new(|info| fail(&format!("guest panicked: {info}"))));
    }

    fn send_outputs(out: &mut Outputs, parent_id: &str) -> u32 {
        let mut buf = OUTPUT.0.borrow_mut();
        for (n, (relation, output)) in out.drain().enumerate() {
            match output {
                // SAFETY: pointer and length describe a live string.
                Output::Forward => unsafe { imports::forward(relation.as_ptr(), relation.len()) },
                Output::Msg(mut msg) => {
                    if msg.id.is_empty() {
                        msg.id = crate::derived_id(parent_id, n);
                    }
                    buf.clear();
                    if let Err(err) = serde_json::to_writer(&mut *buf, &msg) {
                        fail(&format!("output does not serialize: {err}"));
                        return STATUS_ERROR;
                    }
                    // SAFETY: both pointer/length pairs describe live byte slices.
                    unsafe { imports::emit(relation.as_ptr(), relation.len(), buf.as_ptr(), buf.len()) }
                }
            }
        }
        STATUS_OK
    }

    /// The running node of this module.
    pub struct Slot<N>(GuestCell<Option<N>>);

    impl<N: Node> Default for Slot<N> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<N: Node> Slot<N> {
        pub const fn new() -> Self {
            Slot(GuestCell::new(None))
        }

        /// `sluice_init(len)`: config JSON is in the input buffer.
        pub fn init(&self, len: u32) -> u32 {
            install_panic_hook();
            let input = INPUT.0.borrow();
            let config = match crate::config::parse::<N::Config>(&input[..len as usize]) {
                Ok(config) => config,
                Err(err) => {
                    let json = serde_json::json!({"field": err.field, "message": err.message});
                    fail(&json.to_string());
                    return STATUS_CONFIG_ERROR;
                }
            };
            drop(input);
            match N::init(config) {
                Ok(node) => {
                    *self.0.0.borrow_mut() = Some(node);
                    STATUS_OK
                }
                Err(err) => {
                    fail(err.message());
                    STATUS_ERROR
                }
            }
        }

        /// `sluice_on_msg(len)`: message JSON is in the input buffer.
        pub fn on_msg(&self, len: u32) -> u32 {
            let msg: Msg = {
                let input = INPUT.0.borrow();
                match super::decode_msg(&input[..len as usize]) {
                    Ok(msg) => msg,
                    Err(err) => {
                        fail(&err);
                        return STATUS_ERROR;
                    }
                }
            };
            let parent_id = msg.id.clone();
            let mut slot = self.0.0.borrow_mut();
            let Some(node) = slot.as_mut() else {
                fail("node called before sluice_init succeeded");
                return STATUS_ERROR;
            };
            let mut out = Outputs::new();
            if let Err(err) = node.on_msg(msg, &mut out) {
                fail(err.message());
                return STATUS_ERROR;
            }
            drop(slot);
            send_outputs(&mut out, &parent_id)
        }

        /// `sluice_on_timer(len)`: a due timer (JSON) is in the input buffer.
        pub fn on_timer(&self, len: u32) -> u32 {
            let timer: crate::windows::Timer = {
                let input = INPUT.0.borrow();
                match super::decode_timer(&input[..len as usize]) {
                    Ok(timer) => timer,
                    Err(err) => {
                        fail(&err);
                        return STATUS_ERROR;
                    }
                }
            };
            let parent_id = timer.id.clone();
            let mut slot = self.0.0.borrow_mut();
            let Some(node) = slot.as_mut() else {
                fail("node called before sluice_init succeeded");
                return STATUS_ERROR;
            };
            let mut out = Outputs::new();
            if let Err(err) = node.on_timer(timer, &mut out) {
                fail(err.message());
                return STATUS_ERROR;
            }
            drop(slot);
            if out.has_forward() {
                fail("a timer has no incoming message to forward: emit a new message");
                return STATUS_ERROR;
            }
            send_outputs(&mut out, &parent_id)
        }

        /// `sluice_on_window(len)`: a closed window (JSON) is in the input buffer.
        pub fn on_window(&self, len: u32) -> u32 {
            let closed: crate::ClosedWindow = {
                let input = INPUT.0.borrow();
                match super::decode_window(&input[..len as usize]) {
                    Ok(closed) => closed,
                    Err(err) => {
                        fail(&err);
                        return STATUS_ERROR;
                    }
                }
            };
            let parent_id = closed.id.clone();
            let mut slot = self.0.0.borrow_mut();
            let Some(node) = slot.as_mut() else {
                fail("node called before sluice_init succeeded");
                return STATUS_ERROR;
            };
            let mut out = Outputs::new();
            if let Err(err) = node.on_window(closed, &mut out) {
                fail(err.message());
                return STATUS_ERROR;
            }
            drop(slot);
            if out.has_forward() {
                fail("a closed window has no incoming message to forward: emit a new message");
                return STATUS_ERROR;
            }
            send_outputs(&mut out, &parent_id)
        }
    }
}

/// Exports a [`Node`](crate::Node) type as this module's node. Emitted by `#[node]`,
/// `#[filter]` and `#[transform]`; a module holds exactly one node.
#[macro_export]
#[doc(hidden)]
macro_rules! export_node {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static SLOT: $crate::abi::Slot<$ty> = $crate::abi::Slot::new();

            #[unsafe(no_mangle)]
            pub extern "C" fn sluice_abi_version() -> u32 {
                $crate::abi::ABI_VERSION
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn sluice_reserve(len: u32) -> u32 {
                $crate::abi::reserve(len)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn sluice_init(len: u32) -> u32 {
                SLOT.init(len)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn sluice_on_msg(len: u32) -> u32 {
                SLOT.on_msg(len)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn sluice_on_window(len: u32) -> u32 {
                SLOT.on_window(len)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn sluice_on_timer(len: u32) -> u32 {
                SLOT.on_timer(len)
            }
        };
    };
}

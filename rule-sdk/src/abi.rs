//! The wasm side of the ABI (see `ABI.md`): raw imports and the exports the macros emit.
//!
//! This file and the code the SDK's macros emit are the only places in a guest with `unsafe`.
//! Nothing here is for rule authors; it is public only so macro output can reach it.

/// Version of the contract in `ABI.md`. The engine refuses a module reporting another one.
pub const ABI_VERSION: u32 = 2;

/// `sluice_init` / `sluice_on_msg` status codes.
pub const STATUS_OK: u32 = 0;
/// The node returned an error; its text was passed to `fail`.
pub const STATUS_ERROR: u32 = 1;
/// The config did not parse; `fail` got `{"field": …, "message": …}` as JSON.
pub const STATUS_CONFIG_ERROR: u32 = 2;

/// `msg_has`: the part is absent.
pub const HAS_NONE: i32 = 0;
/// `msg_has`: the part is present and JSON `null`.
pub const HAS_NULL: i32 = 1;
/// `msg_has`: the part is present with any other value.
pub const HAS_VALUE: i32 = 2;

/// Talc instead of dlmalloc: what a node allocates (the strings it reads, the JSON it builds) is
/// several times cheaper in wasm with this allocator.
#[cfg(all(feature = "talc", target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// Reads a message as JSON (a [`crate::Msg`]: what `emit_json` carries, and what nodes keep in
/// state). Plain functions, compiled natively too, so that they can be tested and fuzzed off wasm.
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
        pub fn msg_str(
            handle: u32,
            field: u32,
            key_ptr: *const u8,
            key_len: usize,
            dst_ptr: *mut u8,
            dst_cap: usize,
        ) -> i64;
        pub fn msg_number(handle: u32, field: u32, key_ptr: *const u8, key_len: usize) -> f64;
        pub fn msg_has(handle: u32, field: u32, key_ptr: *const u8, key_len: usize) -> i32;
        pub fn msg_ts(handle: u32) -> i64;
        pub fn forward(handle: u32, rel_ptr: *const u8, rel_len: usize);
        pub fn out_copy(handle: u32) -> u32;
        pub fn out_set(draft: u32, field: u32, key_ptr: *const u8, key_len: usize, val_ptr: *const u8, val_len: usize);
        pub fn out_set_ts(draft: u32, ts: i64);
        pub fn out_remove(draft: u32, field: u32, key_ptr: *const u8, key_len: usize);
        pub fn emit(rel_ptr: *const u8, rel_len: usize, draft: u32);
        pub fn emit_json(rel_ptr: *const u8, rel_len: usize, msg_ptr: *const u8, msg_len: usize);
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
        pub fn series_append(
            name_ptr: *const u8,
            name_len: usize,
            entity_ptr: *const u8,
            entity_len: usize,
            points_ptr: *const u8,
            points_len: usize,
        ) -> i32;
        pub fn series_query(
            name_ptr: *const u8,
            name_len: usize,
            entity_ptr: *const u8,
            entity_len: usize,
            query_ptr: *const u8,
            query_len: usize,
        ) -> i64;
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

/// `msg_str`: a part of the host's message `handle` as text, `None` when absent. The common case
/// (under 128 bytes) reads into the stack and allocates only the returned string.
#[cfg(target_arch = "wasm32")]
pub(crate) fn msg_str(handle: u32, field: u32, key: &str) -> Option<String> {
    let mut small = [0u8; 128];
    // SAFETY: the key is a live string; the host writes at most `dst_cap` bytes into `small`.
    let n = unsafe { imports::msg_str(handle, field, key.as_ptr(), key.len(), small.as_mut_ptr(), small.len()) };
    let n = usize::try_from(n).ok()?;
    if n <= small.len() {
        // The host writes UTF-8 text: checked, not converted (the lossy path is for a broken host).
        return Some(match std::str::from_utf8(&small[..n]) {
            Ok(text) => text.to_owned(),
            Err(_) => String::from_utf8_lossy(&small[..n]).into_owned(),
        });
    }
    let mut big = vec![0u8; n];
    // SAFETY: as above, with a buffer of the announced length.
    let again = unsafe { imports::msg_str(handle, field, key.as_ptr(), key.len(), big.as_mut_ptr(), n) };
    big.truncate(usize::try_from(again).ok()?.min(n));
    Some(String::from_utf8(big).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// [`msg_str`] into `arena`: the common case (under 128 bytes) reads into the stack and copies
/// into the arena, with no allocation of its own.
#[cfg(target_arch = "wasm32")]
pub(crate) fn msg_str_in<'a>(handle: u32, field: u32, key: &str, arena: &'a bumpalo::Bump) -> Option<&'a str> {
    let mut small = [0u8; 128];
    // SAFETY: the key is a live string; the host writes at most `dst_cap` bytes into `small`.
    let n = unsafe { imports::msg_str(handle, field, key.as_ptr(), key.len(), small.as_mut_ptr(), small.len()) };
    let n = usize::try_from(n).ok()?;
    if n > small.len() {
        let big = arena.alloc_slice_fill_copy(n, 0u8);
        // SAFETY: as above, with a buffer of the announced length.
        let again = unsafe { imports::msg_str(handle, field, key.as_ptr(), key.len(), big.as_mut_ptr(), n) };
        let big: &'a [u8] = &big[..usize::try_from(again).ok()?.min(n)];
        // The text stays where the host wrote it, in the arena already.
        return Some(match std::str::from_utf8(big) {
            Ok(text) => text,
            Err(_) => arena.alloc_str(&String::from_utf8_lossy(big)),
        });
    }
    let bytes = &small[..n];
    // The host writes UTF-8 text: checked, not converted (the lossy path is for a broken host).
    Some(match std::str::from_utf8(bytes) {
        Ok(text) => arena.alloc_str(text),
        Err(_) => arena.alloc_str(&String::from_utf8_lossy(bytes)),
    })
}

/// `msg_number`: a part read as a number (numeric strings count), `None` when absent or not one.
#[cfg(target_arch = "wasm32")]
pub(crate) fn msg_number(handle: u32, field: u32, key: &str) -> Option<f64> {
    // SAFETY: the key is a live string.
    let n = unsafe { imports::msg_number(handle, field, key.as_ptr(), key.len()) };
    (!n.is_nan()).then_some(n)
}

/// `msg_has`: [`HAS_NONE`], [`HAS_NULL`] or [`HAS_VALUE`].
#[cfg(target_arch = "wasm32")]
pub(crate) fn msg_has(handle: u32, field: u32, key: &str) -> i32 {
    // SAFETY: the key is a live string.
    unsafe { imports::msg_has(handle, field, key.as_ptr(), key.len()) }
}

/// `msg_ts`: the message's event time.
#[cfg(target_arch = "wasm32")]
pub(crate) fn msg_ts(handle: u32) -> i64 {
    // SAFETY: no pointers.
    unsafe { imports::msg_ts(handle) }
}

// Natively a view never has a handle (it owns its parts), so these are never reached.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn msg_str(_: u32, _: u32, _: &str) -> Option<String> {
    None
}
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn msg_str_in<'a>(_: u32, _: u32, _: &str, _: &'a bumpalo::Bump) -> Option<&'a str> {
    None
}
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn msg_number(_: u32, _: u32, _: &str) -> Option<f64> {
    None
}
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn msg_has(_: u32, _: u32, _: &str) -> i32 {
    HAS_NONE
}
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn msg_ts(_: u32) -> i64 {
    0
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

    /// The config's JSON Schema, kept for the host to read.
    static SCHEMA: GuestCell<Vec<u8>> = GuestCell::new(Vec::new());

    /// `sluice_config_schema() -> i64`: the JSON Schema of `C`, as `ptr << 32 | len`.
    pub fn config_schema<C: schemars::JsonSchema>() -> u64 {
        let mut schema = SCHEMA.0.borrow_mut();
        *schema = crate::manifest::config_schema::<C>().into_bytes();
        ((schema.as_ptr() as u64) << 32) | schema.len() as u64
    }

    fn install_panic_hook() {
        std::panic::set_hook(Box::new(|info| fail(&format!("guest panicked: {info}"))));
    }

    fn set(draft: u32, field: u32, value: &[u8]) {
        // SAFETY: pointer and length describe a live byte slice; the key is empty.
        unsafe { imports::out_set(draft, field, "".as_ptr(), 0, value.as_ptr(), value.len()) }
    }

    /// Hands the outputs to the host. A changed incoming message (`handle`) goes back as a copy
    /// of the host's message with the changed parts set; any other message as JSON. The host
    /// names a message left without an id (`derived_id`).
    fn send_outputs(out: &mut Outputs, handle: Option<u32>) -> u32 {
        use crate::msg::{Edit, changed, field};
        let mut buf = OUTPUT.0.borrow_mut();
        for (relation, output) in out.drain() {
            let rel = (relation.as_ptr(), relation.len());
            match output {
                Output::Forward => match handle {
                    // SAFETY: pointer and length describe a live string.
                    Some(h) => unsafe { imports::forward(h, rel.0, rel.1) },
                    None => {
                        fail("there is no incoming message to forward: emit a new message");
                        return STATUS_ERROR;
                    }
                },
                Output::Msg(msg) => match msg.changes() {
                    (Some(src), parts) if Some(src) == handle => {
                        // SAFETY: `src` is the handle of this call's message.
                        let draft = unsafe { imports::out_copy(src) };
                        let json = |buf: &mut Vec<u8>, value: &dyn erased::Json| {
                            buf.clear();
                            value.write(buf)
                        };
                        if parts & changed::ID != 0 {
                            set(draft, field::ID, msg.id().as_bytes());
                        }
                        if parts & changed::TYPE != 0 {
                            set(draft, field::TYPE, msg.msg_type().as_bytes());
                        }
                        if parts & changed::TS != 0 {
                            // SAFETY: no pointers.
                            unsafe { imports::out_set_ts(draft, msg.ts()) };
                        }
                        // Each part is read only when it changed: reading one that did not would load
                        // it from the host, whole, for nothing.
                        for (bit, code) in [
                            (changed::ORIGINATOR, field::ORIGINATOR),
                            (changed::METADATA, field::METADATA),
                            (changed::DATA, field::DATA),
                        ] {
                            if parts & bit != 0 {
                                let written = match code {
                                    field::ORIGINATOR => json(&mut buf, msg.originator()),
                                    field::METADATA => json(&mut buf, msg.metadata()),
                                    _ => json(&mut buf, msg.data()),
                                };
                                if let Err(err) = written {
                                    fail(&format!("output does not serialize: {err}"));
                                    return STATUS_ERROR;
                                }
                                set(draft, code, &buf);
                            }
                        }
                        // Then the keys changed one by one, in order.
                        for edit in msg.edits() {
                            let (code, key) = match edit {
                                Edit::Meta(key, _) => (field::META, key),
                                Edit::Field(key, _) => (field::DATA_JSON, key),
                            };
                            let value: Option<&[u8]> = match edit {
                                Edit::Meta(_, value) => value.as_ref().map(String::as_bytes),
                                Edit::Field(_, None) => None,
                                Edit::Field(_, Some(value)) => {
                                    if let Err(err) = json(&mut buf, value) {
                                        fail(&format!("output does not serialize: {err}"));
                                        return STATUS_ERROR;
                                    }
                                    Some(&buf[..])
                                }
                            };
                            // SAFETY: pointers and lengths describe live byte slices.
                            unsafe {
                                match value {
                                    Some(v) => {
                                        imports::out_set(draft, code, key.as_ptr(), key.len(), v.as_ptr(), v.len())
                                    }
                                    None => imports::out_remove(draft, code, key.as_ptr(), key.len()),
                                }
                            }
                        }
                        // SAFETY: pointer and length describe a live string.
                        unsafe { imports::emit(rel.0, rel.1, draft) }
                    }
                    _ => {
                        buf.clear();
                        if let Err(err) = serde_json::to_writer(&mut *buf, &msg) {
                            fail(&format!("output does not serialize: {err}"));
                            return STATUS_ERROR;
                        }
                        // SAFETY: both pointer/length pairs describe live byte slices.
                        unsafe { imports::emit_json(rel.0, rel.1, buf.as_ptr(), buf.len()) }
                    }
                },
            }
        }
        STATUS_OK
    }

    /// Serializing the three JSON parts through one loop.
    mod erased {
        pub trait Json {
            fn write(&self, buf: &mut Vec<u8>) -> serde_json::Result<()>;
        }
        impl<T: serde::Serialize> Json for T {
            fn write(&self, buf: &mut Vec<u8>) -> serde_json::Result<()> {
                serde_json::to_writer(buf, self)
            }
        }
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
                // A refused field is said as a config error, so that the load error names it.
                Err(err) => match err.field() {
                    Some(field) => {
                        fail(&serde_json::json!({"field": field, "message": err.reason()}).to_string());
                        STATUS_CONFIG_ERROR
                    }
                    None => {
                        fail(err.message());
                        STATUS_ERROR
                    }
                },
            }
        }

        /// `sluice_on_msg(handle)`: the host's message `handle`, read through the view.
        pub fn on_msg(&self, handle: u32) -> u32 {
            let msg = Msg::from_handle(handle);
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
            send_outputs(&mut out, Some(handle))
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
            send_outputs(&mut out, None)
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
            send_outputs(&mut out, None)
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
            pub extern "C" fn sluice_on_msg(handle: u32) -> u32 {
                SLOT.on_msg(handle)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn sluice_on_window(len: u32) -> u32 {
                SLOT.on_window(len)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn sluice_on_timer(len: u32) -> u32 {
                SLOT.on_timer(len)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn sluice_config_schema() -> u64 {
                $crate::abi::config_schema::<<$ty as $crate::Node>::Config>()
            }
        };
    };
}

//! The wind-station filter against a core-module ABI v2: the host keeps the message, the guest
//! gets a handle and reads the fields it uses through host calls, then forwards on a relation.
//!
//! What an SDK would generate; kept raw here so the bench measures the ABI, not a wrapper. Strings
//! come back into guest-owned buffers (a stack buffer first; a bigger heap buffer only when the
//! host reports a longer value), so a call allocates nothing.
#![no_std]

#[link(wasm_import_module = "sluice")]
unsafe extern "C" {
    /// Writes up to `cap` bytes of the type at `dst`; returns its full length.
    fn msg_type(handle: i32, dst: *mut u8, cap: i32) -> i32;
    /// Writes up to `cap` bytes of metadata `key` at `dst`; returns its full length, or -1.
    fn msg_meta(handle: i32, key: *const u8, key_len: i32, dst: *mut u8, cap: i32) -> i32;
    /// The field at a dotted path as a number (a numeric string counts); NaN when absent.
    fn msg_number(handle: i32, path: *const u8, path_len: i32) -> f64;
    /// The message's timestamp.
    fn msg_ts(handle: i32) -> i64;
    /// Hands the message on, unchanged, on `rel`.
    fn forward(handle: i32, rel: *const u8, rel_len: i32);
}

const TRUE: &str = "True";
const FALSE: &str = "False";

fn fwd(handle: i32, relation: &str) {
    // SAFETY: `relation` is a live string; the host copies or matches it before returning.
    unsafe { forward(handle, relation.as_ptr(), relation.len() as i32) }
}

/// `msg_type(handle) == expected`, reading into a stack buffer. A type longer than the buffer
/// cannot equal an `expected` that fits in it, so no second call is needed here.
fn type_is(handle: i32, expected: &str) -> bool {
    let mut buf = [0u8; 64];
    // SAFETY: `buf` is writable for `buf.len()` bytes; the host writes at most that many.
    let len = unsafe { msg_type(handle, buf.as_mut_ptr(), buf.len() as i32) };
    len as usize == expected.len() && buf.get(..len as usize) == Some(expected.as_bytes())
}

/// `msg_meta(handle, key) == Some(expected)`, as [`type_is`].
fn meta_is(handle: i32, key: &str, expected: &str) -> bool {
    let mut buf = [0u8; 64];
    // SAFETY: `key` is live for the call; `buf` is writable for `buf.len()` bytes.
    let len = unsafe { msg_meta(handle, key.as_ptr(), key.len() as i32, buf.as_mut_ptr(), buf.len() as i32) };
    len >= 0 && len as usize == expected.len() && buf.get(..len as usize) == Some(expected.as_bytes())
}

/// The rule: a weather station's telemetry with a timestamp and a numeric wind speed → `True`.
#[unsafe(no_mangle)]
pub extern "C" fn on_msg(handle: i32) -> i32 {
    let path = "data.windSpeed";
    // SAFETY: plain values in; `path` is live for the call.
    let (ts, wind) = unsafe { (msg_ts(handle), msg_number(handle, path.as_ptr(), path.len() as i32)) };
    let keep = type_is(handle, "POST_TELEMETRY_REQUEST")
        && ts > 0
        && meta_is(handle, "deviceType", "WeatherStation")
        && !wind.is_nan();
    fwd(handle, if keep { TRUE } else { FALSE });
    0
}

/// One string-free field read (`ts`) and nothing else: what a handle-taking import costs.
#[unsafe(no_mangle)]
pub extern "C" fn on_msg_ts(handle: i32) -> i32 {
    // SAFETY: a plain value in and out.
    let ts = unsafe { msg_ts(handle) };
    (ts < 0) as i32
}

/// The bare crossing with one output: forwards on `True` without reading a field.
#[unsafe(no_mangle)]
pub extern "C" fn on_msg_forward(handle: i32) -> i32 {
    fwd(handle, TRUE);
    0
}

/// The barest crossing: returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn on_msg_empty(_handle: i32) -> i32 {
    0
}

/// No message, no result: the cost of entering the module at all.
#[unsafe(no_mangle)]
pub extern "C" fn ping() {}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

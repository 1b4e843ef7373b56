//! `action_call(req, len) -> i64`: hands the request (JSON) to the connector the chain granted
//! this node. A result `n >= 0` means the answer (JSON, `n` bytes) is staged for `take_value`;
//! `n < 0` means it failed and the reason (`-n - 1` bytes of text) is staged instead.
//!
//! # Blocked time is not guest time
//!
//! A node's deadline (`limits.deadlineMs`, 200 ms by default) bounds what the *guest* computes:
//! it is what stops a runaway loop. A call to a connector blocks on a server — for as long as
//! the connector's `timeoutMs`, retries and backoff allow — and that wait is the connector's to
//! govern, not the sandbox's. So the time spent here is added to the call's [`Budget`] as
//! blocked time and the epoch deadline is moved out by exactly that much: a guest that waited
//! 3 s for a slow server still has its whole 200 ms of computing left, and one that loops
//! after the answer is still stopped 200 ms of computing later.
//!
//! # Idempotency
//!
//! Each request carries a key: `{message id}:{node}:{fingerprint of the request}`. A retry of
//! the same request has the same key, and so does the same request made again for the same
//! message after a crash and a replay, while two different requests of one message (a login,
//! then the post) have different keys. Connectors pass it on (HTTP `Idempotency-Key`, Kafka
//! header `idempotency-key`).

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::{AsContextMut, Caller, Linker};

use std::sync::Arc;

use super::{Action, Call, GuestData, slice, split};

/// How much of a call's deadline the guest has used: wall time since the call started, less
/// the time it spent blocked in host calls.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub started: Instant,
    pub deadline: Duration,
    pub blocked: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { started: Instant::now(), deadline: Duration::MAX, blocked: Duration::ZERO }
    }
}

impl Budget {
    /// A call with `deadline` starts now.
    pub fn start(deadline: Duration) -> Self {
        Budget { started: Instant::now(), deadline, blocked: Duration::ZERO }
    }

    /// The guest's time left.
    pub fn remaining(&self) -> Duration {
        let used = self.started.elapsed().saturating_sub(self.blocked);
        self.deadline.saturating_sub(used)
    }
}

/// Adds `action_call`; `actions` projects the store's data into the node's name, its action
/// part and the current call.
pub fn add_to_linker<T, F>(linker: &mut Linker<T>, actions: F) -> wasmtime::Result<()>
where
    T: GuestData,
    F: Fn(&mut T) -> (&Arc<str>, &mut Action, &mut Call) + Send + Sync + Copy + 'static,
{
    linker.func_wrap("sluice", "action_call", move |mut caller: Caller<'_, T>, ptr: u32, len: u32| {
        let blocked_since = Instant::now();
        let result = {
            let (memory, data) = split(&mut caller)?;
            let (node, action, call) = actions(data);
            let bytes = slice(memory, ptr, len)?;
            let key = idempotency_key(node, &call.input, bytes);
            let request = serde_json::from_slice::<serde_json::Value>(bytes)
                .map_err(|e| format!("the action request is not JSON: {e}"));
            let answer = match (&action.granted, request) {
                (_, Err(e)) => Err(e),
                (None, _) => Err(format!(
                    "node `{}` has no connector: grant it one in the chain (`\"connector\": NAME`, NAME declared \
                     under `connectors`)",
                    node
                )),
                (Some(granted), Ok(request)) => {
                    granted.call(node, &request, &action.ack, &key).map_err(|e| e.to_string())
                }
            };
            let staged = answer.and_then(|value| {
                serde_json::to_vec(&value).map_err(|e| format!("the connector's answer cannot be serialized: {e}"))
            });
            let n = match staged {
                Ok(bytes) => {
                    let n = bytes.len() as i64;
                    call.staged = Some(bytes);
                    n
                }
                Err(reason) => {
                    tracing::debug!(node = %node, %reason, "action failed");
                    let bytes = reason.into_bytes();
                    let n = bytes.len() as i64;
                    call.staged = Some(bytes);
                    -n - 1
                }
            };
            // Only a node with a connector waits here, and only its calls start a budget (see
            // `NodeInstance::begin`): any other call's deadline stays as it was set.
            let remaining = action.granted.is_some().then(|| {
                action.budget.blocked += blocked_since.elapsed();
                action.budget.remaining()
            });
            (n, remaining)
        };
        let (n, remaining) = result;
        if let Some(remaining) = remaining {
            caller.as_context_mut().set_epoch_deadline(super::sandbox::ticks(remaining));
        }
        Ok(n)
    })?;
    Ok(())
}

/// `{message id}:{node}:{first 16 hex digits of the request's SHA-256}`.
fn idempotency_key(node: &str, input: &super::msg::Input, request: &[u8]) -> String {
    let id = input.id();
    let digest = Sha256::digest(request);
    format!("{id}:{node}:{}", hex::encode(&digest[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_time_is_given_back() {
        let started = Instant::now() - Duration::from_millis(500);
        let mut budget = Budget { started, deadline: Duration::from_millis(200), blocked: Duration::ZERO };
        assert_eq!(budget.remaining(), Duration::ZERO, "500 ms of computing is past a 200 ms deadline");
        budget.blocked = Duration::from_millis(500);
        assert!(budget.remaining() > Duration::from_millis(100), "{:?}", budget.remaining());
    }
}

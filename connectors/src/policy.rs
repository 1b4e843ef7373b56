//! How calls to a connector are made: one policy for every kind of connector.
//!
//! A connector ([`super::Connector`]) makes one attempt and says whether asking again may help.
//! [`Guarded`] wraps it with what every destination needs and none should write for itself:
//!
//! - **A timeout per attempt** (`timeoutMs`), handed to the connector.
//! - **Retries with exponential backoff and jitter** (`retries`, `backoffMs`, `maxBackoffMs`):
//!   retry `n` waits a random time between half and all of `backoffMs × 2ⁿ⁻¹` (capped at
//!   `maxBackoffMs`). The jitter keeps workers that failed together from hitting a recovering
//!   server together again. Only what may pass if asked again is retried — a network error, a
//!   timeout, an HTTP 5xx; a refused request (no `url`, a bad topic) fails at once.
//! - **A circuit breaker** per connector (`circuitBreaker`): after `failures` *calls* in a row
//!   failed — each with its retries spent — the circuit *opens*: for `openMs` every call fails at
//!   once with "circuit open", so a dead server costs the chain nothing but a `Failure` per
//!   message instead of a full retry schedule each. Then it is *half-open*: one call goes through
//!   as a probe (one attempt, no retries) while the others still fail at once; the probe's
//!   success closes the circuit, its failure opens it again. The breaker counts calls, not
//!   attempts, so a server that fails a third of its requests at random (and answers the
//!   retries) never opens it, while one that is down opens it within `failures` calls.
//!
//! The wait between attempts blocks the worker thread on purpose: the message is not done (not
//! acked) until its call is, and a worker busy retrying slows the source down instead of piling
//! messages up. That time does not count against the node's deadline (see `host::action`).
//!
//! When a call fails for good the node gets an error text that names the connector and says why
//! (`… gave up after 4 attempts`, `circuit open …`); the SDK makes it the node's `Err`, and the
//! message goes to the node's `Failure` relation with it in `metadata.error` (or to the
//! dead-letter sink when `Failure` is not connected). A node is never disabled for it: a failing
//! server is not a crashing guest.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Call, CallPolicySpec, Connector};
use sluice_core::Ack;

/// Default retries after the first attempt: enough to ride out a restart behind a proxy
/// (about 100 + 200 + 400 ms of waiting) without holding a worker for long.
pub const DEFAULT_RETRIES: u32 = 3;
/// Default wait before the first retry.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(100);
/// Default longest wait between two attempts.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Default failed calls in a row that open the circuit.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// Default time the circuit stays open before a probe.
pub const DEFAULT_OPEN: Duration = Duration::from_secs(10);

/// The policy, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// `None`: the circuit never opens.
    pub breaker: Option<Breaker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    pub failures: u32,
    pub open_for: Duration,
}

/// A call policy that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("timeoutMs: must be at least 1")]
    ZeroTimeout,
    #[error("maxBackoffMs: {max_ms} is less than backoffMs {backoff_ms}")]
    Backoff { max_ms: u128, backoff_ms: u128 },
    #[error("circuitBreaker.failures: must be at least 1")]
    ZeroFailures,
}

impl Policy {
    /// The spec's values over the defaults (`default_timeout`: the connector kind's).
    pub fn from_spec(spec: &CallPolicySpec, default_timeout: Duration) -> Result<Policy, PolicyError> {
        let timeout = match spec.timeout_ms {
            Some(0) => return Err(PolicyError::ZeroTimeout),
            Some(ms) => Duration::from_millis(ms),
            None => default_timeout,
        };
        let backoff = spec.backoff_ms.map_or(DEFAULT_BACKOFF, Duration::from_millis);
        let max_backoff = spec.max_backoff_ms.map_or(DEFAULT_MAX_BACKOFF, Duration::from_millis);
        if max_backoff < backoff {
            return Err(PolicyError::Backoff { max_ms: max_backoff.as_millis(), backoff_ms: backoff.as_millis() });
        }
        let breaker = match &spec.circuit_breaker {
            Some(b) if !b.enabled => None,
            Some(b) => Some(Breaker {
                failures: match b.failures {
                    Some(0) => return Err(PolicyError::ZeroFailures),
                    Some(n) => n,
                    None => DEFAULT_BREAKER_FAILURES,
                },
                open_for: b.open_ms.map_or(DEFAULT_OPEN, Duration::from_millis),
            }),
            None => Some(Breaker { failures: DEFAULT_BREAKER_FAILURES, open_for: DEFAULT_OPEN }),
        };
        Ok(Policy { timeout, retries: spec.retries.unwrap_or(DEFAULT_RETRIES), backoff, max_backoff, breaker })
    }

    /// The wait before retry number `retry` (1 for the first): `backoff × 2^(retry-1)`, capped
    /// at `max_backoff`, then a random point in its upper half (`jitter` in `0.0..=1.0`).
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let factor = 2u32.checked_pow(retry.saturating_sub(1)).unwrap_or(u32::MAX);
        let base = self.backoff.checked_mul(factor).unwrap_or(self.max_backoff).min(self.max_backoff);
        base / 2 + base.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
    }
}

/// Counters of one connector, for `/metrics` and the run summary.
#[derive(Debug, Default)]
pub struct ConnectorStats {
    /// Calls answered (whatever the answer).
    pub succeeded: AtomicU64,
    /// Calls that failed for good (retries spent, or not retryable).
    pub failed: AtomicU64,
    /// Calls refused at once because the circuit was open.
    pub rejected: AtomicU64,
    /// Attempts after the first.
    pub retries: AtomicU64,
    /// Times the circuit opened.
    pub opened: AtomicU64,
}

/// Where the circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    /// Calls go through; `failures` calls in a row have failed.
    Closed { failures: u32 },
    /// Calls fail at once until `until`.
    Open { until: Instant },
    /// One probe is under way; other calls fail at once.
    HalfOpen,
}

impl Circuit {
    /// For the gauge: 0 closed, 1 open, 2 half-open.
    pub fn code(&self) -> u8 {
        match self {
            Circuit::Closed { .. } => 0,
            Circuit::Open { .. } => 1,
            Circuit::HalfOpen => 2,
        }
    }
}

/// Why an action was not delivered, after the policy's attempts: the connector, and what
/// happened. Its text is what the node gets (`connector `tb` (http): …`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("connector `{connector}` ({kind}): {reason}")]
pub struct ActionError {
    pub connector: Arc<str>,
    pub kind: &'static str,
    pub reason: ActionFailure,
}

/// What happened to an action that was not delivered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActionFailure {
    /// Not attempted: the circuit is open, or a probe call is under way.
    #[error("{0}")]
    Rejected(String),
    /// The connector refused the request: every attempt would fail the same way.
    #[error("{0}")]
    Refused(String),
    /// Every attempt failed with an error worth retrying; the last one's message.
    #[error("{message} (gave up after {attempts} attempt{s})", s = if *attempts == 1 { "" } else { "s" })]
    GaveUp { message: String, attempts: u32 },
}

impl ActionFailure {
    /// Asking again later may succeed (the server or the circuit may recover): what a
    /// dead-letter sink is for, rather than a fix of the request.
    pub fn retryable(&self) -> bool {
        !matches!(self, ActionFailure::Refused(_))
    }
}

/// A connector with its call policy and circuit. One per connector of a chain, shared by every
/// node granted it, in every worker.
#[derive(Debug)]
pub struct Guarded {
    name: Arc<str>,
    inner: Arc<dyn Connector>,
    policy: Policy,
    circuit: Mutex<Circuit>,
    pub stats: ConnectorStats,
}

/// How a call may proceed.
enum Admission {
    Normal,
    /// The half-open probe: one attempt decides.
    Probe,
}

impl Guarded {
    pub fn new(name: &str, inner: Arc<dyn Connector>, spec: &CallPolicySpec) -> Result<Self, PolicyError> {
        let policy = Policy::from_spec(spec, inner.default_timeout())?;
        Ok(Guarded {
            name: name.into(),
            inner,
            policy,
            circuit: Mutex::new(Circuit::Closed { failures: 0 }),
            stats: ConnectorStats::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// See [`Connector::start_afresh`].
    pub fn start_afresh(&self) -> std::io::Result<()> {
        self.inner.start_afresh()
    }

    pub fn circuit(&self) -> Circuit {
        *self.circuit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers `request`: attempts, retries and the circuit as the module docs say. The error
    /// names the connector and says why it gave up.
    pub fn call(&self, node: &str, request: &Value, ack: &Ack, idempotency_key: &str) -> Result<Value, ActionError> {
        let named =
            |reason: ActionFailure| ActionError { connector: self.name.clone(), kind: self.inner.kind(), reason };
        let admission = self.admit().map_err(|why| {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            named(ActionFailure::Rejected(why))
        })?;
        let attempts = match admission {
            Admission::Probe => 1,
            Admission::Normal => self.policy.retries.saturating_add(1),
        };
        let call = Call { node, request, ack, idempotency_key, timeout: self.policy.timeout };
        let mut attempt = 1;
        let outcome = loop {
            let error = match self.inner.call(&call) {
                Ok(answer) => break Ok(answer),
                Err(error) => error,
            };
            if !error.retryable || attempt == attempts {
                break Err((error, attempt));
            }
            let delay = self.policy.delay(attempt, fastrand::f64());
            tracing::warn!(
                connector = %self.name,
                node,
                attempt,
                of = attempts,
                error = %error.message,
                next_in_ms = delay.as_millis() as u64,
                "action failed; retrying"
            );
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(delay);
            attempt += 1;
        };
        match outcome {
            Ok(answer) => {
                self.stats.succeeded.fetch_add(1, Ordering::Relaxed);
                self.record(true);
                Ok(answer)
            }
            Err((error, tries)) => {
                // A refused request says nothing about the server's health.
                if error.retryable {
                    self.record(false);
                }
                if let Some(answer) = error.answer {
                    // The server answered, badly: the node reports its status and body.
                    self.stats.succeeded.fetch_add(1, Ordering::Relaxed);
                    return Ok(answer);
                }
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                Err(named(match error.retryable {
                    false => ActionFailure::Refused(error.message),
                    true => ActionFailure::GaveUp { message: error.message, attempts: tries },
                }))
            }
        }
    }

    /// Lets a call through, makes it the probe, or refuses it with the reason.
    fn admit(&self) -> Result<Admission, String> {
        let Some(breaker) = self.policy.breaker else { return Ok(Admission::Normal) };
        let mut circuit = self.circuit.lock().unwrap_or_else(|p| p.into_inner());
        match *circuit {
            Circuit::Closed { .. } => Ok(Admission::Normal),
            Circuit::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    *circuit = Circuit::HalfOpen;
                    tracing::info!(connector = %self.name, "circuit half-open: one probe call goes through");
                    Ok(Admission::Probe)
                } else {
                    Err(format!(
                        "circuit open after {} failed calls in a row; next probe in {} ms",
                        breaker.failures,
                        (until - now).as_millis()
                    ))
                }
            }
            Circuit::HalfOpen => Err("circuit half-open: a probe call is under way".into()),
        }
    }

    /// Moves the circuit on a call's outcome (a probe's included).
    fn record(&self, ok: bool) {
        let Some(breaker) = self.policy.breaker else { return };
        let mut circuit = self.circuit.lock().unwrap_or_else(|p| p.into_inner());
        let next = match (*circuit, ok) {
            (Circuit::HalfOpen, true) => {
                tracing::info!(connector = %self.name, "circuit closed: the probe call succeeded");
                Circuit::Closed { failures: 0 }
            }
            (_, true) => Circuit::Closed { failures: 0 },
            (Circuit::Closed { failures }, false) if failures + 1 < breaker.failures => {
                Circuit::Closed { failures: failures + 1 }
            }
            (Circuit::Open { until }, false) => Circuit::Open { until },
            (_, false) => {
                self.stats.opened.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    connector = %self.name,
                    open_ms = breaker.open_for.as_millis() as u64,
                    "circuit open: calls fail at once until a probe succeeds"
                );
                Circuit::Open { until: Instant::now() + breaker.open_for }
            }
        };
        *circuit = next;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::super::ConnectorError;

    use super::*;
    use crate::spec::CircuitBreakerSpec;

    /// Fails (retryably) while `fail` says so; counts attempts and remembers the keys it saw.
    #[derive(Debug, Default)]
    struct Flaky {
        fail: std::sync::atomic::AtomicBool,
        attempts: AtomicU32,
        keys: Mutex<Vec<String>>,
    }

    impl Connector for Flaky {
        fn kind(&self) -> &'static str {
            "flaky"
        }
        fn call(&self, call: &Call<'_>) -> Result<Value, ConnectorError> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            self.keys.lock().unwrap().push(call.idempotency_key.to_string());
            if call.request.get("bad").is_some() {
                return Err(ConnectorError::permanent("request has no `url`"));
            }
            if self.fail.load(Ordering::SeqCst) { Err(ConnectorError::retryable("refused")) } else { Ok(Value::Null) }
        }
    }

    fn guarded(spec: CallPolicySpec) -> (Arc<Flaky>, Guarded) {
        let flaky = Arc::new(Flaky::default());
        let guarded = Guarded::new("api", flaky.clone(), &spec).unwrap();
        (flaky, guarded)
    }

    fn spec(retries: u32, failures: u32, open_ms: u64) -> CallPolicySpec {
        CallPolicySpec {
            retries: Some(retries),
            backoff_ms: Some(1),
            max_backoff_ms: Some(2),
            circuit_breaker: Some(CircuitBreakerSpec {
                enabled: true,
                failures: Some(failures),
                open_ms: Some(open_ms),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn backoff_doubles_within_its_jitter_and_is_capped() {
        let policy = Policy::from_spec(&CallPolicySpec::default(), Duration::from_secs(1)).unwrap();
        for (retry, base_ms) in [(1, 100), (2, 200), (3, 400), (8, 10_000), (40, 10_000)] {
            let base = Duration::from_millis(base_ms);
            assert_eq!(policy.delay(retry, 0.0), base / 2, "retry {retry}");
            assert_eq!(policy.delay(retry, 1.0), base, "retry {retry}");
            let mid = policy.delay(retry, 0.5);
            assert!(mid > base / 2 && mid < base, "retry {retry}: {mid:?}");
        }
    }

    #[test]
    fn invalid_policies_name_their_key() {
        let bad = CallPolicySpec { timeout_ms: Some(0), ..Default::default() };
        assert!(Policy::from_spec(&bad, Duration::ZERO).unwrap_err().to_string().starts_with("timeoutMs"));
        let bad = CallPolicySpec { backoff_ms: Some(500), max_backoff_ms: Some(100), ..Default::default() };
        assert!(Policy::from_spec(&bad, Duration::ZERO).unwrap_err().to_string().starts_with("maxBackoffMs"));
        let bad = spec(0, 0, 1);
        assert!(
            Policy::from_spec(&bad, Duration::ZERO).unwrap_err().to_string().starts_with("circuitBreaker.failures")
        );
    }

    #[test]
    fn retries_then_gives_up_naming_the_connector_and_the_attempts() {
        let (flaky, guarded) = guarded(spec(2, 100, 1000));
        flaky.fail.store(true, Ordering::SeqCst);
        let err = guarded.call("post", &serde_json::json!({}), &Ack::none(), "m1:post:1").unwrap_err();
        assert_eq!(err.reason, ActionFailure::GaveUp { message: "refused".into(), attempts: 3 });
        assert!(err.reason.retryable());
        assert_eq!(err.to_string(), "connector `api` (flaky): refused (gave up after 3 attempts)");
        assert_eq!(flaky.attempts.load(Ordering::SeqCst), 3);
        assert_eq!(*flaky.keys.lock().unwrap(), vec!["m1:post:1"; 3], "one key for every attempt");
        assert_eq!(guarded.stats.retries.load(Ordering::SeqCst), 2);
        assert_eq!(guarded.stats.failed.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_refused_request_is_not_retried_and_does_not_open_the_circuit() {
        let (flaky, guarded) = guarded(spec(3, 1, 60_000));
        let err = guarded.call("post", &serde_json::json!({"bad": 1}), &Ack::none(), "k").unwrap_err();
        assert!(matches!(err.reason, ActionFailure::Refused(_)) && !err.reason.retryable(), "{err}");
        assert!(err.to_string().ends_with("request has no `url`"), "{err}");
        assert_eq!(flaky.attempts.load(Ordering::SeqCst), 1);
        assert_eq!(guarded.circuit(), Circuit::Closed { failures: 0 });
    }

    #[test]
    fn the_circuit_opens_rejects_probes_and_closes() {
        let (flaky, guarded) = guarded(spec(0, 3, 50));
        flaky.fail.store(true, Ordering::SeqCst);
        let call = || guarded.call("post", &serde_json::json!({}), &Ack::none(), "k");
        for _ in 0..3 {
            assert!(call().unwrap_err().to_string().contains("refused"));
        }
        assert!(matches!(guarded.circuit(), Circuit::Open { .. }));
        // Open: refused without an attempt.
        let err = call().unwrap_err();
        assert!(matches!(err.reason, ActionFailure::Rejected(_)), "{err}");
        assert!(err.to_string().contains("circuit open after 3 failed calls in a row"), "{err}");
        assert_eq!(flaky.attempts.load(Ordering::SeqCst), 3);
        assert_eq!(guarded.stats.rejected.load(Ordering::SeqCst), 1);
        // After openMs a probe goes through; it fails: open again.
        std::thread::sleep(Duration::from_millis(60));
        assert!(call().unwrap_err().to_string().contains("refused"));
        assert_eq!(flaky.attempts.load(Ordering::SeqCst), 4);
        assert!(matches!(guarded.circuit(), Circuit::Open { .. }));
        // The next probe succeeds: closed, and calls go through again.
        std::thread::sleep(Duration::from_millis(60));
        flaky.fail.store(false, Ordering::SeqCst);
        call().unwrap();
        assert_eq!(guarded.circuit(), Circuit::Closed { failures: 0 });
        call().unwrap();
        assert_eq!(guarded.stats.opened.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_success_resets_the_count_of_failures_in_a_row() {
        let (flaky, guarded) = guarded(spec(0, 2, 60_000));
        let call = || guarded.call("post", &serde_json::json!({}), &Ack::none(), "k");
        for _ in 0..5 {
            flaky.fail.store(true, Ordering::SeqCst);
            assert!(call().is_err());
            flaky.fail.store(false, Ordering::SeqCst);
            call().unwrap();
        }
        assert_eq!(guarded.circuit(), Circuit::Closed { failures: 0 });
    }

    #[test]
    fn a_disabled_breaker_never_opens() {
        let mut spec = spec(0, 1, 60_000);
        spec.circuit_breaker.as_mut().unwrap().enabled = false;
        let (flaky, guarded) = guarded(spec);
        flaky.fail.store(true, Ordering::SeqCst);
        for _ in 0..5 {
            assert!(
                guarded
                    .call("post", &serde_json::json!({}), &Ack::none(), "k")
                    .unwrap_err()
                    .to_string()
                    .contains("refused")
            );
        }
        assert_eq!(flaky.attempts.load(Ordering::SeqCst), 5);
    }
}

//! Connectors: where action nodes' requests go.
//!
//! An action node (Kafka produce, MQTT publish, REST call…) never opens a socket itself — a
//! sandboxed module cannot. It builds a request and calls `sluice::action_call`; the host hands
//! the request to the connector the chain *granted* that node (`"connector": NAME` on the node,
//! NAME declared under the chain's `connectors`). So what a node can reach is decided in the
//! chain file, in one place, and the same node runs against a real broker in production and a
//! file in a test without changing.
//!
//! ```text
//! node ──action_call(request)──▶ Granted ──▶ Guarded{policy, breaker} ──▶ file | http | kafka | mqtt
//!      ◀──────────── answer JSON, or an error text (→ the node's Err → Failure) ────┘
//! ```
//!
//! Calls block the worker until the connector answers: a message is done (and acked) only once
//! its actions were delivered. Time a guest spends blocked in a call is not guest time: it does
//! not count against the node's deadline (`host::action`), so a slow server is governed by the
//! connector's own `timeoutMs`, retries and circuit breaker ([`policy`]) — never by the
//! sandbox's CPU deadline.
//!
//! A connector makes *one attempt* per [`Connector::call`] and says, with a typed
//! [`ConnectorError`], whether asking again may help; [`policy::Guarded`] decides whether to
//! ask again, how long to wait, and when to stop asking altogether. Every request carries an
//! idempotency key derived from the message id ([`Call::idempotency_key`]), the same on every
//! attempt and on a replay after a crash, so a receiver can drop duplicates.

pub mod file;
pub mod http;
pub mod kafka;
pub mod mqtt;
pub mod policy;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::flow::Ack;

pub use crate::chain::spec::{CallPolicySpec, ConnectorKind, ConnectorSpec};
pub use policy::{ConnectorStats, Guarded};

/// One request to a connector, with what the connector may need besides it.
pub struct Call<'a> {
    /// The node that made it, for messages.
    pub node: &'a str,
    pub request: &'a Value,
    /// The message's ack: a connector that confirms asynchronously (Kafka) holds a clone until
    /// the confirmation, so the message counts as done only then.
    pub ack: &'a Ack,
    /// The same for every attempt of this request and for the same request from the same
    /// message after a replay: HTTP `Idempotency-Key`, Kafka header `idempotency-key`.
    pub idempotency_key: &'a str,
    /// Time for this attempt.
    pub timeout: Duration,
}

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ConnectorError {
    pub message: String,
    /// Asking again may succeed (a network error, a timeout, an overloaded server); `false`:
    /// the request itself is wrong, and every attempt would fail the same way.
    pub retryable: bool,
    /// The server's own answer, when it gave one that is still a failure (an HTTP 5xx). When the
    /// retries are spent it is what the node gets, so it can report the status and the body.
    pub answer: Option<Value>,
}

impl ConnectorError {
    pub fn retryable(message: impl Into<String>) -> Self {
        ConnectorError { message: message.into(), retryable: true, answer: None }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        ConnectorError { message: message.into(), retryable: false, answer: None }
    }

    pub fn with_answer(mut self, answer: Value) -> Self {
        self.answer = Some(answer);
        self
    }
}

impl From<String> for ConnectorError {
    /// A bare text is a request the connector refuses: not worth retrying.
    fn from(message: String) -> Self {
        ConnectorError::permanent(message)
    }
}

impl From<&str> for ConnectorError {
    fn from(message: &str) -> Self {
        ConnectorError::permanent(message)
    }
}

/// A destination for action requests.
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// The kind, for messages (`file`, `http`…).
    fn kind(&self) -> &'static str;
    /// The time for one attempt when the spec does not say.
    fn default_timeout(&self) -> Duration {
        Duration::from_millis(http::DEFAULT_TIMEOUT_MS)
    }
    /// Makes one attempt to deliver `call.request`; blocks until it is delivered or has failed
    /// (at most `call.timeout`) — or, for a connector that confirms asynchronously, until it
    /// is queued, holding a clone of `call.ack` until the confirmation.
    fn call(&self, call: &Call<'_>) -> Result<Value, ConnectorError>;
    /// Called once before the first message of a run that starts fresh (not a resumed run, not
    /// a service, not a reload): a connector writing files empties them. Default: nothing.
    fn start_afresh(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A connector as granted to a node: its name in the chain, and the connector with its policy.
#[derive(Debug, Clone)]
pub struct Granted {
    pub name: Arc<str>,
    pub connector: Arc<Guarded>,
}

impl Granted {
    /// The connector's answer, or an error naming the connector (retries, backoff and the
    /// circuit breaker applied).
    pub fn call(&self, node: &str, request: &Value, ack: &Ack, idempotency_key: &str) -> Result<Value, String> {
        self.connector.call(node, request, ack, idempotency_key)
    }
}

/// Opens the connector `spec` describes. Nothing connects yet: connections are made on first
/// use, in the worker that uses them (so validating a chain touches no network and no file).
///
/// Text fields may name environment variables — `${VAR}`, or `${VAR:-default}` — so that
/// addresses and secrets stay out of chain files.
pub fn open(name: &str, spec: &ConnectorSpec, chain_dir: &Path) -> Result<Arc<Guarded>, String> {
    let connector: Arc<dyn Connector> = match &spec.kind {
        ConnectorKind::File { path, append } => {
            Arc::new(file::FileConnector::new(name, &resolve(chain_dir, &expand_env(path)?)).appending(*append))
        }
        ConnectorKind::Http { base_url, headers } => {
            let base_url = base_url.as_deref().map(expand_env).transpose()?;
            let headers =
                headers.iter().map(|(k, v)| Ok((k.clone(), expand_env(v)?))).collect::<Result<_, String>>()?;
            Arc::new(http::HttpConnector::new(base_url.as_deref(), headers)?)
        }
        ConnectorKind::Kafka(connection) => Arc::new(kafka::KafkaConnector::new(name, connection)?),
        ConnectorKind::Mqtt(c) => Arc::new(mqtt::MqttConnector::new(name, c)?),
    };
    Ok(Arc::new(Guarded::new(name, connector, &spec.policy)?))
}

/// Replaces `${VAR}` and `${VAR:-default}` with the environment's values; an unset variable
/// without a default is an error naming it.
pub fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after.find('}').ok_or_else(|| format!("unclosed `${{` in {text:?}"))?;
        let (var, default) = match after[..end].split_once(":-") {
            Some((var, default)) => (var, Some(default)),
            None => (&after[..end], None),
        };
        match (std::env::var(var), default) {
            (Ok(value), _) => out.push_str(&value),
            (Err(_), Some(default)) => out.push_str(default),
            (Err(_), None) => return Err(format!("environment variable `{var}` is not set (used in {text:?})")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A connector's path: absolute, or relative to the working directory — like `--output` — so a
/// chain in `chains/` writes where it is run from. `{chainDir}` at the start means "next to the
/// chain file".
fn resolve(chain_dir: &Path, path: &str) -> std::path::PathBuf {
    match path.strip_prefix("{chainDir}/") {
        Some(rest) => chain_dir.join(rest),
        None => Path::new(path).to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables_with_defaults() {
        // SAFETY: this test is the only user of these variable names.
        unsafe { std::env::set_var("SLUICE_TEST_CONNECTOR_HOST", "10.0.0.7") };
        assert_eq!(expand_env("http://${SLUICE_TEST_CONNECTOR_HOST}:9").unwrap(), "http://10.0.0.7:9");
        assert_eq!(expand_env("${SLUICE_TEST_UNSET_X:-out}/a.jsonl").unwrap(), "out/a.jsonl");
        assert!(expand_env("${SLUICE_TEST_UNSET_X}").unwrap_err().contains("SLUICE_TEST_UNSET_X"));
        assert!(expand_env("${OPEN").is_err());
        assert_eq!(expand_env("no vars").unwrap(), "no vars");
    }
}

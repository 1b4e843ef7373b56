//! What a connector is asked, and how it says an attempt failed: the contract between the host's
//! `action_call` and every connector (file, HTTP, Kafka, MQTT), and the retry policy around them
//! (`connectors::policy`), which reads [`ConnectorError::retryable`] to decide whether to ask again.

use std::time::Duration;

use serde_json::Value;

use super::Ack;

/// The time for one attempt when neither the connector nor its spec says.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

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
        Duration::from_millis(DEFAULT_TIMEOUT_MS)
    }
    /// Makes one attempt to deliver `call.request`; blocks until it is delivered or has failed
    /// (at most `call.timeout`) — or, for a connector that confirms asynchronously, until it
    /// is queued, holding a clone of `call.ack` until the confirmation.
    fn call(&self, call: &Call<'_>) -> Result<Value, ConnectorError>;
    /// Called once before the first message of a run that starts fresh (not a resumed run, not
    /// a service, not a reload): a connector writing files empties them. Default: nothing.
    fn start_afresh(&self) -> std::io::Result<()> {
        Ok(())
    }
}

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
pub mod spec;

mod grant;

pub use grant::{EnvError, Granted, OpenError, expand_env, open};
pub use policy::{ActionError, ActionFailure, ConnectorStats, Guarded};
pub use sluice_core::connector::{Call, Connector, ConnectorError};
pub use spec::{CallPolicySpec, ConnectorKind, ConnectorSpec};

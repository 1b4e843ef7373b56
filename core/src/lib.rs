//! Sluice's shared vocabulary: the types every layer passes to the next — a message, its ack
//! handle, the clock, what a sink is handed, what a connector is asked, the metrics registry,
//! errors that say where — and the specs a user writes ([`spec`]: chain files, connectors,
//! limits, event time), which the engine validates and the importer writes.
//!
//! A crate of its own (`sluice-core`), under the engine and the importer: it builds once, and an
//! edit to the executor does not rebuild it nor the importer.
//!
//! Why a layer of its own: these types used to live with their first user (`Ack` in `flow`,
//! `Clock` in `host`, the sink item in the JSON-lines sink, the connector trait in
//! `connectors`), so a source importing `Ack` imported the executor, and the executor, the
//! runtime, the host and the connectors imported each other in a circle. Here they import
//! nothing of the engine (only the SDK's message types and std), so every other module depends
//! down on this one and the module graph has no cycles (`sluice/tests/all/layers.rs` checks the
//! engine's).

pub mod ack;
pub mod clock;
pub mod connector;
pub mod input;
pub mod located;
pub mod message;
pub mod metrics;
pub mod sink;
pub mod spec;

pub use ack::{Ack, AckCounter, AckGroup, AckTarget};
pub use clock::Clock;
pub use connector::{Call, Connector, ConnectorError};
pub use message::Message;
pub use metrics::{Metric, Metrics};
pub use sink::{SinkItem, SinkSender};

/// The SHA-256 of `bytes` in hex: how modules are cached, checkpoint files named and a Kafka
/// topic's watermark partition derived.
pub fn content_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

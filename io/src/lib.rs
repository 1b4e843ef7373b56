//! # sluice-io: where messages come from and where results go
//!
//! Every way into a running chain is a [`Source`] started the same way, with a
//! [`SourceContext`]: JSON lines (a file or stdin, the one source whose input ends), a Kafka
//! consumer group, MQTT subscriptions, ThingsBoard's HTTP device API. Every way out is a
//! [`Sink`]: JSON lines to a file or stdout, records on a Kafka topic. Each registers its own
//! metrics and acks a message only once it is done with it; `sluice_testkit` holds the
//! compliance tests they all pass.
//!
//! Above the executor (`sluice-engine`), whose feed they fill and whose sink items they write;
//! the connectors they share code with (Kafka clients, MQTT TLS) are below it.

pub mod sinks;
pub mod sources;

pub use sinks::{OutputSpec, Sink, SinkContext, SinkError};
pub use sources::{Feed, Source, SourceContext, SourceError, SourceReport, SourceSpec};

//! # Sluice: a rule engine for IoT telemetry with WebAssembly rule nodes
//!
//! Modules in the order a message travels:
//!
//! - [`sources`] turn input into messages with ack handles (each a [`sources::Source`], started
//!   the same way with a [`sources::SourceContext`]);
//! - [`flow`] routes them onto workers and through the chain;
//! - [`chain`] is the graph they run through (loaded and validated from JSON);
//! - [`runtime`] runs each node's WASM module in a sandbox, with the [`host`] services as its
//!   only imports and [`state`] kept by the host;
//! - [`sinks`] write results and ack them; [`connectors`] deliver action nodes' requests
//!   (Kafka, MQTT, HTTP, files).
//!
//! [`app`] ties them together for `sluice run`, whatever the source (a file run is a service
//! whose source ends); [`reload`] swaps new chain versions in while they run; [`admin`] shows status and metrics
//! over HTTP and starts the reload control; [`toolchain`] builds and scaffolds rule crates;
//! [`import`] turns ThingsBoard rule chains into chain files.
//!
//! Under all of them, [`core`] is the vocabulary they share (a message, its ack, the clock, a
//! sink item, the connector contract, the metrics registry, located errors) and imports none of
//! them. Imports only point down: the
//! module graph has no cycle, and `tests/all/layers.rs` keeps it so.

pub mod admin;
pub mod app;
pub mod chain;
pub mod config;
pub mod connectors;
pub mod flow;
pub mod host;
pub mod reload;
pub mod runtime;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod toolchain;

pub use crate::core::message;
/// The shared vocabulary, a crate of its own (`sluice-core`) so that it builds once for all.
pub use sluice_core as core;
/// ThingsBoard import, a crate of its own (`sluice-import`): it needs only the specs.
pub use sluice_import as import;

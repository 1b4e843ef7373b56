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
//!
//! This crate is the `sluice` binary and the facade over the crates it is built from, along the
//! layers: `sluice-core` (the vocabulary), `sluice-connectors`, `sluice-engine` (chain, flow,
//! runtime, host, state), `sluice-io` (sources and sinks), `sluice-import`, and here the app,
//! its admin endpoint, hot reload, `sluice.toml` and the command line.

pub mod admin;
pub mod app;
pub mod chaintest;
pub mod config;
pub mod reload;
pub mod toolchain;
pub mod web;

pub use crate::core::message;
/// Connectors (`sluice-connectors`): they need only the vocabulary.
pub use sluice_connectors as connectors;
/// The shared vocabulary, a crate of its own (`sluice-core`) so that it builds once for all.
pub use sluice_core as core;
/// The executor (`sluice-engine`).
pub use sluice_engine::{chain, flow, host, runtime, state};
/// ThingsBoard import, a crate of its own (`sluice-import`): it needs only the specs.
pub use sluice_import as import;
/// Sources and sinks (`sluice-io`).
pub use sluice_io::{sinks, sources};

pub use app::{AppError, AppOptions, AppReport};
pub use config::Config;
pub use sluice_engine::{Chain, ChainSpec, Pipeline, Runtime};
pub use sluice_io::{Sink, Source};

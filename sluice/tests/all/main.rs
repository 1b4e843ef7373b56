//! The engine's integration tests: one binary, one module per concern. Guests are built from
//! source (the `rules/` workspace) by [`support`], never committed.

mod chain_load;
mod event_time;
mod handover;
mod http;
mod layers;
mod metrics;
mod mqtt;
mod recorder;
mod reload;
mod routing;
mod sandbox;
mod sinks;
mod sources;
mod windows;

// Shared with the end-to-end tests and the benches.
use sluice_testkit::brokers;
use sluice_testkit::chain as support;

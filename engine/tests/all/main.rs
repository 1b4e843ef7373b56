//! The engine's integration tests: one binary, one module per concern. Guests are built from
//! source (the `rules/` workspace) by [`support`], never committed.

mod brokers;
mod chain_load;
mod event_time;
mod handover;
mod http;
mod layers;
mod mqtt;
mod reload;
mod routing;
mod sandbox;
mod sources;
mod support;
mod windows;

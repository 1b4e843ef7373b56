//! End-to-end tests across crates: the `sluice` binary on real chain files, and every built-in
//! rule run both natively (the SDK's TestDriver) and in wasmtime, which must agree.

mod actions_under_failure;
mod agreement;
mod chain_tests;
mod cli;
mod devices;
mod fidelity;
mod http_service;
mod import;
mod kafka;
mod mqtt_service;
mod nodes_actions;
mod nodes_decoder;
mod nodes_enrich;
mod nodes_filters;
mod nodes_history;
mod nodes_script;
mod nodes_tb;
mod nodes_timers;
mod relations;
mod reload;
mod runmode;
mod scenarios;
mod seeds;
mod support;
mod tansu;
mod thingsboard;
mod web;
mod wind_zones_live;

// Shared with the engine's integration tests and the benches.
use sluice_testkit::brokers;

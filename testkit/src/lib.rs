//! What Sluice's tests and benches share, in one place instead of a copy per test binary:
//!
//! - [`chain`]: the guest modules built once from `rules/`, one runtime per test binary, scratch
//!   chain files, and a chain run in-process (messages in, the output sink's messages out);
//! - [`brokers`]: real brokers (mosquitto) started on a free loopback port and stopped with
//!   their guard;
//! - [`sinks`]: the contract every sink keeps, one check for all;
//! - [`rng`]: a small deterministic generator, so generated inputs are the same on every run;
//! - [`wait`]: waiting, with a bound, for what should happen.
//!
//! It depends on the engine, and the engine's integration tests and benches depend on it (a
//! dev-dependency cycle cargo allows: the engine's own unit tests do not use it).

pub mod brokers;
pub mod chain;
pub mod rng;
pub mod sinks;
pub mod wait;

pub use chain::{ChainDir, Ran, modules, repo, run_chain, run_chain_file, runtime, start_to_channel};
pub use rng::Rng;
pub use wait::{PATIENCE, wait_until};

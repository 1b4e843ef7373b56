//! # sluice-engine: the executor
//!
//! What happens to a message once it is inside Sluice, in the order it happens:
//!
//! - [`flow`] routes messages onto workers (one per core, ordered per originator) and through
//!   the chain, fanning outputs out by relation, and tracks acks and watermarks;
//! - [`chain`] is the graph they run through, loaded from its JSON spec and validated with
//!   errors that name the file, node and field;
//! - [`runtime`] runs each node's WebAssembly module in a sandbox (fuel-free deadlines, memory
//!   caps), with the [`host`] services as its only imports;
//! - [`state`] is what the host keeps for nodes: keyed state, windows, tables, telemetry histories, timers, the
//!   event-time watermarks, and the checkpoints they are restored from.
//!
//! Where messages come from and go to is a crate above this one (`sluice-io`); what an action
//! node's request reaches is one below (`sluice-connectors`), next to the shared vocabulary
//! (`sluice-core`). Editing the executor rebuilds neither.

pub mod chain;
pub mod flow;
pub mod host;
pub mod runtime;
pub mod state;

pub use chain::{Chain, ChainSpec, LoadError, Loader};
pub use flow::{Pipeline, PipelineConfig, PipelineSender, RunStats};
pub use runtime::{Module, ModuleError, Runtime};
pub use state::kv::StateStore;

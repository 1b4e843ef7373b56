//! State the host keeps for nodes, and the time it keeps it by. No wasmtime types here: the
//! runtime's host functions are thin adapters over these stores.
//!
//! - [`time`]: event time and watermarks (per source partition, combined as the minimum);
//! - [`window`]: tumbling, hopping and session windows per key, with a grace period;
//! - [`table`]: keyed latest-value tables shared by a chain's nodes (enrichment);
//! - [`series`]: bounded telemetry histories the chain saved, queried by interval;
//! - [`kv`]: plain keyed state of one node;
//! - [`checkpoint`]: all of it, with the source position it reflects, in one redb transaction;
//! - [`partition`]: one source partition's share of it, which moves on a rebalance.
//!
//! State belongs to the node id, not to a module instance: a trap (which replaces the instance)
//! or a hot reload of the module leaves it in place.
//!
//! # Scale-out contract
//!
//! Every entry is keyed by (node id, window or table name, key) — a telemetry history by
//! (series, entity, key). Several Sluice instances in one Kafka consumer group split the input
//! partitions; each holds the state of the keys its
//! partitions carry. So a stateful node's key must be the partitioning key of its input (the
//! message key, the originator by default), or the chain must re-key its input through a topic
//! keyed by the node's key, as Kafka Streams' repartition topics do. Watermarks are tracked per
//! source partition ([`time::Watermarks`]).
//!
//! **Handing state over on a rebalance.** Every entry also records the source partition whose
//! message last wrote it ([`partition`]); windows and timers pass theirs on to what they emit.
//! A partition's share of the state can therefore be taken out, written to the Kafka source's
//! changelog at each cut, and absorbed by the instance the partition moves to, which resumes
//! right after the snapshot (`sources::kafka::changelog`). The instance it left drops its copy,
//! so a window fires on exactly one instance.

pub mod checkpoint;
pub mod kv;
pub mod partition;
pub mod series;
pub mod table;
pub mod time;
pub mod window {
    //! The window store is defined once, in sluice-sdk, so that the native test harness closes
    //! windows exactly as the engine does.
    pub use sluice_sdk::windows::*;
}

pub use kv::{NodeHandles, NodeState, NodeTimers, NodeWindows, StateStore};

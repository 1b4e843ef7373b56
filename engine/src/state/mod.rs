//! State the host keeps for nodes, and the time it keeps it by. No wasmtime types here: the
//! runtime's host functions are thin adapters over these stores.
//!
//! - [`time`]: event time and watermarks (per source partition, combined as the minimum);
//! - [`window`]: tumbling, hopping and session windows per key, with a grace period;
//! - [`table`]: keyed latest-value tables shared by a chain's nodes (enrichment);
//! - [`kv`]: plain keyed state of one node;
//! - [`checkpoint`]: all of it, with the source position it reflects, in one redb transaction.
//!
//! State belongs to the node id, not to a module instance: a trap (which replaces the instance)
//! or a hot reload of the module leaves it in place.
//!
//! # Scale-out contract
//!
//! Every entry is keyed by (node id, window or table name, key). Several Sluice instances in one
//! Kafka consumer group split the input partitions; each holds the state of the keys its
//! partitions carry. So a stateful node's key must be the partitioning key of its input (the
//! message key, the originator by default), or the chain must re-key its input through a topic
//! keyed by the node's key, as Kafka Streams' repartition topics do. Watermarks are tracked per
//! source partition ([`time::Watermarks`]).
//!
//! **Not yet done: handing state over on a rebalance.** A revoked partition is cut (its
//! messages finished, the state checkpointed locally, its offsets committed) and its new owner
//! resumes from those offsets, but the keyed state itself stays with the old owner: a window
//! that is open while its partition moves is completed by the new owner from the records after
//! the handover only. Results are exact when partitions stay put for the life of a window (the
//! group is formed before the data flows), which is what the scale-out test checks. The plan is
//! Kafka Streams' changelog: each cut also writes the changed entries of every partition to a
//! `{group}-changelog` topic, and an assigned partition restores them before it is read.

pub mod checkpoint;
pub mod kv;
pub mod partition;
pub mod table;
pub mod time;
pub mod window {
    //! The window store is defined once, in sluice-sdk, so that the native test harness closes
    //! windows exactly as the engine does.
    pub use sluice_sdk::windows::*;
}

pub use kv::{NodeHandles, NodeState, NodeTimers, NodeWindows, StateStore};

//! The executor: routing messages onto workers, running them through the chain, and fanning
//! outputs out by relation.
//!
//! ```text
//! source ──Envelope──▶ router ──(hash of originator)──▶ worker 0 ─┐
//!                             └────────────────────────▶ worker 1 ─┴─▶ sinks
//! ```
//!
//! Queues are bounded: when workers fall behind, [`Pipeline::send`] waits, so a slow chain slows
//! the source instead of eating memory. Each worker runs a message through the whole chain
//! ([`worker`]); the router sends all messages of one originator to one worker, so their order
//! holds, while different originators run in parallel.

pub mod ack;
pub mod stats;
pub mod worker;

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

pub use ack::{Ack, AckCounter, AckTarget};
pub use stats::{NodeStats, RunStats};

use crate::chain::Chain;
use crate::host::Clock;
use crate::runtime::Runtime;
use crate::state::StateStore;
use worker::{NodeHealth, Worker};

/// A message on its way in: its JSON, its partition key and its ack handle.
#[derive(Debug)]
pub struct Envelope {
    pub msg: Bytes,
    pub key: u64,
    pub ack: Ack,
}

impl Envelope {
    /// Partition key of an originator: messages with equal keys keep their order.
    pub fn key_of(entity_type: &str, name: &str) -> u64 {
        let mut h = fxhash::FxHasher64::default();
        entity_type.hash(&mut h);
        name.hash(&mut h);
        h.finish()
    }
}

/// Where sink nodes write.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    /// The run's output (`sink: "output"`); `None` discards (still counted).
    pub output: Option<mpsc::Sender<(Bytes, Ack)>>,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub workers: usize,
    /// Messages waiting per worker before the source is made to wait.
    pub queue: usize,
    pub clock: Clock,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        PipelineConfig { workers: cores, queue: 1024, clock: Clock::System }
    }
}

/// A running chain.
pub struct Pipeline {
    inboxes: Vec<mpsc::Sender<Envelope>>,
    workers: Vec<std::thread::JoinHandle<RunStats>>,
}

/// The pipeline has stopped taking messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline is shut down")]
pub struct Closed;

impl Pipeline {
    pub fn start(
        runtime: Arc<Runtime>,
        chain: Arc<Chain>,
        state: StateStore,
        sinks: Sinks,
        config: PipelineConfig,
    ) -> std::io::Result<Pipeline> {
        let health: Arc<Vec<NodeHealth>> = Arc::new(chain.nodes.iter().map(|_| NodeHealth::default()).collect());
        let mut inboxes = Vec::new();
        let mut workers = Vec::new();
        for i in 0..config.workers.max(1) {
            let (tx, rx) = mpsc::channel(config.queue.max(1));
            let worker = Worker::new(
                runtime.clone(),
                chain.clone(),
                health.clone(),
                state.clone(),
                config.clock.clone(),
                sinks.clone(),
            );
            let handle =
                std::thread::Builder::new().name(format!("sluice-worker-{i}")).spawn(move || worker.run(rx))?;
            inboxes.push(tx);
            workers.push(handle);
        }
        Ok(Pipeline { inboxes, workers })
    }

    /// Hands a message to its worker, waiting while that worker's queue is full.
    pub async fn send(&self, envelope: Envelope) -> Result<(), Closed> {
        let i = (envelope.key % self.inboxes.len() as u64) as usize;
        self.inboxes[i].send(envelope).await.map_err(|_| Closed)
    }

    /// Blocking [`Pipeline::send`], for callers outside the async runtime.
    pub fn send_blocking(&self, envelope: Envelope) -> Result<(), Closed> {
        let i = (envelope.key % self.inboxes.len() as u64) as usize;
        self.inboxes[i].blocking_send(envelope).map_err(|_| Closed)
    }

    /// Stops taking messages, lets the workers finish what they have, and returns the counts.
    pub fn shutdown(self) -> RunStats {
        drop(self.inboxes);
        let mut stats = RunStats::default();
        for worker in self.workers {
            match worker.join() {
                Ok(s) => stats.merge(s),
                Err(_) => tracing::error!("a worker thread panicked"),
            }
        }
        stats
    }
}

//! The executor: routing messages onto workers, running them through the chain, and fanning
//! outputs out by relation.
//!
//! ```text
//! source ──Envelope──▶ router ──(hash of originator)──▶ worker 0 ─┐
//!                             └────────────────────────▶ worker 1 ─┴─▶ sinks
//! ```
//!
//! Queues are bounded: when workers fall behind, [`Pipeline::send`] waits, so a slow chain slows
//! the source instead of eating memory. Messages cross to a worker in batches ([`Batcher`]): a
//! channel send, and the wake-up of a worker waiting on it, cost more than running a small chain,
//! so a source that has many messages at hand (a file) hands them over a few dozen at a time. Each worker runs a message through the whole chain
//! ([`worker`]); the router sends all messages of one originator to one worker, so their order
//! holds, while different originators run in parallel.

pub mod progress;
pub mod recorder;
pub mod replay;
pub mod stats;
pub mod worker;

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use tokio::sync::mpsc;

pub use progress::{Progress, ProgressToken};
pub use sluice_core::ack::{Ack, AckCounter, AckTarget};
pub use stats::{LiveStats, NodeStats, Problems, RunStats};

use crate::chain::Chain;
use crate::runtime::Runtime;
use crate::state::StateStore;
use sluice_core::Clock;
pub use worker::NodeHealth;
use worker::Worker;

/// Starts every rule node once against the real (possibly restored) state, so a state schema
/// the module no longer accepts stops the run here, with the node's own message — and so what
/// an `init` sets up in the state (a generator's first timer) is there before any input.
pub fn check_state(runtime: &Runtime, chain: &Chain, state: &StateStore) -> Result<(), StateCheckError> {
    check_state_on(runtime, chain, state, &Clock::System)
}

/// [`check_state`] at the processing time of `clock` (a test's virtual clock: a generator's
/// first timer is armed by it).
pub fn check_state_on(
    runtime: &Runtime,
    chain: &Chain,
    state: &StateStore,
    clock: &Clock,
) -> Result<(), StateCheckError> {
    for node in &chain.nodes {
        if let crate::chain::NodeKind::Rule(rule) = &node.kind {
            // Run even when the node has no state yet: this `init` is the one that runs against
            // the real state before any input, so a generator arms its first timer here (workers
            // start instances only when a message comes).
            let handles = state.node(&node.id);
            // No connector: a check must not deliver anything.
            let env = crate::runtime::HostEnv::new(node.id.as_str(), handles, clock.clone());
            runtime
                .instantiate_module(&rule.module, &rule.config, rule.limits, env)
                .map_err(|error| StateCheckError { file: chain.file.clone(), error })?;
        }
    }
    Ok(())
}

/// A node refused to start against the state it would run with (see [`check_state`]).
#[derive(Debug, thiserror::Error)]
#[error("{}: {error}", file.display())]
pub struct StateCheckError {
    /// The chain file.
    pub file: std::path::PathBuf,
    /// The node's error (it names the node).
    pub error: crate::runtime::NodeError,
}

/// A message on its way in: the message (parsed once, by its source, and shared by every node
/// it passes), its partition key, its ack handle and the watermark its
/// source stamped on it.
#[derive(Debug)]
pub struct Envelope {
    pub msg: Arc<sluice_core::message::Message>,
    pub key: u64,
    pub ack: Ack,
    /// The combined watermark as of this message: windows close by it (see [`Progress`]).
    pub watermark: i64,
    /// The watermark this message's lateness is judged against: the combined one, or its own
    /// originator's (`eventTime.per = "originator"`, see `state::time`).
    pub judged_by: i64,
    /// The source partition it came from: the state it writes belongs to that partition.
    pub partition: crate::state::window::Owner,
    /// Set by the pipeline: marks the message done when dropped.
    pub progress: Option<ProgressToken>,
    /// Tracked by the token of its batch, which the batch's first envelope carries (see
    /// [`Batcher`]): the worker issues none for it.
    pub covered: bool,
    /// Not a message: a wake-up to fire due timers and windows.
    pub tick: bool,
}

impl Envelope {
    pub fn new(msg: Arc<sluice_core::message::Message>, key: u64, ack: Ack) -> Self {
        Envelope {
            msg,
            key,
            ack,
            watermark: crate::state::time::NO_WATERMARK,
            judged_by: crate::state::time::NO_WATERMARK,
            partition: crate::state::window::UNOWNED,
            progress: None,
            covered: false,
            tick: false,
        }
    }

    /// A wake-up for a worker: fires due timers, and windows the completed watermark closed.
    pub fn tick() -> Self {
        Envelope { tick: true, ..Envelope::new(Arc::default(), 0, Ack::none()) }
    }

    /// One watermark, both to close windows by and to judge this message's lateness.
    pub fn with_watermark(mut self, watermark: i64) -> Self {
        self.watermark = watermark;
        self.judged_by = watermark;
        self
    }

    /// The source's [`Stamp`](crate::state::time::Stamp): the combined watermark, and the one
    /// this message is judged by.
    pub fn with_stamp(mut self, stamp: crate::state::time::Stamp) -> Self {
        self.watermark = stamp.combined;
        self.judged_by = stamp.judged;
        self
    }

    pub fn with_partition(mut self, partition: crate::state::window::Owner) -> Self {
        self.partition = partition;
        self
    }

    /// Partition key of an originator: messages with equal keys keep their order.
    pub fn key_of(entity_type: &str, name: &str) -> u64 {
        let mut h = fxhash::FxHasher64::default();
        entity_type.hash(&mut h);
        name.hash(&mut h);
        h.finish()
    }
}

/// What crosses a worker's queue: envelopes of that worker, in the order they were routed.
pub type Batch = Vec<Envelope>;

/// Envelopes per batch a [`Batcher`] collects before it hands them to their worker.
pub const BATCH: usize = 256;

/// Where sink nodes write.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    /// The run's output (`sink: "output"`); `None` discards (still counted).
    pub output: Option<sluice_core::SinkSender>,
    /// Where a `Failure` with no connection to take it goes, with `metadata.error` (`None`:
    /// logged and counted only).
    pub dead_letter: Option<sluice_core::SinkSender>,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub workers: usize,
    /// Batches waiting per worker before the source is made to wait: a batch is one message from
    /// a source that sends them one by one, up to [`BATCH`] from one that batches ([`Batcher`]).
    pub queue: usize,
    pub clock: Clock,
    /// Close every window when the input ends (a finite input: a file, stdin).
    pub flush_at_end: bool,
    /// How often a worker is woken to fire processing-time timers (and windows, when idle).
    pub tick: std::time::Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        PipelineConfig {
            workers: cores,
            queue: 64,
            clock: Clock::System,
            flush_at_end: true,
            tick: std::time::Duration::from_millis(50),
        }
    }
}

/// A running chain.
pub struct Pipeline {
    inboxes: Vec<mpsc::Sender<Batch>>,
    workers: Vec<std::thread::JoinHandle<RunStats>>,
    progress: Arc<Progress>,
    state: StateStore,
    version: Arc<ChainVersion>,
    ticker: Option<(Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<()>)>,
    /// Whether the workers close every window once drained (see [`Pipeline::pause`]).
    flush_at_end: Arc<std::sync::atomic::AtomicBool>,
    live: LiveStats,
    recorder: recorder::Recorder,
}

/// The chain workers run, swappable while they run: each worker checks the generation before a
/// message, so a message in flight finishes on the version it started with and the next one
/// takes the new version. State is keyed by node id, so nodes whose id is unchanged keep theirs.
#[derive(Debug)]
pub struct ChainVersion {
    current: std::sync::RwLock<(Arc<Chain>, Arc<Vec<NodeHealth>>)>,
    generation: std::sync::atomic::AtomicU64,
}

impl ChainVersion {
    fn new(chain: Arc<Chain>) -> Self {
        let health = Arc::new(chain.nodes.iter().map(|_| NodeHealth::default()).collect());
        ChainVersion {
            current: std::sync::RwLock::new((chain, health)),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn current(&self) -> (Arc<Chain>, Arc<Vec<NodeHealth>>) {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, chain: Arc<Chain>) {
        let health = Arc::new(chain.nodes.iter().map(|_| NodeHealth::default()).collect());
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (chain, health);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Swaps chain versions into a running [`Pipeline`] (see [`Pipeline::reload`]).
#[derive(Debug, Clone)]
pub struct ChainHandle(Arc<ChainVersion>);

impl ChainHandle {
    /// See [`Pipeline::reload`].
    pub fn reload(&self, chain: Arc<Chain>) {
        self.0.replace(chain);
    }

    pub fn current(&self) -> Arc<Chain> {
        self.0.current().0
    }

    /// How many versions were swapped in since start.
    pub fn generation(&self) -> u64 {
        self.0.generation()
    }

    /// Ids of the running version's nodes that were disabled for repeated crashes (a reload
    /// starts every node healthy again).
    pub fn disabled_nodes(&self) -> Vec<String> {
        let (chain, health) = self.0.current();
        chain
            .nodes
            .iter()
            .zip(health.iter())
            .filter(|(_, h)| h.disabled.load(std::sync::atomic::Ordering::Relaxed))
            .map(|(n, _)| n.id.clone())
            .collect()
    }
}

/// The sending side of a [`Pipeline`], for sources running on tasks or threads of their own.
#[derive(Clone)]
pub struct PipelineSender {
    inboxes: Vec<mpsc::Sender<Batch>>,
    progress: Arc<Progress>,
}

impl PipelineSender {
    /// See [`Pipeline::send`].
    pub async fn send(&self, envelope: Envelope) -> Result<(), Closed> {
        let (i, envelope) = route(self.inboxes.len(), &self.progress, envelope);
        self.inboxes[i].send(vec![envelope]).await.map_err(|_| Closed)
    }

    /// See [`Pipeline::send_blocking`].
    pub fn send_blocking(&self, envelope: Envelope) -> Result<(), Closed> {
        let (i, envelope) = route(self.inboxes.len(), &self.progress, envelope);
        self.inboxes[i].blocking_send(vec![envelope]).map_err(|_| Closed)
    }

    /// A [`Batcher`] onto this pipeline.
    pub fn batcher(&self) -> Batcher {
        Batcher::new(self.inboxes.clone(), self.progress.clone())
    }

    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }
}

/// The worker of `envelope` (by its key: one originator, one worker, its order kept), with the
/// envelope now tracked by `progress`.
fn route(workers: usize, progress: &Arc<Progress>, mut envelope: Envelope) -> (usize, Envelope) {
    // A source that stamps and issues in one step (the `Feed`, so that no message stamped
    // before another can be issued after it) brings its token along.
    if envelope.progress.is_none() {
        envelope.progress = Some(progress.issue(envelope.watermark));
    }
    ((envelope.key % workers as u64) as usize, envelope)
}

/// Hands envelopes to their workers [`BATCH`] at a time, for a source that has many at hand.
///
/// A batch is one unit of [`Progress`]: its first envelope carries a token issued when it was
/// pushed, which the worker holds until the whole batch is run; the others are `covered`. The
/// stamps of the others raise the progress's latest watermark when the batch is handed over —
/// before its token can be dropped — so the completed watermark never passes a message that
/// is not done, and reaches every stamp once everything is. (Per message, the token was a lock
/// shared by the reader and every worker.)
///
/// An envelope counts as in flight from [`Batcher::push`] on, so an envelope held in a batch
/// holds windows open until it is run: a source must [`Batcher::flush`] whenever it is about to
/// wait for input, and before it waits for the pipeline to be idle (a checkpoint) — otherwise
/// it would wait for messages it holds itself.
pub struct Batcher {
    inboxes: Vec<mpsc::Sender<Batch>>,
    progress: Arc<Progress>,
    pending: Vec<Batch>,
    /// The greatest stamp in each pending batch.
    stamps: Vec<i64>,
}

impl Batcher {
    fn new(inboxes: Vec<mpsc::Sender<Batch>>, progress: Arc<Progress>) -> Self {
        let pending = inboxes.iter().map(|_| Vec::new()).collect();
        let stamps = vec![crate::state::time::NO_WATERMARK; inboxes.len()];
        Batcher { inboxes, progress, pending, stamps }
    }

    /// Adds `envelope` to its worker's batch, handing the batch over (waiting for room) once
    /// it is full.
    pub async fn push(&mut self, envelope: Envelope) -> Result<(), Closed> {
        let i = self.enqueue(envelope);
        if self.full(i) {
            self.send(i).await?;
        }
        Ok(())
    }

    /// Adds `envelope` to its worker's batch (tracked as the batch's first, or covered by it);
    /// returns the worker. A source that stamps envelopes under a lock (the feed) enqueues
    /// under it too, so that the batch's token is issued before any later stamp can be.
    pub fn enqueue(&mut self, mut envelope: Envelope) -> usize {
        let i = self.worker_of(envelope.key);
        if self.pending[i].is_empty() {
            if envelope.progress.is_none() {
                envelope.progress = Some(self.progress.issue(envelope.watermark));
            }
        } else if envelope.progress.is_none() {
            envelope.covered = true;
            self.stamps[i] = self.stamps[i].max(envelope.watermark);
        }
        self.pending[i].push(envelope);
        i
    }

    /// How many workers (and batches) there are.
    pub fn workers(&self) -> usize {
        self.inboxes.len()
    }

    /// The worker whose batch takes messages of `key`.
    pub fn worker_of(&self, key: u64) -> usize {
        (key % self.inboxes.len() as u64) as usize
    }

    /// Whether worker `i`'s batch is full: time to [`Batcher::send`] it.
    pub fn full(&self, i: usize) -> bool {
        self.pending[i].len() >= BATCH
    }

    /// Hands worker `i`'s batch over, waiting for room.
    pub async fn send(&mut self, i: usize) -> Result<(), Closed> {
        let batch = self.take(i);
        self.inboxes[i].send(batch).await.map_err(|_| Closed)
    }

    /// [`Batcher::send`] from a thread outside the async runtime.
    pub fn send_blocking(&mut self, i: usize) -> Result<(), Closed> {
        let batch = self.take(i);
        self.inboxes[i].blocking_send(batch).map_err(|_| Closed)
    }

    /// Worker `i`'s batch, its stamps raised: ready to hand over.
    fn take(&mut self, i: usize) -> Batch {
        let stamp = std::mem::replace(&mut self.stamps[i], crate::state::time::NO_WATERMARK);
        self.progress.raise(stamp);
        std::mem::replace(&mut self.pending[i], Vec::with_capacity(BATCH))
    }

    /// [`Batcher::push`] from a thread outside the async runtime (the Kafka consumer's).
    pub fn push_blocking(&mut self, envelope: Envelope) -> Result<(), Closed> {
        let i = self.enqueue(envelope);
        if self.full(i) {
            self.send_blocking(i)?;
        }
        Ok(())
    }

    /// [`Batcher::flush`] from a thread outside the async runtime.
    pub fn flush_blocking(&mut self) -> Result<(), Closed> {
        for i in 0..self.pending.len() {
            if !self.pending[i].is_empty() {
                self.send_blocking(i)?;
            }
        }
        Ok(())
    }

    /// Hands every partial batch over.
    pub async fn flush(&mut self) -> Result<(), Closed> {
        for i in 0..self.pending.len() {
            if !self.pending[i].is_empty() {
                self.send(i).await?;
            }
        }
        Ok(())
    }

    /// Whether an envelope waits in a batch not yet handed over.
    pub fn holds(&self) -> bool {
        self.pending.iter().any(|p| !p.is_empty())
    }
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
        Self::start_with_progress(runtime, chain, state, sinks, config, Arc::new(Progress::default()))
    }

    /// [`Pipeline::start`] continuing from `progress` (a restored checkpoint's watermark).
    /// The chain's table seeds go into `state` first, where it lacks their rows: after a
    /// restored checkpoint, whose rows win.
    pub fn start_with_progress(
        runtime: Arc<Runtime>,
        chain: Arc<Chain>,
        state: StateStore,
        sinks: Sinks,
        config: PipelineConfig,
        progress: Arc<Progress>,
    ) -> std::io::Result<Pipeline> {
        crate::chain::seed::apply_all(&chain.seeds, state.tables());
        let version = Arc::new(ChainVersion::new(chain.clone()));
        let (_, health) = version.current();
        let n = config.workers.max(1);
        let barrier = Arc::new(std::sync::Barrier::new(n));
        let flush_at_end = Arc::new(std::sync::atomic::AtomicBool::new(config.flush_at_end));
        let mut inboxes = Vec::new();
        let mut workers = Vec::new();
        let live = LiveStats::new(n, state.clone());
        let recorder = recorder::Recorder::new(n, chain.record.clone());
        for i in 0..n {
            let (tx, rx) = mpsc::channel(config.queue.max(1));
            let worker = Worker::new(
                runtime.clone(),
                chain.clone(),
                health.clone(),
                state.clone(),
                config.clock.clone(),
                sinks.clone(),
            )
            .with_progress(progress.clone())
            .with_version(version.clone())
            .publishing(live.clone(), i)
            .recording(recorder.clone(), i);
            let barrier = barrier.clone();
            let flush = flush_at_end.clone();
            let handle = std::thread::Builder::new()
                .name(format!("sluice-worker-{i}"))
                .spawn(move || worker.run(rx, barrier, flush))?;
            inboxes.push(tx);
            workers.push(handle);
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tick_tx, every, stopped) = (inboxes[0].clone(), config.tick, stop.clone());
        let ticker = std::thread::Builder::new().name("sluice-ticker".into()).spawn(move || {
            loop {
                // Parked, not asleep: `shutdown` unparks it, so a run does not end up to a tick late.
                std::thread::park_timeout(every);
                if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                // Never waits: a busy worker will see the next tick.
                let _ = tick_tx.try_send(vec![Envelope::tick()]);
            }
        })?;
        Ok(Pipeline {
            inboxes,
            workers,
            progress,
            state,
            version,
            ticker: Some((stop, ticker)),
            flush_at_end,
            live,
            recorder,
        })
    }

    /// Swaps in a new version of the chain (validated already): messages in flight finish on the
    /// old one, the next ones take the new. State of nodes whose id is unchanged carries over.
    pub fn reload(&self, chain: Arc<Chain>) {
        self.version.replace(chain);
    }

    /// The chain now running.
    pub fn chain(&self) -> Arc<Chain> {
        self.version.current().0
    }

    /// A handle that swaps versions in while the pipeline runs (the hot reloader's).
    pub fn chain_handle(&self) -> ChainHandle {
        ChainHandle(self.version.clone())
    }

    /// The watermark of completed work.
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// A handle sources keep to send messages (the pipeline shuts down once every handle is
    /// dropped and [`Pipeline::shutdown`] is called).
    pub fn sender(&self) -> PipelineSender {
        PipelineSender { inboxes: self.inboxes.clone(), progress: self.progress.clone() }
    }

    /// Hands a message to its worker, waiting while that worker's queue is full.
    pub async fn send(&self, envelope: Envelope) -> Result<(), Closed> {
        let (i, envelope) = route(self.inboxes.len(), &self.progress, envelope);
        self.inboxes[i].send(vec![envelope]).await.map_err(|_| Closed)
    }

    /// Blocking [`Pipeline::send`], for callers outside the async runtime.
    pub fn send_blocking(&self, envelope: Envelope) -> Result<(), Closed> {
        let (i, envelope) = route(self.inboxes.len(), &self.progress, envelope);
        self.inboxes[i].blocking_send(vec![envelope]).map_err(|_| Closed)
    }

    /// Messages waiting in each worker's inbox, now (a batch counts as its messages' share of
    /// the queue: batches, not messages, are queued).
    pub fn queue_depths(&self) -> impl Fn() -> Vec<usize> + Send + Sync + 'static {
        let inboxes: Vec<_> = self.inboxes.iter().map(|tx| tx.downgrade()).collect();
        move || inboxes.iter().map(|tx| tx.upgrade().map_or(0, |tx| tx.max_capacity() - tx.capacity())).collect()
    }

    /// Its flight recorder: each node's last events (see [`recorder`]).
    pub fn recorder(&self) -> recorder::Recorder {
        self.recorder.clone()
    }

    /// Its counts per node while it runs (see [`LiveStats`]).
    pub fn live_stats(&self) -> LiveStats {
        self.live.clone()
    }

    /// A [`Batcher`] onto this pipeline.
    pub fn batcher(&self) -> Batcher {
        Batcher::new(self.inboxes.clone(), self.progress.clone())
    }

    /// [`Pipeline::shutdown`] without closing the windows still open, whatever the config
    /// says: the stream is paused (a run told to stop), not ended; its state is checkpointed.
    pub fn pause(self) -> RunStats {
        self.flush_at_end.store(false, std::sync::atomic::Ordering::SeqCst);
        self.shutdown()
    }

    /// Stops taking messages, lets the workers finish what they have, and returns the counts.
    pub fn shutdown(mut self) -> RunStats {
        if let Some((stop, ticker)) = self.ticker.take() {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            ticker.thread().unpark();
            let _ = ticker.join();
        }
        drop(self.inboxes);
        let mut stats = RunStats::default();
        for worker in self.workers {
            match worker.join() {
                Ok(s) => stats.merge(s),
                Err(_) => tracing::error!("a worker thread panicked"),
            }
        }
        stats::add_late(&mut stats, &self.state);
        stats
    }
}

//! A worker: one OS thread that owns an instance of every rule node it has used and runs each
//! message it is handed through the whole chain, depth first.
//!
//! Running a message to completion on one thread is what keeps per-originator order (the router
//! sends an originator's messages to one worker) and what lets a node instance be reused for
//! every message without locks.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};

use bytes::Bytes;
use sluice_sdk::TbMsg;

use sluice_core::message::Message;
use tokio::sync::mpsc;

use super::progress::Progress;
use super::stats::{NodeStats, RunStats};
use super::{Ack, Envelope, Sinks};
use crate::chain::{Chain, NodeIdx, NodeKind, RuleNode, SinkKind};
use crate::host::{Emitted, Relation};
use crate::runtime::{HostEnv, NodeError, NodeErrorKind, NodeInstance, Runtime};
use crate::state::time::NO_WATERMARK;
use crate::state::window::{Closed, ClosedWindow, Timer};
use crate::state::{NodeWindows, StateStore};
use sluice_core::Clock;
use sluice_core::SinkItem;
use sluice_sdk::relation::FAILURE;

/// Crash bookkeeping shared by every worker's instance of a node.
#[derive(Debug, Default)]
pub struct NodeHealth {
    pub consecutive_crashes: AtomicU32,
    pub disabled: AtomicBool,
}

/// Runs messages through a chain on the calling thread. [`super::Pipeline`] runs one per worker
/// thread; it is public so that benchmarks and embedders can drive a chain synchronously.
pub struct Worker {
    runtime: Arc<Runtime>,
    chain: Arc<Chain>,
    health: Arc<Vec<NodeHealth>>,
    state: StateStore,
    clock: Clock,
    sinks: Sinks,
    progress: Arc<Progress>,
    /// Where a reloaded chain comes from, and the generation this worker runs.
    version: Option<(Arc<super::ChainVersion>, u64)>,
    /// Counts of chain versions this worker ran before a reload.
    retired: RunStats,
    instances: Vec<Option<NodeInstance>>,
    /// The window stores of each rule node (empty for nodes that declare none).
    windows: Vec<Option<NodeWindows>>,
    stats: Vec<NodeStats>,
    output_count: u64,
    /// Reused output buffer of node calls.
    outputs: Vec<(Relation, Emitted)>,
    /// The work list of the last message, empty, kept for the next.
    spare: Pending,
    /// The watermark the message being processed is judged by ([`Envelope::judged_by`]).
    watermark: i64,
    /// The source partition of the message (window, timer) being processed.
    partition: crate::state::window::Owner,
    /// Windows already fired up to this watermark (by this worker), in this epoch of the
    /// progress (a rewind starts it over).
    fired: i64,
    fired_epoch: u64,
    /// Early updates the current message caused: (node, window).
    early: Vec<(NodeIdx, Closed)>,
    /// Where this worker publishes its counts (`/metrics`), its slot there, and when it last did.
    live: Option<(super::LiveStats, usize, std::time::Instant)>,
    /// The flight recorder, this worker's number in it, and its ring of each node (by index;
    /// `None`: not recorded).
    recorder: Option<(super::recorder::Recorder, usize)>,
    rings: Vec<super::recorder::Slot>,
    /// The outputs of the call being recorded, gathered as they are routed.
    taped: Option<Vec<(Relation, Arc<Message>)>>,
    /// An emptied outputs vector for the next recorded call.
    tape: Vec<(Relation, Arc<Message>)>,
    /// Processing time of the message being processed, as the recorder shows it (read once per
    /// batch: a batch is run in microseconds).
    now_ms: i64,
    /// Sees every output of every node as it is routed (see [`Worker::tapping`]).
    tap: Option<Tap>,
    /// Messages for the output and the dead letters, held until the batch being run is done
    /// (see [`Worker::send_sinks`]).
    to_output: Vec<(Arc<Message>, Ack)>,
    to_dead_letter: Vec<(Arc<Message>, Ack)>,
    /// Inside [`Worker::run`]'s batch: sink messages wait for its end.
    batching: bool,
}

/// At most this many messages wait for a sink in a worker before they are sent anyway.
const SINK_BATCH: usize = 1024;

impl Drop for Worker {
    /// Nothing a worker holds for a sink is dropped unsent (its ack would count it written).
    fn drop(&mut self) {
        self.send_sinks();
    }
}

/// Hands the messages `held` for a sink to it in one send (none: they are only counted).
fn send(held: &mut Vec<(Arc<Message>, Ack)>, sink: Option<&sluice_core::SinkSender>, name: &str) {
    if held.is_empty() {
        return;
    }
    let msgs = std::mem::take(held);
    if let Some(sink) = sink
        && sink.send(SinkItem::Msgs(msgs)).is_err()
    {
        tracing::error!("{name} sink closed: messages not written");
    }
}

/// Sees each output of each node as it is routed: (node id, relation, message). `sluice test`
/// taps a worker to check what a node sent on a relation.
pub type Tap = Box<dyn FnMut(&str, &str, &Arc<Message>) + Send>;

type Pending = Vec<(NodeIdx, Arc<Message>, u32)>;

/// How the recorder names an event.
fn handed(event: Event) -> super::recorder::Handed {
    match event {
        Event::Window => super::recorder::Handed::Window,
        Event::Timer => super::recorder::Handed::Timer,
    }
}

/// What [`Worker::run_event`] hands a node besides messages.
#[derive(Debug, Clone, Copy)]
enum Event {
    Window,
    Timer,
}

impl Worker {
    pub(super) fn new(
        runtime: Arc<Runtime>,
        chain: Arc<Chain>,
        health: Arc<Vec<NodeHealth>>,
        state: StateStore,
        clock: Clock,
        sinks: Sinks,
    ) -> Self {
        let n = chain.nodes.len();
        let windows = chain
            .nodes
            .iter()
            .map(|node| matches!(node.kind, NodeKind::Rule(_)).then(|| state.node(&node.id).windows))
            .collect();
        Worker {
            runtime,
            chain,
            health,
            state,
            clock,
            sinks,
            progress: Arc::new(Progress::default()),
            version: None,
            retired: RunStats::default(),
            instances: (0..n).map(|_| None).collect(),
            windows,
            stats: vec![NodeStats::default(); n],
            output_count: 0,
            outputs: Vec::new(),
            spare: Vec::new(),
            watermark: NO_WATERMARK,
            partition: crate::state::window::UNOWNED,
            fired: NO_WATERMARK,
            fired_epoch: 0,
            early: Vec::new(),
            live: None,
            recorder: None,
            rings: Vec::new(),
            taped: None,
            tape: Vec::new(),
            now_ms: 0,
            tap: None,
            to_output: Vec::new(),
            to_dead_letter: Vec::new(),
            batching: false,
        }
    }

    /// Records this worker's calls in `recorder`, as its worker `number`.
    pub(super) fn recording(mut self, recorder: super::recorder::Recorder, number: usize) -> Self {
        self.rings = recorder.slots(&self.chain, number);
        self.recorder = Some((recorder, number));
        self
    }

    /// Hands every output of every node to `tap` as it is routed.
    pub fn tapping(mut self, tap: Tap) -> Self {
        self.tap = Some(tap);
        self
    }

    /// Runs on `clock` (processing time: timers, `now_ms`, arrival-time event time) instead of
    /// the system clock: a test moves it by hand.
    pub fn clocked(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The progress this worker fires windows by: a driver that stamps its own messages raises
    /// it (an idle source's watermark) or ends it (the end of the input).
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Fires the timers due by the clock and the windows the completed watermark closed, as a
    /// pipeline's tick does.
    pub fn tick(&mut self) {
        self.process(Envelope::tick());
    }

    /// The end of the input: every window still open closes and fires.
    pub fn end_of_input(&mut self) {
        self.progress.end_of_input();
        self.fire_due();
    }

    /// The counts so far, keeping the worker, with the late events its state's windows
    /// counted (as [`super::Pipeline::shutdown`] adds them): for a worker that has the state to
    /// itself, a standalone one.
    pub fn counts(&self) -> RunStats {
        let mut stats = self.stats();
        super::stats::add_late(&mut stats, &self.state);
        stats
    }

    /// Publishes this worker's counts to `live`, in slot `slot`, while it runs.
    pub(super) fn publishing(mut self, live: super::LiveStats, slot: usize) -> Self {
        self.live = Some((live, slot, std::time::Instant::now()));
        self
    }

    /// Publishes the counts when `PUBLISH_EVERY` has passed (or `now`).
    fn publish(&mut self, now: bool) {
        let due = match &self.live {
            Some((_, _, last)) => now || last.elapsed() >= super::stats::PUBLISH_EVERY,
            None => false,
        };
        if due {
            let stats = self.stats();
            if let Some((live, slot, last)) = &mut self.live {
                live.publish(*slot, stats);
                *last = std::time::Instant::now();
            }
        }
    }

    pub(super) fn with_progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = progress;
        self
    }

    pub(super) fn with_version(mut self, version: Arc<super::ChainVersion>) -> Self {
        let generation = version.generation();
        self.version = Some((version, generation));
        self
    }

    /// Takes a reloaded chain, if there is one: fresh instances of the new modules; the state
    /// (by node id) stays.
    fn adopt_reload(&mut self) {
        let Some((version, generation)) = &self.version else { return };
        let latest = version.generation();
        if latest == *generation {
            return;
        }
        let version = version.clone();
        let (chain, health) = version.current();
        let old = std::mem::replace(&mut self.stats, vec![NodeStats::default(); chain.nodes.len()]);
        let mut retired = RunStats::default();
        for (node, s) in self.chain.nodes.iter().zip(old) {
            retired.nodes.insert(node.id.clone(), s);
        }
        self.retired.merge(retired);
        self.windows = chain
            .nodes
            .iter()
            .map(|node| matches!(node.kind, NodeKind::Rule(_)).then(|| self.state.node(&node.id).windows))
            .collect();
        self.instances = (0..chain.nodes.len()).map(|_| None).collect();
        if let Some((recorder, number)) = &self.recorder {
            self.rings = recorder.slots(&chain, *number);
        }
        self.chain = chain;
        self.health = health;
        self.version = Some((version, latest));
    }

    /// A worker with its own crash bookkeeping (for use outside a [`super::Pipeline`]).
    pub fn standalone(runtime: Arc<Runtime>, chain: Arc<Chain>, sinks: Sinks) -> Self {
        Self::standalone_with_state(runtime, chain, sinks, StateStore::default())
    }

    /// [`Worker::standalone`] on `state` (seeded with the chain's table seeds where it lacks
    /// their rows).
    pub fn standalone_with_state(runtime: Arc<Runtime>, chain: Arc<Chain>, sinks: Sinks, state: StateStore) -> Self {
        crate::chain::seed::apply_all(&chain.seeds, state.tables());
        let health = Arc::new(chain.nodes.iter().map(|_| NodeHealth::default()).collect());
        Worker::new(runtime, chain, health, state, Clock::System, sinks)
    }

    pub(super) fn run(
        mut self,
        mut inbox: mpsc::Receiver<super::Batch>,
        all_drained: Arc<Barrier>,
        flush: Arc<AtomicBool>,
    ) -> RunStats {
        while let Some(batch) = inbox.blocking_recv() {
            // The batch's token (on its first envelope) is held until every envelope it covers
            // has run; then the windows its completion closed fire.
            let mut held = None;
            let covers = batch.iter().any(|e| e.covered);
            self.batching = true;
            if self.recorder.is_some() {
                self.now_ms = self.clock.now_ms();
            }
            for (k, mut envelope) in batch.into_iter().enumerate() {
                if k == 0 && covers {
                    held = envelope.progress.take();
                    envelope.covered = true;
                }
                self.process(envelope);
            }
            self.batching = false;
            // What the batch wrote goes to the sinks before its token says it is done: a
            // checkpoint that waits for the pipeline to be idle then flushes them with it.
            self.send_sinks();
            if let Some(token) = held {
                drop(token);
                self.fire_due();
            }
            // About to wait for more: what it did shows now, not when it is busy again.
            self.publish(inbox.is_empty());
        }
        // Every worker has run everything it was given: the end of the input closes every window.
        all_drained.wait();
        if flush.load(Ordering::SeqCst) {
            self.progress.end_of_input();
            self.fire_due();
        }
        // The last publication is the worker's final count: the live view ends equal to it.
        self.publish(true);
        self.into_stats()
    }

    /// The counts so far.
    pub fn into_stats(self) -> RunStats {
        self.stats()
    }

    /// The counts so far, by node id (nodes a reload removed included).
    fn stats(&self) -> RunStats {
        let mut stats = RunStats { output: self.output_count, ..Default::default() };
        for ((node, health), s) in self.chain.nodes.iter().zip(self.health.iter()).zip(&self.stats) {
            let mut s = s.clone();
            s.disabled = health.disabled.load(Ordering::Relaxed);
            stats.nodes.insert(node.id.clone(), s);
        }
        stats.merge(self.retired.clone());
        stats
    }

    /// Whether node `idx`'s calls go into the flight recorder.
    fn recorded(&self, idx: NodeIdx) -> bool {
        matches!(self.rings.get(idx), Some(Some(_)))
    }

    /// A call of node `idx` begins: returns when (every call is timed, for
    /// `sluice_node_call_seconds`), and when the node is recorded, starts taping its outputs.
    fn start_recording(&mut self, idx: NodeIdx) -> std::time::Instant {
        if self.recorded(idx) {
            self.taped = Some(std::mem::take(&mut self.tape));
        }
        std::time::Instant::now()
    }

    /// The call of node `idx` that began at `started` ended: its latency counted, and when the
    /// node is recorded, the call written into its ring.
    fn finish_recording(
        &mut self,
        idx: NodeIdx,
        started: std::time::Instant,
        handed: super::recorder::Handed,
        input: Option<Arc<Message>>,
        error: Option<String>,
    ) {
        let outputs = self.taped.take().unwrap_or_default();
        let duration = started.elapsed();
        self.stats[idx].latency.observe(duration);
        let (Some(Some(ring)), Some((_, number))) = (self.rings.get(idx), &self.recorder) else { return };
        let event = super::recorder::Event {
            seq: 0,
            worker: *number,
            at_ms: self.now_ms,
            started,
            handed,
            input,
            outputs,
            duration,
            error,
        };
        self.tape = super::recorder::Recorder::record(ring, event);
    }

    /// Runs one message through the chain, then the windows its completion closed.
    pub fn process(&mut self, envelope: Envelope) {
        if envelope.tick {
            self.adopt_reload();
            self.fire_timers(self.clock.now_ms());
            self.fire_due();
            self.publish(false);
            return;
        }
        let Envelope { msg, ack, watermark, judged_by, partition, progress, covered, .. } = envelope;
        // The recorder's time of the call: once per batch in [`Worker::run`], else per message.
        if self.recorder.is_some() && !self.batching {
            self.now_ms = self.clock.now_ms();
        }
        // A message handed straight to a standalone worker is tracked by the worker itself; one
        // covered by its batch's token, by that.
        let progress = if covered { progress } else { progress.or_else(|| Some(self.progress.issue(watermark))) };
        self.adopt_reload();
        // Lateness is judged by the message's own watermark; early updates go on under it too.
        let watermark = judged_by;
        self.watermark = watermark;
        self.partition = partition;
        let mut pending = std::mem::take(&mut self.spare);
        pending.push((self.chain.entry, msg, 1));
        self.spare = self.run_from(pending, &ack);
        for (idx, closed) in std::mem::take(&mut self.early) {
            self.run_window(idx, closed, watermark);
        }
        // What it wrote goes to the sinks before the token that tracks it is dropped (a
        // checkpoint waits for no token, then flushes the sinks); a covered message's outputs
        // wait for the end of its batch, whose token [`Worker::run`] holds.
        if !self.batching || progress.is_some() {
            self.send_sinks();
        }
        drop(progress);
        self.fire_due();
    }

    /// Depth-first through the chain from `pending`; gives the emptied vector back for reuse.
    fn run_from(&mut self, mut pending: Pending, ack: &Ack) -> Pending {
        let chain = self.chain.clone();
        while let Some((idx, msg, hops)) = pending.pop() {
            let node = &chain.nodes[idx];
            self.stats[idx].received += 1;
            if node.debug {
                tracing::info!(target: "sluice::debug", node = %node.id, event = "in", msg = %json(&msg));
            }
            let rule = match &node.kind {
                NodeKind::Sink(SinkKind::Output) => {
                    self.output_count += 1;
                    if self.sinks.output.is_some() {
                        self.to_output.push((msg, ack.clone()));
                        if self.to_output.len() >= SINK_BATCH {
                            self.send_sinks();
                        }
                    }
                    continue;
                }
                NodeKind::Chain { entry } => {
                    self.push(&mut pending, idx, *entry, msg, hops);
                    continue;
                }
                NodeKind::Rule(rule) => rule,
            };
            let started = self.start_recording(idx);
            // The outputs' vector goes back to `self.outputs` once routed, so that calls reuse it.
            let mut error = None;
            let mut outputs = match self.call(idx, rule, &msg, ack) {
                Ok(()) => std::mem::take(&mut self.outputs),
                Err(err) => {
                    self.stats[idx].failures += 1;
                    *self.stats[idx].failure_kinds.entry(err.kind.label().into()).or_default() += 1;
                    if self.recorded(idx) {
                        error = Some(err.to_string());
                    }
                    vec![(FAILURE.into(), Emitted::Draft(with_error(&msg, &err)))]
                }
            };
            self.route(&chain, idx, &mut outputs, Some(&msg), None, hops, &mut pending, ack);
            self.outputs = outputs;
            self.finish_recording(idx, started, super::recorder::Handed::Message, Some(msg), error);
        }
        pending
    }

    /// Sends a node's outputs down its connections (pushed in reverse, so that they run in the
    /// order they were emitted). `input` is what `forward` refers to (none for a window);
    /// `parent` is the id new messages' ids derive from (when not the input's).
    // The route of one call's outputs: what came in, what went out, and where it goes.
    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        chain: &Chain,
        idx: NodeIdx,
        outputs: &mut Vec<(Relation, Emitted)>,
        input: Option<&Arc<Message>>,
        parent: Option<&str>,
        hops: u32,
        pending: &mut Pending,
        ack: &Ack,
    ) {
        let node = &chain.nodes[idx];
        // Written out only for an output that needs it (a uuid is formatted on demand).
        let parent = || match (parent, input) {
            (Some(id), _) => std::borrow::Cow::Borrowed(id),
            (None, Some(msg)) => msg.id(),
            (None, None) => std::borrow::Cow::Borrowed(""),
        };
        let count = outputs.len();
        for (back, (relation, emitted)) in outputs.drain(..).rev().enumerate() {
            let n = count - 1 - back;
            let checked = match emitted {
                Emitted::Forward => match input {
                    Some(msg) => Ok(msg.clone()),
                    None => Err("a window or timer result cannot forward: there is no incoming message".to_string()),
                },
                Emitted::Draft(msg) => Ok(Arc::new(Message::from(msg))),
                Emitted::Json(bytes) => ensure_id(&bytes, &parent(), n).map(|m| Arc::new(Message::from(m))),
            };
            let (relation, out_msg) = match checked {
                Ok(msg) => (relation, msg),
                Err(error) => {
                    self.stats[idx].failures += 1;
                    let err = NodeError { node: node.id.clone(), kind: NodeErrorKind::Abi(error) };
                    *self.stats[idx].failure_kinds.entry(err.kind.label().into()).or_default() += 1;
                    let failed = match input {
                        Some(msg) => with_error(msg, &err),
                        None => with_error(&event_msg(&node.id, &parent()).into(), &err),
                    };
                    (FAILURE.into(), Arc::new(Message::from(failed)))
                }
            };
            if node.debug {
                tracing::info!(target: "sluice::debug", node = %node.id, event = "out", %relation,
                    msg = %json(&out_msg));
            }
            *self.stats[idx].outputs.entry_ref(&relation) += 1;
            if let Some(taped) = &mut self.taped {
                taped.push((relation.clone(), out_msg.clone()));
            }
            if let Some(tap) = &mut self.tap {
                tap(&node.id, &relation, &out_msg);
            }
            match chain.targets(idx, &relation) {
                Some(targets) => {
                    for &target in targets.iter().rev() {
                        self.push(pending, idx, target, out_msg.clone(), hops);
                    }
                }
                None if relation == FAILURE => {
                    self.stats[idx].unhandled_failures += 1;
                    let error = out_msg.meta("error").unwrap_or_default();
                    tracing::warn!(node = %node.id, %error, "failure with no Failure connection");
                    if self.sinks.dead_letter.is_some() {
                        self.stats[idx].dead_lettered += 1;
                        self.to_dead_letter.push((out_msg.clone(), ack.clone()));
                    }
                }
                None => *self.stats[idx].dropped.entry_ref(&relation) += 1,
            }
        }
    }

    /// Fires every window the completed watermark closed, once (whichever worker pops a window
    /// from the shared store fires it).
    fn fire_due(&mut self) {
        let progress = self.progress.clone();
        // Nothing new since the last time (without the gate: the common case, every message).
        // The watermark before the epoch: a rewind bumps the epoch before it stores its watermark.
        let watermark = progress.completed();
        if progress.epoch() == self.fired_epoch && watermark <= self.fired {
            return;
        }
        let _gate = progress.gate();
        // Read again under the gate: a rebalance changes the state and rewinds the watermark
        // while it holds the gate, and a watermark read before that must not close the windows
        // that came in with it.
        let (epoch, watermark) = (progress.epoch(), progress.completed());
        if epoch != self.fired_epoch {
            self.fired_epoch = epoch;
            self.fired = NO_WATERMARK;
        }
        if watermark <= self.fired {
            return;
        }
        self.fired = watermark;
        let chain = self.chain.clone();
        for &idx in &chain.fire_order {
            let Some(windows) = &self.windows[idx] else { continue };
            let due: Vec<(Closed, i64)> = {
                let mut stores = windows.lock();
                let mut due = Vec::new();
                for store in stores.iter_mut() {
                    let grace = store.spec.grace_ms as i64;
                    // A result carries the last watermark at which its window was open, so a
                    // downstream window of the same size and grace still takes it.
                    due.extend(store.due(watermark).into_iter().map(|c| {
                        let open_until = c.end.saturating_add(grace).saturating_sub(1);
                        (c, open_until)
                    }));
                }
                due
            };
            for (closed, open_until) in due {
                self.run_window(idx, closed, open_until);
            }
        }
        // Sent under the gate: a checkpoint takes it, then flushes the sinks.
        self.send_sinks();
    }

    /// Fires the processing-time timers due at `now`, node by node (upstream first).
    fn fire_timers(&mut self, now: i64) {
        let progress = self.progress.clone();
        let _gate = progress.gate();
        let chain = self.chain.clone();
        for &idx in &chain.fire_order {
            let id = &chain.nodes[idx].id;
            for (at, key, owner) in self.state.node(id).timers.take_due(now) {
                let timer = Timer { id: format!("{id}/timer/{key}/{at}"), key, at, now };
                self.run_timer(idx, timer, owner);
            }
        }
        self.send_sinks();
    }

    /// Hands the messages waiting for the output and the dead letters to their sinks, one send
    /// each (see `sluice_core::sink`).
    fn send_sinks(&mut self) {
        send(&mut self.to_output, self.sinks.output.as_ref(), "output");
        send(&mut self.to_dead_letter, self.sinks.dead_letter.as_ref(), "dead-letter");
    }

    /// Hands one window to its node and runs the results down the chain.
    fn run_window(&mut self, idx: NodeIdx, closed: Closed, watermark: i64) {
        let owner = closed.owner;
        let window = ClosedWindow::new(&self.chain.nodes[idx].id, closed);
        match serde_json::to_vec(&window) {
            Ok(bytes) => self.run_event(idx, Event::Window, &window.id, &Bytes::from(bytes), watermark, owner),
            Err(e) => self.event_unsent(idx, Event::Window, &window.id, &e),
        }
    }

    fn run_timer(&mut self, idx: NodeIdx, timer: Timer, owner: crate::state::window::Owner) {
        let watermark = self.progress.completed();
        match serde_json::to_vec(&timer) {
            Ok(bytes) => self.run_event(idx, Event::Timer, &timer.id, &Bytes::from(bytes), watermark, owner),
            Err(e) => self.event_unsent(idx, Event::Timer, &timer.id, &e),
        }
    }

    /// A window or timer that could not be written out for its node: counted and logged as a
    /// failed one (never handed over empty).
    fn event_unsent(&mut self, idx: NodeIdx, event: Event, id: &str, error: &serde_json::Error) {
        self.stats[idx].window_failures += 1;
        tracing::error!(node = %self.chain.nodes[idx].id, %id, %error, "{event:?} cannot be serialized");
    }

    /// Hands a window or a timer (JSON `bytes`) to its node, then runs the results down the
    /// chain under `watermark`. A failure is logged and counted: there is no message to send to
    /// `Failure`. What it emits, and the state downstream nodes write for it, belongs to
    /// `owner`, the partition of the window's key or the timer.
    fn run_event(
        &mut self,
        idx: NodeIdx,
        event: Event,
        id: &str,
        bytes: &Bytes,
        watermark: i64,
        owner: crate::state::window::Owner,
    ) {
        let chain = self.chain.clone();
        let NodeKind::Rule(rule) = &chain.nodes[idx].kind else { return };
        if self.recorder.is_some() {
            self.now_ms = self.clock.now_ms();
        }
        let started = self.start_recording(idx);
        let result = self.ensure_instance(idx, rule).and_then(|()| {
            let instance = self.instances[idx].as_mut().expect("ensured above");
            instance.set_watermark(watermark);
            instance.set_partition(owner);
            match event {
                Event::Window => instance.call_window(bytes, &mut self.outputs),
                Event::Timer => instance.call_timer(bytes, &mut self.outputs),
            }
        });
        match result {
            Ok(()) => {
                match event {
                    Event::Window => self.stats[idx].windows_fired += 1,
                    Event::Timer => self.stats[idx].timers_fired += 1,
                }
                let mut outputs = std::mem::take(&mut self.outputs);
                let mut pending = Vec::new();
                self.route(&chain, idx, &mut outputs, None, Some(id), 1, &mut pending, &Ack::none());
                self.outputs = outputs;
                self.finish_recording(idx, started, handed(event), None, None);
                let outer = std::mem::replace(&mut self.watermark, watermark);
                let outer_partition = std::mem::replace(&mut self.partition, owner);
                self.run_from(pending, &Ack::none());
                self.watermark = outer;
                self.partition = outer_partition;
            }
            Err(err) => {
                self.stats[idx].window_failures += 1;
                let error = self.recorded(idx).then(|| err.to_string());
                self.finish_recording(idx, started, handed(event), None, error);
                if err.kind.is_crash() {
                    self.instances[idx] = None;
                }
                tracing::error!(node = %chain.nodes[idx].id, %id, error = %err.kind, "{event:?} failed");
            }
        }
    }

    fn push(&mut self, pending: &mut Pending, from: NodeIdx, to: NodeIdx, msg: Arc<Message>, hops: u32) {
        if hops >= self.chain.max_hops {
            self.stats[from].hop_limit += 1;
            tracing::warn!(node = %self.chain.nodes[from].id, max_hops = self.chain.max_hops,
                "message exceeded the chain's maxHops: stopped");
            return;
        }
        pending.push((to, msg, hops + 1));
    }

    /// Starts the node's instance if it has none. A start that fails counts as a crash.
    fn ensure_instance(&mut self, idx: NodeIdx, rule: &RuleNode) -> Result<(), NodeError> {
        if self.instances[idx].is_none() {
            let id = &self.chain.nodes[idx].id;
            let env = HostEnv::new(id.as_str(), self.state.node(id), self.clock.clone());
            match self.runtime.instantiate(rule, env) {
                Ok(fresh) => self.instances[idx] = Some(fresh),
                // A node whose init passed at load but fails now (it traps, or depends on
                // something that changed) counts as crashing, so that it can be disabled.
                Err(err) => {
                    return Err(NodeError {
                        node: err.node,
                        kind: NodeErrorKind::Trap(format!("init failed: {}", err.kind)),
                    });
                }
            }
        }
        Ok(())
    }

    /// Calls the rule node `idx` with `msg`; outputs land in `self.outputs`.
    fn call(&mut self, idx: NodeIdx, rule: &RuleNode, msg: &Arc<Message>, ack: &Ack) -> Result<(), NodeError> {
        if self.health[idx].disabled.load(Ordering::Relaxed) {
            let id = self.chain.nodes[idx].id.clone();
            return Err(NodeError { node: id, kind: NodeErrorKind::Disabled(rule.limits.disable_after) });
        }
        let (watermark, partition) = (self.watermark, self.partition);
        let result = self.ensure_instance(idx, rule).and_then(|()| {
            let instance = self.instances[idx].as_mut().expect("ensured above");
            instance.set_watermark(watermark);
            instance.set_partition(partition);
            instance.set_ack(ack);
            let result = instance.call(msg, &mut self.outputs);
            instance.set_ack(&Ack::none());
            self.early.extend(instance.take_early().into_iter().map(|c| (idx, c)));
            result
        });
        match result {
            Ok(()) => {
                // Written only when there is something to reset: the count is shared by every
                // worker, and a store a message would bounce its cache line between them.
                let crashes = &self.health[idx].consecutive_crashes;
                if crashes.load(Ordering::Relaxed) != 0 {
                    crashes.store(0, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(err) if err.kind.is_crash() => {
                let health = &self.health[idx];
                self.instances[idx] = None;
                self.stats[idx].crashes += 1;
                let crashes = health.consecutive_crashes.fetch_add(1, Ordering::Relaxed) + 1;
                let limit = rule.limits.disable_after;
                let id = &self.chain.nodes[idx].id;
                tracing::warn!(node = %id, error = %err.kind, crashes, "node crashed; a fresh instance takes the next message");
                if limit > 0 && crashes >= limit && !health.disabled.swap(true, Ordering::Relaxed) {
                    tracing::error!(node = %id, crashes, "node disabled after consecutive crashes");
                }
                Err(err)
            }
            Err(err) => Err(err),
        }
    }
}

/// `entry_ref` for `BTreeMap<String, u64>`: no allocation when the key exists.
trait EntryRef {
    fn entry_ref(&mut self, key: &str) -> &mut u64;
}

impl EntryRef for std::collections::BTreeMap<String, u64> {
    fn entry_ref(&mut self, key: &str) -> &mut u64 {
        if !self.contains_key(key) {
            self.insert(key.to_string(), 0);
        }
        self.get_mut(key).expect("inserted above")
    }
}

/// The message with `metadata.error` set, for the `Failure` relation.
fn with_error(msg: &Message, err: &NodeError) -> TbMsg {
    let mut failed = msg.to_tb();
    failed.metadata.insert("error".into(), err.kind.to_string());
    failed
}

/// What stands for a window or a timer on `Failure`, where there is no incoming message.
fn event_msg(node: &str, id: &str) -> TbMsg {
    let originator = sluice_sdk::Originator { entity_type: "RULE_NODE".into(), name: node.into(), id: None };
    TbMsg::new("SLUICE_EVENT_FAILED", originator, serde_json::Value::Null).with_id(id)
}

/// A message as JSON text, for the debug log.
fn json(msg: &Message) -> String {
    serde_json::to_string(msg).unwrap_or_else(|e| format!("(not serializable: {e})"))
}

/// Reads a message a guest wrote out as JSON (`emit_json`): it must be a TbMsg; one without an
/// id gets the deterministic id derived from `parent` and its position.
fn ensure_id(bytes: &[u8], parent: &str, n: usize) -> Result<TbMsg, String> {
    let mut msg: TbMsg =
        serde_json::from_slice(bytes).map_err(|e| format!("node emitted something that is not a message: {e}"))?;
    if msg.id.is_empty() {
        msg.id = sluice_sdk::derived_id(parent, n);
    }
    Ok(msg)
}

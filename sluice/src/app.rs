//! `sluice run`: a chain, one source, the outputs — whatever the source. A file run is a service
//! whose source ends.
//!
//! ```text
//! source (jsonl | kafka | mqtt | http) ──Feed──▶ Pipeline ──▶ output (file | stdout | kafka)
//!    │                                              └──Failure, unconnected──▶ dead letters
//!    └── checkpoints: all acked → state + position saved (lines, offsets)
//! ```
//!
//! Everything a run does around its source is done here, once:
//! - **state**: the last checkpoint of the same source ([`Source::id`]) is restored unless it is
//!   complete (a file read to its end) or the run is `fresh`; the chain's nodes are checked
//!   against it;
//! - **files**: a finite source that starts fresh starts its files fresh — the output, the dead
//!   letters and the chain's `file` connectors (unless `append: true`) are truncated, so running
//!   a chain on a file twice gives the same files. A resumed run, or a source that runs on (a
//!   restart is not a new run), appends;
//! - **checkpoints**: a source that [`Source::checkpoints_itself`] cuts at its own position (a
//!   file's line, Kafka's offsets); any other is checkpointed every `checkpoint_every`. When the
//!   source returns and the pipeline has stopped, the last checkpoint is written (Kafka's is its
//!   own, committed with its offsets);
//! - **the end**: the end of a finite input waits for pending timers (delays, generators), then
//!   closes every window still open and marks the checkpoint complete. A stop (SIGTERM,
//!   SIGINT) or a source that runs on only pauses the stream: every message read is finished,
//!   outputs are flushed, and windows stay open in the checkpoint for the same command to
//!   resume;
//! - **reload and admin**: the chain file is watched, and `/metrics` shows the source's own
//!   counters (each source registers them).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::chain::{Chain, LoadError, Loader, NodeKind};
use crate::config::{ConnectorSpec, OutputSpec};
use crate::core::{Metrics, SinkSender};
use crate::flow::{Pipeline, PipelineConfig, Problems, Progress, RunStats, Sinks};
use crate::runtime::Runtime;
use crate::sinks::{self, Output, SinkContext, SinkError, jsonl};
use crate::sources::{Checkpointer, CutError, Feed, Offsets, Source, SourceContext, SourceError};
use crate::state::StateStore;
use crate::state::checkpoint::{Captured, CheckpointError, Checkpoints, SourcePosition};
use crate::state::partition::PartitionState;
use crate::state::time::Watermarks;
use crate::state::window::Owner;

/// How to run a chain (the source is given apart: [`run`]).
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub chain: PathBuf,
    pub module_dirs: Vec<PathBuf>,
    /// Connectors replacing the chain's of the same name (`sluice.toml`).
    pub connectors: BTreeMap<String, ConnectorSpec>,
    /// The node messages enter (`sluice.toml`'s `entry`), instead of the chain's.
    pub entry: Option<String>,
    pub pipeline: PipelineConfig,
    /// Where checkpoints live (`None`: state in memory only).
    pub state_dir: Option<PathBuf>,
    /// How often a running source is checkpointed.
    pub checkpoint_every: Duration,
    /// How much telemetry history each key keeps (`[state]` `seriesMaxPoints`,
    /// `seriesMaxAgeMs`).
    pub series_limits: crate::state::series::Limits,
    /// Ignore any checkpoint and start over.
    pub fresh: bool,
    /// Where the `output` sink writes.
    pub output: OutputSpec,
    /// Where failures no `Failure` connection took go.
    pub dead_letter: Option<OutputSpec>,
    /// What relative paths of the outputs are relative to (the directory of `sluice.toml`).
    pub dir: PathBuf,
    /// Hot reload: watching, debounce, retention of removed nodes' state.
    pub reload: crate::reload::ReloadOptions,
    /// Where the admin endpoint listens (`None`: no endpoint).
    pub admin: Option<std::net::SocketAddr>,
    /// The bearer token the admin endpoint requires (required off loopback).
    pub admin_token: Option<String>,
}

impl AppOptions {
    /// `chain` with rules from `module_dirs`, and nothing else: messages to stdout, state in
    /// memory only, the chain not watched, no admin endpoint.
    pub fn new(chain: PathBuf, module_dirs: Vec<PathBuf>) -> Self {
        AppOptions {
            chain,
            module_dirs,
            connectors: BTreeMap::new(),
            entry: None,
            pipeline: PipelineConfig::default(),
            state_dir: None,
            checkpoint_every: Duration::from_secs(1),
            series_limits: Default::default(),
            fresh: false,
            output: OutputSpec::stdout(),
            dead_letter: None,
            dir: PathBuf::from("."),
            reload: crate::reload::ReloadOptions { watch: false, ..Default::default() },
            admin: None,
            admin_token: None,
        }
    }
}

/// What a run did: its last log lines and `--stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AppReport {
    /// The source's [`Source::id`].
    pub source: String,
    /// Lines read (a file source; blank ones and those a restored checkpoint covered included).
    pub lines: u64,
    /// Lines a restored checkpoint already covered (not run again).
    pub resumed_after: u64,
    /// Messages handed to the chain (lines, Kafka records, MQTT messages, HTTP telemetry
    /// points).
    pub messages: u64,
    /// Input that was not a message (reported with where it came from).
    pub malformed: u64,
    /// Messages whose every branch finished (a file source).
    pub acked: u64,
    /// Messages written to the output.
    pub written: u64,
    /// Checkpoints saved (for Kafka, committed with its offsets).
    pub checkpoints: u64,
    /// Partition reassignments (Kafka).
    pub rebalances: u64,
    /// A finite source stopped (SIGTERM, SIGINT) before the end of its input: the next run
    /// resumes after the last line read.
    pub interrupted: bool,
    /// Disabled nodes, dead letters, lost failures: what makes a finite run exit non-zero.
    pub problems: Problems,
    pub stats: RunStats,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot start workers: {0}")]
    Start(std::io::Error),
    #[error("{0}")]
    State(String),
    #[error(transparent)]
    StateCheck(#[from] crate::flow::StateCheckError),
    /// Writing an output (the error says which).
    #[error("{0}")]
    Output(String),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Runs the chain of `options` with `source` until its input ends, it fails, or `shutdown`
/// turns true. Returns what was done and how the source ended: a source that failed (a broker
/// unreachable, a malformed line under `--strict`) still leaves a consistent state and its
/// counts.
pub async fn run(
    runtime: Arc<Runtime>,
    options: AppOptions,
    source: Box<dyn Source>,
    shutdown: watch::Receiver<bool>,
) -> Result<(AppReport, Result<(), SourceError>), AppError> {
    let mut chain: Chain = Loader::new(&runtime, options.module_dirs.clone())
        .with_connectors(options.connectors.clone())
        .load(&options.chain)?;
    if let Some(entry) = &options.entry {
        chain.entry = chain.find(entry).ok_or_else(|| {
            AppError::State(format!("sluice.toml: `entry`: no node `{entry}` in {}", options.chain.display()))
        })?;
    }
    let chain = Arc::new(chain);
    let state = StateStore::with_series_limits(options.series_limits);
    let id = source.id();
    let finite = source.finite();

    // State: the last checkpoint of this source, unless it is complete.
    let checkpoints = match &options.state_dir {
        Some(dir) => Some(Arc::new(Checkpoints::open(&crate::state::checkpoint::path_for(dir, &options.chain))?)),
        None => None,
    };
    let mut restored: Option<SourcePosition> = None;
    if let Some(cp) = &checkpoints
        && let Some(position) = cp.position()?
    {
        if !options.fresh && !position.complete && position.source == id {
            cp.restore(&state)?;
            tracing::info!(position = position.position, offsets = ?position.offsets, "restored the last checkpoint: resuming there");
            restored = Some(position);
        } else {
            tracing::info!("the last checkpoint is complete, of another input, or --fresh: starting with empty state");
        }
    }
    crate::flow::check_state(&runtime, &chain, &state)?;

    // Files: a fresh finite run starts them empty; anything else carries on.
    let append = restored.is_some() || !finite;
    if !append {
        start_connectors_afresh(&chain)?;
    }
    let metrics = Metrics::default();
    let open = |spec: &OutputSpec, name: &'static str| {
        sinks::from_spec(spec, &options.dir).start(SinkContext { name, append, metrics: metrics.clone() })
    };
    let output = open(&options.output, "output")?;
    let dead = options.dead_letter.as_ref().map(|spec| open(spec, "deadLetter")).transpose()?;
    let outputs: Vec<&Output> = std::iter::once(&output).chain(dead.as_ref()).collect();
    let sinks = Sinks { output: Some(output.tx.clone()), dead_letter: dead.as_ref().map(|d| d.tx.clone()) };

    let progress = Arc::new(Progress::default());
    if let Some(position) = &restored {
        progress.restore(position.completed);
    }
    let mut pipeline_config = options.pipeline.clone();
    pipeline_config.flush_at_end = finite;
    let pipeline = Pipeline::start_with_progress(
        runtime.clone(),
        chain.clone(),
        state.clone(),
        sinks,
        pipeline_config,
        progress.clone(),
    )
    .map_err(AppError::Start)?;
    let label = options.chain.file_stem().map_or_else(|| "chain".into(), |s| s.to_string_lossy().into_owned());
    pipeline.live_stats().register(&metrics, &label);
    let depths = pipeline.queue_depths();
    metrics.register_dynamic(crate::core::metrics::DynamicFamily {
        name: "sluice_worker_queue_depth",
        help: "Batches waiting in each worker's inbox.",
        kind: "gauge",
        samples: Box::new(move || {
            depths().into_iter().enumerate().map(|(i, n)| (vec![("worker", i.to_string())], n as f64)).collect()
        }),
    });
    let reloader = crate::reload::Reloader::new(
        runtime.clone(),
        options.module_dirs.clone(),
        options.connectors.clone(),
        options.entry.clone(),
        pipeline.chain_handle(),
        state.clone(),
        options.reload.retention,
    );
    let inspect = crate::admin::Inspect { recorder: Some(pipeline.recorder()), live: Some(pipeline.live_stats()) };
    let control = crate::admin::Control::start(
        reloader,
        &options.reload,
        options.admin.map(|addr| crate::admin::Listen { addr, token: options.admin_token.clone() }),
        metrics.clone(),
        inspect,
    )
    .await
    .map_err(|e| AppError::Start(std::io::Error::other(e.to_string())))?;

    let clock = options.pipeline.clock.clone();
    let watermarks = match &restored {
        Some(p) => {
            let mut w = p.watermarks.clone();
            w.reconfigure(&chain.event_time);
            if !finite {
                // Time went by while the service was down: nothing is idle for that.
                w.touch_all(clock.now_ms());
            }
            w
        }
        None if source.discovers_partitions() => Watermarks::new(&chain.event_time).discovering(),
        None => Watermarks::new(&chain.event_time),
    };
    let feed = if finite {
        Feed::without_idle_check(pipeline.sender(), &chain, watermarks, clock)
    } else {
        Feed::new(pipeline.sender(), &chain, watermarks, clock)
    };
    register_watermarks(&metrics, &feed, &progress);
    let saver = Arc::new(Saver {
        checkpoints: checkpoints.clone(),
        state: state.clone(),
        progress: progress.clone(),
        feed: feed.clone(),
        outputs: outputs.iter().map(|o| o.tx.clone()).collect(),
        file_outputs: outputs.iter().filter(|o| o.is_file).map(|o| o.tx.clone()).collect(),
        source: id.clone(),
    });
    let every = options.checkpoint_every.max(Duration::from_millis(1));
    let checkpoints_itself = source.checkpoints_itself();
    // Without a state directory the cuts still flush the outputs.
    let periodic =
        (!checkpoints_itself).then(|| tokio::spawn(checkpoint_periodically(saver.clone(), every, shutdown.clone())));

    let acks = Arc::new(crate::core::AckCounter::default());
    tracing::info!(source = %source.describe(), "running; stop with SIGTERM or Ctrl-C");
    let cx = SourceContext {
        feed: feed.clone(),
        shutdown: shutdown.clone(),
        metrics,
        checkpointer: saver.clone(),
        keeps_state: checkpoints.is_some(),
        checkpoint_every: every,
        acks: acks.clone(),
        resume: restored,
    };
    let (counted, ended) = source.run(cx).await;
    if let Err(e) = &ended {
        tracing::error!("{e}");
    }
    // The end of a finite input, not a stop: timers may still be due.
    let mut exhausted = counted.exhausted && ended.is_ok();
    if exhausted {
        let mut shutdown = shutdown.clone();
        tokio::select! {
            biased;
            () = stop_requested(&mut shutdown) => exhausted = false,
            () = wait_for_timers(&state, &progress, options.pipeline.tick) => {}
        }
    }
    let stopped = finite && !exhausted && ended.is_ok();
    if let Some(periodic) = periodic {
        periodic.abort();
    }
    drop(control);
    let watermarks = feed.watermarks();
    drop((feed, saver));
    // Every message handed to the pipeline is finished either way; only the end of the input
    // closes the windows still open.
    let stats = tokio::task::spawn_blocking(move || if exhausted { pipeline.shutdown() } else { pipeline.pause() })
        .await
        .unwrap_or_default();

    let mut report = AppReport {
        source: id.clone(),
        lines: counted.lines,
        resumed_after: counted.resumed_after,
        messages: counted.records,
        malformed: counted.malformed,
        checkpoints: counted.commits,
        rebalances: counted.rebalances,
        interrupted: stopped,
        ..Default::default()
    };
    // The last checkpoint: everything processed (and, at the end of the input, every window
    // closed) is in the state on disk. A source that runs on and cuts by itself took its own.
    // A finite source that failed leaves the last cut it took, as a crash would.
    if let Some(cp) = &checkpoints
        && (if finite { exhausted || stopped } else { !checkpoints_itself })
    {
        let position = SourcePosition {
            source: id,
            position: counted.lines,
            watermarks,
            completed: progress.completed(),
            complete: exhausted,
            offsets: Default::default(),
        };
        for out in &outputs {
            jsonl::flush(&out.tx).map_err(|e| AppError::Output(format!("cannot flush the output: {e}")))?;
        }
        let cp = cp.clone();
        tokio::task::spawn_blocking(move || cp.save(&state, &position))
            .await
            .map_err(|e| AppError::State(format!("the checkpoint task failed: {e}")))??;
        report.checkpoints += 1;
    }
    drop(outputs);
    report.written = output.finish().map_err(|e| AppError::Output(format!("cannot write the output: {e}")))?;
    if let Some(dead) = dead {
        dead.finish().map_err(|e| AppError::Output(format!("cannot write dead letters: {e}")))?;
    }
    // Counted once the outputs are done: a message's ack goes when its last output is written.
    report.acked = acks.count();
    report.problems = stats.problems();
    report.stats = stats;
    Ok((report, ended))
}

/// The watermarks on `/metrics`: the greatest event time seen per source partition, and the
/// completed watermark windows close by.
fn register_watermarks(metrics: &Metrics, feed: &Feed, progress: &Arc<Progress>) {
    let feed = feed.downgrade();
    metrics.register_dynamic(crate::core::metrics::DynamicFamily {
        name: "sluice_partition_max_event_time_ms",
        help: "The greatest event time seen per source partition (a Kafka partition, an MQTT topic; 0 for a file).",
        kind: "gauge",
        samples: Box::new(move || {
            let Some(watermarks) = feed.watermarks() else { return Vec::new() };
            watermarks
                .partition_maxima()
                .into_iter()
                .filter_map(|(p, max)| Some((vec![("partition", p.to_string())], max? as f64)))
                .collect()
        }),
    });
    let progress = Arc::downgrade(progress);
    metrics.register_dynamic(crate::core::metrics::DynamicFamily {
        name: "sluice_watermark_completed_ms",
        help: "The watermark every message before which is done: windows ending at or before it have closed.",
        kind: "gauge",
        samples: Box::new(move || {
            progress
                .upgrade()
                .map(|p| p.completed())
                .filter(|w| *w > i64::MIN)
                .map_or_else(Vec::new, |w| vec![(vec![], w as f64)])
        }),
    });
}

/// Resolves when `shutdown` turns true (never, once its sender is gone).
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Truncates the chain's file connectors (except `append: true` ones) before a fresh run.
fn start_connectors_afresh(chain: &Chain) -> Result<(), AppError> {
    let mut done = std::collections::HashSet::new();
    for node in &chain.nodes {
        if let NodeKind::Rule(rule) = &node.kind
            && let Some(granted) = &rule.connector
            && done.insert(Arc::as_ptr(&granted.connector) as *const () as usize)
        {
            granted.connector.start_afresh().map_err(|e| {
                AppError::Output(format!("{}: connector `{}`: {e}", chain.file.display(), granted.name))
            })?;
        }
    }
    Ok(())
}

/// The input has ended; timers may still be due — a delay node holding messages, a generator
/// that has not generated its `count` yet. The run ends when none is pending. Checked under the
/// firing gate, which a worker holds while it runs timers: a timer taken but not yet handled
/// (and perhaps about to re-arm itself) is never mistaken for "no timer left".
async fn wait_for_timers(state: &StateStore, progress: &Progress, tick: Duration) {
    let mut logged = false;
    loop {
        // In flight first: a message still queued for a delay node has not set its timer yet.
        let (idle, pending) = {
            let _gate = progress.gate();
            (progress.idle(), state.pending_timers())
        };
        if idle && pending == 0 {
            return;
        }
        if !logged && pending > 0 {
            // A generator with `count: 0` (ThingsBoard's `msgCount: 0`) never ends: say how to stop.
            tracing::info!(
                pending,
                "input ended; waiting for pending timers (delays, generators); an endless generator runs until SIGTERM or Ctrl-C, which finish and flush what it generated"
            );
            logged = true;
        }
        // Messages still in flight finish in moments; a timer takes its time.
        tokio::time::sleep(if pending == 0 { Duration::from_millis(1) } else { tick }).await;
    }
}

/// Saves state and positions at a cut (the pipeline idle, every message acked).
struct Saver {
    checkpoints: Option<Arc<Checkpoints>>,
    state: StateStore,
    progress: Arc<Progress>,
    feed: Feed,
    outputs: Vec<SinkSender>,
    /// The outputs that are files (synced before a captured checkpoint is written).
    file_outputs: Vec<SinkSender>,
    source: String,
}

impl Saver {
    /// Saves now, at `position` and `offsets`, under the firing gate with the outputs flushed.
    fn save_with(&self, position: u64, offsets: &Offsets) -> Result<(), CutError> {
        let _gate = self.progress.gate();
        self.flush(&self.outputs)?;
        let Some(cp) = &self.checkpoints else { return Ok(()) };
        Ok(cp.save(&self.state, &self.position(position, offsets))?)
    }

    fn flush(&self, outputs: &[SinkSender]) -> Result<(), CutError> {
        for out in outputs {
            jsonl::flush(out).map_err(CutError::Flush)?;
        }
        Ok(())
    }

    /// All state with `offsets`, and each of `partitions`' share (the caller holds the gate).
    fn take(&self, offsets: &Offsets, partitions: &std::collections::BTreeSet<Owner>) -> Result<Captured, CutError> {
        let mut captured = Captured::of(&self.state, &self.position(0, offsets)).map_err(CutError::Capture)?;
        captured.partitions = self.state.split(partitions);
        Ok(captured)
    }

    fn position(&self, position: u64, offsets: &Offsets) -> SourcePosition {
        SourcePosition {
            source: self.source.clone(),
            position,
            watermarks: self.feed.watermarks(),
            completed: self.progress.completed(),
            complete: false,
            offsets: offsets.clone(),
        }
    }
}

impl Checkpointer for Saver {
    fn save(&self, offsets: &Offsets, partitions: &std::collections::BTreeSet<Owner>) -> Result<Captured, CutError> {
        let _gate = self.progress.gate();
        self.flush(&self.outputs)?;
        let captured = self.take(offsets, partitions)?;
        if let Some(cp) = &self.checkpoints {
            cp.write(&captured)?;
        }
        Ok(captured)
    }

    fn capture(&self, offsets: &Offsets, partitions: &std::collections::BTreeSet<Owner>) -> Result<Captured, CutError> {
        let _gate = self.progress.gate();
        self.take(offsets, partitions)
    }

    fn absorb(&self, partition: Owner, state: PartitionState) -> Result<(), CutError> {
        Ok(self.state.absorb(partition, state)?)
    }

    fn drop_partition(&self, partition: Owner) -> usize {
        self.state.drop_owner(partition)
    }

    fn persist(&self, captured: &Captured) -> Result<(), CutError> {
        // File outputs ack a message once written, not synced: sync them before the state says
        // those messages are done. Kafka outputs ack on the delivery report: nothing to wait for.
        self.flush(&self.file_outputs)?;
        let Some(cp) = &self.checkpoints else { return Ok(()) };
        Ok(cp.write(captured)?)
    }

    fn save_at(&self, position: u64) -> Result<(), CutError> {
        self.save_with(position, &Offsets::new())
    }
}

async fn wait_idle(progress: &Progress) {
    while !progress.idle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The cuts of a source that does not take its own: every `every`, once the pipeline is idle.
async fn checkpoint_periodically(saver: Arc<Saver>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        wait_idle(&saver.progress).await;
        let s = saver.clone();
        match tokio::task::spawn_blocking(move || s.save_with(0, &Offsets::new())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("checkpoint failed: {e}"),
            Err(e) => tracing::error!("checkpoint task failed: {e}"),
        }
    }
}

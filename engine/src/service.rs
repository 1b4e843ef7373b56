//! `sluice run --config sluice.toml`: a chain as a long-running service — messages from Kafka,
//! MQTT or HTTP, results to a Kafka topic or a file, state checkpointed, until SIGTERM/SIGINT.
//!
//! ```text
//! sluice.toml ──▶ source (kafka | mqtt | http) ──Feed──▶ Pipeline ──▶ output (kafka | file)
//!                    │                                      └──Failure, unconnected──▶ dead letters
//!                    └── every `checkpointMs`: all acked → state + offsets saved → offsets committed
//! ```
//!
//! A Kafka source drives its own checkpoints (they must agree with the offsets it commits);
//! for MQTT and HTTP, whose messages are acknowledged to the sender once processed, the service
//! checkpoints the state on the same period.
//!
//! Windows are not flushed at shutdown: the stream has not ended, it is only paused. Their
//! state is checkpointed and the next start carries on.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::chain::{Chain, LoadError, Loader};
use crate::config::{Config, OutputSpec, SourceSpec};
use crate::core::Metrics;
use crate::core::SinkSender;
use crate::flow::{Pipeline, PipelineConfig, Progress, RunStats, Sinks};
use crate::runtime::Runtime;
use crate::sinks::{jsonl, open_output};
use crate::sources::http::HttpSource;
use crate::sources::kafka::KafkaSource;
use crate::sources::mqtt::MqttSource;
use crate::sources::{Checkpointer, Feed, Offsets, Source, SourceContext};
use crate::state::StateStore;
use crate::state::checkpoint::Captured;
use crate::state::checkpoint::{CheckpointError, Checkpoints, SourcePosition};
use crate::state::partition::PartitionState;
use crate::state::time::Watermarks;
use crate::state::window::Owner;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub chain: PathBuf,
    pub config: Config,
    /// The directory of `sluice.toml` (relative paths in it are relative to it).
    pub config_dir: PathBuf,
    pub module_dirs: Vec<PathBuf>,
    pub pipeline: PipelineConfig,
    /// Where checkpoints live when `sluice.toml` does not say (`None`: in memory only).
    pub state_dir: Option<PathBuf>,
    /// Ignore any checkpoint.
    pub fresh: bool,
    /// Hot reload: watching, debounce, retention of removed nodes' state.
    pub reload: crate::reload::ReloadOptions,
    /// Where the admin endpoint listens when `sluice.toml` does not say (`None`: nowhere).
    pub admin: Option<std::net::SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    Source(String),
    #[error("{0}")]
    Output(String),
    #[error("{0}")]
    State(String),
}

/// What a service run did, for its last log line and `--stats`.
#[derive(Debug, Default, Serialize)]
pub struct ServeReport {
    pub source: String,
    /// Messages handed to the chain (Kafka records; MQTT and HTTP: messages, as on `/metrics`
    /// `sluice_{mqtt,http}_source_messages_total`).
    pub records: u64,
    /// Kafka records, MQTT publishes or HTTP requests (400) that were not messages.
    pub malformed: u64,
    pub commits: u64,
    pub rebalances: u64,
    /// Disabled nodes, dead letters, lost failures.
    pub problems: crate::flow::Problems,
    pub stats: RunStats,
}

impl ServeReport {
    /// The last log line: `8 records from mqtt:…, 0 malformed` (and commits and rebalances for
    /// Kafka).
    pub fn summary(&self) -> String {
        let mut line = format!("{} records from {}, {} malformed", self.records, self.source, self.malformed);
        if self.source.starts_with("kafka:") {
            line.push_str(&format!(", {} commits, {} rebalances", self.commits, self.rebalances));
        }
        line
    }
}

/// Identifies a source in checkpoints: a checkpoint of another source is not resumed.
fn source_id(source: &SourceSpec) -> String {
    match source {
        SourceSpec::Kafka(k) => format!("kafka:{}:{}", k.group, k.topics.join(",")),
        SourceSpec::Mqtt(m) => format!("mqtt:{}", m.connection.url),
        SourceSpec::Http(h) => format!("http:{}", h.listen),
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
    fn save_with(&self, offsets: &Offsets) -> Result<(), String> {
        let _gate = self.progress.gate();
        for out in &self.outputs {
            jsonl::flush(out).map_err(|e| format!("cannot flush an output: {e}"))?;
        }
        let Some(cp) = &self.checkpoints else { return Ok(()) };
        cp.save(&self.state, &self.position(offsets)).map_err(|e| e.to_string())
    }

    /// All state with `offsets`, and each of `partitions`' share (the caller holds the gate).
    fn take(&self, offsets: &Offsets, partitions: &BTreeSet<Owner>) -> Result<Captured, String> {
        let mut captured = Captured::of(&self.state, &self.position(offsets)).map_err(|e| e.to_string())?;
        captured.partitions = self.state.split(partitions);
        Ok(captured)
    }

    fn position(&self, offsets: &Offsets) -> SourcePosition {
        SourcePosition {
            source: self.source.clone(),
            position: 0,
            watermarks: self.feed.watermarks(),
            completed: self.progress.completed(),
            complete: false,
            offsets: offsets.clone(),
        }
    }
}

impl Checkpointer for Saver {
    fn save(&self, offsets: &Offsets, partitions: &BTreeSet<Owner>) -> Result<Captured, String> {
        let _gate = self.progress.gate();
        for out in &self.outputs {
            jsonl::flush(out).map_err(|e| format!("cannot flush an output: {e}"))?;
        }
        let captured = self.take(offsets, partitions)?;
        if let Some(cp) = &self.checkpoints {
            cp.write(&captured).map_err(|e| e.to_string())?;
        }
        Ok(captured)
    }

    fn capture(&self, offsets: &Offsets, partitions: &BTreeSet<Owner>) -> Result<Captured, String> {
        let _gate = self.progress.gate();
        self.take(offsets, partitions)
    }

    fn absorb(&self, partition: Owner, state: PartitionState) -> Result<(), String> {
        self.state.absorb(partition, state).map_err(|e| e.to_string())
    }

    fn drop_partition(&self, partition: Owner) -> usize {
        self.state.drop_owner(partition)
    }

    fn persist(&self, captured: &Captured) -> Result<(), String> {
        // File outputs ack a message once written, not synced: sync them before the state says
        // those messages are done. Kafka outputs ack on the delivery report: nothing to wait for.
        for out in &self.file_outputs {
            jsonl::flush(out).map_err(|e| format!("cannot flush an output: {e}"))?;
        }
        let Some(cp) = &self.checkpoints else { return Ok(()) };
        cp.write(captured).map_err(|e| e.to_string())
    }
}

/// Runs the chain with the configured source until `shutdown` turns true (or the source fails).
pub async fn serve(
    runtime: Arc<Runtime>,
    options: ServeOptions,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<ServeReport, ServeError> {
    let config = &options.config;
    let Some(source_spec) = config.source.clone() else {
        return Err(ServeError::Source("sluice.toml has no [source]".into()));
    };
    let loader = Loader::new(&runtime, options.module_dirs.clone()).with_connectors(config.connectors.clone());
    let mut chain: Chain = loader.load(&options.chain)?;
    if let Some(entry) = &config.entry {
        chain.entry = chain.find(entry).ok_or_else(|| {
            ServeError::Source(format!("sluice.toml: `entry`: no node `{entry}` in {}", options.chain.display()))
        })?;
    }
    let chain = Arc::new(chain);
    let state = StateStore::default();
    let source = source_id(&source_spec);

    // State: restore the last checkpoint of this source.
    let state_dir = config.state.dir.as_ref().map(|d| options.config_dir.join(d)).or(options.state_dir.clone());
    let checkpoints = match &state_dir {
        Some(dir) => Some(Arc::new(Checkpoints::open(&crate::state::checkpoint::path_for(dir, &options.chain))?)),
        None => None,
    };
    let mut restored: Option<SourcePosition> = None;
    if let Some(cp) = &checkpoints
        && let Some(position) = cp.position()?
    {
        if !options.fresh && position.source == source {
            cp.restore(&state)?;
            tracing::info!(offsets = ?position.offsets, "restored the last checkpoint");
            restored = Some(position);
        } else {
            tracing::info!("the checkpoint is of another source (or --fresh): starting with empty state");
        }
    }
    crate::flow::check_state(&runtime, &chain, &state).map_err(ServeError::State)?;

    // Outputs.
    // A service's files carry on from its last start (a restart is not a new run): appended.
    let output =
        open_output(config.output.as_ref().unwrap_or(&OutputSpec::stdout()), &options.config_dir, "output", true)
            .map_err(ServeError::Output)?;
    let dead = config
        .dead_letter
        .as_ref()
        .map(|spec| open_output(spec, &options.config_dir, "deadLetter", true))
        .transpose()
        .map_err(ServeError::Output)?;
    let sinks = Sinks { output: Some(output.tx.clone()), dead_letter: dead.as_ref().map(|d| d.tx.clone()) };

    let progress = Arc::new(Progress::default());
    if let Some(position) = &restored {
        progress.restore(position.completed);
    }
    let mut pipeline_config = options.pipeline.clone();
    pipeline_config.flush_at_end = false;
    let pipeline = Pipeline::start_with_progress(
        runtime.clone(),
        chain.clone(),
        state.clone(),
        sinks,
        pipeline_config,
        progress.clone(),
    )
    .map_err(|e| ServeError::Source(format!("cannot start workers: {e}")))?;
    let metrics = Metrics::default();
    let reloader = crate::reload::Reloader::new(
        runtime.clone(),
        options.module_dirs.clone(),
        config.connectors.clone(),
        config.entry.clone(),
        pipeline.chain_handle(),
        state.clone(),
        options.reload.retention,
    );
    let control = crate::admin::Control::start(reloader, &options.reload, options.admin, metrics.clone())
        .await
        .map_err(|e| ServeError::Source(e.to_string()))?;
    let watermarks = restored.as_ref().map_or_else(
        || {
            let fresh = Watermarks::new(&chain.event_time);
            // MQTT topics are its partitions, heard of only as they come.
            if matches!(source_spec, SourceSpec::Mqtt(_)) { fresh.discovering() } else { fresh }
        },
        |p| {
            let mut w = p.watermarks.clone();
            w.reconfigure(&chain.event_time);
            w.touch_all(options.pipeline.clock.now_ms());
            w
        },
    );
    let feed = Feed::new(pipeline.sender(), &chain, watermarks, options.pipeline.clock.clone());
    let mut outputs = vec![output.tx.clone()];
    outputs.extend(dead.as_ref().map(|d| d.tx.clone()));
    let file_outputs =
        std::iter::once(&output).chain(dead.as_ref()).filter(|o| o.is_file).map(|o| o.tx.clone()).collect();
    let saver = Arc::new(Saver {
        file_outputs,
        checkpoints: checkpoints.clone(),
        state: state.clone(),
        progress: progress.clone(),
        feed: feed.clone(),
        outputs,
        source: source.clone(),
    });
    let every = Duration::from_millis(config.state.checkpoint_ms.max(1));

    let mut report = ServeReport { source: source.clone(), ..Default::default() };
    let base = &options.config_dir;
    let source_impl: Box<dyn Source> = match source_spec {
        SourceSpec::Kafka(spec) => {
            Box::new(KafkaSource::new(spec, restored.map(|p| p.offsets).unwrap_or_default(), every))
        }
        SourceSpec::Mqtt(spec) => Box::new(MqttSource::new(spec, base)),
        SourceSpec::Http(spec) => Box::new(HttpSource::new(spec, base)),
    };
    let checkpoints_itself = source_impl.checkpoints_itself();
    let periodic =
        (!checkpoints_itself).then(|| tokio::spawn(checkpoint_periodically(saver.clone(), every, shutdown.clone())));
    tracing::info!(source = %source_impl.describe(), "running; stop with SIGTERM or Ctrl-C");
    let cx = SourceContext {
        feed: feed.clone(),
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
        checkpointer: saver.clone(),
    };
    let (counted, ended) = source_impl.run(cx).await;
    (report.records, report.malformed, report.commits, report.rebalances) =
        (counted.records, counted.malformed, counted.commits, counted.rebalances);
    if let Err(e) = &ended {
        tracing::error!("{e}");
    }
    let result = ended.map_err(|e| ServeError::Source(e.to_string()));
    if let Some(periodic) = periodic {
        periodic.abort();
        // A final cut: everything processed is in the state on disk.
        wait_idle(&progress).await;
        let saver = saver.clone();
        tokio::task::spawn_blocking(move || saver.save_with(&Offsets::new()))
            .await
            .map_err(|e| ServeError::State(e.to_string()))?
            .map_err(ServeError::State)?;
    }
    drop(control);
    drop(feed);
    drop(saver);
    report.stats = tokio::task::spawn_blocking(move || pipeline.shutdown()).await.unwrap_or_default();
    report.problems = report.stats.problems();
    for out in std::iter::once(output).chain(dead) {
        drop(out.tx);
        match out.thread.join() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("an output failed: {e}"),
            Err(_) => tracing::error!("an output thread panicked"),
        }
    }
    result?;
    Ok(report)
}

async fn wait_idle(progress: &Progress) {
    while !progress.idle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn checkpoint_periodically(saver: Arc<Saver>, every: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        wait_idle(&saver.progress).await;
        let s = saver.clone();
        match tokio::task::spawn_blocking(move || s.save_with(&Offsets::new())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("checkpoint failed: {e}"),
            Err(e) => tracing::error!("checkpoint task failed: {e}"),
        }
    }
}

//! `sluice run`, embedded: JSON lines in, the chain, JSON lines out. No broker needed.
//!
//! With a state directory (the default, `./data`), state is checkpointed every
//! `checkpoint_every` together with the number of input lines it reflects. A run that was killed
//! resumes from its last checkpoint: the state is restored, the lines it covers are skipped, the
//! rest replayed, and the output file is appended to — results written after the checkpoint come
//! again with the same ids. A run that reached the end of its input marks its checkpoint
//! complete, so running it again starts fresh.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::chain::{Chain, LoadError, Loader, NodeKind};
use crate::flow::{Ack, AckCounter, Envelope, Pipeline, PipelineConfig, Progress, RunStats, Sinks};
use crate::runtime::Runtime;
use crate::sinks::jsonl::{self as output, SinkSender, Target};
use crate::sources::jsonl::{LineError, parse_line};
use crate::state::StateStore;
use crate::state::checkpoint::{CheckpointError, Checkpoints, SourcePosition};
use crate::state::time::Watermarks;

/// Where lines come from / go to: a file, or stdin/stdout (`-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stream {
    Std,
    File(PathBuf),
}

impl Stream {
    pub fn parse(arg: &str) -> Stream {
        if arg == "-" { Stream::Std } else { Stream::File(PathBuf::from(arg)) }
    }

    fn name(&self) -> String {
        match self {
            Stream::Std => "stdin".into(),
            Stream::File(p) => p.canonicalize().unwrap_or_else(|_| p.clone()).display().to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub chain: PathBuf,
    pub input: Stream,
    pub output: Stream,
    pub module_dirs: Vec<PathBuf>,
    pub pipeline: PipelineConfig,
    /// Stop at the first malformed input line.
    pub strict: bool,
    /// Where checkpoints live (`None`: state in memory only).
    pub state_dir: Option<PathBuf>,
    pub checkpoint_every: Duration,
    /// Ignore any checkpoint and start over.
    pub fresh: bool,
    /// Connectors replacing the chain's of the same name (`sluice.toml`).
    pub connectors: std::collections::BTreeMap<String, crate::config::ConnectorSpec>,
    /// Hot reload: watching, debounce, retention of removed nodes' state.
    pub reload: crate::reload::ReloadOptions,
    /// Where the admin endpoint listens (`None`: no endpoint).
    pub admin: Option<std::net::SocketAddr>,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// Input lines read (blank lines and lines skipped on resume included).
    pub lines: u64,
    /// Lines a restored checkpoint already covered (not run again).
    pub resumed_after: u64,
    /// Messages handed to the chain.
    pub messages: u64,
    /// Lines that were not messages (reported with their line numbers).
    pub malformed: u64,
    /// Messages whose every branch finished.
    pub acked: u64,
    /// Lines written to the output.
    pub written: u64,
    pub checkpoints: u64,
    pub stats: RunStats,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("cannot start workers: {0}")]
    Start(std::io::Error),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    State(String),
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> RunError {
    move |source| RunError::Io { what, source }
}

/// The checkpoint file of a chain: one per chain file, under the state directory.
pub(crate) fn checkpoint_path(dir: &std::path::Path, chain: &std::path::Path) -> PathBuf {
    let canonical = chain.canonicalize().unwrap_or_else(|_| chain.to_path_buf());
    let hash = crate::runtime::cache::content_hash(canonical.display().to_string().as_bytes());
    let stem = chain.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "chain".into());
    dir.join(format!("{stem}-{}.redb", &hash[..12]))
}

/// Loads the chain and runs the input through it to the end.
pub async fn run(runtime: Arc<Runtime>, options: RunOptions) -> Result<(RunReport, Option<LineError>), RunError> {
    let chain = Arc::new(
        Loader::new(&runtime, options.module_dirs.clone())
            .with_connectors(options.connectors.clone())
            .load(&options.chain)?,
    );
    let state = StateStore::default();
    let source = options.input.name();
    let checkpoints = match &options.state_dir {
        Some(dir) => Some(Arc::new(Checkpoints::open(&checkpoint_path(dir, &options.chain))?)),
        None => None,
    };
    let mut resume = None;
    if let Some(cp) = &checkpoints
        && let Some(position) = cp.position()?
    {
        if !options.fresh && !position.complete && position.source == source {
            cp.restore(&state)?;
            tracing::info!(lines = position.position, "resuming from the last checkpoint");
            resume = Some(position);
        } else {
            tracing::info!("previous state is complete or of another input: starting fresh");
        }
    }
    check_state(&runtime, &chain, &state)?;

    let target = match &options.output {
        Stream::Std => Target::Stdout,
        Stream::File(p) => {
            let mut open = std::fs::OpenOptions::new();
            open.create(true);
            if resume.is_some() {
                open.append(true)
            } else {
                open.write(true).truncate(true)
            };
            Target::File(open.open(p).map_err(io(format!("cannot open {} for writing", p.display())))?)
        }
    };
    let (out_tx, writer) = output::spawn(target, 4096).map_err(RunError::Start)?;
    let reader: Box<dyn AsyncRead + Unpin + Send> = match &options.input {
        Stream::Std => Box::new(tokio::io::stdin()),
        Stream::File(p) => {
            Box::new(tokio::fs::File::open(p).await.map_err(io(format!("cannot open {}", p.display())))?)
        }
    };
    let progress = Arc::new(Progress::default());
    if let Some(position) = &resume {
        progress.restore(position.completed);
    }
    let sinks = Sinks { output: Some(out_tx.clone()), ..Default::default() };
    let pipeline = Pipeline::start_with_progress(
        runtime.clone(),
        chain.clone(),
        state.clone(),
        sinks,
        options.pipeline.clone(),
        progress.clone(),
    )
    .map_err(RunError::Start)?;
    let reloader = crate::reload::Reloader::new(
        runtime.clone(),
        options.module_dirs.clone(),
        options.connectors.clone(),
        None,
        pipeline.chain_handle(),
        state.clone(),
        options.reload.retention,
    );
    let _control = crate::reload::Control::start(reloader, &options.reload, options.admin, Default::default())
        .await
        .map_err(|e| RunError::Start(std::io::Error::other(e.to_string())))?;
    let acks = Arc::new(AckCounter::default());
    let mut report = RunReport::default();
    let mut reading = Reading {
        options: &options,
        chain: &chain,
        pipeline: &pipeline,
        acks: &acks,
        state: &state,
        checkpoints: checkpoints.clone(),
        out_tx: &out_tx,
        source: source.clone(),
        watermarks: resume.as_ref().map_or_else(
            || Watermarks::new(&chain.event_time),
            |p| {
                let mut w = p.watermarks.clone();
                w.reconfigure(&chain.event_time);
                w
            },
        ),
        skip: resume.as_ref().map_or(0, |p| p.position),
    };
    let read = reading.read(reader, &mut report).await;
    if matches!(read, Ok(None)) {
        wait_for_timers(&state, &progress, options.pipeline.tick).await;
    }
    let watermarks = reading.watermarks.clone();
    let stats = tokio::task::spawn_blocking(move || pipeline.shutdown()).await.unwrap_or_default();
    let ended = matches!(read, Ok(None));
    if let Some(cp) = &checkpoints
        && ended
    {
        // The input ended and every window was flushed: a complete checkpoint, so that running
        // the same input again starts over instead of resuming.
        let position = SourcePosition {
            source,
            position: report.lines,
            watermarks,
            completed: progress.completed(),
            complete: true,
            offsets: Default::default(),
        };
        output::flush(&out_tx).map_err(io("cannot flush the output".into()))?;
        cp.save(&state, &position)?;
        report.checkpoints += 1;
    }
    drop(out_tx);
    report.written = match writer.join() {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return Err(RunError::Io { what: "cannot write output".into(), source: e }),
        Err(_) => 0,
    };
    report.stats = stats;
    report.acked = acks.count();
    let stopped_at = read?;
    Ok((report, stopped_at))
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
        if !logged {
            tracing::info!(pending, "input ended; waiting for pending timers (delays, generators)");
            logged = true;
        }
        tokio::time::sleep(tick).await;
    }
}

/// Starts every rule node once against the real (possibly restored) state, so a state schema
/// the module no longer accepts stops the run here, with the node's own message.
pub(crate) fn check_state(runtime: &Runtime, chain: &Chain, state: &StateStore) -> Result<(), RunError> {
    for node in &chain.nodes {
        if let NodeKind::Rule(rule) = &node.kind {
            let handles = state.node(&node.id);
            runtime
                .instantiate(
                    &rule.module,
                    node.id.as_str().into(),
                    &rule.config,
                    rule.limits,
                    handles,
                    Default::default(),
                    None,
                )
                .map_err(|e| RunError::State(format!("{}: {e}", chain.file.display())))?;
        }
    }
    Ok(())
}

struct Reading<'a> {
    options: &'a RunOptions,
    chain: &'a Chain,
    pipeline: &'a Pipeline,
    acks: &'a Arc<AckCounter>,
    state: &'a StateStore,
    checkpoints: Option<Arc<Checkpoints>>,
    out_tx: &'a SinkSender,
    source: String,
    watermarks: Watermarks,
    /// Lines a restored checkpoint covers.
    skip: u64,
}

impl Reading<'_> {
    /// Reads lines until EOF (or, when strict, the first bad line, which is returned).
    async fn read(
        &mut self,
        reader: Box<dyn AsyncRead + Unpin + Send>,
        report: &mut RunReport,
    ) -> Result<Option<LineError>, RunError> {
        let options = self.options;
        let mut reader = BufReader::with_capacity(1 << 16, reader);
        let mut buf = Vec::new();
        let mut last_checkpoint = Instant::now();
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).await.map_err(io(format!("cannot read {}", self.source)))?;
            if n == 0 {
                return Ok(None);
            }
            report.lines += 1;
            let line = report.lines;
            if line <= self.skip {
                report.resumed_after = line;
                continue;
            }
            if self.checkpoints.is_some() && last_checkpoint.elapsed() >= options.checkpoint_every {
                self.checkpoint(line - 1).await?;
                report.checkpoints += 1;
                last_checkpoint = Instant::now();
            }
            let now = options.pipeline.clock.now_ms();
            let parsed = match std::str::from_utf8(&buf) {
                Ok(text) => parse_line(&self.source, line, text, now),
                Err(e) => Err(LineError { input: self.source.clone(), line, message: format!("not UTF-8: {e}") }),
            };
            match parsed {
                Ok(None) => {}
                Ok(Some(msg)) => {
                    let key = Envelope::key_of(&msg.originator.entity_type, &msg.originator.name);
                    let event_time = self.chain.time_field.event_time(&msg, now);
                    let stamp = self.watermarks.stamp(0, &msg.originator.name, event_time, now);
                    let bytes = serde_json::to_vec(&msg)
                        .map_err(|e| RunError::Io { what: format!("line {line}"), source: std::io::Error::other(e) })?;
                    let ack = Ack::new(self.acks.clone(), line);
                    report.messages += 1;
                    let envelope = Envelope::new(bytes.into(), key, ack).with_stamp(stamp);
                    if self.pipeline.send(envelope).await.is_err() {
                        return Ok(None);
                    }
                }
                Err(err) => {
                    report.malformed += 1;
                    tracing::warn!("{err}");
                    if options.strict {
                        return Ok(Some(err));
                    }
                }
            }
        }
    }

    /// A consistent cut: no message in flight, no window firing, the output on disk — then the
    /// state and the position (`lines` consumed) in one transaction.
    async fn checkpoint(&self, lines: u64) -> Result<(), RunError> {
        let Some(cp) = self.checkpoints.clone() else { return Ok(()) };
        let progress = self.pipeline.progress().clone();
        while !progress.idle() {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let (state, out_tx) = (self.state.clone(), self.out_tx.clone());
        let mut position = SourcePosition {
            source: self.source.clone(),
            position: lines,
            watermarks: self.watermarks.clone(),
            completed: 0,
            complete: false,
            offsets: Default::default(),
        };
        tokio::task::spawn_blocking(move || {
            let _gate = progress.gate();
            position.completed = progress.completed();
            output::flush(&out_tx).map_err(io("cannot flush the output".into()))?;
            cp.save(&state, &position).map_err(RunError::from)
        })
        .await
        .map_err(|e| RunError::State(format!("checkpoint task failed: {e}")))?
    }
}

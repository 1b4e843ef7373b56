//! `sluice run`, embedded: JSON lines in, the chain, JSON lines out. No broker needed.
//!
//! With a state directory (the default, `./data`), state is checkpointed every
//! `checkpoint_every` together with the number of input lines it reflects. A run that was killed
//! resumes from its last checkpoint: the state is restored, the lines it covers are skipped, the
//! rest replayed, and the output file is appended to — results written after the checkpoint come
//! again with the same ids. A run that reached the end of its input marks its checkpoint
//! complete, so running it again starts fresh.
//!
//! A run that starts fresh starts its files fresh too: the output, the dead-letter file and the
//! chain's `file` connectors (unless one says `append: true`) are truncated, so running a chain
//! twice gives the same files. A resumed run appends to them.
//!
//! Told to stop (`shutdown`, SIGTERM/SIGINT in the binary), a run stops reading, lets the
//! messages already read finish, flushes its outputs and checkpoints at the line it stopped
//! after, leaving windows open and timers pending in the state: the same command resumes
//! there. A stop is not the end of the input, so no window is closed early.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::chain::{Chain, LoadError, Loader, NodeKind};
use crate::config::OutputSpec;
use crate::flow::{Ack, AckCounter, Batcher, Envelope, Pipeline, PipelineConfig, Problems, Progress, RunStats, Sinks};
use crate::runtime::Runtime;
use crate::sinks::jsonl::{self as output, SinkSender};
use crate::sources::jsonl::{LineError, LineIds, parse_record};
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
    /// What a `sluice.toml` without a `[source]` says about the run.
    pub deployment: Deployment,
    /// Turns true when the run should stop before the end of its input (SIGTERM, SIGINT).
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

/// The parts of a `sluice.toml` a file run takes (the rest — connectors, state, admin, reload —
/// arrive through the other [`RunOptions`]).
#[derive(Debug, Clone, Default)]
pub struct Deployment {
    /// `[output]`: where the `output` sink writes, instead of [`RunOptions::output`].
    pub output: Option<OutputSpec>,
    /// `[deadLetter]`: where failures no `Failure` connection took go.
    pub dead_letter: Option<OutputSpec>,
    /// `entry`: the node input lines enter.
    pub entry: Option<String>,
    /// The directory of `sluice.toml`: relative paths in it are relative to it.
    pub dir: PathBuf,
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
    /// Stopped (SIGTERM, SIGINT) before the end of the input: the next run resumes after the
    /// last line read.
    pub interrupted: bool,
    /// Disabled nodes, dead letters, lost failures: what makes a finite run exit non-zero.
    pub problems: Problems,
    pub stats: RunStats,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The error's text is part of the message, so it is not also a `source` (which would
    /// print it twice in a chain of causes).
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    #[error("cannot start workers: {0}")]
    Start(std::io::Error),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    State(String),
    #[error("{0}")]
    Output(String),
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> RunError {
    move |error| RunError::Io { what, error }
}

/// How reading the input ended.
enum End {
    /// The end of the input.
    Eof,
    /// The first malformed line, with `--strict`.
    Strict(LineError),
    /// Told to stop.
    Stopped,
}

/// Resolves when `shutdown` turns true (never, without one).
async fn stop_requested(shutdown: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    match shutdown {
        Some(rx) => {
            if rx.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Loads the chain and runs the input through it to the end.
pub async fn run(runtime: Arc<Runtime>, options: RunOptions) -> Result<(RunReport, Option<LineError>), RunError> {
    let mut chain = Loader::new(&runtime, options.module_dirs.clone())
        .with_connectors(options.connectors.clone())
        .load(&options.chain)?;
    if let Some(entry) = &options.deployment.entry {
        chain.entry = chain.find(entry).ok_or_else(|| {
            RunError::State(format!("sluice.toml: `entry`: no node `{entry}` in {}", options.chain.display()))
        })?;
    }
    let chain = Arc::new(chain);
    let state = StateStore::default();
    let source = options.input.name();
    let checkpoints = match &options.state_dir {
        Some(dir) => Some(Arc::new(Checkpoints::open(&crate::state::checkpoint::path_for(dir, &options.chain))?)),
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
    crate::flow::check_state(&runtime, &chain, &state).map_err(RunError::State)?;

    // Files start fresh unless this run carries on an interrupted one.
    let append = resume.is_some();
    if !append {
        start_connectors_afresh(&chain)?;
    }
    let deployment = &options.deployment;
    let out = match (&deployment.output, &options.output) {
        (Some(spec), _) => crate::sinks::open_output(spec, &deployment.dir, "output", append),
        (None, Stream::Std) => crate::sinks::open_output(&OutputSpec::stdout(), Path::new(""), "output", append),
        (None, Stream::File(p)) => crate::sinks::open_file_output(p, "--output", append),
    }
    .map_err(RunError::Output)?;
    let dead = deployment
        .dead_letter
        .as_ref()
        .map(|spec| crate::sinks::open_output(spec, &deployment.dir, "deadLetter", append))
        .transpose()
        .map_err(RunError::Output)?;
    let out_tx = out.tx.clone();
    let mut flushed = vec![out.tx.clone()];
    flushed.extend(dead.as_ref().map(|d| d.tx.clone()));
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
    let sinks = Sinks { output: Some(out_tx.clone()), dead_letter: dead.as_ref().map(|d| d.tx.clone()) };
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
    let _control = crate::admin::Control::start(reloader, &options.reload, options.admin, Default::default())
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
        outputs: &flushed,
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
        shutdown: options.shutdown.clone(),
    };
    let mut read = reading.read(reader, &mut report).await;
    if matches!(read, Ok(End::Eof)) {
        let mut shutdown = options.shutdown.clone();
        tokio::select! {
            biased;
            () = stop_requested(&mut shutdown) => read = Ok(End::Stopped),
            () = wait_for_timers(&state, &progress, options.pipeline.tick) => {}
        }
    }
    let watermarks = reading.watermarks.clone();
    let (ended, stopped) = (matches!(read, Ok(End::Eof)), matches!(read, Ok(End::Stopped)));
    // Every message handed to the pipeline is finished either way; only the end of the input
    // closes the windows still open.
    let stats = tokio::task::spawn_blocking(move || if ended { pipeline.shutdown() } else { pipeline.pause() })
        .await
        .unwrap_or_default();
    if let Some(cp) = &checkpoints
        && (ended || stopped)
    {
        // The input ended and every window was flushed: a complete checkpoint, so that running
        // the same input again starts over instead of resuming. Stopped: the state as it is,
        // after every line read, for the same command to resume.
        let position = SourcePosition {
            source,
            position: report.lines,
            watermarks,
            completed: progress.completed(),
            complete: ended,
            offsets: Default::default(),
        };
        for out in &flushed {
            output::flush(out).map_err(io("cannot flush the output".into()))?;
        }
        cp.save(&state, &position)?;
        report.checkpoints += 1;
    }
    drop((out_tx, flushed));
    report.written = match out.finish() {
        Ok(n) => n,
        Err(error) => return Err(RunError::Io { what: "cannot write output".into(), error }),
    };
    if let Some(dead) = dead
        && let Err(error) = dead.finish()
    {
        return Err(RunError::Io { what: "cannot write dead letters".into(), error });
    }
    report.problems = stats.problems();
    report.stats = stats;
    report.acked = acks.count();
    report.interrupted = stopped;
    match read? {
        End::Strict(err) => Ok((report, Some(err))),
        End::Eof | End::Stopped => Ok((report, None)),
    }
}

/// Truncates the chain's file connectors (except `append: true` ones) before a fresh run.
fn start_connectors_afresh(chain: &Chain) -> Result<(), RunError> {
    let mut done = std::collections::HashSet::new();
    for node in &chain.nodes {
        if let NodeKind::Rule(rule) = &node.kind
            && let Some(granted) = &rule.connector
            && done.insert(Arc::as_ptr(&granted.connector) as *const () as usize)
        {
            granted.connector.start_afresh().map_err(|e| {
                RunError::Output(format!("{}: connector `{}`: {e}", chain.file.display(), granted.name))
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
        if !logged {
            tracing::info!(pending, "input ended; waiting for pending timers (delays, generators)");
            logged = true;
        }
        tokio::time::sleep(tick).await;
    }
}

struct Reading<'a> {
    options: &'a RunOptions,
    chain: &'a Chain,
    pipeline: &'a Pipeline,
    acks: &'a Arc<AckCounter>,
    state: &'a StateStore,
    checkpoints: Option<Arc<Checkpoints>>,
    /// The output and the dead letters: flushed before a checkpoint.
    outputs: &'a [SinkSender],
    source: String,
    watermarks: Watermarks,
    /// Lines a restored checkpoint covers.
    skip: u64,
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Reading<'_> {
    /// Reads lines until EOF (or, when strict, the first bad line, which is returned). Every
    /// message read is handed to the pipeline before this returns, whatever the reason.
    async fn read(
        &mut self,
        reader: Box<dyn AsyncRead + Unpin + Send>,
        report: &mut RunReport,
    ) -> Result<End, RunError> {
        let mut batcher = self.pipeline.batcher();
        let end = self.read_into(reader, report, &mut batcher).await;
        // Closed: the pipeline stopped taking messages, and those held go with it.
        let _ = batcher.flush().await;
        end
    }

    async fn read_into(
        &mut self,
        reader: Box<dyn AsyncRead + Unpin + Send>,
        report: &mut RunReport,
        batcher: &mut Batcher,
    ) -> Result<End, RunError> {
        let options = self.options;
        let mut reader = BufReader::with_capacity(1 << 16, reader);
        let mut buf = Vec::new();
        let ids = LineIds::new(&self.source);
        let mut last_checkpoint = Instant::now();
        // Arrival time, read once per fill of the buffer rather than once per line.
        let mut now = options.pipeline.clock.now_ms();
        loop {
            buf.clear();
            // A whole line already in the buffer is read where it is: the async read, and the
            // check for a stop around it, are for when the reader has to wait.
            let in_buffer = memchr::memchr(b'\n', reader.buffer());
            if in_buffer.is_none() {
                // What was read so far goes to the workers before waiting for more: a batch is
                // what a read brought at once, never a message held back for the next line.
                if reader.buffer().is_empty() && batcher.holds() && batcher.flush().await.is_err() {
                    return Ok(End::Eof);
                }
                // Only a read waiting for input is cut short by a stop: a line read is always
                // handed over, so that every line counted is one the pipeline has.
                let n = tokio::select! {
                    biased;
                    () = stop_requested(&mut self.shutdown) => return Ok(End::Stopped),
                    n = reader.read_until(b'\n', &mut buf) => n.map_err(io(format!("cannot read {}", self.source)))?,
                };
                if n == 0 {
                    return Ok(End::Eof);
                }
                now = options.pipeline.clock.now_ms();
            }
            report.lines += 1;
            let line = report.lines;
            // Parsed before the buffer moves on (the message owns a copy of its text).
            let parsed = (line > self.skip).then(|| {
                let bytes = match in_buffer {
                    Some(end) => &reader.buffer()[..=end],
                    None => &buf[..],
                };
                match std::str::from_utf8(bytes) {
                    Ok(text) => parse_record(&self.source, line, text, now, &self.chain.input),
                    Err(e) => Err(LineError { input: self.source.clone(), line, message: format!("not UTF-8: {e}") }),
                }
            });
            if let Some(end) = in_buffer {
                reader.consume(end + 1);
            }
            let Some(parsed) = parsed else {
                report.resumed_after = line;
                continue;
            };
            if self.checkpoints.is_some() && last_checkpoint.elapsed() >= options.checkpoint_every {
                // The checkpoint waits for every message to be done: none may wait in a batch.
                if batcher.flush().await.is_err() {
                    return Ok(End::Eof);
                }
                self.checkpoint(line - 1).await?;
                report.checkpoints += 1;
                last_checkpoint = Instant::now();
            }
            match parsed {
                Ok(None) => {}
                Ok(Some(mut msg)) => {
                    if !msg.has_id() {
                        msg.set_uuid(ids.uuid(line));
                    }
                    let key = Envelope::key_of(msg.entity_type(), msg.name());
                    let event_time = self.chain.time_field.event_time(&msg, now);
                    let stamp = self.watermarks.stamp(0, msg.name(), event_time, now);
                    let ack = Ack::new(self.acks.clone(), line);
                    report.messages += 1;
                    let envelope = Envelope::new(std::sync::Arc::new(msg), key, ack).with_stamp(stamp);
                    if batcher.push(envelope).await.is_err() {
                        return Ok(End::Eof);
                    }
                }
                Err(err) => {
                    report.malformed += 1;
                    tracing::warn!("{err}");
                    if options.strict {
                        return Ok(End::Strict(err));
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
        let (state, outputs) = (self.state.clone(), self.outputs.to_vec());
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
            for out in &outputs {
                output::flush(out).map_err(io("cannot flush the output".into()))?;
            }
            cp.save(&state, &position).map_err(RunError::from)
        })
        .await
        .map_err(|e| RunError::State(format!("checkpoint task failed: {e}")))?
    }
}

//! `sluice run`, embedded: JSON lines in, the chain, JSON lines out. No broker needed.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::sync::mpsc;

use crate::chain::{Chain, LoadError, Loader};
use crate::flow::{Ack, AckCounter, Envelope, Pipeline, PipelineConfig, RunStats, Sinks};
use crate::runtime::Runtime;
use crate::sinks::jsonl::write_lines;
use crate::sources::jsonl::{LineError, parse_line};
use crate::state::StateStore;
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
            Stream::File(p) => p.display().to_string(),
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
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// Input lines read (blank lines included).
    pub lines: u64,
    /// Messages handed to the chain.
    pub messages: u64,
    /// Lines that were not messages (reported with their line numbers).
    pub malformed: u64,
    /// Messages whose every branch finished.
    pub acked: u64,
    /// Lines written to the output.
    pub written: u64,
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
}

/// Loads the chain and runs the input through it to the end.
pub async fn run(runtime: Arc<Runtime>, options: RunOptions) -> Result<(RunReport, Option<LineError>), RunError> {
    let chain = Arc::new(Loader::new(&runtime, options.module_dirs.clone()).load(&options.chain)?);
    let io = |what: String| move |source| RunError::Io { what, source };
    let (out_tx, out_rx) = mpsc::channel(4096);
    let writer: Box<dyn AsyncWrite + Unpin + Send> = match &options.output {
        Stream::Std => Box::new(tokio::io::stdout()),
        Stream::File(p) => {
            Box::new(tokio::fs::File::create(p).await.map_err(io(format!("cannot create {}", p.display())))?)
        }
    };
    let sink = tokio::spawn(write_lines(out_rx, writer));
    let reader: Box<dyn AsyncRead + Unpin + Send> = match &options.input {
        Stream::Std => Box::new(tokio::io::stdin()),
        Stream::File(p) => {
            Box::new(tokio::fs::File::open(p).await.map_err(io(format!("cannot open {}", p.display())))?)
        }
    };
    let sinks = Sinks { output: Some(out_tx) };
    let pipeline =
        Pipeline::start(runtime.clone(), chain.clone(), StateStore::default(), sinks, options.pipeline.clone())
            .map_err(RunError::Start)?;
    let acks = Arc::new(AckCounter::default());
    let mut report = RunReport::default();
    let read = read_input(reader, &options, &chain, &pipeline, &acks, &mut report).await;
    let pipeline_stats = tokio::task::spawn_blocking(move || pipeline.shutdown()).await.unwrap_or_default();
    report.written = match sink.await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return Err(RunError::Io { what: "cannot write output".into(), source: e }),
        Err(_) => 0,
    };
    report.stats = pipeline_stats;
    report.acked = acks.count();
    let stopped_at = read?;
    Ok((report, stopped_at))
}

/// Reads lines until EOF (or, when strict, the first bad line, which is returned).
async fn read_input(
    reader: Box<dyn AsyncRead + Unpin + Send>,
    options: &RunOptions,
    chain: &Chain,
    pipeline: &Pipeline,
    acks: &Arc<AckCounter>,
    report: &mut RunReport,
) -> Result<Option<LineError>, RunError> {
    let source = options.input.name();
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let mut buf = Vec::new();
    let mut watermarks = Watermarks::new(&chain.event_time);
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|source| RunError::Io { what: format!("cannot read {}", options.input.name()), source })?;
        if n == 0 {
            return Ok(None);
        }
        report.lines += 1;
        let line = report.lines;
        let parsed = match std::str::from_utf8(&buf) {
            Ok(text) => parse_line(&source, line, text, options.pipeline.clock.now_ms()),
            Err(e) => Err(LineError { input: source.clone(), line, message: format!("not UTF-8: {e}") }),
        };
        match parsed {
            Ok(None) => {}
            Ok(Some(msg)) => {
                let key = Envelope::key_of(&msg.originator.entity_type, &msg.originator.name);
                let now = options.pipeline.clock.now_ms();
                let watermark = watermarks.observe(0, chain.time_field.event_time(&msg, now), now);
                let bytes = serde_json::to_vec(&msg)
                    .map_err(|e| RunError::Io { what: format!("line {line}"), source: std::io::Error::other(e) })?;
                let ack = Ack::new(acks.clone(), line);
                report.messages += 1;
                if pipeline.send(Envelope::new(bytes.into(), key, ack).with_watermark(watermark)).await.is_err() {
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

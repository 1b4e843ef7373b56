//! JSON lines in: the embedded default source, a file or stdin — the input of `sluice run`
//! without a broker, and a [`Source`] like the others.
//!
//! What sets it apart is that its input ends ([`Source::finite`]): the end closes every window,
//! and its watermark moves only with its lines (see [`super::Feed::without_idle_check`]), so that
//! a file gives the same results however fast it is read. How a line becomes a message is in
//! [`parse`].
//!
//! It checkpoints itself, at a line: every [`SourceContext::checkpoint_every`] it hands over
//! what it holds, waits for the pipeline to be idle and saves the state with the number of
//! lines read. A run that was killed resumes there: the state is restored, the lines it covers
//! skipped, the rest read again. Its last checkpoint, taken by the engine once the pipeline has
//! stopped, is at the last line read — complete when the input ended.
//!
//! Told to stop, it stops reading at the next wait for input: a line read is always handed
//! over, so every line counted is one the pipeline has.

pub mod parse;

pub use parse::*;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use super::{FeedBatcher, Source, SourceContext, SourceError, SourceFuture, SourceReport};
use sluice_core::{AckCounter, Metrics};

/// Where lines come from (or go to): a file, or stdin/stdout (`-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stream {
    Std,
    File(PathBuf),
}

impl Stream {
    pub fn parse(arg: &str) -> Stream {
        if arg == "-" { Stream::Std } else { Stream::File(PathBuf::from(arg)) }
    }

    /// Its name in logs, errors and checkpoints: the canonical path, or `stdin`.
    pub fn name(&self) -> String {
        match self {
            Stream::Std => "stdin".into(),
            Stream::File(p) => p.canonicalize().unwrap_or_else(|_| p.clone()).display().to_string(),
        }
    }
}

/// Why the JSON-lines source stopped early.
#[derive(Debug, thiserror::Error)]
pub enum JsonLinesError {
    /// The error's text is part of the message, so it is not also a `source` (which would
    /// print it twice in a chain of causes).
    #[error("cannot open {path}: {error}")]
    Open { path: String, error: std::io::Error },
    #[error("cannot read {input}: {error}")]
    Read { input: String, error: std::io::Error },
    /// The first malformed line, with `strict`.
    #[error("stopped at the first malformed line (--strict): {0}")]
    Strict(LineError),
    #[error("checkpoint at line {line}: {reason}")]
    Checkpoint { line: u64, reason: String },
    #[error("checkpoint at line {line}: {error}")]
    Cut { line: u64, error: super::CutError },
}

/// JSON lines from a file or stdin, to their end.
pub struct JsonLinesSource {
    input: Stream,
    strict: bool,
    stats: Arc<JsonLinesStats>,
}

impl JsonLinesSource {
    /// Lines from `input`; with `strict`, the first malformed line ends the run
    /// ([`JsonLinesError::Strict`]) instead of being counted and skipped.
    pub fn new(input: Stream, strict: bool) -> Self {
        JsonLinesSource { input, strict, stats: Arc::default() }
    }

    /// Its counters, live while it runs (published each time the reader refills its buffer):
    /// what a progress display reads.
    pub fn stats(&self) -> Arc<JsonLinesStats> {
        self.stats.clone()
    }
}

impl Source for JsonLinesSource {
    fn describe(&self) -> String {
        match &self.input {
            Stream::Std => "JSON lines from stdin".into(),
            Stream::File(_) => format!("JSON lines from {}", self.input.name()),
        }
    }

    fn id(&self) -> String {
        self.input.name()
    }

    fn finite(&self) -> bool {
        true
    }

    fn checkpoints_itself(&self) -> bool {
        true
    }

    fn run(self: Box<Self>, cx: SourceContext) -> SourceFuture {
        Box::pin(async move {
            let mut report = SourceReport::default();
            let stats = self.stats.clone();
            stats.acks.set(cx.acks.clone()).ok();
            register_metrics(&cx.metrics, &stats);
            let reader: Box<dyn AsyncRead + Unpin + Send> = match &self.input {
                Stream::Std => Box::new(tokio::io::stdin()),
                Stream::File(p) => match tokio::fs::File::open(p).await {
                    Ok(file) => Box::new(file),
                    Err(error) => {
                        let path = p.display().to_string();
                        return (report, Err(JsonLinesError::Open { path, error }.into()));
                    }
                },
            };
            let mut reading = Reading {
                skip: cx.resume.as_ref().map_or(0, |p| p.position),
                bytes: 0,
                source: self.input.name(),
                strict: self.strict,
                batcher: cx.feed.batcher(),
                stats,
                cx,
            };
            let read = reading.read(reader, &mut report).await;
            // Every message read goes to the pipeline, whatever the reason to stop (closed: the
            // pipeline stopped taking messages, and those held go with it).
            let _ = reading.batcher.flush().await;
            reading.publish(&report);
            (report, read.map_err(SourceError::from))
        })
    }
}

/// Resolves when `shutdown` turns true (never, once its sender is gone).
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Its counters on `/metrics` (published whenever the reader waits for input, and at its end).
#[derive(Debug, Default)]
pub struct JsonLinesStats {
    pub lines: AtomicU64,
    /// Bytes of input consumed (a file's progress, against its size).
    pub bytes: AtomicU64,
    pub messages: AtomicU64,
    pub malformed: AtomicU64,
    /// The run's ack counter, once it runs.
    pub acks: std::sync::OnceLock<Arc<AckCounter>>,
}

fn register_metrics(metrics: &Metrics, stats: &Arc<JsonLinesStats>) {
    metrics.register_stats(
        stats,
        [
            ("sluice_jsonl_lines_total", "Input lines read.", "counter", &[], |s| s.lines.load(Ordering::Relaxed)),
            ("sluice_jsonl_bytes_total", "Input bytes read.", "counter", &[], |s| s.bytes.load(Ordering::Relaxed)),
            ("sluice_jsonl_messages_total", "Input lines handed to the chain as messages.", "counter", &[], |s| {
                s.messages.load(Ordering::Relaxed)
            }),
            ("sluice_jsonl_malformed_total", "Input lines that were not messages.", "counter", &[], |s| {
                s.malformed.load(Ordering::Relaxed)
            }),
            ("sluice_jsonl_acked_total", "Input messages whose every branch finished.", "counter", &[], |s| {
                s.acks.get().map_or(0, |a| a.count())
            }),
        ],
    );
}

struct Reading {
    cx: SourceContext,
    batcher: FeedBatcher,
    stats: Arc<JsonLinesStats>,
    source: String,
    strict: bool,
    /// Lines a restored checkpoint covers.
    skip: u64,
    /// Bytes consumed so far.
    bytes: u64,
}

impl Reading {
    /// Publishes the counts so far (plain stores: the reader is their only writer).
    fn publish(&self, report: &SourceReport) {
        self.stats.lines.store(report.lines, Ordering::Relaxed);
        self.stats.bytes.store(self.bytes, Ordering::Relaxed);
        self.stats.messages.store(report.records, Ordering::Relaxed);
        self.stats.malformed.store(report.malformed, Ordering::Relaxed);
    }

    /// Reads lines until the end (`report.exhausted`), a stop, or — when strict — the first bad
    /// line. Messages may still be held in the batcher when it returns.
    async fn read(
        &mut self,
        reader: Box<dyn AsyncRead + Unpin + Send>,
        report: &mut SourceReport,
    ) -> Result<(), JsonLinesError> {
        let mut reader = BufReader::with_capacity(1 << 16, reader);
        let mut buf = Vec::new();
        let ids = LineIds::new(&self.source);
        let input = self.cx.feed.input_form().clone();
        let mut last_checkpoint = Instant::now();
        let mut shutdown = self.cx.shutdown.clone();
        // Arrival time, read once per fill of the buffer rather than once per line.
        let mut now = self.cx.feed.now_ms();
        loop {
            buf.clear();
            // A whole line already in the buffer is read where it is: the async read, and the
            // check for a stop around it, are for when the reader has to wait.
            let in_buffer = memchr::memchr(b'\n', reader.buffer());
            if in_buffer.is_none() {
                self.publish(report);
                // What was read so far goes to the workers before waiting for more: a batch is
                // what a read brought at once, never a message held back for the next line.
                if reader.buffer().is_empty() && self.batcher.holds() && self.batcher.flush().await.is_err() {
                    return Ok(());
                }
                // Only a read waiting for input is cut short by a stop: a line read is always
                // handed over, so that every line counted is one the pipeline has.
                let n = tokio::select! {
                    biased;
                    () = stop_requested(&mut shutdown) => return Ok(()),
                    n = reader.read_until(b'\n', &mut buf) => n.map_err(|error| JsonLinesError::Read {
                        input: self.source.clone(),
                        error,
                    })?,
                };
                if n == 0 {
                    report.exhausted = true;
                    return Ok(());
                }
                now = self.cx.feed.now_ms();
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
                    Ok(text) => parse_record(&self.source, line, text, now, &input),
                    Err(e) => Err(LineError { input: self.source.clone(), line, message: format!("not UTF-8: {e}") }),
                }
            });
            if let Some(end) = in_buffer {
                reader.consume(end + 1);
                self.bytes += end as u64 + 1;
            } else {
                self.bytes += buf.len() as u64;
            }
            let Some(parsed) = parsed else {
                report.resumed_after = line;
                continue;
            };
            if self.cx.keeps_state && last_checkpoint.elapsed() >= self.cx.checkpoint_every {
                self.checkpoint(line - 1).await?;
                report.commits += 1;
                last_checkpoint = Instant::now();
            }
            match parsed {
                Ok(None) => {}
                Ok(Some(mut msg)) => {
                    if !msg.has_id() {
                        msg.set_uuid(ids.uuid(line));
                    }
                    report.records += 1;
                    if self.batcher.push_counted_at(msg, &self.cx.acks, line, now).await.is_err() {
                        return Ok(());
                    }
                }
                Err(err) => {
                    report.malformed += 1;
                    tracing::warn!("{err}");
                    if self.strict {
                        return Err(JsonLinesError::Strict(err));
                    }
                }
            }
        }
    }

    /// A consistent cut at `lines` consumed: nothing held, no message in flight, then the
    /// checkpointer saves (under the firing gate, outputs flushed).
    async fn checkpoint(&mut self, lines: u64) -> Result<(), JsonLinesError> {
        let failed = |reason: String| JsonLinesError::Checkpoint { line: lines, reason };
        // The checkpoint waits for every message to be done: none may wait in a batch.
        if self.batcher.flush().await.is_err() {
            return Ok(());
        }
        let progress = self.cx.feed.progress().clone();
        while !progress.idle() {
            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        }
        let checkpointer = self.cx.checkpointer.clone();
        tokio::task::spawn_blocking(move || checkpointer.save_at(lines))
            .await
            .map_err(|e| failed(format!("the checkpoint task failed: {e}")))?
            .map_err(|error| JsonLinesError::Cut { line: lines, error })
    }
}

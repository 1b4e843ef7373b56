//! Sinks: where messages leave. Each acks a message once it is written.

pub mod jsonl;
pub mod kafka;

use std::path::Path;
use std::sync::Arc;

use crate::config::OutputSpec;
use crate::connectors::kafka::KafkaProducer;
use crate::core::SinkSender;
use jsonl::Target;

/// An output: a sender for sink nodes and the thread behind it.
pub(crate) struct Output {
    pub(crate) tx: SinkSender,
    pub(crate) thread: std::thread::JoinHandle<std::io::Result<u64>>,
    /// A file (or stdout): acks on write, durable on flush.
    pub(crate) is_file: bool,
}

impl Output {
    /// Waits for everything sent to be written (every sender must be dropped first); returns
    /// how many messages were.
    pub(crate) fn finish(self) -> std::io::Result<u64> {
        drop(self.tx);
        self.thread.join().unwrap_or_else(|_| Err(std::io::Error::other("the output thread panicked")))
    }
}

/// Opens an output `name` (`output`, `deadLetter`); a file path is relative to `base`. A file
/// is appended to with `append`, else started empty.
pub(crate) fn open_output(spec: &OutputSpec, base: &Path, name: &str, append: bool) -> Result<Output, String> {
    let err = |e: String| format!("{name}: {e}");
    match spec {
        OutputSpec::File { path } if path == "-" => {
            let (tx, thread) = jsonl::spawn(Target::Stdout, 4096).map_err(|e| err(e.to_string()))?;
            Ok(Output { tx, thread, is_file: true })
        }
        OutputSpec::File { path } => open_file_output(&base.join(path), name, append),
        OutputSpec::Kafka { connection, topic } => {
            let producer = Arc::new(KafkaProducer::new(name, connection).map_err(err)?);
            let (tx, thread) =
                crate::sinks::kafka::spawn(producer, topic.clone(), 4096).map_err(|e| err(e.to_string()))?;
            Ok(Output { tx, thread, is_file: false })
        }
    }
}

/// A JSON-lines file output (see [`open_output`]).
pub(crate) fn open_file_output(path: &Path, name: &str, append: bool) -> Result<Output, String> {
    let file = jsonl::open(path, append).map_err(|e| format!("{name}: {e}"))?;
    let (tx, thread) = jsonl::spawn(Target::File(file), 4096).map_err(|e| format!("{name}: {e}"))?;
    Ok(Output { tx, thread, is_file: true })
}

//! JSON lines out: the `output` sink of `sluice run` (a file or stdout), on a thread of its own.
//!
//! A plain thread (not an async task) so that a checkpoint can flush it synchronously: every line
//! written before a checkpoint is on disk (`fsync`) before the checkpoint records the input
//! position that produced it.

use std::io::Write;
use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};

use bytes::Bytes;

use crate::flow::Ack;

/// What the output thread is handed.
pub enum SinkItem {
    /// A message, acked once written.
    Msg(Bytes, Ack),
    /// Flush and sync everything written so far, then answer.
    Flush(Sender<std::io::Result<()>>),
}

/// The sending side, as sink nodes hold it.
pub type SinkSender = SyncSender<SinkItem>;

/// Where lines go.
pub enum Target {
    Stdout,
    File(std::fs::File),
}

/// Starts the writer thread; returns its sender and its handle (the number of lines written).
pub fn spawn(
    target: Target,
    capacity: usize,
) -> std::io::Result<(SinkSender, std::thread::JoinHandle<std::io::Result<u64>>)> {
    let (tx, rx) = sync_channel(capacity);
    let handle = std::thread::Builder::new().name("sluice-output".into()).spawn(move || write_lines(rx, target))?;
    Ok((tx, handle))
}

fn write_lines(rx: Receiver<SinkItem>, target: Target) -> std::io::Result<u64> {
    let (mut out, file): (Box<dyn Write>, Option<std::fs::File>) = match target {
        Target::Stdout => (Box::new(std::io::BufWriter::with_capacity(1 << 16, std::io::stdout())), None),
        Target::File(f) => {
            let sync = f.try_clone()?;
            (Box::new(std::io::BufWriter::with_capacity(1 << 16, f)), Some(sync))
        }
    };
    let mut n = 0;
    for item in rx {
        match item {
            SinkItem::Msg(msg, ack) => {
                out.write_all(&msg)?;
                out.write_all(b"\n")?;
                n += 1;
                drop(ack);
            }
            SinkItem::Flush(reply) => {
                let result = out.flush().and_then(|()| file.as_ref().map_or(Ok(()), |f| f.sync_data()));
                let _ = reply.send(result);
            }
        }
    }
    out.flush()?;
    if let Some(f) = &file {
        f.sync_data()?;
    }
    Ok(n)
}

/// Asks the writer to flush and sync; waits for it.
pub fn flush(tx: &SinkSender) -> std::io::Result<()> {
    let (reply, answer) = std::sync::mpsc::channel();
    tx.send(SinkItem::Flush(reply)).map_err(|_| std::io::Error::other("output closed"))?;
    answer.recv().map_err(|_| std::io::Error::other("output closed"))?
}

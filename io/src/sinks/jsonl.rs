//! JSON lines out: the `output` sink of `sluice run` (a file or stdout), on a thread of its own.
//!
//! A plain thread (not an async task) so that a checkpoint can flush it synchronously: every line
//! written before a checkpoint is on disk (`fsync`) before the checkpoint records the input
//! position that produced it.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, sync_channel};

use super::SinkStats;
pub use sluice_core::sink::{SinkItem, SinkSender};

/// Where lines go.
pub enum Target {
    Stdout,
    File(std::fs::File),
}

/// Opens a file to write lines to: appended to with `append`, else emptied; its directory is
/// created. Any writable file will do, `/dev/null` and named pipes included.
pub fn open(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true);
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    options.open(path).map_err(named)
}

/// Starts the writer thread; returns its sender and its handle (the number of lines written).
pub fn spawn(
    target: Target,
    capacity: usize,
    stats: Arc<SinkStats>,
) -> std::io::Result<(SinkSender, std::thread::JoinHandle<std::io::Result<u64>>)> {
    let (tx, rx) = sync_channel(capacity);
    let handle =
        std::thread::Builder::new().name("sluice-output".into()).spawn(move || write_lines(rx, target, &stats))?;
    Ok((tx, handle))
}

fn write_lines(rx: Receiver<SinkItem>, target: Target, stats: &SinkStats) -> std::io::Result<u64> {
    let (mut out, file): (Box<dyn Write>, Option<std::fs::File>) = match target {
        Target::Stdout => (Box::new(std::io::BufWriter::with_capacity(1 << 16, std::io::stdout())), None),
        Target::File(f) => {
            // Only a regular file can be synced: fsync on `/dev/null`, a pipe or a terminal
            // fails (EINVAL), and there is nothing on disk to make durable anyway.
            let sync = if f.metadata()?.file_type().is_file() { Some(f.try_clone()?) } else { None };
            (Box::new(std::io::BufWriter::with_capacity(1 << 16, f)), sync)
        }
    };
    let mut n = 0;
    for item in rx {
        match item {
            SinkItem::Msgs(msgs) => {
                for (msg, ack) in msgs {
                    serde_json::to_writer(&mut out, &*msg)?;
                    out.write_all(b"\n")?;
                    n += 1;
                    drop(ack);
                }
                // The only writer: a store, not a read-modify-write.
                stats.written.store(n, Ordering::Relaxed);
            }
            SinkItem::Flush(reply) => {
                let result = out.flush().and_then(|()| file.as_ref().map_or(Ok(()), |f| f.sync_data()));
                stats.flushes.fetch_add(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::Ack;

    #[test]
    fn special_files_take_lines_and_flushes() {
        let file = open(Path::new("/dev/null"), false).unwrap();
        let (tx, thread) = spawn(Target::File(file), 4, Arc::default()).unwrap();
        tx.send(SinkItem::msg(Default::default(), Ack::none())).unwrap();
        flush(&tx).unwrap();
        drop(tx);
        assert_eq!(thread.join().unwrap().unwrap(), 1);
    }

    #[test]
    fn a_fresh_open_empties_the_file_and_an_append_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.jsonl");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "old\n").unwrap();
        drop(open(&path, true).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n");
        drop(open(&path, false).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }
}

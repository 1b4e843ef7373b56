//! JSON lines out: the `output` sink of `sluice run` (a file or stdout).

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use crate::flow::Ack;

/// Writes each message as one line; acks it once written to the buffer, flushes at the end.
pub async fn write_lines<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<(Bytes, Ack)>,
    writer: W,
) -> std::io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 16, writer);
    let mut n = 0;
    while let Some((msg, ack)) = rx.recv().await {
        out.write_all(&msg).await?;
        out.write_all(b"\n").await?;
        n += 1;
        drop(ack);
    }
    out.flush().await?;
    Ok(n)
}

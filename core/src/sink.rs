//! What a sink is handed: a message to write (and ack once written), or a request to flush. The
//! same for every sink — the JSON-lines output, a Kafka topic, the dead letters — so the executor
//! sends to a sink without knowing which one it is.

use std::sync::mpsc::{Sender, SyncSender};

use super::{Ack, Message};

/// What a sink's thread is handed.
pub enum SinkItem {
    /// A message, acked once written. It is written out (as JSON) by the sink, once, on its
    /// own thread.
    Msg(std::sync::Arc<Message>, Ack),
    /// Flush and sync everything written so far, then answer.
    Flush(Sender<std::io::Result<()>>),
}

/// The sending side, as sink nodes hold it.
pub type SinkSender = SyncSender<SinkItem>;

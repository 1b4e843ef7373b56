//! What a sink is handed: messages to write (each acked once written), or a request to flush. The
//! same for every sink — the JSON-lines output, a Kafka topic, the dead letters — so the executor
//! sends to a sink without knowing which one it is.
//!
//! Messages come in batches: a worker hands a sink what one batch of its input produced, in one
//! send. A sink's thread waits for work when it has caught up, so a send per message was a
//! wake-up per message — on a chain whose every message is written, a third of the run's CPU
//! went to the two threads' futex calls and task switches (issue 16).

use std::sync::Arc;
use std::sync::mpsc::{Sender, SyncSender};

use super::{Ack, Message};

/// What a sink's thread is handed.
pub enum SinkItem {
    /// Messages, in order, each acked once written. They are written out (as JSON) by the sink,
    /// once, on its own thread.
    Msgs(Vec<(Arc<Message>, Ack)>),
    /// Flush and sync everything written so far, then answer.
    Flush(Sender<std::io::Result<()>>),
}

impl SinkItem {
    /// One message.
    pub fn msg(msg: Arc<Message>, ack: Ack) -> Self {
        SinkItem::Msgs(vec![(msg, ack)])
    }

    /// The messages it carries (none for a flush), each with its ack.
    pub fn into_msgs(self) -> Vec<(Arc<Message>, Ack)> {
        match self {
            SinkItem::Msgs(msgs) => msgs,
            SinkItem::Flush(_) => Vec::new(),
        }
    }
}

/// The sending side, as sink nodes hold it.
pub type SinkSender = SyncSender<SinkItem>;

//! Ack handles: how a source learns that a message is done.
//!
//! A source attaches an [`Ack`] to every message it reads. Each branch the message spawns holds a
//! clone (a sink holds one until it has written the message); when the last clone is dropped —
//! every branch sunk, dropped by design, or failed — the source's [`AckTarget`] hears the
//! message's position. A file source counts; the Kafka source commits offsets only up to the
//! lowest position not yet acked, so a crash replays, never skips.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where acks go: the source that read the message.
pub trait AckTarget: Send + Sync + 'static {
    /// Every branch of the message at `position` has finished.
    fn ack(&self, position: u64);
}

/// The ack handle of one message. Clone it per branch; drop it when the branch is done.
#[derive(Clone)]
pub struct Ack(Option<Arc<AckInner>>);

struct AckInner {
    target: Arc<dyn AckTarget>,
    position: u64,
}

impl Drop for AckInner {
    fn drop(&mut self) {
        self.target.ack(self.position);
    }
}

impl Ack {
    pub fn new(target: Arc<dyn AckTarget>, position: u64) -> Self {
        Ack(Some(Arc::new(AckInner { target, position })))
    }

    /// A handle nobody waits for (generated messages, tests).
    pub fn none() -> Self {
        Ack(None)
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(inner) => write!(f, "Ack({})", inner.position),
            None => write!(f, "Ack(none)"),
        }
    }
}

/// An [`AckTarget`] that counts acks: enough for a file source.
#[derive(Debug, Default)]
pub struct AckCounter(AtomicU64);

impl AckCounter {
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl AckTarget for AckCounter {
    fn ack(&self, _position: u64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_once_when_the_last_branch_finishes() {
        let counter = Arc::new(AckCounter::default());
        let ack = Ack::new(counter.clone(), 7);
        let branch_a = ack.clone();
        let branch_b = ack.clone();
        drop(ack);
        drop(branch_a);
        assert_eq!(counter.count(), 0);
        drop(branch_b);
        assert_eq!(counter.count(), 1);
    }
}

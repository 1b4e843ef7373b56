//! Ack handles: how a source learns that a message is done.
//!
//! A source attaches an [`Ack`] to every message it reads. Each branch the message spawns holds a
//! clone (a sink holds one until it has written the message); when the last clone is dropped —
//! every branch sunk, dropped by design, or failed — the source's [`AckTarget`] hears the
//! message's position. A file source counts; the Kafka source commits offsets only up to the
//! lowest position not yet acked, so a crash replays, never skips.
//!
//! A source whose acks need no positions (a file's are only counted) can share one handle among
//! the messages of a batch ([`AckGroup`]): each message holds a clone instead of an allocation of
//! its own, and the target hears the whole group once its last message is done.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where acks go: the source that read the message.
pub trait AckTarget: Send + Sync + 'static {
    /// Every branch of the message at `position` has finished.
    fn ack(&self, position: u64);

    /// Every branch of `count` messages of a group, the first at `position`, has finished.
    fn ack_many(&self, position: u64, count: u64) {
        for _ in 0..count {
            self.ack(position);
        }
    }
}

/// The ack handle of one message. Clone it per branch; drop it when the branch is done.
#[derive(Clone)]
pub struct Ack(Option<Arc<AckInner>>);

struct AckInner {
    target: Arc<dyn AckTarget>,
    position: u64,
    /// How many messages share the handle: 1, or a group's count ([`AckGroup`]).
    messages: AtomicU64,
}

impl Drop for AckInner {
    fn drop(&mut self) {
        match *self.messages.get_mut() {
            1 => self.target.ack(self.position),
            0 => {}
            n => self.target.ack_many(self.position, n),
        }
    }
}

impl Ack {
    pub fn new(target: Arc<dyn AckTarget>, position: u64) -> Self {
        Ack(Some(Arc::new(AckInner { target, position, messages: AtomicU64::new(1) })))
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

/// One ack handle shared by the messages of a group (a batch of a file's lines): each message
/// gets a clone from [`AckGroup::join`], and the target hears `ack_many(first, count)` once the
/// group is closed (dropped) and every message of it is done. A group must not stay open while
/// its source waits for input: its messages would be done but not acked.
pub struct AckGroup {
    ack: Arc<AckInner>,
}

impl AckGroup {
    /// A group whose first message is at `position`.
    pub fn new(target: Arc<dyn AckTarget>, position: u64) -> Self {
        AckGroup { ack: Arc::new(AckInner { target, position, messages: AtomicU64::new(0) }) }
    }

    /// The handle of one more message of the group.
    pub fn join(&self) -> Ack {
        self.ack.messages.fetch_add(1, Ordering::Relaxed);
        Ack(Some(self.ack.clone()))
    }

    /// How many messages joined.
    pub fn len(&self) -> u64 {
        self.ack.messages.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    fn ack_many(&self, _position: u64, count: u64) {
        self.0.fetch_add(count, Ordering::SeqCst);
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

    #[test]
    fn a_group_is_acked_once_closed_and_every_message_done() {
        let counter = Arc::new(AckCounter::default());
        let group = AckGroup::new(counter.clone(), 1);
        let (a, b) = (group.join(), group.join());
        let b2 = b.clone();
        assert_eq!(group.len(), 2);
        drop((a, b));
        drop(group);
        assert_eq!(counter.count(), 0, "a branch of b is still running");
        drop(b2);
        assert_eq!(counter.count(), 2);
        // A group nobody joined acks nothing.
        drop(AckGroup::new(counter.clone(), 3));
        assert_eq!(counter.count(), 2);
    }
}

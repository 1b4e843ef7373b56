//! Progress: the watermark of the work that is *done*.
//!
//! The source stamps each message with its watermark, and messages run on several workers at
//! once. A window may only close when every message stamped before the watermark reached its
//! close time has been processed — otherwise a message still queued on a slower worker would
//! find its (not late) window gone. So windows close by the *completed* watermark: the stamp of
//! the newest message all of whose predecessors are done. Work that is not a message — firing
//! windows — is tracked too, so a checkpoint can wait until nothing at all is in flight.
//!
//! The completed watermark only grows, with one exception: when the partitions a source reads
//! change (a Kafka rebalance), it is set to the combined watermark of the partitions held now
//! ([`Progress::rewind`]), which may be behind it. A partition that moves in arrives with open
//! windows at *its* event time; the watermark the other partitions reached without it never
//! covered it, and closing its windows by that watermark would emit them before the records
//! still to be read from it — which then open the same window again and emit it a second time,
//! with different contents.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::state::time::{END_OF_INPUT, NO_WATERMARK};

#[derive(Debug)]
pub struct Progress {
    inner: Mutex<Inner>,
    completed: AtomicI64,
    /// Held by whoever fires windows (one worker at a time, so a downstream window never closes
    /// while an upstream result for it is still on its way) and by a checkpoint (so that no
    /// window is popped from the state and not yet written out while it is taken).
    gate: Mutex<()>,
    /// Bumped by every [`Progress::rewind`]: whoever remembers how far it fired windows starts
    /// over.
    epoch: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    next_seq: u64,
    /// In-flight message → the watermark as it was before that message.
    in_flight: BTreeMap<u64, i64>,
    latest: i64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            inner: Mutex::new(Inner { next_seq: 0, in_flight: BTreeMap::new(), latest: NO_WATERMARK }),
            completed: AtomicI64::new(NO_WATERMARK),
            gate: Mutex::new(()),
            epoch: AtomicU64::new(0),
        }
    }
}

/// Held while a message is processed; dropping it marks the message done.
#[derive(Debug)]
pub struct ProgressToken {
    progress: Arc<Progress>,
    seq: u64,
}

impl Drop for ProgressToken {
    fn drop(&mut self) {
        self.progress.done(self.seq);
    }
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A message stamped `watermark` enters.
    pub fn issue(self: &Arc<Self>, watermark: i64) -> ProgressToken {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let before = inner.latest;
        inner.in_flight.insert(seq, before);
        inner.latest = inner.latest.max(watermark);
        ProgressToken { progress: self.clone(), seq }
    }

    /// Messages stamped up to `watermark` entered, tracked by a token issued before them (a
    /// batch's, see [`crate::flow::Batcher`]): raise the latest watermark to theirs. Must happen
    /// before that token is dropped.
    pub fn raise(&self, watermark: i64) {
        if watermark == NO_WATERMARK {
            return;
        }
        let mut inner = self.lock();
        inner.latest = inner.latest.max(watermark);
    }

    fn done(&self, seq: u64) {
        let mut inner = self.lock();
        inner.in_flight.remove(&seq);
        let completed = inner.in_flight.first_key_value().map_or(inner.latest, |(_, before)| *before);
        self.completed.fetch_max(completed, Ordering::SeqCst);
    }

    /// The watermark every finished message allows.
    pub fn completed(&self) -> i64 {
        self.completed.load(Ordering::SeqCst)
    }

    /// The input ended: every window may close.
    pub fn end_of_input(&self) {
        self.completed.store(END_OF_INPUT, Ordering::SeqCst);
    }

    /// Restores the watermark a checkpoint recorded.
    pub fn restore(&self, watermark: i64) {
        let mut inner = self.lock();
        inner.latest = inner.latest.max(watermark);
        self.completed.fetch_max(watermark, Ordering::SeqCst);
    }

    /// The set of source partitions changed: from now on windows close by `watermark`, the
    /// combined watermark of the partitions held now, even where that is behind the completed
    /// watermark so far (see the module doc). Call it with the gate held, so that no window fires
    /// between the state changing hands and the watermark following it; a window fired before
    /// stays fired.
    pub fn rewind(&self, watermark: i64) {
        let mut inner = self.lock();
        inner.latest = watermark;
        // Nothing should be in flight at a rebalance; if something is, it finishes under the
        // new watermark too.
        for before in inner.in_flight.values_mut() {
            *before = (*before).min(watermark);
        }
        let completed = inner.in_flight.first_key_value().map_or(watermark, |(_, before)| *before);
        // The epoch first: a reader that sees the new watermark sees the new epoch.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.completed.store(completed, Ordering::SeqCst);
    }

    /// How many times the watermark was rewound ([`Progress::rewind`]).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Held while windows fire, and while a checkpoint is taken.
    pub fn gate(&self) -> MutexGuard<'_, ()> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// No message in flight.
    pub fn idle(&self) -> bool {
        self.lock().in_flight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_watermark_waits_for_the_slowest_message() {
        let p = Arc::new(Progress::default());
        let a = p.issue(10);
        let b = p.issue(20);
        let c = p.issue(30);
        drop(b);
        assert_eq!(p.completed(), NO_WATERMARK, "a (stamped 10) is still running");
        drop(a);
        assert_eq!(p.completed(), 20, "c is running: everything up to b is done");
        drop(c);
        assert_eq!(p.completed(), 30);
        assert!(p.idle());
    }

    /// A batch: one token issued with its first message (stamped 10), the others' stamps (up to
    /// 40) raised when it is handed over. Another worker's batch, issued in between, finishing
    /// first must not let the watermark pass the first batch's messages.
    #[test]
    fn a_batch_token_covers_every_stamp_it_raised() {
        let p = Arc::new(Progress::default());
        let batch_a = p.issue(10);
        let batch_b = p.issue(15);
        p.raise(40); // batch a's other messages, stamped up to 40, handed over
        drop(batch_b);
        assert_eq!(p.completed(), NO_WATERMARK, "batch a (from 10 on) is still running");
        drop(batch_a);
        assert_eq!(p.completed(), 40, "every stamp of both batches is done");
        p.raise(NO_WATERMARK);
        assert_eq!(p.completed(), 40);
    }

    /// A rebalance brings in a partition behind the watermark: the completed watermark goes
    /// back to the combined one, and messages stamped after it move it on from there.
    #[test]
    fn a_rewound_watermark_grows_again_from_where_it_was_set() {
        let p = Arc::new(Progress::default());
        drop(p.issue(10_000));
        assert_eq!((p.completed(), p.epoch()), (10_000, 0));
        p.rewind(200);
        assert_eq!((p.completed(), p.epoch()), (200, 1), "back to the watermark of the partitions held now");
        let a = p.issue(300);
        assert_eq!(p.completed(), 200, "nothing stamped 300 is done yet");
        drop(a);
        assert_eq!(p.completed(), 300);
        p.rewind(NO_WATERMARK);
        assert_eq!(p.completed(), NO_WATERMARK, "a partition with no position yet holds every window");
        assert_eq!(p.epoch(), 2);
    }
}

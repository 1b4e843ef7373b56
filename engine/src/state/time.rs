//! Event time and watermarks.
//!
//! A message's event time is its `ts` (or another field, or its arrival time: see
//! [`EventTimeSpec`]). A watermark is the greatest event time seen minus the allowed lateness:
//! "no event older than this is still expected". Watermarks are kept per source partition (a
//! Kafka partition, an MQTT topic; a file and the HTTP source are one), or — with
//! `eventTime.per = "originator"` — per originator (device) within its partition.
//!
//! # Two watermarks on every message
//!
//! The source stamps each message ([`Stamp`]) with
//!
//! - the **combined** watermark: the minimum over the partitions (or originators) that are not
//!   idle. Windows close by it — more exactly by the combined watermark of *completed* work
//!   (`flow::progress`), so that a window closes only once every message stamped before is done;
//! - the watermark the message is **judged** by: per partition, the combined one; per
//!   originator, its own originator's. A reading is late when every window it belongs to has
//!   closed by that watermark. A device whose clock is minutes behind the others is therefore
//!   late only by its own readings, never because another device is ahead — and the combined
//!   watermark, the minimum, waits for it.
//!
//! Lateness is judged against the stamp — not against whatever the operator has seen when the
//! message happens to run — so it does not depend on how workers interleave.
//!
//! # Idle partitions and devices
//!
//! A partition or originator that has shown nothing for `idleTimeoutMs` of processing time (the
//! [`Clock`](crate::host::Clock) the pipeline runs on, so tests set it by hand) is idle: it no
//! longer holds the combined watermark back. When every one is idle, the combined watermark is
//! the greatest of theirs — nobody holds anything back — so a silent device is never the reason
//! no window ever closes. The feed re-evaluates it without waiting for a message
//! (`sources::Feed`), so windows close while every device is silent.
//!
//! # A closed window stays closed
//!
//! The judged watermark is never below the combined watermark already handed out: an idle
//! device that speaks again, or a device first heard after its peers moved the watermark on,
//! finds the windows the others closed closed, and its readings for them are late (reopening a
//! window would emit a second, different result under the same id). And because the set of
//! devices is not known in advance, per originator — and on a source that discovers its
//! partitions as messages come, MQTT topics — the combined watermark is held back for
//! `idleTimeoutMs` after the first reading (a warm-up), so that every device on the air is heard
//! before the first window closes.
//!
//! The exception is a source that assigns partitions with their state (Kafka), per partition: a
//! partition just assigned holds the watermark back until its first record (or its idle
//! timeout), a partition that moved continues from the greatest event time its snapshot
//! recorded and replays from there, its windows still open — so there the combined watermark of
//! the moment is the judge, and when every partition is idle the least one counts, as before.
//!
//! # Checkpoints
//!
//! [`Watermarks`] is saved with every checkpoint (JSON; older checkpoints, per partition, still
//! read) and restored with it; the index that finds the minimum in O(log n) per message is
//! rebuilt on first use.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Watermark before any event: nothing is late yet.
pub const NO_WATERMARK: i64 = i64::MIN;
/// Watermark at the end of a finite input: every window may close.
pub const END_OF_INPUT: i64 = i64::MAX;

pub use sluice_core::spec::{EventTimeSpec, WatermarkPer};

/// Where to read the event time, parsed from [`EventTimeSpec::from`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeField {
    Ts,
    Metadata(String),
    Data(String),
    Arrival,
}

impl TimeField {
    pub fn parse(from: &str) -> Result<TimeField, String> {
        match from {
            "ts" => Ok(TimeField::Ts),
            "arrival" => Ok(TimeField::Arrival),
            _ => {
                if let Some(key) = from.strip_prefix("metadata.").filter(|k| !k.is_empty()) {
                    Ok(TimeField::Metadata(key.to_string()))
                } else if let Some(key) = from.strip_prefix("data.").filter(|k| !k.is_empty()) {
                    Ok(TimeField::Data(key.to_string()))
                } else {
                    Err(format!("`{from}` is not `ts`, `arrival`, `metadata.<key>` or `data.<key>`"))
                }
            }
        }
    }

    /// The event time of `msg` (`now` for arrival time, or when the field is missing or not a
    /// number of milliseconds).
    pub fn event_time(&self, msg: &sluice_core::message::Message, now: i64) -> i64 {
        match self {
            TimeField::Ts => msg.ts(),
            TimeField::Arrival => now,
            TimeField::Metadata(k) => msg.meta(k).and_then(|s| s.trim().parse().ok()).unwrap_or(now),
            TimeField::Data(k) => msg.data_top(k).and_then(|f| f.number()).map_or(now, |n| n as i64),
        }
    }
}

/// What a source stamps on a message (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The combined watermark: windows close by it (once every message before it is done).
    pub combined: i64,
    /// The watermark this message's lateness is judged against.
    pub judged: i64,
}

impl Stamp {
    /// One watermark for both (a source with one partition, a test).
    pub fn single(watermark: i64) -> Self {
        Stamp { combined: watermark, judged: watermark }
    }
}

/// The key of a warm-up that covers the whole source (not one assigned partition).
const WHOLE_SOURCE: u32 = u32::MAX;

/// (greatest event time seen, processing time of the last message).
type Track = (i64, i64);

/// An entry of the index: (greatest event time, partition, originator).
type Entry = (i64, u32, Option<String>);

/// Watermarks of one source: per partition, or per originator within its partition.
///
/// The combined watermark is the minimum over the entries (partitions or originators) that are
/// not idle, found through an index ordered by watermark, so a message costs O(log n) however
/// many devices there are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Watermarks {
    lateness: i64,
    idle_timeout: i64,
    #[serde(default)]
    per: WatermarkPer,
    /// Partition → (greatest event time seen, processing time of its last message).
    partitions: BTreeMap<u32, Track>,
    /// Per originator: partition → originator → (greatest event time, last message).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    originators: BTreeMap<u32, BTreeMap<String, Track>>,
    /// Warm-ups holding the watermark back: partition (or the whole source) → (greatest event
    /// time known there, processing time until which it holds).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    warmups: BTreeMap<u32, Track>,
    /// The whole source's warm-up was started (per originator, or a source that discovers its
    /// partitions: at its first message).
    #[serde(default)]
    warmed: bool,
    /// The source discovers its partitions as messages come (MQTT topics).
    #[serde(default)]
    discovering: bool,
    /// Partitions are assigned, with their state, by the source (Kafka): see [`Watermarks::stamp`].
    #[serde(default)]
    assigned: bool,
    /// The greatest combined watermark handed out.
    #[serde(default = "no_watermark")]
    issued: i64,
    /// Entries presumed not idle, by greatest event time; `None` until built (after a restore).
    #[serde(skip)]
    index: Option<BTreeSet<Entry>>,
}

fn no_watermark() -> i64 {
    NO_WATERMARK
}

impl Default for Watermarks {
    fn default() -> Self {
        Watermarks::new(&EventTimeSpec::default())
    }
}

impl PartialEq for Watermarks {
    fn eq(&self, other: &Self) -> bool {
        (self.lateness, self.idle_timeout, self.per, &self.partitions, &self.originators, &self.warmups)
            == (other.lateness, other.idle_timeout, other.per, &other.partitions, &other.originators, &other.warmups)
            && (self.warmed, self.discovering, self.assigned, self.issued)
                == (other.warmed, other.discovering, other.assigned, other.issued)
    }
}

impl Eq for Watermarks {}

impl Watermarks {
    pub fn new(spec: &EventTimeSpec) -> Self {
        Watermarks {
            lateness: spec.lateness_ms as i64,
            idle_timeout: spec.idle_timeout_ms as i64,
            per: spec.per,
            partitions: BTreeMap::new(),
            originators: BTreeMap::new(),
            warmups: BTreeMap::new(),
            warmed: false,
            discovering: false,
            assigned: false,
            issued: NO_WATERMARK,
            index: None,
        }
    }

    /// Takes the chain's current event-time settings (after a restore: the chain may have
    /// changed since the checkpoint). Switching between per partition and per originator
    /// starts the originators afresh.
    pub fn reconfigure(&mut self, spec: &EventTimeSpec) {
        self.lateness = spec.lateness_ms as i64;
        self.idle_timeout = spec.idle_timeout_ms as i64;
        if self.per != spec.per {
            self.per = spec.per;
            self.originators.clear();
            self.warmed = false;
        }
        self.index = None;
    }

    /// The source discovers its partitions as messages come (MQTT topics): a topic first heard
    /// after its peers have moved the watermark on would find their windows closed, so the
    /// watermark is held back for the idle timeout after the first message, as per originator.
    pub fn discovering(mut self) -> Self {
        self.discovering = true;
        self
    }

    /// Records an event of `originator` on `partition` at processing time `now`; returns the
    /// combined watermark and the one the event is judged by.
    ///
    /// The judged watermark is the event's own — its partition's combined one per partition,
    /// its originator's per originator — but never below the combined watermark already handed
    /// out: a window that closed stays closed, so an event for it (from a partition or device
    /// returning from idle, or first heard late) is late rather than reopening it. The exception
    /// is a source that assigns partitions with their state (Kafka, per partition): it replays a
    /// moved partition from a snapshot whose windows are still open, so there the combined
    /// watermark of the moment is the judge, as it always was.
    pub fn stamp(&mut self, partition: u32, originator: &str, event_time: i64, now: i64) -> Stamp {
        if (!self.per.is_partition() || self.discovering) && !self.warmed {
            self.warmed = true;
            self.warmups.insert(WHOLE_SOURCE, (i64::MIN, now.saturating_add(self.idle_timeout)));
        }
        self.track(partition, None, event_time, now);
        let own = match self.per {
            WatermarkPer::Partition => None,
            WatermarkPer::Originator => Some(self.track(partition, Some(originator), event_time, now)),
        };
        let combined = self.combined(now);
        let judged = match own {
            None if self.assigned => combined,
            None => combined.max(self.issued),
            Some(own) => self.minus_lateness(own).max(self.issued),
        };
        self.issued = self.issued.max(combined);
        Stamp { combined, judged }
    }

    /// [`Watermarks::stamp`] per partition only (a source that does not know originators); the
    /// combined watermark.
    pub fn observe(&mut self, partition: u32, event_time: i64, now: i64) -> i64 {
        self.stamp(partition, "", event_time, now).combined
    }

    /// Updates the track of `partition` (or of `originator` on it) with an event; returns its
    /// greatest event time.
    fn track(&mut self, partition: u32, originator: Option<&str>, event_time: i64, now: i64) -> i64 {
        // Per partition, the partitions make the combined watermark; per originator, the
        // originators (partitions are then kept for `max_seen` only).
        let counted = match self.per {
            WatermarkPer::Partition => originator.is_none(),
            WatermarkPer::Originator => originator.is_some(),
        };
        let track = match originator {
            None => self.partitions.entry(partition).or_insert((i64::MIN, now)),
            Some(name) => {
                let per = self.originators.entry(partition).or_default();
                if !per.contains_key(name) {
                    per.insert(name.to_string(), (i64::MIN, now));
                }
                per.get_mut(name).expect("inserted above")
            }
        };
        let (old, last) = *track;
        let max = old.max(event_time);
        *track = (max, now);
        // The index changes when the greatest event time does, or when an entry that was idle
        // (and so may have left the index) or new speaks: not for most events.
        let moved = old != max || old == i64::MIN || now < last || self.idle(last, now);
        if counted
            && moved
            && let Some(index) = &mut self.index
        {
            let key = originator.map(str::to_string);
            if old != max {
                index.remove(&(old, partition, key.clone()));
            }
            index.insert((max, partition, key));
        }
        max
    }

    fn minus_lateness(&self, max: i64) -> i64 {
        if max == i64::MIN { NO_WATERMARK } else { max.saturating_sub(self.lateness) }
    }

    fn idle(&self, last: i64, now: i64) -> bool {
        now.saturating_sub(last) >= self.idle_timeout
    }

    fn last_seen(&self, partition: u32, originator: &Option<String>) -> Option<i64> {
        match originator {
            None => self.partitions.get(&partition).map(|t| t.1),
            Some(name) => self.originators.get(&partition)?.get(name).map(|t| t.1),
        }
    }

    /// Every counted entry: partitions, or originators.
    fn entries(&self) -> Vec<Entry> {
        match self.per {
            WatermarkPer::Partition => self.partitions.iter().map(|(p, t)| (t.0, *p, None)).collect(),
            WatermarkPer::Originator => self
                .originators
                .iter()
                .flat_map(|(p, per)| per.iter().map(move |(o, t)| (t.0, *p, Some(o.clone()))))
                .collect(),
        }
    }

    /// The combined watermark at `now`: the minimum over the entries that are not idle and the
    /// warm-ups not over; when every entry is idle, the greatest of them (an idle entry holds
    /// nothing back) — except per assigned partition (Kafka), where it is the least, as before.
    fn combined(&mut self, now: i64) -> i64 {
        if self.index.is_none() {
            let active: BTreeSet<Entry> = self
                .entries()
                .into_iter()
                .filter(|(_, p, o)| self.last_seen(*p, o).is_some_and(|last| !self.idle(last, now)))
                .collect();
            self.index = Some(active);
        }
        let min_active = loop {
            let Some((max, p, o)) = self.index.as_ref().and_then(|i| i.first()).cloned() else { break None };
            match self.last_seen(p, &o) {
                Some(last) if !self.idle(last, now) => break Some(max),
                // Idle (or gone): out of the index until it speaks again.
                _ => {
                    if let Some(index) = &mut self.index {
                        index.pop_first();
                    }
                }
            }
        };
        self.warmups.retain(|_, (_, until)| now < *until);
        let min_warm = self.warmups.values().map(|(max, _)| *max).min();
        let min = match (min_active, min_warm) {
            (Some(a), Some(w)) => Some(a.min(w)),
            (a, w) => a.or(w),
        };
        let max = min.or_else(|| self.all_idle());
        max.map_or(NO_WATERMARK, |max| self.minus_lateness(max))
    }

    /// The greatest event time that counts when every entry is idle (see [`Self::combined`]).
    fn all_idle(&self) -> Option<i64> {
        let least = self.per.is_partition() && self.assigned;
        let pick = |all: &mut dyn Iterator<Item = i64>| if least { all.min() } else { all.max() };
        match self.per {
            WatermarkPer::Partition => pick(&mut self.partitions.values().map(|t| t.0)),
            WatermarkPer::Originator => pick(&mut self.originators.values().flat_map(|m| m.values().map(|t| t.0))),
        }
    }

    /// The combined watermark at processing time `now` (no event).
    pub fn current(&mut self, now: i64) -> i64 {
        self.combined(now)
    }

    /// Re-evaluates the combined watermark at `now` with no event (entries may have gone idle,
    /// a warm-up may be over); returns it when it moved past everything handed out so far, so
    /// that windows can close while every device is silent.
    pub fn advance(&mut self, now: i64) -> Option<i64> {
        let combined = self.combined(now);
        (combined > self.issued).then(|| {
            self.issued = combined;
            combined
        })
    }

    /// Starts tracking `partition` before its first event (just assigned): until it has shown an
    /// event (or stays silent for the idle timeout) it holds the watermark back, so a partition
    /// that happens to be read first cannot make every other partition's events late. Per
    /// originator, it holds the watermark back for the idle timeout, so that its devices are
    /// heard.
    pub fn expect(&mut self, partition: u32, now: i64) {
        self.assigned = true;
        self.partitions.entry(partition).or_insert((i64::MIN, now));
        self.start_partition(partition, None, now);
    }

    fn start_partition(&mut self, partition: u32, max_seen: Option<i64>, now: i64) {
        let max = max_seen.unwrap_or(i64::MIN);
        match self.per {
            WatermarkPer::Partition => {
                if let Some(index) = &mut self.index {
                    index.retain(|(_, p, _)| *p != partition);
                    index.insert((self.partitions.get(&partition).map_or(max, |t| t.0), partition, None));
                }
            }
            WatermarkPer::Originator => {
                self.warmups.insert(partition, (max, now.saturating_add(self.idle_timeout)));
            }
        }
    }

    /// Restarts every idle clock at `now` (after a restore: a partition or device that was
    /// active before the restart holds the watermark back again until it speaks or idles,
    /// instead of counting as idle because the process was down).
    pub fn touch_all(&mut self, now: i64) {
        for (_, last) in self.partitions.values_mut() {
            *last = now;
        }
        for (_, last) in self.originators.values_mut().flat_map(|per| per.values_mut()) {
            *last = now;
        }
        self.index = None;
    }

    /// The greatest event time seen on `partition`, if it has shown one.
    pub fn max_seen(&self, partition: u32) -> Option<i64> {
        self.partitions.get(&partition).map(|(max, _)| *max).filter(|max| *max != i64::MIN)
    }

    /// Takes over `partition` where another instance left it (its greatest event time), as of
    /// processing time `now`.
    pub fn resume(&mut self, partition: u32, max_seen: Option<i64>, now: i64) {
        self.assigned = true;
        self.partitions.insert(partition, (max_seen.unwrap_or(i64::MIN), now));
        self.originators.remove(&partition);
        if let Some(index) = &mut self.index {
            index.retain(|(_, p, _)| *p != partition);
        }
        self.start_partition(partition, max_seen, now);
    }

    /// Forgets a partition (revoked from this instance), and its originators.
    pub fn remove(&mut self, partition: u32) {
        self.partitions.remove(&partition);
        self.originators.remove(&partition);
        self.warmups.remove(&partition);
        if let Some(index) = &mut self.index {
            index.retain(|(_, p, _)| *p != partition);
        }
    }

    /// Each partition's greatest event time seen so far (none before its first event).
    pub fn partition_maxima(&self) -> Vec<(u32, Option<i64>)> {
        self.partitions.keys().map(|&p| (p, self.max_seen(p))).collect()
    }

    /// Entries tracked (partitions, plus originators per originator).
    pub fn len(&self) -> usize {
        self.partitions.len() + self.originators.values().map(BTreeMap::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(lateness: u64, idle: u64) -> EventTimeSpec {
        EventTimeSpec { from: "ts".into(), lateness_ms: lateness, idle_timeout_ms: idle, per: WatermarkPer::Partition }
    }

    fn per_originator(lateness: u64, idle: u64) -> EventTimeSpec {
        EventTimeSpec { per: WatermarkPer::Originator, ..spec(lateness, idle) }
    }

    #[test]
    fn watermark_trails_the_greatest_event_time() {
        let mut w = Watermarks::new(&spec(100, 10_000));
        assert_eq!(w.current(0), NO_WATERMARK);
        assert_eq!(w.observe(0, 1000, 0), 900);
        assert_eq!(w.observe(0, 500, 1), 900, "an older event does not move it back");
        assert_eq!(w.observe(0, 2000, 2), 1900);
    }

    #[test]
    fn partitions_combine_as_the_minimum() {
        let mut w = Watermarks::new(&spec(0, 10_000));
        w.observe(0, 5000, 0);
        assert_eq!(w.observe(1, 1000, 0), 1000);
        assert_eq!(w.observe(1, 7000, 1), 5000);
    }

    #[test]
    fn an_idle_partition_stops_holding_it_back() {
        let mut w = Watermarks::new(&spec(0, 1000));
        w.observe(0, 1000, 0);
        w.observe(1, 9000, 0);
        assert_eq!(w.current(500), 1000);
        assert_eq!(w.observe(1, 9500, 2000), 9500, "partition 0 idle for 2 s");
        w.remove(1);
        assert_eq!(w.current(2000), 1000, "all idle: the minimum over all");
    }

    #[test]
    fn an_assigned_partition_holds_it_back_until_it_speaks_or_idles() {
        let mut w = Watermarks::new(&spec(0, 1000));
        w.expect(1, 0);
        assert_eq!(w.observe(0, 9000, 0), NO_WATERMARK, "partition 1 has not been read yet");
        assert_eq!(w.observe(1, 100, 10), 100);
        w.expect(2, 500);
        assert_eq!(w.current(600), NO_WATERMARK, "partition 2 just assigned");
        w.observe(0, 9000, 1200);
        assert_eq!(w.observe(1, 200, 1200), NO_WATERMARK, "partition 2 still within its idle timeout");
        assert_eq!(w.current(1600), 200, "partition 2 silent past the idle timeout");
    }

    #[test]
    fn per_originator_a_device_behind_is_judged_by_its_own_readings() {
        // Idle after 10 s; the warm-up (10 s from the first reading) lets every device be heard.
        let mut w = Watermarks::new(&per_originator(0, 10_000));
        let ahead = w.stamp(0, "ahead", 600_000, 0);
        assert_eq!(ahead, Stamp { combined: NO_WATERMARK, judged: 600_000 }, "warming up: nothing closes");
        let behind = w.stamp(0, "behind", 300_000, 1);
        assert_eq!(behind.judged, 300_000, "five minutes behind the other device, not late by it");
        assert_eq!(w.stamp(0, "behind", 300_500, 9_000).combined, NO_WATERMARK);
        // After the warm-up: windows close by the device furthest behind.
        assert_eq!(w.stamp(0, "ahead", 601_000, 10_500), Stamp { combined: 300_500, judged: 601_000 });
        assert_eq!(w.stamp(0, "behind", 301_000, 10_600), Stamp { combined: 301_000, judged: 301_000 });
        // "behind" goes silent: once idle, "ahead" alone sets the combined watermark.
        assert_eq!(w.stamp(0, "ahead", 602_000, 20_000).combined, 301_000);
        assert_eq!(w.stamp(0, "ahead", 603_000, 20_700).combined, 603_000);
        // Back from idle, its windows up to 603 000 are closed: it is judged by what was handed out.
        assert_eq!(w.stamp(0, "behind", 302_000, 21_000), Stamp { combined: 302_000, judged: 603_000 });
    }

    #[test]
    fn per_originator_lateness_is_the_devices_own() {
        let mut w = Watermarks::new(&per_originator(1_000, 60_000));
        w.stamp(0, "a", 10_000, 0);
        w.stamp(0, "b", 50_000, 0);
        assert_eq!(w.stamp(0, "a", 9_500, 1).judged, 9_000, "0.5 s out of order on a: within its lateness");
        assert_eq!(w.stamp(0, "b", 48_000, 2).judged, 49_000, "2 s out of order on b: late by b's own");
    }

    #[test]
    fn every_device_silent_still_closes_windows() {
        let mut w = Watermarks::new(&per_originator(0, 1_000));
        w.stamp(0, "a", 5_000, 0);
        w.stamp(0, "b", 9_000, 0);
        w.stamp(0, "a", 5_001, 900);
        w.stamp(0, "b", 9_001, 900);
        assert_eq!(w.advance(999), None, "warming up");
        assert_eq!(w.advance(1_000), Some(5_001), "warm-up over: the least of the devices");
        assert_eq!(w.advance(1_500), None, "nothing new");
        assert_eq!(w.advance(1_900), Some(9_001), "all idle: nobody holds it back");
    }

    #[test]
    fn a_discovering_source_warms_up_and_never_moves_back() {
        let mut w = Watermarks::new(&spec(0, 1_000)).discovering();
        assert_eq!(w.stamp(7, "", 9_000, 0), Stamp { combined: NO_WATERMARK, judged: NO_WATERMARK });
        assert_eq!(w.stamp(8, "", 2_000, 10).judged, NO_WATERMARK, "a topic heard second is not late");
        assert_eq!(w.stamp(7, "", 9_100, 1_000), Stamp { combined: 2_000, judged: 2_000 });
        w.stamp(7, "", 9_200, 2_500);
        assert_eq!(w.stamp(7, "", 9_300, 2_600).combined, 9_300, "topic 8 idle");
        assert_eq!(w.stamp(8, "", 2_500, 2_700), Stamp { combined: 2_500, judged: 9_300 }, "its windows closed");
    }

    #[test]
    fn the_index_agrees_with_a_scan() {
        // Random events on 3 partitions × 5 devices, with time passing unevenly: the combined
        // watermark found through the index equals a plain scan of every device.
        let mut w = Watermarks::new(&per_originator(100, 2_000));
        let mut seen: BTreeMap<(u32, String), (i64, i64)> = BTreeMap::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut now = 0;
        let mut warm_until = None;
        for step in 0..5_000 {
            now += next(300) as i64;
            let (p, d) = (next(3) as u32, format!("d{}", next(5)));
            let t = 1_000_000 + step * 10 - next(5_000) as i64;
            let stamp = w.stamp(p, &d, t, now);
            let warm_until = *warm_until.get_or_insert(now + 2_000);
            let entry = seen.entry((p, d.clone())).or_insert((i64::MIN, now));
            *entry = (entry.0.max(t), now);
            let active = seen.values().filter(|(_, last)| now - last < 2_000).map(|(max, _)| *max).min();
            let expected = match active {
                _ if now < warm_until => NO_WATERMARK,
                Some(min) => min - 100,
                None => seen.values().map(|(max, _)| *max).max().unwrap() - 100,
            };
            assert_eq!(stamp.combined, expected, "step {step}");
            if step == 2_500 {
                // A checkpoint and a restore in the middle: the index is rebuilt.
                let text = serde_json::to_string(&w).unwrap();
                let restored: Watermarks = serde_json::from_str(&text).unwrap();
                assert_eq!(restored, w);
                w = restored;
            }
        }
    }

    #[test]
    fn a_checkpoint_of_an_older_version_still_reads() {
        let old = r#"{"lateness": 5, "idle_timeout": 1000, "partitions": {"0": [2000, 10]}}"#;
        let mut w: Watermarks = serde_json::from_str(old).unwrap();
        assert_eq!(w.current(20), 1995);
        assert_eq!(w.observe(0, 3000, 30), 2995);
    }

    #[test]
    fn time_fields() {
        let msg: sluice_core::message::Message =
            sluice_sdk::TbMsg::telemetry("d", serde_json::json!({"t": "1500"})).with_ts(7).with_meta("m", "9").into();
        assert_eq!(TimeField::parse("ts").unwrap().event_time(&msg, 0), 7);
        assert_eq!(TimeField::parse("data.t").unwrap().event_time(&msg, 0), 1500);
        assert_eq!(TimeField::parse("metadata.m").unwrap().event_time(&msg, 0), 9);
        assert_eq!(TimeField::parse("arrival").unwrap().event_time(&msg, 42), 42);
        assert!(TimeField::parse("data.").is_err());
    }
}

//! Windows per key: tumbling, hopping and session, with a grace period, closed by the watermark.
//!
//! A window `[start, end)` closes when the watermark reaches `end + grace`: from then on nothing
//! more can land in it, so it is emitted exactly once (Kafka Streams' `suppress(untilWindowCloses)`).
//! An event whose every window is already closed — judged by the watermark the source stamped on
//! its message — is late: counted, and reported to the guest so the node can route it to `Late`.
//!
//! What a window accumulates depends on its [`Mode`]: host aggregates of a number (count, sum,
//! avg, min, max, first, last, stddev), every item (group-collect), items of two sides (a
//! windowed join), or guest-defined accumulators folded by the guest.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use smallvec::SmallVec;

/// The source partition a piece of keyed state belongs to (the engine's watermark partition
/// id): state moves with its partition when a consumer group rebalances.
pub type Owner = u32;

/// State no partition owns (written before owners were tracked): it never moves.
pub const UNOWNED: Owner = u32::MAX;

/// A window definition, as a guest declares it at init.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WindowSpec {
    /// Name, unique within the node: it keys the window's state across restarts and reloads.
    pub name: String,
    pub kind: WindowKind,
    /// How long after its end a window still takes events, in ms.
    #[serde(default)]
    pub grace_ms: u64,
    #[serde(default)]
    pub mode: Mode,
    /// Also hand the guest an update after every event (marked `early`), before the final result.
    #[serde(default)]
    pub early_updates: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum WindowKind {
    #[serde(rename_all = "camelCase")]
    Tumbling { size_ms: u64 },
    #[serde(rename_all = "camelCase")]
    Hopping { size_ms: u64, advance_ms: u64 },
    #[serde(rename_all = "camelCase")]
    Session { gap_ms: u64 },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Host aggregates of one number per event.
    #[default]
    Aggregate,
    /// Every item of the window, handed over on close.
    Collect,
    /// Items of a left and a right stream, for a windowed join.
    Join,
    /// A guest-defined accumulator, updated by the guest on every event.
    Fold,
}

impl WindowSpec {
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("window name is empty".into());
        }
        match self.kind {
            WindowKind::Tumbling { size_ms: 0 } | WindowKind::Session { gap_ms: 0 } => {
                Err(format!("window `{}`: size/gap must be at least 1 ms", self.name))
            }
            WindowKind::Hopping { size_ms, advance_ms } if size_ms == 0 || advance_ms == 0 || advance_ms > size_ms => {
                Err(format!("window `{}`: hopping needs 0 < advanceMs <= sizeMs", self.name))
            }
            _ => Ok(()),
        }
    }
}

/// Which side of a join an item belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

/// Running aggregates of a window. Mean and variance use Welford's method (stable, mergeable).
///
/// The sum (and so the average) is exact until it is read: it is kept as non-overlapping
/// partials ([`ExactSum`]) and rounded once. Two workers add to the same window (one zone's
/// stations are spread over both) in whatever order they happen to run, and a replay after a
/// crash runs them in another; a float sum would then differ in its last bits, and the replayed
/// result would differ from the one already written under the same id. The exact sum is the same
/// in any order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Acc {
    pub count: u64,
    /// The sum, rounded once from [`Acc::exact`].
    pub sum: f64,
    /// The sum, exactly (absent in checkpoints written before it: then `sum` is its one partial).
    #[serde(default, skip_serializing_if = "ExactSum::is_empty")]
    exact: ExactSum,
    mean: f64,
    m2: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// (event time, value) of the earliest and the latest event.
    pub first: Option<(i64, f64)>,
    pub last: Option<(i64, f64)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub right: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folds: Vec<Value>,
}

impl Acc {
    fn add(&mut self, ts: i64, value: f64) {
        if self.exact.is_empty() && self.count > 0 {
            self.exact = ExactSum::of(self.sum);
        }
        self.count += 1;
        self.exact.add(value);
        self.sum = self.exact.value();
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (value - self.mean);
        self.min = Some(self.min.map_or(value, |m| m.min(value)));
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
        if self.first.is_none_or(|(t, _)| ts < t) {
            self.first = Some((ts, value));
        }
        if self.last.is_none_or(|(t, _)| ts >= t) {
            self.last = Some((ts, value));
        }
    }

    fn merge(&mut self, other: Acc) {
        if other.count > 0 {
            let n = self.count + other.count;
            let delta = other.mean - self.mean;
            self.mean += delta * other.count as f64 / n as f64;
            self.m2 += other.m2 + delta * delta * self.count as f64 * other.count as f64 / n as f64;
            self.count = n;
            if self.exact.is_empty() {
                self.exact = ExactSum::of(self.sum);
            }
            match other.exact.is_empty() {
                true => self.exact.add(other.sum),
                false => self.exact.merge(&other.exact),
            }
            self.sum = self.exact.value();
            self.min = match (self.min, other.min) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.max = match (self.max, other.max) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            if let Some(f) = other.first
                && self.first.is_none_or(|(t, _)| f.0 < t)
            {
                self.first = Some(f);
            }
            if let Some(l) = other.last
                && self.last.is_none_or(|(t, _)| l.0 >= t)
            {
                self.last = Some(l);
            }
        } else {
            self.count += other.count;
        }
        self.items.extend(other.items);
        self.right.extend(other.right);
        self.folds.extend(other.folds);
    }

    /// Population standard deviation.
    pub fn stddev(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.m2 / self.count as f64).max(0.0).sqrt())
    }

    pub fn avg(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// A sum of floats, exact: Shewchuk's non-overlapping partials, rounded once when read (the
/// algorithm of Python's `math.fsum`). Its value does not depend on the order the terms came in.
/// A non-finite term (or an overflow) makes it an ordinary float sum from then on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExactSum(Vec<f64>);

impl ExactSum {
    /// A sum of one term.
    pub fn of(value: f64) -> Self {
        ExactSum(vec![value])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `x`: the partials stay non-overlapping and sum to the exact total.
    pub fn add(&mut self, mut x: f64) {
        if !x.is_finite() || self.0.iter().any(|p| !p.is_finite()) {
            let total = self.value() + x;
            self.0 = vec![total];
            return;
        }
        let mut kept = 0;
        for j in 0..self.0.len() {
            let mut y = self.0[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.0[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        self.0.truncate(kept);
        self.0.push(x);
        if !x.is_finite() {
            // Overflow: the partials no longer hold an exact total.
            self.0 = vec![x];
        }
    }

    /// Adds every term of `other`.
    pub fn merge(&mut self, other: &ExactSum) {
        for &p in &other.0 {
            self.add(p);
        }
    }

    /// The total, correctly rounded (half-even), as `math.fsum` rounds it.
    pub fn value(&self) -> f64 {
        let p = &self.0;
        let Some(mut n) = p.len().checked_sub(1) else { return 0.0 };
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            lo = y - (hi - x);
            if lo != 0.0 {
                break;
            }
        }
        // Round half-even across the partials below: when the rest has the sign of `lo`, the
        // true total is past the halfway point `hi + lo` seemed to sit on.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi
    }
}

/// One open window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Open {
    end: i64,
    acc: Acc,
}

/// A window handed to the guest: closed (final) or an early update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Closed {
    pub window: String,
    pub key: String,
    pub start: i64,
    pub end: i64,
    pub early: bool,
    pub acc: Acc,
    /// The partition the window's key belongs to: what it emits is stamped with it, so that a
    /// downstream node's state moves with the same partition.
    #[serde(skip, default = "unowned")]
    pub owner: Owner,
}

fn unowned() -> Owner {
    UNOWNED
}

/// What adding an event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Added {
    /// Landed in these windows (start, end).
    Windows(Vec<(i64, i64)>),
    /// Every window of the event had closed: late.
    Late,
}

/// A map by key, hashed: every event looks its key up, and a key costs one hash there
/// instead of a dozen string comparisons down a tree (10,000 keys). Seeded per process
/// (foldhash's `RandomState`), so crafted keys cannot all land in one bucket. Written out in key
/// order ([`sorted`]), so that the same windows always give the same snapshot.
type Keyed<V> = HashMap<String, V, foldhash::fast::RandomState>;

fn sorted<S: serde::Serializer, V: Serialize>(map: &Keyed<V>, s: S) -> Result<S::Ok, S::Error> {
    map.iter().collect::<BTreeMap<_, _>>().serialize(s)
}

/// The windows of one definition, for every key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowStore {
    pub spec: WindowSpec,
    /// key → start → open window. Looked up by `&str`, so adding to an existing window
    /// allocates nothing.
    #[serde(serialize_with = "sorted")]
    open: Keyed<BTreeMap<i64, Open>>,
    /// (close time, key, start), to find due windows in order.
    #[serde(skip)]
    closing: BTreeSet<(i64, String, i64)>,
    /// Late events so far.
    pub late: u64,
    /// key → the partition its windows belong to (keys with open windows only).
    #[serde(default, skip_serializing_if = "HashMap::is_empty", serialize_with = "sorted")]
    owners: Keyed<Owner>,
}

impl WindowStore {
    pub fn new(spec: WindowSpec) -> Self {
        WindowStore { spec, open: Keyed::default(), closing: BTreeSet::new(), late: 0, owners: Keyed::default() }
    }

    /// Rebuilds the close-time index (after deserializing).
    pub fn reindex(&mut self) {
        let grace = self.spec.grace_ms as i64;
        self.closing = self
            .open
            .iter()
            .flat_map(|(k, per_key)| per_key.iter().map(move |(s, w)| (w.end.saturating_add(grace), k.clone(), *s)))
            .collect();
    }

    fn close_at(&self, end: i64) -> i64 {
        end.saturating_add(self.spec.grace_ms as i64)
    }

    /// Windows `[start, end)` that contain `ts` (not for sessions).
    fn fixed_windows(&self, ts: i64) -> SmallVec<[(i64, i64); 4]> {
        match self.spec.kind {
            WindowKind::Tumbling { size_ms } => {
                let size = size_ms as i64;
                let start = ts.div_euclid(size) * size;
                smallvec::smallvec![(start, start + size)]
            }
            WindowKind::Hopping { size_ms, advance_ms } => {
                let (size, advance) = (size_ms as i64, advance_ms as i64);
                let last_start = ts.div_euclid(advance) * advance;
                let mut out = SmallVec::new();
                let mut start = last_start;
                while start > ts - size {
                    out.push((start, start + size));
                    start -= advance;
                }
                out.reverse();
                out
            }
            WindowKind::Session { .. } => SmallVec::new(),
        }
    }

    /// Adds an event at `ts`, judged against `watermark`; `update` changes each window's acc.
    pub fn add(&mut self, key: &str, ts: i64, watermark: i64, mut update: impl FnMut(&mut Acc)) -> Added {
        if let WindowKind::Session { gap_ms } = self.spec.kind {
            return self.add_session(key, ts, gap_ms as i64, watermark, update);
        }
        let mut landed = Vec::new();
        for (start, end) in self.fixed_windows(ts) {
            let close_at = self.close_at(end);
            if close_at <= watermark {
                continue;
            }
            let per_key = match self.open.get_mut(key) {
                Some(per_key) => per_key,
                None => self.open.entry(key.to_string()).or_default(),
            };
            match per_key.entry(start) {
                std::collections::btree_map::Entry::Occupied(mut w) => update(&mut w.get_mut().acc),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    update(&mut slot.insert(Open { end, acc: Acc::default() }).acc);
                    self.closing.insert((close_at, key.to_string(), start));
                }
            }
            landed.push((start, end));
        }
        if landed.is_empty() {
            self.late += 1;
            return Added::Late;
        }
        Added::Windows(landed)
    }

    fn add_session(&mut self, key: &str, ts: i64, gap: i64, watermark: i64, mut update: impl FnMut(&mut Acc)) -> Added {
        if self.close_at(ts + gap) <= watermark {
            self.late += 1;
            return Added::Late;
        }
        // Sessions of this key that the event touches: start <= ts + gap and end >= ts.
        let grace = self.spec.grace_ms as i64;
        let per_key = self.open.entry(key.to_string()).or_default();
        let touching: Vec<i64> = per_key.range(..=ts + gap).filter(|(_, w)| w.end >= ts).map(|(s, _)| *s).collect();
        let (mut start, mut end, mut acc) = (ts, ts + gap, Acc::default());
        for s in touching {
            if let Some(w) = per_key.remove(&s) {
                self.closing.remove(&(w.end.saturating_add(grace), key.to_string(), s));
                start = start.min(s);
                end = end.max(w.end);
                acc.merge(w.acc);
            }
        }
        update(&mut acc);
        per_key.insert(start, Open { end, acc });
        self.closing.insert((end.saturating_add(grace), key.to_string(), start));
        Added::Windows(vec![(start, end)])
    }

    /// A number, for host aggregates.
    pub fn add_value(&mut self, key: &str, ts: i64, watermark: i64, value: f64) -> Added {
        self.add(key, ts, watermark, |acc| acc.add(ts, value))
    }

    /// An item, for group-collect (`Side::Left`) and joins.
    pub fn add_item(&mut self, key: &str, ts: i64, watermark: i64, side: Side, item: &Value) -> Added {
        self.add(key, ts, watermark, |acc| {
            acc.count += 1;
            match side {
                Side::Left => acc.items.push(item.clone()),
                Side::Right => acc.right.push(item.clone()),
            }
        })
    }

    /// The guest's accumulators of the windows of (`key`, `ts`), for a fold (empty if late).
    pub fn folds(&self, key: &str, ts: i64, watermark: i64) -> Option<Vec<Option<Value>>> {
        match self.spec.kind {
            WindowKind::Session { gap_ms } => {
                if self.close_at(ts + gap_ms as i64) <= watermark {
                    return None;
                }
                // A session fold starts fresh; sessions that merge hand every part to the guest.
                Some(vec![None])
            }
            _ => {
                let open: Vec<_> = self
                    .fixed_windows(ts)
                    .into_iter()
                    .filter(|(_, end)| self.close_at(*end) > watermark)
                    .map(|(start, _)| {
                        self.open.get(key).and_then(|m| m.get(&start)).and_then(|w| w.acc.folds.first().cloned())
                    })
                    .collect();
                (!open.is_empty()).then_some(open)
            }
        }
    }

    /// Stores the guest's new accumulators (in the order [`WindowStore::folds`] gave them).
    pub fn put_folds(&mut self, key: &str, ts: i64, watermark: i64, values: Vec<Value>) -> Added {
        let mut values = values.into_iter();
        let session = matches!(self.spec.kind, WindowKind::Session { .. });
        self.add(key, ts, watermark, |acc| {
            acc.count += 1;
            if let Some(v) = values.next() {
                if session {
                    acc.folds.push(v);
                } else {
                    acc.folds = vec![v];
                }
            }
        })
    }

    /// The current state of (`key`, `start`), as an early update.
    pub fn peek(&self, key: &str, start: i64) -> Option<Closed> {
        let w = self.open.get(key)?.get(&start)?;
        Some(Closed {
            window: self.spec.name.clone(),
            key: key.to_string(),
            start,
            end: w.end,
            early: true,
            acc: w.acc.clone(),
            owner: self.owner(key),
        })
    }

    /// Removes and returns every window whose close time the watermark has reached, in close
    /// order (then key, then start).
    pub fn due(&mut self, watermark: i64) -> Vec<Closed> {
        let mut out = Vec::new();
        while let Some(first) = self.closing.first() {
            if first.0 > watermark {
                break;
            }
            let (_, key, start) = self.closing.pop_first().expect("checked above");
            let owner = self.owner(&key);
            let Some(per_key) = self.open.get_mut(&key) else { continue };
            let removed = per_key.remove(&start);
            if per_key.is_empty() {
                self.open.remove(&key);
                self.owners.remove(&key);
            }
            if let Some(w) = removed {
                out.push(Closed {
                    window: self.spec.name.clone(),
                    key,
                    start,
                    end: w.end,
                    early: false,
                    acc: w.acc,
                    owner,
                });
            }
        }
        out
    }

    /// Open windows (for tests and metrics).
    pub fn open_count(&self) -> usize {
        self.open.values().map(BTreeMap::len).sum()
    }

    /// Marks `key`'s windows as belonging to partition `owner` (the partition of the event that
    /// just landed in them). Allocates only for a key not seen before.
    pub fn own(&mut self, key: &str, owner: Owner) {
        // A key with an owner has open windows (they leave together): one lookup, usually.
        match self.owners.get_mut(key) {
            Some(o) => *o = owner,
            None if self.open.contains_key(key) => {
                self.owners.insert(key.to_string(), owner);
            }
            None => {}
        }
    }

    /// Marks every key as `owner`'s (a partition's share, arriving whole).
    pub fn own_all(&mut self, owner: Owner) {
        self.owners = self.open.keys().map(|k| (k.clone(), owner)).collect();
    }

    /// Keys with open windows.
    pub fn key_count(&self) -> usize {
        self.open.len()
    }

    /// The partition `key`'s windows belong to.
    pub fn owner(&self, key: &str) -> Owner {
        self.owners.get(key).copied().unwrap_or(UNOWNED)
    }

    /// Copies of this store holding only the keys each of `owners` owns (same definition, no
    /// late count): one partition's share, to hand over.
    pub fn split(&self, owners: &BTreeSet<Owner>) -> BTreeMap<Owner, WindowStore> {
        let mut out: BTreeMap<Owner, WindowStore> = BTreeMap::new();
        for (key, per_key) in &self.open {
            let owner = self.owner(key);
            if !owners.contains(&owner) {
                continue;
            }
            let part = out.entry(owner).or_insert_with(|| WindowStore::new(self.spec.clone()));
            part.open.insert(key.clone(), per_key.clone());
            part.owners.insert(key.clone(), owner);
        }
        out
    }

    /// Takes in another store's windows (a partition's share, restored): its keys replace
    /// this store's windows of the same keys.
    pub fn absorb(&mut self, other: WindowStore) {
        for key in other.open.keys() {
            self.remove_key(key);
        }
        let grace = self.spec.grace_ms as i64;
        for (key, per_key) in other.open {
            for (start, w) in &per_key {
                self.closing.insert((w.end.saturating_add(grace), key.clone(), *start));
            }
            if let Some(owner) = other.owners.get(&key) {
                self.owners.insert(key.clone(), *owner);
            }
            self.open.insert(key, per_key);
        }
    }

    /// Forgets every key `owner` owns (its partition now belongs to another instance);
    /// returns how many keys.
    pub fn drop_owner(&mut self, owner: Owner) -> usize {
        let keys: Vec<String> = self.owners.iter().filter(|(_, o)| **o == owner).map(|(k, _)| k.clone()).collect();
        for key in &keys {
            self.remove_key(key);
        }
        keys.len()
    }

    fn remove_key(&mut self, key: &str) {
        let grace = self.spec.grace_ms as i64;
        if let Some(per_key) = self.open.remove(key) {
            for (start, w) in per_key {
                self.closing.remove(&(w.end.saturating_add(grace), key.to_string(), start));
            }
        }
        self.owners.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_exact_sum_does_not_depend_on_the_order() {
        // 0.1 + 0.2 + 0.3 is 0.6000000000000001 left to right, 0.6 right to left; exactly it is
        // 0.6 (the nearest double to the true sum of the three doubles).
        let values = [0.1, 0.2, 0.3, 1e16, -1e16, 7.25, 1e-9];
        let forward = values.iter().fold(ExactSum::default(), |mut s, v| {
            s.add(*v);
            s
        });
        let backward = values.iter().rev().fold(ExactSum::default(), |mut s, v| {
            s.add(*v);
            s
        });
        assert_eq!(forward.value().to_bits(), backward.value().to_bits());
        // The reference: Python's math.fsum([0.1, 0.2, 0.3, 1e16, -1e16, 7.25, 1e-9]).
        assert_eq!(forward.value(), 7.850000001);
        let mut three = ExactSum::default();
        [0.1, 0.2, 0.3].iter().for_each(|v| three.add(*v));
        assert_eq!(three.value(), 0.6);
        // Merged halves give the same total as one pass.
        let (mut a, mut b) = (ExactSum::default(), ExactSum::default());
        values[..3].iter().for_each(|v| a.add(*v));
        values[3..].iter().for_each(|v| b.add(*v));
        a.merge(&b);
        assert_eq!(a.value().to_bits(), forward.value().to_bits());
    }

    #[test]
    fn an_average_is_the_same_whatever_the_order_and_a_checkpoint_without_partials_still_reads() {
        let values = [14.1, 8.3, 39.7, 0.1, 0.2, 0.3, 12.9, 3.3];
        let avg = |order: &[f64]| {
            let mut acc = Acc::default();
            order.iter().enumerate().for_each(|(i, v)| acc.add(i as i64, *v));
            acc.avg().unwrap().to_bits()
        };
        let mut reversed = values;
        reversed.reverse();
        assert_eq!(avg(&values), avg(&reversed));
        let old: Acc = serde_json::from_value(serde_json::json!({
            "count": 2, "sum": 3.5, "mean": 1.75, "m2": 0.125, "min": 1.5, "max": 2.0,
            "first": [0, 1.5], "last": [1, 2.0]}))
        .unwrap();
        let mut acc = old;
        acc.add(2, 1.0);
        assert_eq!((acc.count, acc.sum), (3, 4.5));
    }

    fn spec(kind: WindowKind, grace: u64) -> WindowSpec {
        WindowSpec { name: "w".into(), kind, grace_ms: grace, mode: Mode::Aggregate, early_updates: false }
    }

    #[test]
    fn tumbling_windows_close_after_grace() {
        let mut s = WindowStore::new(spec(WindowKind::Tumbling { size_ms: 10 }, 2));
        assert_eq!(s.add_value("a", 3, 3, 1.0), Added::Windows(vec![(0, 10)]));
        s.add_value("a", 9, 9, 3.0);
        s.add_value("b", 5, 9, 10.0);
        s.add_value("a", 11, 11, 100.0);
        assert!(s.due(11).is_empty(), "grace: [0,10) closes at 12");
        s.add_value("a", 8, 11, 2.0); // out of order, within grace
        let closed = s.due(12);
        assert_eq!(closed.len(), 2);
        let a = &closed[0];
        assert_eq!((a.key.as_str(), a.start, a.end, a.acc.count), ("a", 0, 10, 3));
        assert_eq!(a.acc.sum, 6.0);
        assert_eq!(a.acc.avg(), Some(2.0));
        assert_eq!((a.acc.min, a.acc.max), (Some(1.0), Some(3.0)));
        assert_eq!((a.acc.first, a.acc.last), (Some((3, 1.0)), Some((9, 3.0))));
        assert!((a.acc.stddev().unwrap() - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(closed[1].key, "b");
        assert_eq!(s.add_value("a", 7, 12, 5.0), Added::Late);
        assert_eq!(s.late, 1);
        assert_eq!(s.due(i64::MAX).len(), 1, "[10,20) of a");
    }

    #[test]
    fn hopping_windows_overlap() {
        let mut s = WindowStore::new(spec(WindowKind::Hopping { size_ms: 10, advance_ms: 5 }, 0));
        assert_eq!(s.add_value("k", 7, 0, 1.0), Added::Windows(vec![(0, 10), (5, 15)]));
        assert_eq!(s.add_value("k", 12, 0, 1.0), Added::Windows(vec![(5, 15), (10, 20)]));
        // Watermark 10: [0,10) closed, so the event at 7 lands only in [5,15).
        assert_eq!(s.add_value("k", 7, 10, 1.0), Added::Windows(vec![(5, 15)]));
        let closed: Vec<_> = s.due(i64::MAX).into_iter().map(|c| (c.start, c.acc.count)).collect();
        assert_eq!(closed, [(0, 1), (5, 3), (10, 1)]);
    }

    #[test]
    fn session_windows_merge() {
        let mut s = WindowStore::new(spec(WindowKind::Session { gap_ms: 5 }, 0));
        s.add_value("k", 0, 0, 1.0);
        s.add_value("k", 20, 0, 2.0);
        assert_eq!(s.open_count(), 2);
        // 4 joins [0,5); 9 bridges [0,9) and [9,14)… then 14 reaches [20,25)'s start? no: 14+5=19 < 20.
        s.add_value("k", 4, 0, 3.0);
        s.add_value("k", 9, 0, 4.0);
        assert_eq!(s.open_count(), 2);
        s.add_value("k", 16, 0, 5.0); // [16,21) touches [20,25): merges
        let closed: Vec<_> = s.due(i64::MAX).into_iter().map(|c| (c.start, c.end, c.acc.count, c.acc.sum)).collect();
        assert_eq!(closed, [(0, 14, 3, 8.0), (16, 25, 2, 7.0)]);
    }

    #[test]
    fn session_late_and_merge_of_welford() {
        let mut s = WindowStore::new(spec(WindowKind::Session { gap_ms: 10 }, 0));
        // [0,10) and [16,26); the event at 8 ([8,18)) touches both and merges them.
        for (ts, v) in [(0, 2.0), (16, 4.0), (8, 6.0)] {
            s.add_value("k", ts, 0, v);
        }
        let c = s.due(i64::MAX).remove(0);
        assert_eq!((c.start, c.end, c.acc.count), (0, 26, 3));
        let mean = 4.0;
        let var: f64 = [2.0f64, 4.0, 6.0].iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 3.0;
        assert!((c.acc.stddev().unwrap() - var.sqrt()).abs() < 1e-12);
        assert_eq!(s.add_value("k", 1, 100, 1.0), Added::Late);
    }

    #[test]
    fn collect_and_join_sides() {
        let mut s = WindowStore::new(WindowSpec { mode: Mode::Join, ..spec(WindowKind::Tumbling { size_ms: 10 }, 0) });
        s.add_item("k", 1, 0, Side::Left, &json!({"a": 1}));
        s.add_item("k", 2, 0, Side::Right, &json!({"b": 2}));
        let c = s.due(i64::MAX).remove(0);
        assert_eq!((c.acc.items, c.acc.right), (vec![json!({"a": 1})], vec![json!({"b": 2})]));
    }

    #[test]
    fn folds_keep_the_guest_accumulator() {
        let mut s = WindowStore::new(WindowSpec { mode: Mode::Fold, ..spec(WindowKind::Tumbling { size_ms: 10 }, 0) });
        assert_eq!(s.folds("k", 1, 0), Some(vec![None]));
        s.put_folds("k", 1, 0, vec![json!(1)]);
        assert_eq!(s.folds("k", 2, 0), Some(vec![Some(json!(1))]));
        s.put_folds("k", 2, 0, vec![json!(3)]);
        assert_eq!(s.folds("k", 3, 10), None, "closed");
        assert_eq!(s.due(10).remove(0).acc.folds, vec![json!(3)]);
    }

    #[test]
    fn survives_serialization() {
        let mut s = WindowStore::new(spec(WindowKind::Tumbling { size_ms: 10 }, 0));
        s.add_value("a", 1, 0, 1.0);
        let mut back: WindowStore = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        back.reindex();
        assert_eq!(back.due(10), s.due(10));
    }

    /// A partition's share of the windows moves whole: split on one side, absorbed on the
    /// other, dropped from the first, and every window closes exactly once overall.
    #[test]
    fn a_partitions_windows_move_between_stores() {
        let mut a = WindowStore::new(spec(WindowKind::Tumbling { size_ms: 10 }, 0));
        a.add_value("dev-1", 1, 0, 1.0);
        a.own("dev-1", 1);
        a.add_value("dev-2", 2, 0, 2.0);
        a.own("dev-2", 2);
        a.add_value("dev-2", 12, 0, 5.0);
        a.own("dev-2", 2);
        let mut parts = a.split(&BTreeSet::from([2, 3]));
        assert_eq!(parts.keys().copied().collect::<Vec<_>>(), vec![2], "partition 3 owns nothing");
        let moved: WindowStore =
            serde_json::from_str(&serde_json::to_string(&parts.remove(&2).unwrap()).unwrap()).unwrap();
        assert_eq!(a.drop_owner(2), 1);
        let mut b = WindowStore::new(spec(WindowKind::Tumbling { size_ms: 10 }, 0));
        b.absorb(moved);
        assert_eq!(b.owner("dev-2"), 2);
        let closed_a = a.due(100);
        let closed_b = b.due(100);
        assert_eq!(closed_a.iter().map(|c| (c.key.as_str(), c.start)).collect::<Vec<_>>(), vec![("dev-1", 0)]);
        assert_eq!(
            closed_b.iter().map(|c| (c.key.as_str(), c.start, c.acc.sum, c.owner)).collect::<Vec<_>>(),
            vec![("dev-2", 0, 2.0, 2), ("dev-2", 10, 5.0, 2)]
        );
    }

    #[test]
    fn the_same_windows_give_the_same_snapshot_whatever_the_order_of_their_keys() {
        let keys: Vec<String> = (0..200).map(|i| format!("zone-{i}")).collect();
        let snapshot = |keys: &mut dyn Iterator<Item = &String>| {
            let mut store = WindowStore::new(spec(WindowKind::Tumbling { size_ms: 10 }, 0));
            for key in keys {
                store.add_value(key, 1, 0, 1.0);
                store.own(key, 3);
            }
            serde_json::to_string(&store).unwrap()
        };
        let a = snapshot(&mut keys.iter());
        assert_eq!(a, snapshot(&mut keys.iter().rev()));
        // Written in key order, and read back as it was.
        assert!(a.find("\"zone-10\"").unwrap() < a.find("\"zone-2\"").unwrap());
        let mut back: WindowStore = serde_json::from_str(&a).unwrap();
        back.reindex();
        assert_eq!(back.key_count(), 200);
        assert_eq!(back.owner("zone-7"), 3);
        assert_eq!(back.due(i64::MAX).len(), 200);
    }

    #[test]
    fn specs_are_validated() {
        assert!(spec(WindowKind::Tumbling { size_ms: 0 }, 0).validate().is_err());
        assert!(spec(WindowKind::Hopping { size_ms: 5, advance_ms: 10 }, 0).validate().is_err());
        let parsed: WindowSpec = serde_json::from_value(
            json!({"name": "x", "kind": {"type": "tumbling", "sizeMs": 10000}, "graceMs": 2000}),
        )
        .unwrap();
        assert_eq!(parsed.kind, WindowKind::Tumbling { size_ms: 10000 });
    }
}

/// A processing-time timer that came due, handed to [`crate::Node::on_timer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    /// `node/timer/key/at`: deterministic; the parent of the ids of messages emitted for it.
    pub id: String,
    pub key: String,
    /// When it was set to fire (ms since the epoch, processing time).
    pub at: i64,
    /// When it fired.
    pub now: i64,
}

/// A window handed to [`crate::Node::on_window`]: final, or an early update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClosedWindow {
    /// `node/window/key/start`: deterministic, and the parent of the ids of messages the node
    /// emits for this window.
    pub id: String,
    pub window: String,
    pub key: String,
    pub start: i64,
    pub end: i64,
    pub early: bool,
    pub acc: Acc,
}

impl ClosedWindow {
    pub fn new(node: &str, closed: Closed) -> Self {
        ClosedWindow {
            id: format!("{node}/{}/{}/{}", closed.window, closed.key, closed.start),
            window: closed.window,
            key: closed.key,
            start: closed.start,
            end: closed.end,
            early: closed.early,
            acc: closed.acc,
        }
    }

    pub fn count(&self) -> u64 {
        self.acc.count
    }
    pub fn sum(&self) -> f64 {
        self.acc.sum
    }
    pub fn avg(&self) -> Option<f64> {
        self.acc.avg()
    }
    pub fn min(&self) -> Option<f64> {
        self.acc.min
    }
    pub fn max(&self) -> Option<f64> {
        self.acc.max
    }
    pub fn first(&self) -> Option<f64> {
        self.acc.first.map(|(_, v)| v)
    }
    pub fn last(&self) -> Option<f64> {
        self.acc.last.map(|(_, v)| v)
    }
    pub fn stddev(&self) -> Option<f64> {
        self.acc.stddev()
    }
    /// Group-collect items (or a join's left side).
    pub fn items(&self) -> &[Value] {
        &self.acc.items
    }
    /// A join's right side.
    pub fn right(&self) -> &[Value] {
        &self.acc.right
    }
    /// The guest's accumulators: one, or one per merged session.
    pub fn folds(&self) -> &[Value] {
        &self.acc.folds
    }
}

//! Telemetry history: what a chain's save-timeseries nodes wrote, per (series name, entity,
//! telemetry key) an ordered map ts → value, for nodes that read an interval of it back
//! (`get-telemetry`, ThingsBoard's "originator telemetry" node).
//!
//! ThingsBoard keeps time series in a database; Sluice keeps them in memory, with the rest of the
//! state, because a rule chain only ever reads back recent points of the entities it handles.
//! **That is why it is bounded**: an unbounded history would grow with every message for as long
//! as the process runs, and every checkpoint would write all of it. Each key keeps at most
//! [`Limits::max_points`] points (default 1000, the most ThingsBoard's node fetches in one query)
//! and, with [`Limits::max_age_ms`], none older than its newest point minus that age. **At the
//! bound the oldest points are evicted**, one for each new one, so a query over an interval
//! older than what is kept finds less than ThingsBoard would; the bound is event time, so a
//! replay evicts exactly as the first run did. Memory is at most `max_points` points per
//! (entity, key) the chain saves; the limits are set in `sluice.toml`'s `[state]`.
//!
//! Like a table row, an entity's history belongs to the source partition of the message that
//! last wrote it ([`super::partition`]), is checkpointed with the rest of the state
//! ([`super::checkpoint`]) and moves with its partition. The query semantics — ThingsBoard's
//! typing, order, limit, aggregates — are defined in `sluice_sdk::series`, so the native test
//! harness answers as the engine does.
//!
//! A chain that saves no series pays nothing: nothing is allocated until the first append.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

pub use sluice_sdk::series::{Answer, History, KeyPoint, Limits, Query};

use super::window::Owner;

/// One entity's keys in one series.
pub type Keys = BTreeMap<String, History>;

/// Every history: series name → entity → (its keys, the partition that last wrote it).
pub type SeriesRows = HashMap<String, BTreeMap<String, (Keys, Owner)>>;

/// A chain's telemetry histories, shared by its nodes by series name.
#[derive(Debug, Clone, Default)]
pub struct Series {
    inner: Arc<Mutex<SeriesRows>>,
    limits: Limits,
}

impl Series {
    pub fn new(limits: Limits) -> Self {
        Series { inner: Arc::default(), limits }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, SeriesRows> {
        // Every operation below leaves the maps consistent between statements: a poisoned lock
        // still holds a usable store.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Saves `points` of `entity` in series `name`, owned by `owner`; returns how many points
    /// the bound evicted.
    pub fn append(&self, name: &str, entity: &str, points: Vec<KeyPoint>, owner: Owner) -> usize {
        let mut all = self.lock();
        let series = match all.get_mut(name) {
            Some(s) => s,
            None => all.entry(name.to_string()).or_default(),
        };
        let (keys, o) = match series.get_mut(entity) {
            Some(e) => e,
            None => series.entry(entity.to_string()).or_insert_with(|| (Keys::new(), owner)),
        };
        *o = owner;
        let mut evicted = 0;
        for p in points {
            let history = match keys.get_mut(&p.key) {
                Some(h) => h,
                None => keys.entry(p.key).or_default(),
            };
            evicted += history.insert(p.ts, p.value, &self.limits);
        }
        evicted
    }

    /// `entity`'s keys of series `name` as `query` asks; a key with nothing in the interval is
    /// absent.
    pub fn query(&self, name: &str, entity: &str, query: &Query) -> Answer {
        let all = self.lock();
        let Some((keys, _)) = all.get(name).and_then(|s| s.get(entity)) else { return Answer::new() };
        query
            .keys
            .iter()
            .filter_map(|key| {
                let points = keys.get(key)?.query(query);
                (!points.is_empty()).then(|| (key.clone(), points))
            })
            .collect()
    }

    /// How many points are kept, over every series (for stats and tests).
    pub fn points(&self) -> usize {
        self.lock().values().flat_map(|s| s.values()).flat_map(|(keys, _)| keys.values()).map(History::len).sum()
    }

    /// Every history, for a checkpoint.
    pub fn snapshot(&self) -> SeriesRows {
        self.lock().clone()
    }

    /// Adds histories, replacing those of the same (series, entity) (a checkpoint or a
    /// partition's share). Restored points keep the bound: a checkpoint written under a larger
    /// one is cut to this one.
    pub fn restore(&self, rows: SeriesRows) {
        let mut all = self.lock();
        for (name, entities) in rows {
            let series = all.entry(name).or_default();
            for (entity, (keys, owner)) in entities {
                let keys = keys.into_iter().map(|(k, h)| (k, self.bounded(h))).collect();
                series.insert(entity, (keys, owner));
            }
        }
    }

    fn bounded(&self, history: History) -> History {
        if history.len() <= self.limits.max_points && self.limits.max_age_ms.is_none() {
            return history;
        }
        let all = Query {
            keys: Vec::new(),
            start_ts: i64::MIN,
            end_ts: i64::MAX,
            limit: usize::MAX,
            order: sluice_sdk::series::Order::Asc,
            aggregation: sluice_sdk::series::Aggregation::None,
        };
        let mut cut = History::default();
        for p in history.query(&all) {
            cut.insert(p.ts, p.value, &self.limits);
        }
        cut
    }

    /// Forgets the histories `owner` owns; returns how many entities' histories.
    pub fn drop_owner(&self, owner: Owner) -> usize {
        let mut all = self.lock();
        let mut dropped = 0;
        for entities in all.values_mut() {
            let before = entities.len();
            entities.retain(|_, (_, o)| *o != owner);
            dropped += before - entities.len();
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::series::{Aggregation, KvValue, Order, Point};

    fn point(key: &str, ts: i64, v: i64) -> KeyPoint {
        KeyPoint { key: key.into(), ts, value: KvValue::Long(v) }
    }

    fn query(keys: &[&str], start: i64, end: i64, limit: usize, order: Order, aggregation: Aggregation) -> Query {
        Query {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            start_ts: start,
            end_ts: end,
            limit,
            order,
            aggregation,
        }
    }

    #[test]
    fn histories_are_kept_per_series_entity_and_key_in_time_order() {
        let s = Series::new(Limits::default());
        // Out of order, two keys, two entities, two series.
        s.append("timeseries", "DEVICE/a", vec![point("t", 30, 3), point("h", 30, 9), point("t", 10, 1)], 1);
        s.append("timeseries", "DEVICE/a", vec![point("t", 20, 2)], 1);
        s.append("timeseries", "DEVICE/b", vec![point("t", 15, 100)], 2);
        s.append("other", "DEVICE/a", vec![point("t", 15, 200)], 1);
        let answer =
            s.query("timeseries", "DEVICE/a", &query(&["t", "h", "none"], 0, 100, 10, Order::Asc, Aggregation::None));
        let ts: Vec<i64> = answer["t"].iter().map(|p| p.ts).collect();
        assert_eq!(ts, [10, 20, 30]);
        assert_eq!(answer["h"], [Point { ts: 30, value: KvValue::Long(9) }]);
        assert!(!answer.contains_key("none"), "a key without points is absent");
        let last = s.query("timeseries", "DEVICE/a", &query(&["t"], 0, 30, 1, Order::Desc, Aggregation::None));
        assert_eq!(last["t"], [Point { ts: 20, value: KvValue::Long(2) }], "end is exclusive");
        let sum = s.query("timeseries", "DEVICE/a", &query(&["t"], 0, 100, 1, Order::Asc, Aggregation::Sum));
        assert_eq!(sum["t"], [Point { ts: 50, value: KvValue::Long(6) }]);
        assert!(s.query("timeseries", "DEVICE/c", &query(&["t"], 0, 100, 1, Order::Asc, Aggregation::None)).is_empty());
        assert_eq!(s.points(), 6);
    }

    #[test]
    fn the_bound_evicts_the_oldest_points_of_each_key() {
        let s = Series::new(Limits { max_points: 3, max_age_ms: None });
        let evicted: usize = (1..=5).map(|i| s.append("ts", "D", vec![point("t", i * 10, i)], 0)).sum();
        assert_eq!(evicted, 2);
        let all = s.query("ts", "D", &query(&["t"], 0, 100, 100, Order::Asc, Aggregation::None));
        assert_eq!(all["t"].iter().map(|p| p.ts).collect::<Vec<_>>(), [30, 40, 50]);
        let aged = Series::new(Limits { max_points: 100, max_age_ms: Some(25) });
        for i in 1..=5 {
            aged.append("ts", "D", vec![point("t", i * 10, i)], 0);
        }
        assert_eq!(aged.points(), 3, "30, 40, 50: 20 is older than 50 - 25");
    }

    #[test]
    fn a_restore_keeps_the_bound_and_owners_drop() {
        let big = Series::new(Limits::default());
        for i in 0..10 {
            big.append("ts", "D", vec![point("t", i, i)], 4);
        }
        big.append("ts", "E", vec![point("t", 1, 1)], 5);
        let small = Series::new(Limits { max_points: 2, max_age_ms: None });
        small.restore(big.snapshot());
        assert_eq!(small.points(), 3);
        assert_eq!(small.drop_owner(4), 1);
        assert_eq!(small.points(), 1);
    }
}

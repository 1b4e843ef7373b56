//! Event time and watermarks.
//!
//! A message's event time is its `ts` (or another field, or its arrival time: see
//! [`EventTimeSpec`]). A source partition's watermark is the greatest event time it has seen minus
//! the allowed lateness: "no event older than this is still expected". A source with several
//! partitions (Kafka) reports the minimum over its partitions, leaving out partitions idle for
//! longer than the idle timeout so that one quiet partition cannot hold every window open forever.
//!
//! The source stamps each message with the watermark as of that message. Lateness is judged
//! against that stamp — not against whatever the operator has seen when the message happens to
//! run — so it does not depend on how workers interleave.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Watermark before any event: nothing is late yet.
pub const NO_WATERMARK: i64 = i64::MIN;
/// Watermark at the end of a finite input: every window may close.
pub const END_OF_INPUT: i64 = i64::MAX;

/// Where a message's event time comes from, and how late events may be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventTimeSpec {
    /// `ts` (the message's ts, the default), `metadata.<key>`, `data.<key>` or `arrival`.
    #[serde(default = "default_field")]
    pub from: String,
    /// How far behind the greatest event time seen the watermark trails, in ms.
    #[serde(default)]
    pub lateness_ms: u64,
    /// A partition silent for this long (processing time, ms) stops holding the watermark back.
    #[serde(default = "default_idle")]
    pub idle_timeout_ms: u64,
}

fn default_field() -> String {
    "ts".into()
}

fn default_idle() -> u64 {
    30_000
}

impl Default for EventTimeSpec {
    fn default() -> Self {
        EventTimeSpec { from: default_field(), lateness_ms: 0, idle_timeout_ms: default_idle() }
    }
}

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
    pub fn event_time(&self, msg: &sluice_sdk::Msg, now: i64) -> i64 {
        let from_value = |v: Option<&serde_json::Value>| v.and_then(sluice_sdk::as_number).map(|n| n as i64);
        match self {
            TimeField::Ts => msg.ts,
            TimeField::Arrival => now,
            TimeField::Metadata(k) => msg.meta(k).and_then(|s| s.trim().parse().ok()).unwrap_or(now),
            TimeField::Data(k) => from_value(msg.data.get(k)).unwrap_or(now),
        }
    }
}

/// Watermarks of one source's partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermarks {
    lateness: i64,
    idle_timeout: i64,
    /// Partition → (greatest event time seen, processing time of its last message).
    partitions: BTreeMap<u32, (i64, i64)>,
}

impl Watermarks {
    pub fn new(spec: &EventTimeSpec) -> Self {
        Watermarks {
            lateness: spec.lateness_ms as i64,
            idle_timeout: spec.idle_timeout_ms as i64,
            partitions: BTreeMap::new(),
        }
    }

    /// Records an event on `partition` at processing time `now`; returns the combined watermark.
    pub fn observe(&mut self, partition: u32, event_time: i64, now: i64) -> i64 {
        let entry = self.partitions.entry(partition).or_insert((i64::MIN, now));
        entry.0 = entry.0.max(event_time);
        entry.1 = now;
        self.current(now)
    }

    /// The combined watermark at processing time `now`: the minimum over partitions that are not
    /// idle (if all are idle, over all of them).
    pub fn current(&self, now: i64) -> i64 {
        let active = self.partitions.values().filter(|(_, last)| now.saturating_sub(*last) < self.idle_timeout);
        let min_active = active.map(|(max, _)| *max).min();
        let max_seen = min_active.or_else(|| self.partitions.values().map(|(max, _)| *max).min());
        match max_seen {
            None | Some(i64::MIN) => NO_WATERMARK,
            Some(max) => max.saturating_sub(self.lateness),
        }
    }

    /// Starts tracking `partition` before its first event (just assigned): until it has shown an
    /// event (or stays silent for the idle timeout) it holds the watermark back, so a partition
    /// that happens to be read first cannot make every other partition's events late.
    pub fn expect(&mut self, partition: u32, now: i64) {
        self.partitions.entry(partition).or_insert((i64::MIN, now));
    }

    /// Restarts every partition's idle clock at `now` (after a restore: a partition that was
    /// active before the restart holds the watermark back again until it speaks or idles,
    /// instead of counting as idle because the process was down).
    pub fn touch_all(&mut self, now: i64) {
        for (_, last) in self.partitions.values_mut() {
            *last = now;
        }
    }

    /// The greatest event time seen on `partition`, if it has shown one.
    pub fn max_seen(&self, partition: u32) -> Option<i64> {
        self.partitions.get(&partition).map(|(max, _)| *max).filter(|max| *max != i64::MIN)
    }

    /// Takes over `partition` where another instance left it (its greatest event time), as of
    /// processing time `now`.
    pub fn resume(&mut self, partition: u32, max_seen: Option<i64>, now: i64) {
        self.partitions.insert(partition, (max_seen.unwrap_or(i64::MIN), now));
    }

    /// Forgets a partition (revoked from this instance).
    pub fn remove(&mut self, partition: u32) {
        self.partitions.remove(&partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(lateness: u64, idle: u64) -> EventTimeSpec {
        EventTimeSpec { from: "ts".into(), lateness_ms: lateness, idle_timeout_ms: idle }
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
    fn time_fields() {
        let msg = sluice_sdk::Msg::telemetry("d", serde_json::json!({"t": "1500"})).with_ts(7).with_meta("m", "9");
        assert_eq!(TimeField::parse("ts").unwrap().event_time(&msg, 0), 7);
        assert_eq!(TimeField::parse("data.t").unwrap().event_time(&msg, 0), 1500);
        assert_eq!(TimeField::parse("metadata.m").unwrap().event_time(&msg, 0), 9);
        assert_eq!(TimeField::parse("arrival").unwrap().event_time(&msg, 42), 42);
        assert!(TimeField::parse("data.").is_err());
    }
}

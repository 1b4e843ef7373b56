//! Get telemetry (ThingsBoard's `TbGetTelemetryNode`, "originator telemetry"): reads the
//! originator's saved telemetry over an interval from the host's telemetry history (what the
//! chain's `table-writer` nodes with `series` saved — save-timeseries, imported) and adds it to
//! the message metadata.
//!
//! As `TbGetTelemetryNode` (version 2, ThingsBoard 3.7–4.x) does:
//! - `init`: `latestTsKeyNames` must not be empty ("Telemetry should be specified!"); `FIRST`
//!   reads one point in ascending order, `LAST` one in descending order, both without
//!   aggregation; `ALL` reads up to `limit` points (2..=1000, "Limit should be in a range from 2
//!   to 1000.") in `orderBy`, or with an `aggregation` other than `NONE` one aggregate over the
//!   whole interval (`buildQueries`: the aggregation step is `endTs - startTs`), whose ts is the
//!   middle of the interval;
//! - `getInterval`: `[now - startInterval, now - endInterval)` in their `TimeUnit`s, or with
//!   `useMetadataIntervalPatterns` the two patterns (`${metadataKey}`, `$[dataKey]`) processed
//!   against the message, each of which must resolve ("Message value: 'k' is undefined") to a
//!   number ("… has invalid format"); a start after the end fails ("Interval start should be
//!   less than Interval end");
//! - the key names are patterns too (`TbNodeUtils.processPatterns`);
//! - `updateMetadata`: for `FIRST`/`LAST` each found key's metadata value is the value's text as
//!   a JSON string — `"22.4"`, quotes included, as `TextNode.toString()` writes it; for `ALL` a
//!   JSON array `[{"ts":1700000000000,"value":22.4}, …]` (numbers as numbers, doubles as Java
//!   writes them, strings quoted, JSON as JSON). A key with nothing in the interval leaves the
//!   metadata as it was. The message goes on `Success`; an error on `Failure`.
//!
//! **Now is the message's event time**, not the host clock: ThingsBoard uses
//! `System.currentTimeMillis()`, which makes a result depend on when a message happens to be
//! processed — a replay, a backlog after a restart, or a test would read other intervals. The
//! message's `ts` is when the reading was taken, and gives the same answer every run.
//! `useServerTime: true` takes the host clock instead, as ThingsBoard (for live chains whose
//! messages carry stale `ts`).
//!
//! ThingsBoard's configuration has no `fetchTo` (results always go to metadata) and no
//! `interval` object: checked against `TbGetTelemetryNodeConfiguration` up to 4.x. Older
//! exports (version 0/1) are upgraded as `TbGetTelemetryNode.upgrade` does: a missing (or null)
//! `orderBy` is `ASC`, `aggregation` `NONE`, `limit` 1000; the importer also turns an empty
//! `orderBy` into `ASC` and an unknown fetch mode into `LAST`.
//!
//! Config (ThingsBoard's names and defaults, plus `series` and `useServerTime`):
//! ```json
//! {"latestTsKeyNames": ["temperature"], "fetchMode": "ALL", "orderBy": "ASC", "aggregation": "NONE",
//!  "limit": 1000, "startInterval": 2, "startIntervalTimeUnit": "MINUTES", "endInterval": 1,
//!  "endIntervalTimeUnit": "MINUTES", "useMetadataIntervalPatterns": false,
//!  "startIntervalPattern": "", "endIntervalPattern": "", "series": "timeseries", "useServerTime": false}
//! ```
//! The history keeps a bounded number of points per key (`[state]` `seriesMaxPoints` in
//! `sluice.toml`, default 1000): an interval reaching past the oldest kept point finds less than
//! ThingsBoard's database would.
use sluice_sdk::prelude::*;
use sluice_sdk::series::{Aggregation, Answer, Order, Point, Query};

/// ThingsBoard's `TbGetTelemetryNodeConfiguration.MAX_FETCH_SIZE`.
pub const MAX_FETCH_SIZE: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum FetchMode {
    First,
    Last,
    All,
}

/// `java.util.concurrent.TimeUnit`, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum TimeUnit {
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
    Days,
}

impl TimeUnit {
    /// `TimeUnit.toMillis(amount)`: truncating below a millisecond, saturating.
    pub fn to_millis(self, amount: i64) -> i64 {
        match self {
            TimeUnit::Nanoseconds => amount / 1_000_000,
            TimeUnit::Microseconds => amount / 1_000,
            TimeUnit::Milliseconds => amount,
            TimeUnit::Seconds => amount.saturating_mul(1_000),
            TimeUnit::Minutes => amount.saturating_mul(60_000),
            TimeUnit::Hours => amount.saturating_mul(3_600_000),
            TimeUnit::Days => amount.saturating_mul(86_400_000),
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub latest_ts_key_names: Vec<String>,
    pub fetch_mode: Option<FetchMode>,
    /// `ASC` or `DESC` (`ALL` only; absent is `ASC`).
    #[serde(default)]
    pub order_by: Option<Order>,
    #[serde(default)]
    pub aggregation: Option<Aggregation>,
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default = "two")]
    pub start_interval: i64,
    #[serde(default = "minutes")]
    pub start_interval_time_unit: TimeUnit,
    #[serde(default = "one")]
    pub end_interval: i64,
    #[serde(default = "minutes")]
    pub end_interval_time_unit: TimeUnit,
    #[serde(default)]
    pub use_metadata_interval_patterns: bool,
    #[serde(default)]
    pub start_interval_pattern: String,
    #[serde(default)]
    pub end_interval_pattern: String,
    /// The history to read (default `timeseries`, what save-timeseries writes).
    #[serde(default = "timeseries")]
    pub series: String,
    /// Measure the interval from the host clock, as ThingsBoard, instead of the message's ts.
    #[serde(default)]
    pub use_server_time: bool,
}

fn two() -> i64 {
    2
}
fn one() -> i64 {
    1
}
fn minutes() -> TimeUnit {
    TimeUnit::Minutes
}
fn timeseries() -> String {
    "timeseries".into()
}

pub struct GetTelemetry {
    cfg: Config,
    fetch_mode: FetchMode,
    limit: usize,
    order: Order,
    aggregation: Aggregation,
}

/// Adds the originator's telemetry of an interval to the message metadata.
#[node(relations = ["Success"])]
impl Node for GetTelemetry {
    type Config = Config;

    /// `TbGetTelemetryNode.init`.
    fn init(cfg: Config) -> Result<Self> {
        if cfg.latest_ts_key_names.is_empty() {
            bail_config!("latestTsKeyNames", "Telemetry should be specified!");
        }
        if cfg.series.trim().is_empty() {
            bail_config!("series", "must name a series");
        }
        let Some(fetch_mode) = cfg.fetch_mode else { bail_config!("fetchMode", "FetchMode should be specified!") };
        let (limit, order, aggregation) = match fetch_mode {
            FetchMode::All => {
                let limit = cfg.limit.unwrap_or(MAX_FETCH_SIZE);
                if !(2..=MAX_FETCH_SIZE).contains(&limit) {
                    bail_config!("limit", "Limit should be in a range from 2 to 1000.");
                }
                (limit as usize, cfg.order_by.unwrap_or_default(), cfg.aggregation.unwrap_or_default())
            }
            FetchMode::First => (1, Order::Asc, Aggregation::None),
            FetchMode::Last => (1, Order::Desc, Aggregation::None),
        };
        if cfg.use_metadata_interval_patterns {
            for (field, pattern) in [
                ("startIntervalPattern", &cfg.start_interval_pattern),
                ("endIntervalPattern", &cfg.end_interval_pattern),
            ] {
                if pattern.trim().is_empty() {
                    bail_config!(field, "must be a pattern such as `${{startTs}}` with useMetadataIntervalPatterns");
                }
            }
        }
        Ok(GetTelemetry { cfg, fetch_mode, limit, order, aggregation })
    }

    /// `TbGetTelemetryNode.onMsg`.
    fn on_msg(&mut self, mut msg: Msg, out: &mut Outputs) -> Result<()> {
        let (start_ts, end_ts) = self.interval(&msg)?;
        if start_ts > end_ts {
            bail!("Interval start should be less than Interval end");
        }
        let mut keys: Vec<String> = Vec::with_capacity(self.cfg.latest_ts_key_names.len());
        for key in &self.cfg.latest_ts_key_names {
            let key = process_pattern(key, &msg);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let query = Query {
            keys: keys.clone(),
            start_ts,
            end_ts,
            limit: self.limit,
            order: self.order,
            aggregation: self.aggregation,
        };
        let answer = series::query(&self.cfg.series, &series::entity_of(msg.originator()), &query)?;
        self.update_metadata(&mut msg, &keys, &answer);
        out.emit(relation::SUCCESS, msg);
        Ok(())
    }
}

impl GetTelemetry {
    /// `TbGetTelemetryNode.getInterval`, from the message's event time (or the host clock with
    /// `useServerTime`).
    fn interval(&self, msg: &Msg) -> Result<(i64, i64)> {
        if self.cfg.use_metadata_interval_patterns {
            return Ok((
                check_pattern(msg, &self.cfg.start_interval_pattern)?,
                check_pattern(msg, &self.cfg.end_interval_pattern)?,
            ));
        }
        let now = if self.cfg.use_server_time { clock::now_ms() } else { msg.ts() };
        let start = now.saturating_sub(self.cfg.start_interval_time_unit.to_millis(self.cfg.start_interval));
        let end = now.saturating_sub(self.cfg.end_interval_time_unit.to_millis(self.cfg.end_interval));
        Ok((start, end))
    }

    /// `TbGetTelemetryNode.updateMetadata`.
    fn update_metadata(&self, msg: &mut Msg, keys: &[String], answer: &Answer) {
        for key in keys {
            let Some(points) = answer.get(key).filter(|p| !p.is_empty()) else { continue };
            let text = match self.fetch_mode {
                FetchMode::All => array_text(points),
                // `processSingle` keeps the last entry of the key; there is one.
                FetchMode::First | FetchMode::Last => Value::String(points[points.len() - 1].value.text()).to_string(),
            };
            msg.set_meta(key.clone(), text);
        }
    }
}

/// `processArray` + `buildNode`, as `ArrayNode.toString()` writes them.
fn array_text(points: &[Point]) -> String {
    let items: Vec<String> =
        points.iter().map(|p| format!("{{\"ts\":{},\"value\":{}}}", p.ts, p.value.json_text())).collect();
    format!("[{}]", items.join(","))
}

/// `TbGetTelemetryNode.checkPattern`: the pattern resolved against the message, as a long.
fn check_pattern(msg: &Msg, pattern: &str) -> Result<i64> {
    let value = process_pattern(pattern, msg);
    let name: String = pattern.chars().filter(|c| !matches!(c, '$' | '[' | '{' | '}' | ']')).collect();
    if value == pattern {
        bail!("Message value: '{name}' is undefined");
    }
    if !is_parsable(&value) {
        bail!("Message value: '{name}' has invalid format");
    }
    value.parse::<i64>().map_err(|_| Error::new(format!("For input string: \"{value}\"")))
}

/// Apache `NumberUtils.isParsable`.
fn is_parsable(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    !body.is_empty()
        && !body.ends_with('.')
        && body.chars().all(|c| c.is_ascii_digit() || c == '.')
        && body.chars().filter(|c| *c == '.').count() <= 1
}

/// `TbNodeUtils.processPattern`: `${key}` → the metadata value, `$[a.b]` → the data value (a
/// number, string or boolean, as its text) where the message has them; other placeholders stay
/// as written.
pub fn process_pattern(pattern: &str, msg: &Msg) -> String {
    let mut result = pattern.to_string();
    if result.contains("${") {
        for (key, value) in msg.metadata().iter() {
            let var = format!("${{{key}}}");
            if result.contains(&var) {
                result = result.replace(&var, value);
            }
        }
    }
    let mut from = 0;
    while let Some(open) = result[from..].find("$[").map(|i| i + from) {
        let Some(close) = result[open..].find(']').map(|i| i + open) else { break };
        let path = &result[open + 2..close];
        let found = if path.split('.').any(str::is_empty) {
            None
        } else {
            path.split('.').try_fold(msg.data(), |v, k| v.as_object()?.get(k))
        };
        let text = match found {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            _ => None,
        };
        match text {
            Some(text) => {
                let var = result[open..=close].to_string();
                result = result.replace(&var, &text);
                from = 0;
            }
            None => from = close + 1,
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::series::{KeyPoint, KvValue};
    use sluice_sdk::testing::TestDriver;

    const MIN: i64 = 60_000;
    const NOW: i64 = 1_700_000_000_000;

    fn driver(config: Value) -> TestDriver {
        TestDriver::node_from_json::<GetTelemetry>(&config.to_string()).unwrap()
    }

    /// Temperatures of `th-1` 5, 4, 3, 2 and 1 minutes before NOW (21.0, 22.5, 20.0, 23.5, 24)
    /// and a state string.
    fn saved(d: &mut TestDriver) {
        let values = [KvValue::Double(21.0), KvValue::Double(22.5), KvValue::Double(20.0), KvValue::Double(23.5)];
        let mut points: Vec<KeyPoint> = values
            .into_iter()
            .enumerate()
            .map(|(i, value)| KeyPoint { key: "temperature".into(), ts: NOW - (5 - i as i64) * MIN, value })
            .collect();
        points.push(KeyPoint { key: "temperature".into(), ts: NOW - MIN, value: KvValue::Long(24) });
        points.push(KeyPoint { key: "state".into(), ts: NOW - 3 * MIN, value: KvValue::Str("on".into()) });
        d.put_series("timeseries", "DEVICE/th-1", &points);
    }

    fn run(config: Value, msg: Msg) -> Result<(Vec<String>, Msg)> {
        let mut d = driver(config);
        saved(&mut d);
        let out = d.send(msg)?;
        let relations = out.relations().iter().map(|r| r.to_string()).collect();
        Ok((relations, out.messages()[0].clone()))
    }

    fn msg() -> Msg {
        Msg::telemetry("th-1", json!({"temperature": 25})).with_ts(NOW).with_meta("deviceName", "th-1")
    }

    /// `getInterval` with the defaults: [now - 2 min, now - 1 min) holds only the point at
    /// now - 2 min (23.5); FIRST/LAST write `getValueAsString` as a JSON string (`"23.5"`).
    #[test]
    fn first_and_last_write_the_value_as_a_json_string() -> Result<()> {
        let (rel, out) = run(json!({"latestTsKeyNames": ["temperature"], "fetchMode": "FIRST"}), msg())?;
        assert_eq!(rel, ["Success"]);
        assert_eq!(out.meta("temperature"), Some("\"23.5\""));
        let five = json!({"latestTsKeyNames": ["temperature", "state"], "fetchMode": "LAST",
                          "startInterval": 6, "endInterval": 0});
        let (_, out) = run(five.clone(), msg())?;
        assert_eq!(out.meta("temperature"), Some("\"24\""), "the newest in [now-6m, now)");
        assert_eq!(out.meta("state"), Some("\"on\""));
        let mut first = five;
        first["fetchMode"] = json!("FIRST");
        let (_, out) = run(first, msg())?;
        assert_eq!(out.meta("temperature"), Some("\"21.0\""), "Double.toString keeps the .0");
        assert_eq!(out.data(), &json!({"temperature": 25}), "the data is untouched");
        Ok(())
    }

    /// `processArray`: `[{"ts":…,"value":…}]` in `orderBy`, at most `limit`.
    #[test]
    fn all_writes_an_array_in_order_with_limit() -> Result<()> {
        let cfg = json!({"latestTsKeyNames": ["temperature"], "fetchMode": "ALL", "orderBy": "DESC", "limit": 2,
                         "startInterval": 300, "startIntervalTimeUnit": "SECONDS", "endInterval": 0});
        let (_, out) = run(cfg, msg())?;
        let expected = format!("[{{\"ts\":{},\"value\":24}},{{\"ts\":{},\"value\":23.5}}]", NOW - MIN, NOW - 2 * MIN);
        assert_eq!(out.meta("temperature"), Some(expected.as_str()));
        Ok(())
    }

    /// `buildQueries` with an aggregation: one bucket over the interval, its ts the middle.
    /// [now-5m, now-1m) holds 21.0, 22.5, 20.0, 23.5 (the long 24 at now-1m is outside).
    #[test]
    fn aggregations_span_the_whole_interval() -> Result<()> {
        let cfg = |agg: &str| {
            json!({"latestTsKeyNames": ["temperature"], "fetchMode": "ALL", "aggregation": agg,
                   "startInterval": 5, "endInterval": 1})
        };
        let mid = NOW - 3 * MIN;
        for (agg, value) in [("AVG", "21.75"), ("MIN", "20.0"), ("MAX", "23.5"), ("SUM", "87.0"), ("COUNT", "4")] {
            let (_, out) = run(cfg(agg), msg())?;
            assert_eq!(
                out.meta("temperature"),
                Some(format!("[{{\"ts\":{mid},\"value\":{value}}}]").as_str()),
                "{agg}"
            );
        }
        Ok(())
    }

    #[test]
    fn nothing_in_the_interval_leaves_the_metadata() -> Result<()> {
        let cfg = json!({"latestTsKeyNames": ["temperature", "humidity"], "fetchMode": "ALL",
                         "startInterval": 10, "endInterval": 9});
        let (rel, out) = run(cfg, msg())?;
        assert_eq!(rel, ["Success"]);
        assert_eq!(out.meta("temperature"), None);
        assert_eq!(out.meta("humidity"), None);
        Ok(())
    }

    /// `getIntervalFromPatterns` / `checkPattern`, and key names as patterns.
    #[test]
    fn metadata_patterns_bound_the_interval() -> Result<()> {
        let cfg = json!({"latestTsKeyNames": ["${key}"], "fetchMode": "ALL", "useMetadataIntervalPatterns": true,
                         "startIntervalPattern": "${from}", "endIntervalPattern": "$[to]"});
        let m = Msg::telemetry("th-1", json!({"to": NOW - 3 * MIN}))
            .with_ts(NOW)
            .with_meta("from", (NOW - 4 * MIN).to_string())
            .with_meta("key", "temperature");
        let (_, out) = run(cfg.clone(), m.clone())?;
        assert_eq!(out.meta("temperature"), Some(format!("[{{\"ts\":{},\"value\":22.5}}]", NOW - 4 * MIN).as_str()));
        let fail = |m: Msg| -> Result<String> {
            let (rel, out) = run(cfg.clone(), m)?;
            assert_eq!(rel, ["Failure"]);
            Ok(out.meta("error").unwrap_or_default().to_string())
        };
        let no_from = Msg::telemetry("th-1", json!({"to": 1})).with_meta("key", "temperature");
        assert!(fail(no_from)?.contains("Message value: 'from' is undefined"));
        assert!(fail(m.clone().with_meta("from", "soon"))?.contains("Message value: 'from' has invalid format"));
        let backwards = m.with_meta("from", NOW.to_string());
        assert!(fail(backwards)?.contains("Interval start should be less than Interval end"));
        Ok(())
    }

    #[test]
    fn event_time_or_the_host_clock() -> Result<()> {
        // Event time: a message an hour old reads the hour-old interval (nothing saved then).
        let cfg = json!({"latestTsKeyNames": ["temperature"], "fetchMode": "LAST", "startInterval": 6,
                         "endInterval": 0});
        let (_, out) = run(cfg.clone(), msg().with_ts(NOW - 60 * MIN))?;
        assert_eq!(out.meta("temperature"), None);
        // The host clock, as ThingsBoard: now is the driver's time, whatever the message's ts.
        let mut server = cfg;
        server["useServerTime"] = json!(true);
        let mut d = driver(server).at(NOW);
        saved(&mut d);
        let out = d.send(msg().with_ts(NOW - 60 * MIN))?;
        assert_eq!(out.messages()[0].meta("temperature"), Some("\"24\""));
        Ok(())
    }

    #[test]
    fn bad_config_is_refused_as_thingsboard_refuses_it() {
        let error = |cfg: Value| TestDriver::node_from_json::<GetTelemetry>(&cfg.to_string()).err().expect("refused");
        assert!(error(json!({"fetchMode": "FIRST"})).message.contains("Telemetry should be specified!"));
        assert!(error(json!({"latestTsKeyNames": ["t"]})).message.contains("FetchMode should be specified!"));
        let limit = error(json!({"latestTsKeyNames": ["t"], "fetchMode": "ALL", "limit": 1}));
        assert!(limit.message.contains("Limit should be in a range from 2 to 1000."));
        assert_eq!(error(json!({"latestTsKeyNames": ["t"], "fetchMode": "SOME"})).field, "fetchMode");
        assert_eq!(error(json!({"latestTsKeyNames": ["t"], "fetchMode": "ALL", "orderBy": "UP"})).field, "orderBy");
        let unit = error(json!({"latestTsKeyNames": ["t"], "fetchMode": "ALL", "startIntervalTimeUnit": "WEEKS"}));
        assert_eq!(unit.field, "startIntervalTimeUnit");
        // Upgraded as `upgrade` does: absent or null orderBy, aggregation and limit.
        assert!(
            TestDriver::node_from_json::<GetTelemetry>(
                r#"{"latestTsKeyNames": ["t"], "fetchMode": "ALL", "orderBy": null, "aggregation": null}"#
            )
            .is_ok()
        );
    }

    #[test]
    fn patterns_are_processed_as_thingsboard_does() {
        let m = Msg::telemetry("d", json!({"a": {"b": 5}, "s": "x"})).with_meta("k", "v");
        assert_eq!(process_pattern("${k}-$[a.b]-$[s]-$[none]-${none}", &m), "v-5-x-$[none]-${none}");
    }
}

//! Telemetry history: per (series, entity, key) the points a chain saved, ordered by time, and
//! the queries ThingsBoard's "originator telemetry" node (`TbGetTelemetryNode`) makes of its
//! time-series database.
//!
//! Defined once, here, so that the native test harness answers a query exactly as the engine
//! does (as the window store is). The engine keeps the histories (`sluice_engine::state::series`:
//! shared by the chain's nodes, partitioned by owner, checkpointed); a node reaches them through
//! [`crate::host::series`].
//!
//! **Values are typed as ThingsBoard types them** when it saves telemetry
//! (`JsonConverter.parseValues`): an integral number is a `LONG` (`25`, `1e3`), a number with a
//! point a `DOUBLE` (`25.0`, `22.5`), a string that parses as a number is that number
//! (type casting, on by default), `true`/`false` a `BOOLEAN`, other strings `STRING`, objects
//! and arrays `JSON`. The type decides what a query answers: a `LONG` sums to a `LONG`, a mix
//! with a `DOUBLE` to a `DOUBLE`, `MIN` of strings compares text.
//!
//! **A history is bounded** ([`Limits`]): at most `max_points` points per key (oldest evicted
//! first) and, with `max_age_ms`, none older than the key's newest point minus that age. The
//! bound is event time, not the host clock, so a replay evicts exactly as the first run did.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::host::series::{append, query};

/// A saved value, typed as ThingsBoard's `KvEntry` (`DataType`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvValue {
    Long(i64),
    Double(f64),
    Bool(bool),
    Str(String),
    /// A JSON object or array, as its compact text.
    Json(String),
}

impl KvValue {
    /// The value ThingsBoard saves for a data field (`JsonConverter.parseValues` with type
    /// casting on); `None` for `null`, which ThingsBoard refuses ("Can't parse value").
    pub fn from_json(value: &Value) -> Option<KvValue> {
        match value {
            Value::Null => None,
            Value::Bool(b) => Some(KvValue::Bool(*b)),
            Value::Number(n) => Some(numeric(&n.to_string())),
            Value::String(s) if is_parsable(s) => Some(numeric(s)),
            Value::String(s) => Some(KvValue::Str(s.clone())),
            Value::Object(_) | Value::Array(_) => Some(KvValue::Json(value.to_string())),
        }
    }

    /// As `JacksonUtil.addKvEntry` writes it into an object: numbers and booleans as JSON
    /// numbers and booleans, a string as a string, JSON as the JSON it holds.
    pub fn to_json(&self) -> Value {
        match self {
            KvValue::Long(v) => Value::from(*v),
            KvValue::Double(v) => serde_json::Number::from_f64(*v).map_or(Value::Null, Value::Number),
            KvValue::Bool(v) => Value::Bool(*v),
            KvValue::Str(s) => Value::String(s.clone()),
            KvValue::Json(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
        }
    }

    /// `KvEntry.getValueAsString()`: a double as Java's `Double.toString` writes it (`2.0`,
    /// `1.0E7`).
    pub fn text(&self) -> String {
        match self {
            KvValue::Long(v) => v.to_string(),
            KvValue::Double(v) => crate::java::double_text(*v),
            KvValue::Bool(v) => v.to_string(),
            KvValue::Str(s) | KvValue::Json(s) => s.clone(),
        }
    }

    /// The value as Jackson writes it inside a JSON text (`JsonNode.toString()`): doubles as
    /// Java writes them, strings quoted, JSON as it is.
    pub fn json_text(&self) -> String {
        match self {
            KvValue::Long(v) => v.to_string(),
            KvValue::Double(v) if v.is_finite() => crate::java::double_text(*v),
            KvValue::Double(v) => Value::String(crate::java::double_text(*v)).to_string(),
            KvValue::Bool(v) => v.to_string(),
            KvValue::Str(s) => Value::String(s.clone()).to_string(),
            KvValue::Json(text) => text.clone(),
        }
    }
}

/// Apache `NumberUtils.isParsable`: an optional `-`, then digits with at most one `.`, not
/// ending in `.` (no exponent, no `+`).
fn is_parsable(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    if body.is_empty() || body.ends_with('.') {
        return false;
    }
    let mut dots = 0;
    for c in body.chars() {
        match c {
            '.' => dots += 1,
            c if c.is_ascii_digit() => {}
            _ => return false,
        }
    }
    dots <= 1
}

/// `JsonConverter.parseNumericValue`: integral (and not written `d.d`) → `LONG`, a `LONG` too big
/// → its plain text as `STRING`; otherwise `DOUBLE` (more than 16 decimals → `STRING`).
fn numeric(text: &str) -> KvValue {
    let simple_double = text.contains('.') && !text.contains(['e', 'E']);
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
        None => (text, 0),
    };
    let negative = mantissa.starts_with('-');
    let digits = mantissa.trim_start_matches(['-', '+']);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac_trimmed = frac.trim_end_matches('0');
    let integral = (frac_trimmed.len() as i64) <= exp;
    if integral && !simple_double {
        let zeros = exp - frac_trimmed.len() as i64;
        let plain = format!("{int}{frac_trimmed}{}", "0".repeat(zeros.clamp(0, 40) as usize));
        let plain = plain.trim_start_matches('0');
        let plain = if plain.is_empty() { "0" } else { plain };
        let signed = if negative && plain != "0" { format!("-{plain}") } else { plain.to_string() };
        return match signed.parse::<i64>() {
            Ok(v) => KvValue::Long(v),
            Err(_) => KvValue::Str(signed),
        };
    }
    let scale = frac.len() as i64 - exp;
    match text.parse::<f64>() {
        Ok(v) if scale <= 16 => KvValue::Double(v),
        _ => KvValue::Str(text.to_string()),
    }
}

/// The entity a history belongs to: the originator as `ENTITY_TYPE/name` (`DEVICE/th-1`).
pub fn entity_of(originator: &crate::Originator) -> String {
    format!("{}/{}", originator.entity_type, originator.name)
}

/// The ts ThingsBoard's `TbMsgTimeseriesNode.computeTs` saves telemetry at (without
/// `useServerTs`): `TbMsg.getMetaDataTs()` — the metadata `ts` when it is a whole number, else the
/// message's ts.
pub fn metadata_ts(msg: &crate::Msg) -> i64 {
    msg.meta("ts").and_then(|t| t.trim().parse::<i64>().ok()).unwrap_or_else(|| msg.ts())
}

/// A point as saved and as answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub ts: i64,
    pub value: KvValue,
}

/// A point of one key, to append ([`crate::host::series::append`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyPoint {
    pub key: String,
    pub ts: i64,
    pub value: KvValue,
}

/// `ReadTsKvQuery`'s order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// ThingsBoard's `Aggregation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Aggregation {
    #[default]
    None,
    Min,
    Max,
    Avg,
    Sum,
    Count,
}

/// A read of some keys of one entity over `[start_ts, end_ts)`: the points (`aggregation`
/// `NONE`, at most `limit`, in `order`) or one aggregate over the whole interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Query {
    pub keys: Vec<String>,
    pub start_ts: i64,
    pub end_ts: i64,
    pub limit: usize,
    #[serde(default)]
    pub order: Order,
    #[serde(default)]
    pub aggregation: Aggregation,
}

/// What a query found: key → points, in the query's order. A key with nothing in the interval
/// is absent.
pub type Answer = BTreeMap<String, Vec<Point>>;

/// How much history a key keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// Points kept per key; the oldest go first.
    pub max_points: usize,
    /// With a value, points older than the key's newest point minus this go too.
    pub max_age_ms: Option<i64>,
}

impl Default for Limits {
    /// 1000 points per key, no age limit: ThingsBoard's most points one query fetches
    /// (`TbGetTelemetryNodeConfiguration.MAX_FETCH_SIZE`).
    fn default() -> Self {
        Limits { max_points: 1000, max_age_ms: None }
    }
}

/// One key's points, ordered by time; one point per ts (a later save of the same ts replaces it,
/// as ThingsBoard's `ts_kv` upsert does).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct History {
    points: BTreeMap<i64, KvValue>,
}

impl History {
    /// Saves a point and applies `limits`; returns how many points were evicted.
    pub fn insert(&mut self, ts: i64, value: KvValue, limits: &Limits) -> usize {
        self.points.insert(ts, value);
        let mut evicted = 0;
        if let (Some(age), Some((&newest, _))) = (limits.max_age_ms, self.points.last_key_value()) {
            let oldest_kept = newest.saturating_sub(age);
            while self.points.first_key_value().is_some_and(|(ts, _)| *ts < oldest_kept) {
                self.points.pop_first();
                evicted += 1;
            }
        }
        while self.points.len() > limits.max_points.max(1) {
            self.points.pop_first();
            evicted += 1;
        }
        evicted
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The points in `[start, end)`: `limit` of them in `order` (`aggregation` `NONE`), or the
    /// one aggregate of them all.
    pub fn query(&self, q: &Query) -> Vec<Point> {
        if q.start_ts >= q.end_ts && q.aggregation == Aggregation::None {
            return Vec::new();
        }
        if q.aggregation != Aggregation::None {
            // `AbstractChunkedAggregationTimeseriesDao.findAllAsync`: one bucket, as
            // `TbGetTelemetryNode.buildQueries` asks for a step of `endTs - startTs`; its ts is
            // the middle of `[startTs, max(startTs + 1, endTs))`.
            let end = q.end_ts.max(q.start_ts.saturating_add(1));
            let ts = q.start_ts + (end - q.start_ts) / 2;
            let range = self.points.range(q.start_ts..end).map(|(_, v)| v);
            return aggregate(range, q.aggregation).map(|value| Point { ts, value }).into_iter().collect();
        }
        let range = self.points.range(q.start_ts..q.end_ts);
        let point = |(ts, v): (&i64, &KvValue)| Point { ts: *ts, value: v.clone() };
        match q.order {
            Order::Asc => range.take(q.limit).map(point).collect(),
            Order::Desc => range.rev().take(q.limit).map(point).collect(),
        }
    }
}

/// One aggregate of `values`, as ThingsBoard's SQL time-series DAO computes it
/// (`TsKvRepository.find{Avg,Sum,NumericMin,…,Count}` and the `TsKvEntity` constructors that
/// read their rows); `None` when the interval holds no point.
pub fn aggregate<'a>(values: impl Iterator<Item = &'a KvValue>, aggregation: Aggregation) -> Option<KvValue> {
    let values: Vec<&KvValue> = values.collect();
    if values.is_empty() {
        return None;
    }
    let longs: Vec<i64> =
        values.iter().filter_map(|v| if let KvValue::Long(l) = v { Some(*l) } else { None }).collect();
    let doubles: Vec<f64> =
        values.iter().filter_map(|v| if let KvValue::Double(d) = v { Some(*d) } else { None }).collect();
    let count = |f: fn(&KvValue) -> bool| values.iter().filter(|v| f(v)).count() as i64;
    let long_sum = longs.iter().fold(0i64, |a, b| a.wrapping_add(*b));
    let double_sum: f64 = doubles.iter().sum();
    match aggregation {
        Aggregation::None => None,
        Aggregation::Avg => {
            let n = longs.len() + doubles.len();
            // `TsKvEntity(…, "AVG", …)`: sum of both over their count; 0.0 when no number.
            Some(KvValue::Double(if n > 0 { (long_sum as f64 + double_sum) / n as f64 } else { 0.0 }))
        }
        Aggregation::Sum if !doubles.is_empty() => Some(KvValue::Double(double_sum + long_sum as f64)),
        Aggregation::Sum => Some(KvValue::Long(long_sum)),
        Aggregation::Min | Aggregation::Max => {
            let max = aggregation == Aggregation::Max;
            let pick = |a: f64, b: f64| if max { a.max(b) } else { a.min(b) };
            let long = if max { longs.iter().max() } else { longs.iter().min() }.copied();
            let double = doubles.iter().copied().reduce(pick);
            match (long, double) {
                (Some(l), Some(d)) => Some(KvValue::Double(pick(d, l as f64))),
                (None, Some(d)) => Some(KvValue::Double(d)),
                (Some(l), None) => Some(KvValue::Long(l)),
                // No number: `findStringMin`/`findStringMax` (booleans and JSON take no part).
                (None, None) => {
                    let strings = values.iter().filter_map(|v| if let KvValue::Str(s) = v { Some(s) } else { None });
                    let s = if max { strings.max() } else { strings.min() };
                    s.map(|s| KvValue::Str(s.clone()))
                }
            }
        }
        // `TsKvEntity(booleanCount, strCount, longCount, doubleCount, jsonCount, …)`: the count of
        // booleans if any, else of strings, else of JSON, else of numbers.
        Aggregation::Count => {
            let booleans = count(|v| matches!(v, KvValue::Bool(_)));
            let strings = count(|v| matches!(v, KvValue::Str(_)));
            let json = count(|v| matches!(v, KvValue::Json(_)));
            Some(KvValue::Long(if booleans != 0 {
                booleans
            } else if strings != 0 {
                strings
            } else if json != 0 {
                json
            } else {
                (longs.len() + doubles.len()) as i64
            }))
        }
    }
}

/// The points ThingsBoard's `TbMsgTimeseriesNode` saves from a message's data
/// (`JsonConverter.convertToTelemetry`): an object's fields at `ts`; `{"ts": …, "values": {…}}`
/// at its own ts; a list of either. Fields that are `null` are skipped. `Err` names what is not
/// telemetry.
pub fn telemetry_points(data: &Value, ts: i64) -> Result<Vec<KeyPoint>, String> {
    let mut points = Vec::new();
    let mut object = |o: &serde_json::Map<String, Value>| -> Result<(), String> {
        let (ts, values) = match (o.get("ts"), o.get("values")) {
            (Some(t), Some(Value::Object(values))) => {
                let t = t
                    .as_i64()
                    .or_else(|| t.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| format!("`ts` {t} is not a number of milliseconds"))?;
                (t, values)
            }
            (Some(_), Some(other)) => return Err(format!("`values` is {other}, not an object")),
            _ => (ts, o),
        };
        for (key, value) in values {
            if let Some(value) = KvValue::from_json(value) {
                points.push(KeyPoint { key: key.clone(), ts, value });
            }
        }
        Ok(())
    };
    match data {
        Value::Object(o) => object(o)?,
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(o) => object(o)?,
                    other => return Err(format!("a telemetry list holds {other}, not an object")),
                }
            }
        }
        other => return Err(format!("telemetry must be an object or a list of objects, not {other}")),
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn history(points: &[(i64, KvValue)], limits: Limits) -> History {
        let mut h = History::default();
        for (ts, v) in points {
            h.insert(*ts, v.clone(), &limits);
        }
        h
    }

    fn query(start: i64, end: i64, limit: usize, order: Order, aggregation: Aggregation) -> Query {
        Query { keys: vec!["t".into()], start_ts: start, end_ts: end, limit, order, aggregation }
    }

    #[test]
    fn values_are_typed_as_thingsboard_saves_them() {
        let v = |j: Value| KvValue::from_json(&j);
        assert_eq!(v(json!(25)), Some(KvValue::Long(25)));
        assert_eq!(v(json!(1e3)), Some(KvValue::Double(1000.0)), "serde writes 1e3 as 1000.0: a point");
        assert_eq!(KvValue::from_json(&serde_json::from_str("1e3").unwrap()), Some(KvValue::Long(1000)));
        assert_eq!(KvValue::from_json(&serde_json::from_str("25.0").unwrap()), Some(KvValue::Double(25.0)));
        assert_eq!(v(json!("22.5")), Some(KvValue::Double(22.5)));
        assert_eq!(v(json!("-7")), Some(KvValue::Long(-7)));
        assert_eq!(v(json!("7.")), Some(KvValue::Str("7.".into())));
        assert_eq!(v(json!("on")), Some(KvValue::Str("on".into())));
        assert_eq!(v(json!(true)), Some(KvValue::Bool(true)));
        assert_eq!(v(json!({"a": 1})), Some(KvValue::Json(r#"{"a":1}"#.into())));
        assert_eq!(v(json!(null)), None);
        assert_eq!(
            KvValue::from_json(&serde_json::from_str("99999999999999999999").unwrap()),
            Some(KvValue::Str("99999999999999999999".into()))
        );
        assert_eq!(KvValue::Double(1e7).text(), "1.0E7");
        assert_eq!(KvValue::Str("a\"b".into()).json_text(), r#""a\"b""#);
    }

    #[test]
    fn the_bound_evicts_the_oldest_points() {
        let limits = Limits { max_points: 3, max_age_ms: None };
        let h = history(
            &[(5, KvValue::Long(5)), (1, KvValue::Long(1)), (3, KvValue::Long(3)), (9, KvValue::Long(9))],
            limits,
        );
        let all = h.query(&query(0, 100, 10, Order::Asc, Aggregation::None));
        assert_eq!(all.iter().map(|p| p.ts).collect::<Vec<_>>(), [3, 5, 9]);
        let aged = history(
            &[(100, KvValue::Long(1)), (150, KvValue::Long(2)), (200, KvValue::Long(3))],
            Limits { max_points: 10, max_age_ms: Some(60) },
        );
        assert_eq!(aged.query(&query(0, 1000, 10, Order::Asc, Aggregation::None)).len(), 2, "100 < 200 - 60");
    }

    #[test]
    fn a_query_reads_start_inclusive_end_exclusive_in_order_with_limit() {
        let h = history(&(1..=5).map(|i| (i * 10, KvValue::Long(i))).collect::<Vec<_>>(), Limits::default());
        let ts = |q: Query| h.query(&q).iter().map(|p| p.ts).collect::<Vec<_>>();
        assert_eq!(ts(query(10, 50, 10, Order::Asc, Aggregation::None)), [10, 20, 30, 40]);
        assert_eq!(ts(query(10, 50, 2, Order::Desc, Aggregation::None)), [40, 30]);
        assert_eq!(ts(query(50, 10, 2, Order::Desc, Aggregation::None)), Vec::<i64>::new());
    }

    #[test]
    fn aggregates_follow_thingsboards_sql_dao() {
        let mixed = [KvValue::Long(2), KvValue::Double(3.5), KvValue::Long(4)];
        let agg = |a| aggregate(mixed.iter(), a);
        assert_eq!(agg(Aggregation::Sum), Some(KvValue::Double(9.5)));
        assert_eq!(aggregate([KvValue::Long(2), KvValue::Long(4)].iter(), Aggregation::Sum), Some(KvValue::Long(6)));
        assert_eq!(agg(Aggregation::Avg), Some(KvValue::Double(9.5 / 3.0)));
        assert_eq!(agg(Aggregation::Max), Some(KvValue::Double(4.0)));
        assert_eq!(agg(Aggregation::Min), Some(KvValue::Double(2.0)));
        assert_eq!(aggregate([KvValue::Long(2), KvValue::Long(4)].iter(), Aggregation::Max), Some(KvValue::Long(4)));
        assert_eq!(agg(Aggregation::Count), Some(KvValue::Long(3)));
        let words = [KvValue::Str("b".into()), KvValue::Str("a".into()), KvValue::Bool(true)];
        assert_eq!(aggregate(words.iter(), Aggregation::Min), Some(KvValue::Str("a".into())));
        assert_eq!(aggregate(words.iter(), Aggregation::Count), Some(KvValue::Long(1)), "booleans counted first");
        assert_eq!(aggregate(words.iter(), Aggregation::Avg), Some(KvValue::Double(0.0)));
        assert_eq!(aggregate([].iter(), Aggregation::Count), None);
        // The aggregate's ts is the middle of the interval.
        let h = history(&[(10, KvValue::Long(1)), (20, KvValue::Long(2))], Limits::default());
        assert_eq!(
            h.query(&query(0, 100, 1, Order::Asc, Aggregation::Sum)),
            [Point { ts: 50, value: KvValue::Long(3) }]
        );
    }

    #[test]
    fn telemetry_points_read_every_form() {
        let pts = telemetry_points(&json!({"t": 1, "s": null}), 7).unwrap();
        assert_eq!(pts, [KeyPoint { key: "t".into(), ts: 7, value: KvValue::Long(1) }]);
        let pts = telemetry_points(&json!([{"ts": 3, "values": {"t": 2}}, {"h": "x"}]), 7).unwrap();
        assert_eq!(
            pts,
            [
                KeyPoint { key: "t".into(), ts: 3, value: KvValue::Long(2) },
                KeyPoint { key: "h".into(), ts: 7, value: KvValue::Str("x".into()) }
            ]
        );
        assert!(telemetry_points(&json!(5), 0).is_err());
        assert!(telemetry_points(&json!([1]), 0).is_err());
    }
}

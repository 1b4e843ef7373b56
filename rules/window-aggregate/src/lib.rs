//! Window aggregator: a number per key over event-time windows, with the host's aggregates.
//!
//! Each message adds `value` under `key` to its window(s); nothing is emitted then. When the
//! watermark closes a window (its end plus `graceMs`), one result goes out on `Success`:
//!
//! - type `resultType`, originator `{entityType: resultOriginator, name: <key>}` (an asset by
//!   default: the geo zone, the solar module), `ts` = window start, no id (the engine derives
//!   `<node>/aggregate/<key>/<start>:0`, the same on every replay);
//! - metadata `{"windowStart": "<start>", "windowEnd": "<end>", "key": "<key>"}` (strings);
//! - data: each requested aggregate under its name (`count` an integer, the others floats; one
//!   without a value is left out), `windowStart`/`windowEnd` as integers, and the `keep` fields.
//!
//! An event whose windows have all closed is late: forwarded unchanged on `late`, or dropped
//! when `late` is `null` (the engine counts it either way). A message without the key or a
//! numeric value goes to `Failure`.
//!
//! Config:
//! ```json
//! {"key": "metadata.cs_geoZone", "value": "data.windSpeed",
//!  "window": {"type": "tumbling", "sizeMs": 10000}, "graceMs": 2000,
//!  "aggregates": ["avg", "count"], "late": "Late", "resultType": "WINDOW_AGGREGATE",
//!  "resultOriginator": "ASSET", "keep": ["data.panel"]}
//! ```
//! - `key` (required): the grouping key: `originator` (its name), `metadata.<k>` or `data.<k>` (a
//!   string, or a number or boolean rendered as text).
//! - `value`: `data.<k>` or `metadata.<k>`; numbers sent as strings (`"33"`) count, a
//!   missing, non-numeric or non-finite value is an error. Without `value` each event counts as
//!   1 (for event counts: `"aggregates": ["count"]`).
//! - `window` (required): `{"type": "tumbling", "sizeMs"}`, `{"type": "hopping", "sizeMs",
//!   "advanceMs"}` or `{"type": "session", "gapMs"}` (the host window is named `aggregate`).
//! - `graceMs` (default 0): how long after its end a window still takes events.
//! - `aggregates` (default `["count", "sum", "avg"]`): any of count, sum, avg, min, max, first,
//!   last, stddev (population); `first`/`last` are the values of the earliest/latest event time.
//! - `late` (default `"Late"`): relation for late events, `null` to drop them.
//! - `resultType` (default `"WINDOW_AGGREGATE"`), `resultOriginator` (default `"ASSET"`).
//! - `keep` (default none): `data.<k>`/`metadata.<k>` fields copied from the first accepted
//!   message of each key into every result of that key, under `<k>` (e.g. the panel of a module).
use sluice_sdk::prelude::*;
use sluice_sdk::serde_json::{Map, Number};
use sluice_sdk::windows::WindowKind;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub key: FieldPath,
    #[serde(default)]
    pub value: Option<FieldPath>,
    pub window: WindowKind,
    #[serde(default)]
    pub grace_ms: u64,
    #[serde(default = "default_aggregates")]
    pub aggregates: Vec<Aggregate>,
    #[serde(default = "default_late")]
    pub late: Option<String>,
    #[serde(default = "default_result_type")]
    pub result_type: String,
    #[serde(default = "default_originator")]
    pub result_originator: String,
    #[serde(default)]
    pub keep: Vec<FieldPath>,
}

/// One aggregate of the host's window; an unknown name is a config error naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
    Stddev,
}

fn default_aggregates() -> Vec<Aggregate> {
    vec![Aggregate::Count, Aggregate::Sum, Aggregate::Avg]
}
fn default_late() -> Option<String> {
    Some(relation::LATE.to_string())
}
fn default_result_type() -> String {
    "WINDOW_AGGREGATE".into()
}
fn default_originator() -> String {
    "ASSET".into()
}

/// The host window's name (it keys the window's state across restarts and reloads).
const WINDOW: &str = "aggregate";

pub struct WindowAggregate {
    config: Config,
    window: Window,
}

/// Aggregates a number per key over event-time windows.
#[node(relations = ["Success", config])]
impl Node for WindowAggregate {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        for field in config.keep.iter().chain(config.value.as_ref()) {
            if !matches!(field, FieldPath::Data(_) | FieldPath::Metadata(_)) {
                bail!("`value` and `keep` take `data.<key>` or `metadata.<key>`, not `{}`", field.name());
            }
        }
        if config.result_type.is_empty() || config.result_originator.is_empty() {
            bail!("resultType and resultOriginator must not be empty");
        }
        let builder = Window::of_kind(WINDOW, config.window);
        let window = builder.grace_ms(config.grace_ms).define()?;
        Ok(WindowAggregate { config, window })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        let cfg = &self.config;
        let Some(key) = cfg.key.text(&msg) else { bail!("no key: the message has no `{}`", cfg.key.name()) };
        let value = match &cfg.value {
            None => 1.0,
            Some(field) => match field.number(&msg).filter(|v| v.is_finite()) {
                Some(v) => v,
                None => bail!("no numeric `{}` in the message", field.name()),
            },
        };
        match self.window.add(&key, msg.ts(), value)? {
            Added::Accepted if !cfg.keep.is_empty() => {
                let slot = keep_slot(&key);
                if state::get(slot.as_bytes()).is_none() {
                    let kept: Map<String, Value> =
                        cfg.keep.iter().filter_map(|f| Some((f.name().to_string(), f.value(&msg)?))).collect();
                    state::put_json(&slot, &kept)?;
                }
            }
            Added::Accepted => {}
            Added::Late => {
                if let Some(late) = &cfg.late {
                    out.forward(late);
                }
            }
        }
        Ok(())
    }

    fn on_window(&mut self, closed: ClosedWindow, out: &mut Outputs) -> Result<()> {
        let cfg = &self.config;
        let mut data = Map::new();
        for agg in &cfg.aggregates {
            let (name, value) = match agg {
                Aggregate::Count => ("count", Some(Value::from(closed.count()))),
                Aggregate::Sum => ("sum", number(Some(closed.sum()))),
                Aggregate::Avg => ("avg", number(closed.avg())),
                Aggregate::Min => ("min", number(closed.min())),
                Aggregate::Max => ("max", number(closed.max())),
                Aggregate::First => ("first", number(closed.first())),
                Aggregate::Last => ("last", number(closed.last())),
                Aggregate::Stddev => ("stddev", number(closed.stddev())),
            };
            if let Some(v) = value {
                data.insert(name.into(), v);
            }
        }
        if !cfg.keep.is_empty()
            && let Some(kept) = state::get_json::<Map<String, Value>>(&keep_slot(&closed.key))?
        {
            data.extend(kept);
        }
        data.insert("windowStart".into(), Value::from(closed.start));
        data.insert("windowEnd".into(), Value::from(closed.end));
        let originator = Originator { entity_type: cfg.result_originator.clone(), name: closed.key.clone(), id: None };
        let msg = Msg::new(&cfg.result_type, originator, Value::Object(data))
            .with_ts(closed.start)
            .with_meta("windowStart", closed.start.to_string())
            .with_meta("windowEnd", closed.end.to_string())
            .with_meta("key", &closed.key);
        out.emit(relation::SUCCESS, msg);
        Ok(())
    }
}

/// Where the `keep` fields of a key live in node state.
fn keep_slot(key: &str) -> String {
    format!("keep/{key}")
}

fn number(v: Option<f64>) -> Option<Value> {
    v.and_then(Number::from_f64).map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    /// The config of the module docs, verbatim.
    const WIND_ZONES: &str = r#"{"key": "metadata.cs_geoZone", "value": "data.windSpeed",
        "window": {"type": "tumbling", "sizeMs": 10000}, "graceMs": 2000,
        "aggregates": ["avg", "count"], "late": "Late", "resultType": "WINDOW_AGGREGATE",
        "resultOriginator": "ASSET", "keep": ["data.panel"]}"#;

    fn driver(config: Value) -> TestDriver {
        TestDriver::node_from_json::<WindowAggregate>(&config.to_string()).unwrap()
    }

    fn station(zone: &str, ts: i64, wind: Value) -> Msg {
        Msg::telemetry("WS-1", json!({ "windSpeed": wind, "panel": "P-9" }))
            .with_meta("cs_geoZone", zone)
            .with_ts(ts)
            .with_id(format!("r{ts}"))
    }

    fn reading(key: &str, ts: i64, v: f64) -> Msg {
        Msg::telemetry("d", json!({ "v": v })).with_meta("k", key).with_ts(ts)
    }

    /// The whole result message, for the config of the docs.
    #[test]
    fn result_message_shape() -> Result<()> {
        let mut d = TestDriver::node_from_json::<WindowAggregate>(WIND_ZONES).unwrap().named("zones");
        // Zone A in [0, 10 000): 10, "20" (a string), 33 → count 3, avg 63 / 3 = 21.
        assert!(d.send(station("A", 1_000, json!(10)))?.outputs.is_empty());
        assert!(d.send(station("A", 4_000, json!("20")))?.outputs.is_empty());
        assert!(d.send(station("A", 9_999, json!(33.0)))?.outputs.is_empty());
        // Watermark 11 999 < 10 000 + 2 000: still open.
        assert!(d.send(station("B", 11_999, json!(1)))?.outputs.is_empty());
        let out = d.send(station("B", 12_000, json!(2)))?;
        let (relation, msg) = out.single().expect("one result");
        assert_eq!(relation, "Success");
        let expected = Msg::new(
            "WINDOW_AGGREGATE",
            Originator::asset("A"),
            json!({"avg": 21.0, "count": 3, "panel": "P-9", "windowStart": 0, "windowEnd": 10_000}),
        )
        .with_id("zones/aggregate/A/0:0")
        .with_ts(0)
        .with_meta("windowStart", "0")
        .with_meta("windowEnd", "10000")
        .with_meta("key", "A");
        assert_eq!(msg, &expected);
        // Zone B: 1 and 2 in [10 000, 20 000) → avg 1.5.
        let flushed = d.flush()?;
        let b = flushed.single().expect("zone B").1.clone();
        assert_eq!(b.originator(), &Originator::asset("B"));
        assert_eq!(
            b.data(),
            &json!({"avg": 1.5, "count": 2, "panel": "P-9", "windowStart": 10_000, "windowEnd": 20_000})
        );
        Ok(())
    }

    #[test]
    fn every_aggregate() -> Result<()> {
        let mut d = driver(json!({"key": "metadata.k", "value": "data.v",
            "window": {"type": "tumbling", "sizeMs": 10000},
            "aggregates": ["count", "sum", "avg", "min", "max", "first", "last", "stddev"],
            "resultType": "STATS", "resultOriginator": "DEVICE"}))
        .with_lateness(10_000);
        // By event time: 6 (t 1000), 9 (t 2000), 2 (t 2500), 3 (t 3000); sent out of order.
        for (ts, v) in [(1_000, 6.0), (3_000, 3.0), (2_000, 9.0), (2_500, 2.0)] {
            d.send(reading("K", ts, v))?;
        }
        let out = d.flush()?;
        let msg = out.single().unwrap().1.clone();
        assert_eq!((msg.msg_type(), msg.originator()), ("STATS", &Originator::device("K")));
        // sum 20, avg 5; deviations 1, 4, -3, -2 → squares 1 + 16 + 9 + 4 = 30 → variance 7.5.
        let stddev = msg.data()["stddev"].as_f64().unwrap();
        assert!((stddev - 2.7386127875258306).abs() < 1e-12, "{stddev}");
        let mut data = msg.data().clone();
        data.as_object_mut().unwrap().remove("stddev");
        assert_eq!(
            data,
            json!({"count": 4, "sum": 20.0, "avg": 5.0, "min": 2.0, "max": 9.0, "first": 6.0, "last": 3.0,
                "windowStart": 0, "windowEnd": 10_000})
        );
        Ok(())
    }

    #[test]
    fn default_aggregates_and_key_from_data() -> Result<()> {
        let mut d = driver(json!({"key": "data.zone", "value": "metadata.speed",
            "window": {"type": "tumbling", "sizeMs": 1000}}));
        // A numeric key is rendered as text; the value comes from metadata, as a string.
        d.send(Msg::telemetry("d", json!({"zone": 7})).with_meta("speed", "2.5").with_ts(100))?;
        d.send(Msg::telemetry("d", json!({"zone": 7})).with_meta("speed", "4").with_ts(200))?;
        let out = d.flush()?;
        let msg = out.single().unwrap().1.clone();
        assert_eq!(msg.originator(), &Originator::asset("7"));
        assert_eq!(msg.msg_type(), "WINDOW_AGGREGATE");
        assert_eq!(msg.data(), &json!({"count": 2, "sum": 6.5, "avg": 3.25, "windowStart": 0, "windowEnd": 1000}));
        Ok(())
    }

    #[test]
    fn hopping_windows() -> Result<()> {
        let mut d = driver(json!({"key": "metadata.k", "value": "data.v", "aggregates": ["count", "sum"],
            "window": {"type": "hopping", "sizeMs": 10000, "advanceMs": 5000}}))
        .with_lateness(100_000);
        // 7 000 is in [0, 10 000) and [5 000, 15 000); 12 000 in [5 000, 15 000) and [10 000, 20 000).
        d.send(reading("K", 7_000, 1.0))?;
        d.send(reading("K", 12_000, 3.0))?;
        let out = d.flush()?;
        let got: Vec<&Value> = out.messages().iter().map(|m| m.data()).collect();
        assert_eq!(
            got,
            [
                &json!({"count": 1, "sum": 1.0, "windowStart": 0, "windowEnd": 10_000}),
                &json!({"count": 2, "sum": 4.0, "windowStart": 5_000, "windowEnd": 15_000}),
                &json!({"count": 1, "sum": 3.0, "windowStart": 10_000, "windowEnd": 20_000}),
            ]
        );
        Ok(())
    }

    #[test]
    fn session_windows() -> Result<()> {
        let mut d = driver(json!({"key": "metadata.k", "value": "data.v", "aggregates": ["count", "max"],
            "window": {"type": "session", "gapMs": 5000}, "graceMs": 1000}));
        // 0 → [0, 5 000); 3 000 extends it to [0, 8 000); 20 000 starts [20 000, 25 000), and its
        // watermark (20 000 ≥ 8 000 + 1 000) closes the first session.
        assert!(d.send(reading("K", 0, 4.0))?.outputs.is_empty());
        assert!(d.send(reading("K", 3_000, 7.0))?.outputs.is_empty());
        let first = d.send(reading("K", 20_000, 1.0))?;
        assert_eq!(first.messages()[0].data(), &json!({"count": 2, "max": 7.0, "windowStart": 0, "windowEnd": 8_000}));
        assert_eq!(first.messages()[0].meta("windowEnd"), Some("8000"));
        let last = d.flush()?;
        assert_eq!(
            last.messages()[0].data(),
            &json!({"count": 1, "max": 1.0, "windowStart": 20_000, "windowEnd": 25_000})
        );
        Ok(())
    }

    #[test]
    fn late_events_go_to_late_or_nowhere() -> Result<()> {
        let base = json!({"key": "metadata.k", "value": "data.v", "window": {"type": "tumbling", "sizeMs": 10000}});
        let late_msg = reading("K", 5_000, 1.0).with_id("late-one");
        // Default: `Late`, the message unchanged.
        let mut d = driver(base.clone());
        d.send(reading("K", 20_000, 1.0))?; // watermark 20 000: [0, 10 000) is closed
        let out = d.send(late_msg.clone())?;
        assert_eq!(out.relations(), ["Late"]);
        assert_eq!(out.messages(), [&late_msg]);
        // A relation of one's own.
        let mut named = base.clone();
        named["late"] = json!("Too late");
        let mut d = driver(named);
        d.send(reading("K", 20_000, 1.0))?;
        assert_eq!(d.send(late_msg.clone())?.relations(), ["Too late"]);
        // `null`: dropped.
        let mut dropped = base;
        dropped["late"] = Value::Null;
        let mut d = driver(dropped);
        d.send(reading("K", 20_000, 1.0))?;
        assert!(d.send(late_msg)?.outputs.is_empty());
        // The late event is in no result: only the 20 000 window, with its one event.
        assert_eq!(d.flush()?.messages()[0].data()["count"], json!(1));
        Ok(())
    }

    #[test]
    fn without_a_value_each_event_counts_one() -> Result<()> {
        let mut d = driver(json!({"key": "metadata.k", "aggregates": ["count", "sum"],
                                  "window": {"type": "tumbling", "sizeMs": 10}}));
        for ts in [1, 2, 5] {
            d.send(Msg::telemetry("d", json!({})).with_meta("k", "a").with_ts(ts))?;
        }
        let out = d.flush()?;
        assert_eq!(out.messages()[0].data()["count"], json!(3));
        assert_eq!(out.messages()[0].data()["sum"], json!(3.0));
        Ok(())
    }

    #[test]
    fn missing_key_or_value_fails() -> Result<()> {
        let mut d = TestDriver::node_from_json::<WindowAggregate>(WIND_ZONES).unwrap();
        let no_zone = Msg::telemetry("WS", json!({"windSpeed": 1}));
        let out = d.send(no_zone)?;
        assert_eq!(out.relations(), ["Failure"]);
        assert_eq!(out.messages()[0].meta("error"), Some("no key: the message has no `cs_geoZone`"));
        for bad in [json!("fast"), json!("NaN"), Value::Null, json!({"v": 1})] {
            let out = d.send(station("A", 1, bad.clone()))?;
            assert_eq!(out.relations(), ["Failure"], "{bad}");
            assert_eq!(out.messages()[0].meta("error"), Some("no numeric `windSpeed` in the message"));
        }
        let out = d.send(Msg::telemetry("WS", json!({"panel": 1})).with_meta("cs_geoZone", "A"))?;
        assert_eq!(out.relations(), ["Failure"]);
        assert!(d.flush()?.outputs.is_empty(), "nothing was added");
        Ok(())
    }

    #[test]
    fn keeps_fields_of_the_first_message_per_key() -> Result<()> {
        let mut d = driver(json!({"key": "originator", "value": "data.power", "aggregates": ["sum"],
            "window": {"type": "tumbling", "sizeMs": 10000}, "keep": ["data.panel", "metadata.site"]}));
        let power = |module: &str, ts: i64, p: f64, panel: &str| {
            Msg::telemetry(module, json!({"power": p, "panel": panel})).with_meta("site", "North").with_ts(ts)
        };
        d.send(power("M1", 1_000, 3.0, "P1"))?;
        d.send(power("M2", 2_000, 5.0, "P2"))?;
        d.send(power("M1", 3_000, 4.0, "P7"))?; // a later panel does not replace the first
        let out = d.send(power("M1", 15_000, 1.0, "P8"))?; // closes [0, 10 000)
        let got: Vec<(&str, &Value)> =
            out.messages().iter().map(|m| (m.originator().name.as_str(), m.data())).collect();
        assert_eq!(
            got,
            [
                ("M1", &json!({"sum": 7.0, "panel": "P1", "site": "North", "windowStart": 0, "windowEnd": 10_000})),
                ("M2", &json!({"sum": 5.0, "panel": "P2", "site": "North", "windowStart": 0, "windowEnd": 10_000})),
            ]
        );
        assert_eq!(d.flush()?.messages()[0].data()["panel"], json!("P1"), "kept for later windows too");
        Ok(())
    }

    #[test]
    fn bad_configs_name_the_field() {
        let parse = |text: &str| TestDriver::node_from_json::<WindowAggregate>(text).err().unwrap();
        let base = r#""key": "metadata.zone", "value": "data.v", "window": {"type": "tumbling", "sizeMs": 10}"#;
        let err = parse(&format!(r#"{{{base}, "aggregates": ["avg", "median"]}}"#));
        assert_eq!(err.field, "aggregates[1]");
        assert!(err.message.contains("median"), "{err}");
        let err = parse(r#"{"key": "zone", "value": "data.v", "window": {"type": "tumbling", "sizeMs": 10}}"#);
        assert_eq!(err.field, "key");
        let err = parse(r#"{"key": "originator", "value": 3, "window": {"type": "tumbling", "sizeMs": 10}}"#);
        assert_eq!(err.field, "value");
        let err = parse(r#"{"key": "originator", "value": "data.v", "window": {"type": "weekly"}}"#);
        assert_eq!(err.field, "window.type");
        let err = parse(&format!(r#"{{{base}, "gracems": 5}}"#));
        assert_eq!(err.field, "gracems");
        let err = parse(&format!(r#"{{{base}, "keep": ["data.a", "panel"]}}"#));
        assert_eq!(err.field, "keep[1]");
        // Refused by `init`: the whole config, with the reason.
        let err = parse(r#"{"key": "originator", "value": "data.v", "window": {"type": "tumbling", "sizeMs": 0}}"#);
        assert!(err.message.contains("at least 1 ms"), "{err}");
        let err = parse(r#"{"key": "originator", "value": "originator", "window": {"type": "session", "gapMs": 5}}"#);
        assert!(err.message.contains("`value` and `keep`"), "{err}");
    }
}

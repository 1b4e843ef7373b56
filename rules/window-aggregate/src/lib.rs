//! Window aggregator: a number per key over event-time windows, with the host's aggregates.
//!
//! Each message adds `value` under `key` to its window(s); nothing is emitted then. When the
//! watermark closes a window (its end plus `graceMs`), one result goes out on `Success`: from an
//! entity named after the key (an asset by default — the geo zone, the module), `ts` = window
//! start, data = the requested aggregates plus `windowStart`/`windowEnd` (and any `keep` fields).
//! An event whose windows have all closed is late: forwarded on `late` (default `Late`), or
//! dropped when `late` is null — counted by the engine either way.
//!
//! Config:
//! ```json
//! {"key": "metadata.cs_geoZone", "value": "data.windSpeed",
//!  "window": {"type": "tumbling", "sizeMs": 10000}, "graceMs": 2000,
//!  "aggregates": ["avg", "count"], "late": "Late", "resultType": "WINDOW_AGGREGATE",
//!  "resultOriginator": "ASSET", "keep": ["data.panel"]}
//! ```
//! `window` is `{"type": "tumbling", "sizeMs"}`, `{"type": "hopping", "sizeMs", "advanceMs"}` or
//! `{"type": "session", "gapMs"}`; `aggregates` any of count, sum, avg, min, max, first, last,
//! stddev (default count, sum, avg).
use sluice_sdk::prelude::*;
use sluice_sdk::serde_json::{Map, Number};
use sluice_sdk::windows::WindowKind;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub key: FieldPath,
    pub value: FieldPath,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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

pub struct WindowAggregate {
    config: Config,
    window: Window,
}

#[node]
impl Node for WindowAggregate {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        let builder = match config.window {
            WindowKind::Tumbling { size_ms } => Window::tumbling("aggregate", size_ms),
            WindowKind::Hopping { size_ms, advance_ms } => Window::hopping("aggregate", size_ms, advance_ms),
            WindowKind::Session { gap_ms } => Window::session("aggregate", gap_ms),
        };
        let window = builder.grace_ms(config.grace_ms).define()?;
        Ok(WindowAggregate { config, window })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        let cfg = &self.config;
        let Some(key) = cfg.key.text(&msg) else { bail!("no key: the message has no `{}`", cfg.key.name()) };
        let Some(value) = cfg.value.number(&msg) else { bail!("no numeric `{}` in the message", cfg.value.name()) };
        if !cfg.keep.is_empty() && state::get(format!("keep/{key}").as_bytes()).is_none() {
            let kept: Map<String, Value> =
                cfg.keep.iter().filter_map(|f| Some((f.name().to_string(), f.value(&msg)?))).collect();
            state::put_json(&format!("keep/{key}"), &kept)?;
        }
        match self.window.add(&key, msg.ts, value)? {
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
        if let Some(Value::Object(kept)) = state::get_json::<Value>(&format!("keep/{}", closed.key))? {
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

fn number(v: Option<f64>) -> Option<Value> {
    v.and_then(Number::from_f64).map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn config(late: Option<&str>) -> Config {
        Config {
            key: FieldPath::parse("metadata.zone").unwrap(),
            value: FieldPath::parse("data.speed").unwrap(),
            window: WindowKind::Tumbling { size_ms: 10_000 },
            grace_ms: 2_000,
            aggregates: vec![Aggregate::Avg, Aggregate::Count, Aggregate::Max],
            late: late.map(str::to_string),
            result_type: "ZONE".into(),
            result_originator: "ASSET".into(),
            keep: vec![],
        }
    }

    fn reading(zone: &str, ts: i64, speed: &str) -> Msg {
        Msg::telemetry("ws", json!({ "speed": speed })).with_meta("zone", zone).with_ts(ts).with_id(format!("r{ts}"))
    }

    #[test]
    fn averages_per_key_and_window() -> Result<()> {
        let mut d = TestDriver::node::<WindowAggregate>(config(Some("Late")))?.named("avg");
        assert!(d.send(reading("A", 1_000, "10"))?.outputs.is_empty());
        assert!(d.send(reading("B", 2_000, "4"))?.outputs.is_empty());
        assert!(d.send(reading("A", 9_000, "20"))?.outputs.is_empty());
        // Watermark 12 000 = 10 000 + grace: both windows [0, 10 000) close.
        let out = d.send(reading("A", 12_000, "1"))?;
        assert_eq!(out.relations(), ["Success", "Success"]);
        let a = &out.messages()[0];
        assert_eq!(a.originator, Originator::asset("A"));
        assert_eq!(a.data, json!({"avg": 15.0, "count": 2, "max": 20.0, "windowStart": 0, "windowEnd": 10_000}));
        assert_eq!(a.id, "avg/aggregate/A/0:0");
        assert_eq!(out.messages()[1].data["avg"], json!(4.0));
        let flushed = d.flush()?;
        assert_eq!(flushed.messages()[0].data["count"], json!(1));
        Ok(())
    }

    #[test]
    fn late_events_go_to_late_or_nowhere() -> Result<()> {
        let mut d = TestDriver::node::<WindowAggregate>(config(Some("Late")))?;
        d.send(reading("A", 20_000, "1"))?; // watermark 20 000
        let late = d.send(reading("A", 5_000, "1"))?;
        assert_eq!(late.relations(), ["Late"]);
        assert_eq!(late.messages()[0].id, "r5000");
        let mut drop = TestDriver::node::<WindowAggregate>(config(None))?;
        drop.send(reading("A", 20_000, "1"))?;
        assert!(drop.send(reading("A", 5_000, "1"))?.outputs.is_empty());
        Ok(())
    }

    #[test]
    fn missing_values_fail() -> Result<()> {
        let mut d = TestDriver::node::<WindowAggregate>(config(None))?;
        assert_eq!(d.send(Msg::telemetry("ws", json!({"speed": 1})))?.relations(), ["Failure"]);
        assert_eq!(d.send(reading("A", 1, "fast"))?.relations(), ["Failure"]);
        Ok(())
    }

    #[test]
    fn keeps_fields_of_the_first_message() -> Result<()> {
        let mut cfg = config(None);
        cfg.key = FieldPath::parse("originator").unwrap();
        cfg.value = FieldPath::parse("data.power").unwrap();
        cfg.keep = vec![FieldPath::parse("data.panel").unwrap()];
        let mut d = TestDriver::node::<WindowAggregate>(cfg)?;
        d.send(Msg::telemetry("M1", json!({"power": 3, "panel": "P1"})).with_ts(1))?;
        let out = d.flush()?;
        assert_eq!(out.messages()[0].data["panel"], json!("P1"));
        assert_eq!(out.messages()[0].originator.name, "M1");
        Ok(())
    }

    #[test]
    fn bad_configs_name_the_field() {
        let base = r#""key": "metadata.zone", "value": "data.v", "window": {"type": "tumbling", "sizeMs": 10}"#;
        let err = TestDriver::node_from_json::<WindowAggregate>(&format!(r#"{{{base}, "aggregates": ["median"]}}"#))
            .err()
            .unwrap();
        assert_eq!(err.field, "aggregates[0]");
        let err = TestDriver::node_from_json::<WindowAggregate>(
            r#"{"key": "zone", "value": "data.v", "window": {"type": "tumbling", "sizeMs": 10}}"#,
        )
        .err()
        .unwrap();
        assert_eq!(err.field, "key");
        let err = TestDriver::node_from_json::<WindowAggregate>(
            r#"{"key": "originator", "value": "data.v", "window": {"type": "tumbling", "sizeMs": 0}}"#,
        )
        .err()
        .unwrap();
        assert!(err.message.contains("at least 1 ms"), "{err}");
    }
}

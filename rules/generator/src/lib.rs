//! Generator (ThingsBoard's `TbMsgGeneratorNode`, from config instead of a script): every
//! `periodMs` of processing time, one message on `Success`, up to `count` messages.
//!
//! It starts by itself: `init` arms the first timer (one period after the node first starts, as
//! in ThingsBoard) unless its state says it is already running — the engine starts every node
//! once before a run, and again whenever it needs a fresh instance, and the host keeps the timer
//! and the counter (node state) across crashes and restarts. Each firing emits every message
//! that has come due since (at most 100 per firing, the rest on the next tick), so the rate holds
//! even for a `periodMs` shorter than the engine's tick, and a run that fell behind catches up.
//! With a finite `count` the timer stops after the last message, so a finite `sluice run` ends;
//! with `count` 0 it never stops.
//!
//! Message `i` (from 0): type `msgType`, originator `originator`, metadata `metadata`, data from
//! `data`, ts `tsStartMs + i * tsStepMs` — or, without `tsStartMs`, the processing time it was
//! due (the host clock) — and id `<node>/generator:<i>`, the same on every run. Messages sent to
//! the node go to `Failure`: a generator takes no input.
//!
//! Config:
//! ```json
//! {"periodMs": 5000, "count": 3,
//!  "originator": {"entityType": "DEVICE", "name": "Module 1"},
//!  "msgType": "POST_TELEMETRY_REQUEST", "metadata": {"deviceType": "solar"},
//!  "data": {"name": "Module 1", "panel": "Panel 1", "power": {"sequence": [30, 31, 29]},
//!           "energy": {"linear": {"start": 0, "step": 1.5}}},
//!  "tsStartMs": 1700000000000, "tsStepMs": 5000}
//! ```
//! - `periodMs` (default 1000, ≥ 1): time between messages.
//! - `count` (default 0 = unlimited): how many messages in all.
//! - `originator` (required): `{"entityType", "name", "id"?}`.
//! - `msgType` (default `"POST_TELEMETRY_REQUEST"`), `metadata` (default `{}`, string values).
//! - `data` (default `{}`): each value is a constant, or a generator: `{"sequence": [..]}` (item
//!   `i mod len`, any JSON), `{"linear": {"start", "step"}}` (`start + i * step`; an integer
//!   while both are integers), or `{"constant": <any>}` (that value as is, for a literal object
//!   that would otherwise read as a generator).
//! - `tsStartMs` (default none: the host clock), `tsStepMs` (default `periodMs`; only with
//!   `tsStartMs`): deterministic event time, independent of when the timers actually fired.
//!
//! Relations: `Success` (generated messages), `Failure` (input sent to the node).
use sluice_sdk::prelude::*;
use sluice_sdk::serde_json::{Map, Number};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default = "default_period")]
    pub period_ms: u64,
    #[serde(default)]
    pub count: u64,
    pub originator: Originator,
    #[serde(default = "default_type")]
    pub msg_type: String,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub data: Map<String, Value>,
    #[serde(default)]
    pub ts_start_ms: Option<i64>,
    #[serde(default)]
    pub ts_step_ms: Option<i64>,
}

fn default_period() -> u64 {
    1000
}
fn default_type() -> String {
    sluice_sdk::msg_type::POST_TELEMETRY_REQUEST.into()
}

/// One value of `data`.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Constant(Value),
    Sequence(Vec<Value>),
    Linear { start: Number, step: Number },
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Linear {
    start: Number,
    step: Number,
}

impl Field {
    /// Reads a `data` value: an object with the single key `sequence`, `linear` or `constant` is
    /// a generator, anything else a constant.
    fn parse(name: &str, value: &Value) -> Result<Field> {
        let Some((kind, spec)) = value.as_object().filter(|o| o.len() == 1).and_then(|o| o.iter().next()) else {
            return Ok(Field::Constant(value.clone()));
        };
        match kind.as_str() {
            "sequence" => match spec {
                Value::Array(items) if !items.is_empty() => Ok(Field::Sequence(items.clone())),
                _ => bail_config!(format!("data.{name}.sequence"), "must be a non-empty array"),
            },
            "linear" => match serde_json::from_value::<Linear>(spec.clone()) {
                Ok(Linear { start, step }) => Ok(Field::Linear { start, step }),
                Err(err) => bail!(
                    "config field `data.{name}.linear`: {err} (expected {{\"start\": <number>, \"step\": <number>}})"
                ),
            },
            "constant" => Ok(Field::Constant(spec.clone())),
            _ => Ok(Field::Constant(value.clone())),
        }
    }

    fn value(&self, i: u64) -> Option<Value> {
        match self {
            Field::Constant(v) => Some(v.clone()),
            Field::Sequence(items) => items.get((i % items.len() as u64) as usize).cloned(),
            Field::Linear { start, step } => {
                if let (Some(start), Some(step), Ok(i)) = (start.as_i64(), step.as_i64(), i64::try_from(i))
                    && let Some(v) = step.checked_mul(i).and_then(|d| d.checked_add(start))
                {
                    return Some(Value::from(v));
                }
                let v = start.as_f64()? + i as f64 * step.as_f64()?;
                Number::from_f64(v).map(Value::Number)
            }
        }
    }
}

/// The node's state: the index of the next message, and when its timer is due (`None` once
/// `count` messages went out).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    next: u64,
    due: Option<i64>,
}

const STATE: &str = "generator";
const TIMER: &str = "generate";
/// Most messages one firing emits (a run far behind catches up over several ticks).
const MAX_BATCH: usize = 100;

pub struct Generator {
    period_ms: i64,
    count: u64,
    originator: Originator,
    msg_type: String,
    metadata: Metadata,
    data: Vec<(String, Field)>,
    /// `tsStartMs` and `tsStepMs`.
    ts: Option<(i64, i64)>,
}

/// Generates messages on a timer (ThingsBoard's generator).
#[node(relations = ["Success"])]
impl Node for Generator {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        let period_ms = match i64::try_from(config.period_ms) {
            Ok(0) => bail_config!("periodMs", "must be at least 1 ms"),
            Ok(p) => p,
            Err(_) => bail_config!("periodMs", "too large"),
        };
        if config.msg_type.is_empty() {
            bail_config!("msgType", "must not be empty");
        }
        if config.originator.entity_type.is_empty() || config.originator.name.is_empty() {
            bail_config!("originator", "`entityType` and `name` must not be empty");
        }
        let ts = match (config.ts_start_ms, config.ts_step_ms) {
            (Some(start), step) => Some((start, step.unwrap_or(period_ms))),
            (None, Some(_)) => bail_config!("tsStepMs", "needs `tsStartMs`"),
            (None, None) => None,
        };
        let data = config.data.iter().map(|(k, v)| Ok((k.clone(), Field::parse(k, v)?))).collect::<Result<_>>()?;
        let node = Generator {
            period_ms,
            count: config.count,
            originator: config.originator,
            msg_type: config.msg_type,
            metadata: config.metadata,
            data,
            ts,
        };
        node.start()?;
        Ok(node)
    }

    fn on_msg(&mut self, _msg: Msg, _out: &mut Outputs) -> Result<()> {
        bail!("a generator takes no input: connect nothing to it")
    }

    fn on_timer(&mut self, timer: Timer, out: &mut Outputs) -> Result<()> {
        if timer.key != TIMER {
            return Ok(());
        }
        let mut progress: Progress = state::get_json(STATE)?.unwrap_or_default();
        // The timer id is `<node>/timer/<key>/<at>`: the node's id prefixes the message ids.
        let node = timer.id.rfind("/timer/").map_or(timer.id.as_str(), |at| &timer.id[..at]);
        let mut due = timer.at;
        let mut emitted = 0;
        while due <= timer.now && emitted < MAX_BATCH && !self.finished(progress.next) {
            out.emit(relation::SUCCESS, self.message(node, progress.next, due)?);
            progress.next += 1;
            due = due.saturating_add(self.period_ms);
            emitted += 1;
        }
        progress.due = (!self.finished(progress.next)).then_some(due);
        if let Some(due) = progress.due {
            timer::set(TIMER, due);
        }
        state::put_json(STATE, &progress)?;
        Ok(())
    }
}

impl Generator {
    /// Arms the first timer, unless the state shows the generator already running (its timer is
    /// kept by the host) or done. A config whose `count` grew past a finished run starts again.
    fn start(&self) -> Result<()> {
        let progress: Option<Progress> = state::get_json(STATE)?;
        let next = match progress {
            Some(Progress { due: Some(_), .. }) => return Ok(()),
            Some(Progress { next, due: None }) => next,
            None => 0,
        };
        if self.finished(next) {
            return Ok(());
        }
        let due = clock::now_ms().saturating_add(self.period_ms);
        state::put_json(STATE, &Progress { next, due: Some(due) })?;
        timer::set(TIMER, due);
        Ok(())
    }

    fn finished(&self, next: u64) -> bool {
        self.count != 0 && next >= self.count
    }

    /// Message `i`, due at `due` (processing time).
    fn message(&self, node: &str, i: u64, due: i64) -> Result<Msg> {
        let mut data = Map::new();
        for (name, field) in &self.data {
            let Some(v) = field.value(i) else { bail!("`data.{name}` has no finite value for message {i}") };
            data.insert(name.clone(), v);
        }
        let ts = match self.ts {
            Some((start, step)) => (i as i64).saturating_mul(step).saturating_add(start),
            None => due,
        };
        let mut msg = Msg::new(&self.msg_type, self.originator.clone(), Value::Object(data))
            .with_ts(ts)
            .with_id(sluice_sdk::derived_id(&format!("{node}/generator"), i as usize));
        msg.set_metadata(self.metadata.clone());
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    const MODULE_1: &str = r#"{"periodMs": 5000, "count": 3,
        "originator": {"entityType": "DEVICE", "name": "Module 1"},
        "msgType": "POST_TELEMETRY_REQUEST", "metadata": {"deviceType": "solar"},
        "data": {"name": "Module 1", "panel": "Panel 1", "power": {"sequence": [30, 31, 29]},
                 "energy": {"linear": {"start": 0, "step": 1.5}}},
        "tsStartMs": 1700000000000, "tsStepMs": 5000}"#;

    /// A started generator, and the host time `init` read (the system clock: `init` runs before
    /// a driver's clock can be set), recovered from the armed timer.
    fn started(config: &Value) -> (TestDriver, i64) {
        let d = TestDriver::node_from_json::<Generator>(&config.to_string()).unwrap();
        let progress: Progress = serde_json::from_slice(&d.state()[STATE.as_bytes()]).unwrap();
        let period = config["periodMs"].as_i64().unwrap();
        (d, progress.due.unwrap() - period)
    }

    fn datas(out: &sluice_sdk::testing::Outcome) -> Vec<Value> {
        out.messages().iter().map(|m| m.data().clone()).collect()
    }

    fn base() -> Value {
        json!({"periodMs": 1000, "originator": {"entityType": "DEVICE", "name": "G"}, "data": {"i": {"linear": {"start": 0, "step": 1}}}})
    }

    /// The config of the module docs: exactly `count` messages, one per period once the clock
    /// passes each due time, with the expected ts and values.
    #[test]
    fn emits_count_messages_as_the_clock_advances() -> Result<()> {
        let (d, start) = started(&serde_json::from_str(MODULE_1)?);
        let mut d = d.named("module-1");
        let first_due = start + 5_000;
        assert!(d.advance_to(first_due - 1)?.outputs.is_empty());
        let out = d.advance_to(first_due)?;
        let expected = Msg::new(
            "POST_TELEMETRY_REQUEST",
            Originator::device("Module 1"),
            json!({"name": "Module 1", "panel": "Panel 1", "power": 30, "energy": 0.0}),
        )
        .with_id("module-1/generator:0")
        .with_ts(1_700_000_000_000)
        .with_meta("deviceType", "solar");
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(out.messages(), [&expected]);
        let out = d.advance_to(first_due + 5_000)?;
        assert_eq!(out.messages()[0].id(), "module-1/generator:1");
        assert_eq!(out.messages()[0].ts(), 1_700_000_005_000);
        assert_eq!(datas(&out), [json!({"name": "Module 1", "panel": "Panel 1", "power": 31, "energy": 1.5})]);
        let out = d.advance_to(first_due + 10_000)?;
        assert_eq!(out.messages()[0].ts(), 1_700_000_010_000);
        assert_eq!(datas(&out), [json!({"name": "Module 1", "panel": "Panel 1", "power": 29, "energy": 3.0})]);
        assert!(d.advance_to(first_due + 1_000_000)?.outputs.is_empty(), "count reached: no timer left");
        Ok(())
    }

    #[test]
    fn starts_one_period_after_init_and_catches_up() -> Result<()> {
        // A sequence cycles by message index; one firing emits everything due since.
        let mut config = base();
        config["data"] = json!({"v": {"sequence": ["a", 2, null]}});
        config["count"] = json!(5);
        let (mut d, start) = started(&config);
        // Due at start + 1000, + 2000, …: at start + 3500, three are due.
        let out = d.advance_to(start + 3_500)?;
        assert_eq!(datas(&out), [json!({"v": "a"}), json!({"v": 2}), json!({"v": null})]);
        // Without tsStartMs, ts is the processing time each was due.
        let ts: Vec<i64> = out.messages().iter().map(|m| m.ts()).collect();
        assert_eq!(ts, [start + 1_000, start + 2_000, start + 3_000]);
        assert!(d.advance_to(start + 3_999)?.outputs.is_empty());
        let out = d.advance_to(start + 10_000)?;
        assert_eq!(datas(&out), [json!({"v": "a"}), json!({"v": 2})], "only 5 in all");
        let ids: Vec<&str> = out.messages().iter().map(|m| m.id()).collect();
        assert_eq!(ids, ["node/generator:3", "node/generator:4"]);
        assert!(d.advance_to(start + 20_000)?.outputs.is_empty());
        Ok(())
    }

    #[test]
    fn unlimited_count_keeps_going() -> Result<()> {
        let (mut d, start) = started(&base());
        let mut all = Vec::new();
        for k in 1..=250 {
            all.extend(datas(&d.advance_to(start + k * 1000)?));
        }
        assert_eq!(all.len(), 250);
        assert_eq!(all[249], json!({"i": 249}));
        // A long gap: at most 100 per firing, the rest on the next ones.
        assert_eq!(d.advance_to(start + 500_000)?.outputs.len(), 100);
        assert_eq!(d.advance_to(start + 500_000)?.outputs.len(), 100);
        Ok(())
    }

    #[test]
    fn constants_linear_floats_and_literal_objects() -> Result<()> {
        let config = json!({"periodMs": 10, "count": 2, "originator": {"entityType": "ASSET", "name": "Plant"},
            "msgType": "READING", "tsStartMs": 100,
            "data": {"k": "v", "n": 7, "obj": {"a": 1, "b": 2}, "lit": {"constant": {"sequence": [1]}},
                     "f": {"linear": {"start": 0.5, "step": -0.25}}, "big": {"linear": {"start": 1e3, "step": 2}}}});
        let mut d = TestDriver::node_from_json::<Generator>(&config.to_string()).unwrap();
        let out = d.advance_to(i64::MAX / 2)?;
        assert_eq!(out.outputs.len(), 2);
        let m = out.messages()[1];
        assert_eq!((m.msg_type(), m.originator(), m.ts()), ("READING", &Originator::asset("Plant"), 110));
        assert_eq!(m.metadata(), &Metadata::new());
        assert_eq!(
            m.data(),
            &json!({"k": "v", "n": 7, "obj": {"a": 1, "b": 2}, "lit": {"sequence": [1]}, "f": 0.25, "big": 1002.0})
        );
        Ok(())
    }

    #[test]
    fn input_goes_to_failure() -> Result<()> {
        let (mut d, _) = started(&base());
        let out = d.send(Msg::telemetry("X", json!({"v": "33"})))?;
        assert_eq!(out.relations(), ["Failure"]);
        assert_eq!(out.messages()[0].meta("error"), Some("a generator takes no input: connect nothing to it"));
        Ok(())
    }

    #[test]
    fn bad_configs_name_the_field() {
        let parse = |config: Value| TestDriver::node_from_json::<Generator>(&config.to_string()).err().unwrap();
        let with = |key: &str, value: Value| {
            let mut c = base();
            c[key] = value;
            c
        };
        assert_eq!(parse(json!({"periodMs": 10})).field, "originator");
        assert_eq!(parse(with("originator", json!({"name": "G"}))).field, "originator.entityType");
        assert_eq!(parse(with("periodMs", json!("5s"))).field, "periodMs");
        assert_eq!(parse(with("count", json!(-1))).field, "count");
        assert_eq!(parse(with("metadata", json!({"a": 1}))).field, "metadata.a");
        assert_eq!(parse(with("data", json!([1, 2]))).field, "data");
        assert_eq!(parse(with("msgCount", json!(3))).field, "msgCount");
        for (config, field) in [
            (with("periodMs", json!(0)), "`periodMs`"),
            (with("msgType", json!("")), "`msgType`"),
            (with("originator", json!({"entityType": "DEVICE", "name": ""})), "`originator`"),
            (with("tsStepMs", json!(10)), "`tsStepMs`"),
            (with("data", json!({"power": {"sequence": []}})), "`data.power.sequence`"),
            (with("data", json!({"power": {"sequence": 3}})), "`data.power.sequence`"),
            (with("data", json!({"e": {"linear": {"start": "0", "step": 1}}})), "`data.e.linear`"),
            (with("data", json!({"e": {"linear": {"start": 0}}})), "`data.e.linear`"),
        ] {
            let err = parse(config.clone());
            assert!(err.message.starts_with(&format!("config field {field}")), "{config}: {}", err.message);
        }
    }
}

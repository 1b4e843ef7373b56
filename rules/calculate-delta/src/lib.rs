//! Calculate delta (ThingsBoard's `CalculateDeltaNode`): the difference between a reading and
//! the previous reading of the same originator, added to the message data.
//!
//! As `CalculateDeltaNode.onMsg` does:
//! - a message that is not `POST_TELEMETRY_REQUEST`, or whose data has no `inputValueKey` (a JSON
//!   object without the key, or data that is no object), goes on `Other`, unchanged;
//! - otherwise the current value is Jackson's `asDouble` of the key (a number; a numeric string;
//!   `true` = 1; anything else, `null` included, 0) and its time the metadata `ts` when it is a
//!   number, else the message's `ts` (`getMetaDataTs`). The value and time become the
//!   originator's previous reading *before* the checks below;
//! - `delta` = current − previous (0 for the first reading). With `tellFailureIfDeltaIsNegative`
//!   a negative delta sends the message, unchanged, to `Failure`;
//! - with `round`, the delta is rounded half-up to that many decimals (from its shortest decimal
//!   text, as `BigDecimal.valueOf(d).setScale(round, HALF_UP)`); it is written to
//!   `outputValueKey` as an integer when it has no fractional part (`stripTrailingZeros().scale()
//!   <= 0` → `longValueExact`), else as a double;
//! - with `addPeriodBetweenMsgs`, `periodValueKey` gets current time − previous time in ms (0 for
//!   the first reading);
//! - the message with the new data goes on `Success`.
//!
//! The previous reading lives in the host's keyed state (per originator type and name), so it
//! survives restarts and reloads, as ThingsBoard's value does in its time-series database.
//! `useCache` is accepted for compatibility: in ThingsBoard it chooses between an in-memory cache
//! and the database's latest value of the key; here both are the node's own state, which is the
//! same as long as the chain saves every reading it sees — a chain that computes deltas over
//! readings it then drops differs from ThingsBoard without the cache.
//!
//! Config (ThingsBoard's `CalculateDeltaNodeConfiguration`):
//! ```json
//! {"inputValueKey": "pulseCounter", "outputValueKey": "delta", "useCache": true,
//!  "addPeriodBetweenMsgs": false, "periodValueKey": "periodInMs", "round": null,
//!  "tellFailureIfDeltaIsNegative": true}
//! ```
use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default = "default_input")]
    pub input_value_key: String,
    #[serde(default = "default_output")]
    pub output_value_key: String,
    #[serde(default = "yes")]
    pub use_cache: bool,
    #[serde(default)]
    pub add_period_between_msgs: bool,
    #[serde(default = "default_period")]
    pub period_value_key: String,
    #[serde(default)]
    pub round: Option<u32>,
    #[serde(default = "yes")]
    pub tell_failure_if_delta_is_negative: bool,
}

fn default_input() -> String {
    "pulseCounter".into()
}
fn default_output() -> String {
    "delta".into()
}
fn default_period() -> String {
    "periodInMs".into()
}
fn yes() -> bool {
    true
}

/// The previous reading of an originator.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Previous {
    ts: i64,
    value: f64,
}

/// Jackson's `JsonNode.asDouble()`.
fn as_double(value: &Value) -> f64 {
    match value {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) => s.trim().parse::<f64>().unwrap_or(0.0),
        Value::Bool(b) => f64::from(u8::from(*b)),
        _ => 0.0,
    }
}

/// [`sluice_sdk::java::round_half_up`] (`BigDecimal.valueOf(v).setScale(scale, HALF_UP)`); a
/// value that is not finite stays as it is.
pub fn round_half_up(v: f64, scale: u32) -> f64 {
    sluice_sdk::java::round_half_up(v, scale).unwrap_or(v)
}

pub struct CalculateDelta {
    config: Config,
}

/// Adds the difference from the originator's previous reading (ThingsBoard's calculate delta).
#[node(relations = ["Success", "Other"])]
impl Node for CalculateDelta {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        if config.input_value_key.is_empty() {
            bail_config!("inputValueKey", "must not be empty");
        }
        if config.output_value_key.is_empty() {
            bail_config!("outputValueKey", "must not be empty");
        }
        if config.add_period_between_msgs && config.period_value_key.is_empty() {
            bail_config!("periodValueKey", "must not be empty when addPeriodBetweenMsgs is set");
        }
        if config.round.is_some_and(|r| r > 15) {
            bail_config!("round", "at most 15 decimals");
        }
        Ok(CalculateDelta { config })
    }

    fn on_msg(&mut self, mut msg: Msg, out: &mut Outputs) -> Result<()> {
        let cfg = &self.config;
        if msg.msg_type() != sluice_sdk::msg_type::POST_TELEMETRY_REQUEST {
            out.forward("Other");
            return Ok(());
        }
        let current = match msg.data() {
            Value::Object(map) => match map.get(&cfg.input_value_key) {
                Some(v) => as_double(v),
                None => {
                    out.forward("Other");
                    return Ok(());
                }
            },
            _ => {
                out.forward("Other");
                return Ok(());
            }
        };
        let ts = msg.meta("ts").and_then(|t| t.trim().parse::<i64>().ok()).unwrap_or_else(|| msg.ts());
        let originator = msg.originator();
        let key = format!("{}/{}", originator.entity_type, originator.name);
        let previous: Option<Previous> = state::get_json(&key)?;
        state::put_json(&key, &Previous { ts, value: current })?;
        let delta = previous.map_or(0.0, |p| current - p.value);
        if cfg.tell_failure_if_delta_is_negative && delta < 0.0 {
            out.forward(relation::FAILURE);
            return Ok(());
        }
        let delta = match cfg.round {
            Some(r) => round_half_up(delta, r),
            None => delta,
        };
        let value = if delta.fract() != 0.0 || !delta.is_finite() {
            json!(delta)
        } else if delta.abs() < 9.2e18 {
            json!(delta as i64)
        } else {
            bail!("Overflow: delta {delta} does not fit a long");
        };
        msg.set_field(cfg.output_value_key.clone(), value);
        if cfg.add_period_between_msgs {
            msg.set_field(cfg.period_value_key.clone(), json!(previous.map_or(0, |p| ts - p.ts)));
        }
        out.emit(relation::SUCCESS, msg);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn node(cfg: Value) -> TestDriver {
        TestDriver::node_from_json::<CalculateDelta>(&cfg.to_string()).unwrap()
    }

    fn reading(device: &str, ts: i64, data: Value) -> Msg {
        Msg::telemetry(device, data).with_ts(ts)
    }

    #[test]
    fn deltas_per_originator_with_period() -> Result<()> {
        let mut d = node(json!({"inputValueKey": "c", "addPeriodBetweenMsgs": true}));
        let out = d.send(reading("A", 1000, json!({"c": 10})))?;
        assert_eq!(out.messages()[0].data(), &json!({"c": 10, "delta": 0, "periodInMs": 0}));
        let out = d.send(reading("B", 1500, json!({"c": 100})))?;
        assert_eq!(out.messages()[0].field("delta"), Some(&json!(0)));
        let out = d.send(reading("A", 4000, json!({"c": "12.5"})))?;
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(out.messages()[0].data(), &json!({"c": "12.5", "delta": 2.5, "periodInMs": 3000}));
        // The metadata `ts` wins over the message's (`getMetaDataTs`).
        let out = d.send(reading("A", 4000, json!({"c": 13})).with_meta("ts", "9000"))?;
        assert_eq!(out.messages()[0].field("periodInMs"), Some(&json!(5000)));
        Ok(())
    }

    #[test]
    fn other_and_negative() -> Result<()> {
        let mut d = node(json!({"inputValueKey": "c"}));
        assert_eq!(d.send(reading("A", 1, json!({"x": 1})))?.relations(), ["Other"]);
        assert_eq!(d.send(Msg::attributes("A", json!({"c": 1})))?.relations(), ["Other"]);
        assert_eq!(d.send(reading("A", 1, json!([1])))?.relations(), ["Other"]);
        d.send(reading("A", 1, json!({"c": 5})))?;
        let out = d.send(reading("A", 2, json!({"c": 3})))?;
        assert_eq!(out.relations(), ["Failure"]);
        assert_eq!(out.messages()[0].field("delta"), None);
        // The failed reading still became the previous one: 3 → 4 is 1.
        assert_eq!(d.send(reading("A", 3, json!({"c": 4})))?.messages()[0].field("delta"), Some(&json!(1)));
        let mut d = node(json!({"inputValueKey": "c", "tellFailureIfDeltaIsNegative": false}));
        d.send(reading("A", 1, json!({"c": 5})))?;
        assert_eq!(d.send(reading("A", 2, json!({"c": 3})))?.messages()[0].field("delta"), Some(&json!(-2)));
        Ok(())
    }

    #[test]
    fn rounding_and_integers() -> Result<()> {
        let mut d = node(json!({"inputValueKey": "c", "round": 1}));
        d.send(reading("A", 1, json!({"c": 1.0})))?;
        assert_eq!(d.send(reading("A", 2, json!({"c": 1.25})))?.messages()[0].field("delta"), Some(&json!(0.3)));
        assert_eq!(d.send(reading("A", 3, json!({"c": 2.25})))?.messages()[0].field("delta"), Some(&json!(1)));
        assert_eq!(round_half_up(0.35, 1), 0.4);
        Ok(())
    }
}

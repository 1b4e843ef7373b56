//! Expression filter: forwards the message unchanged on `True` when a CEL expression (Google's
//! Common Expression Language) holds for it, on `False` when it does not, and to `Failure` (with
//! the error text in `metadata.error`) when it cannot be evaluated — a missing key, a type
//! mismatch, a result that is not a bool.
//!
//! Config: `{"expression": "metadata.deviceType == 'WeatherStation' && has(metadata.cs_geoZone) && has(msg.windSpeed)"}`
//! - `expression` (required): a CEL expression over `msg` (the data object), `metadata` (string
//!   map), `msgType`, `originator` (`{entityType, name}`) and `ts` (int, ms). It is compiled when
//!   the node starts: a syntax error refuses the chain, naming the field and the spot.
//!
//! Numbers a device sends as strings (`"windSpeed": "33"`) are strings in CEL; say where you mean
//! a number with `double(…)`, which takes ints, doubles and numeric strings alike:
//! `double(msg.windSpeed) > 20.0` holds for `"33"` and for `33`. Test a key that may be missing
//! with `has(msg.k)` first (`has(msg.k) && double(msg.k) > 20.0`): reading it is an error.
//! The language, its variables and why CEL: see the `sluice-expression` crate.
use sluice_expression::Expression;
use sluice_sdk::prelude::*;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Compiled as the config is read.
    pub expression: Expression,
}

/// Keeps messages for which the expression is true.
#[filter]
pub fn expression_filter(msg: &Msg, cfg: &Config) -> Result<bool> {
    cfg.expression.eval_bool(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    const WIND: &str = "metadata.deviceType == 'WeatherStation' && has(metadata.cs_geoZone) && has(msg.windSpeed)";

    /// What `#[filter]` generates for the wasm build: the config parsed as at load.
    struct AsLoaded(Config);

    impl Node for AsLoaded {
        type Config = Config;
        fn init(config: Config) -> Result<Self> {
            Ok(AsLoaded(config))
        }
        fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
            sluice_sdk::node::filter_outputs(expression_filter(&msg, &self.0)?, out);
            Ok(())
        }
    }

    fn loaded(expression: &str) -> TestDriver {
        TestDriver::node_from_json::<AsLoaded>(&json!({ "expression": expression }).to_string()).unwrap()
    }

    fn station(zone: Option<&str>, data: Value) -> Msg {
        let msg = Msg::telemetry("WS-1", data).with_meta("deviceType", "WeatherStation");
        match zone {
            Some(z) => msg.with_meta("cs_geoZone", z),
            None => msg,
        }
    }

    #[test]
    fn wind_zones_seed() -> Result<()> {
        let mut d = loaded(WIND);
        let keep = station(Some("A"), json!({"windSpeed": "33"})).with_id("m1").with_ts(5);
        let out = d.send(keep.clone())?;
        assert_eq!(out.relations(), ["True"]);
        assert_eq!(out.messages(), [&keep], "forwarded unchanged");
        assert_eq!(d.send(station(None, json!({"windSpeed": 33})))?.relations(), ["False"]);
        assert_eq!(d.send(station(Some("A"), json!({"t": 1})))?.relations(), ["False"]);
        let meter = Msg::telemetry("M", json!({"windSpeed": 1})).with_meta("deviceType", "Meter");
        assert_eq!(d.send(meter.with_meta("cs_geoZone", "A"))?.relations(), ["False"]);
        // No deviceType at all: CEL's `&&` is commutative over errors, and the zone test is false.
        let untyped = Msg::telemetry("M", json!({"windSpeed": 1}));
        assert_eq!(d.send(untyped)?.relations(), ["False"]);
        Ok(())
    }

    #[test]
    fn numbers_sent_as_strings_compare_as_numbers() -> Result<()> {
        let mut d = loaded("double(msg.windSpeed) > 20.0");
        for (speed, relation) in [
            (json!("33"), "True"),
            (json!(33), "True"),
            (json!(33.5), "True"),
            (json!("7"), "False"),
            (json!(20), "False"),
        ] {
            let out = d.send(station(Some("A"), json!({ "windSpeed": speed })))?;
            assert_eq!(out.relations(), [relation], "windSpeed {speed}");
        }
        Ok(())
    }

    #[test]
    fn other_variables() -> Result<()> {
        let mut d = loaded("msgType == 'POST_ATTRIBUTES_REQUEST' && originator.entityType == 'ASSET' && ts >= 1000");
        let asset = Msg::new("POST_ATTRIBUTES_REQUEST", Originator::asset("Zone A"), json!({}));
        assert_eq!(d.send(asset.clone().with_ts(1000))?.relations(), ["True"]);
        assert_eq!(d.send(asset.with_ts(999))?.relations(), ["False"]);
        assert_eq!(d.send(Msg::attributes("D", json!({})).with_ts(5000))?.relations(), ["False"]);
        Ok(())
    }

    #[test]
    fn evaluation_errors_go_to_failure() -> Result<()> {
        let mut d = loaded("double(msg.windSpeed) > 20.0");
        let cases = [
            (json!({}), "No such key: windSpeed"),
            (json!({"windSpeed": "fast"}), "string parse error"),
            (json!({"windSpeed": null}), "expression failed"),
        ];
        for (data, error) in cases {
            let msg = station(Some("A"), data.clone());
            let out = d.send(msg.clone())?;
            assert_eq!(out.relations(), ["Failure"], "{data}");
            let failed = out.messages()[0];
            let text = failed.meta("error").unwrap();
            assert!(text.contains(error), "{data}: {text}");
            assert_eq!(failed.data(), msg.data(), "the message is otherwise unchanged");
        }
        let out = loaded("msg.windSpeed").send(station(Some("A"), json!({"windSpeed": "33"})))?;
        assert_eq!(out.relations(), ["Failure"]);
        assert_eq!(out.messages()[0].meta("error"), Some(r#"expression returned string "33", not a bool"#));
        // Data that is not an object.
        let out = loaded("has(msg.x)").send(Msg::telemetry("D", json!([1, 2])))?;
        assert_eq!(out.relations(), ["Failure"]);
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        let parse = |text: &str| TestDriver::node_from_json::<AsLoaded>(text).err().unwrap();
        let err = parse(r#"{"expression": "msg.windSpeed >"}"#);
        assert_eq!(err.field, "expression");
        assert!(err.message.contains("Syntax error"), "{err}");
        assert!(err.message.contains("1:16"), "line and column: {err}");
        assert_eq!(parse(r#"{"expression": "data.x > 1"}"#).field, "expression");
        assert_eq!(parse(r#"{"expression": ""}"#).field, "expression");
        assert_eq!(parse(r#"{"expression": 3}"#).field, "expression");
        assert_eq!(parse("{}").field, "expression");
        assert_eq!(parse(r#"{"expression": "true", "mode": 1}"#).field, "mode");
    }
}

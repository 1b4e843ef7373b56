//! Threshold detector: compares one numeric field of each message with a fixed threshold and
//! sends the message on `Anomaly` when the comparison holds — with metadata `threshold`,
//! `thresholdOp` and `thresholdValue` (the value it read) added, and its type changed to
//! `anomalyType` when that is set — and on `Normal`, unchanged, when it does not. A missing field
//! or one that is not a number goes to `Failure`, naming the field. Numbers sent as strings
//! (`"temperature": "101.5"`) count as numbers.
//!
//! Config: `{"value": "data.temperature", "op": ">", "threshold": 100.0, "anomalyType": "TEMPERATURE_ANOMALY"}`
//! - `value` (required): where the number is — `data.<key>`, `metadata.<key>` or `ts`.
//! - `op` (required): `>`, `>=`, `<`, `<=`, `==` or `!=`; the message is an anomaly when
//!   `value op threshold`.
//! - `threshold` (required): a finite number.
//! - `anomalyType` (optional, default: keep the type): the message type of anomalies.
//!
//! Seed 4 ("`value > 100` → anomalies") is `{"value": "data.value", "op": ">", "threshold": 100}`
//! with `Anomaly` wired to the `anomalies` sink; its late and out-of-order events need no care
//! here, as the decision depends on the message alone.
use sluice_sdk::prelude::*;

/// The comparison, `value op threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub value: FieldPath,
    pub op: Op,
    pub threshold: f64,
    #[serde(default)]
    pub anomaly_type: Option<String>,
}

/// The running detector.
pub struct Threshold {
    value: FieldPath,
    /// `value` as the config wrote it, for error messages.
    name: String,
    op: Op,
    threshold: f64,
    anomaly_type: Option<String>,
}

/// Compares one numeric field with a threshold: Anomaly or Normal.
#[node(relations = ["Anomaly", "Normal"])]
impl Node for Threshold {
    type Config = Config;

    fn init(cfg: Config) -> Result<Self> {
        let name = match &cfg.value {
            FieldPath::Data(k) => format!("data.{k}"),
            FieldPath::Metadata(k) => format!("metadata.{k}"),
            FieldPath::Ts => "ts".to_string(),
            FieldPath::Originator | FieldPath::Type => {
                bail_config!("value", "use `data.<key>`, `metadata.<key>` or `ts` (the others are not numbers)")
            }
        };
        if !cfg.threshold.is_finite() {
            bail_config!("threshold", "must be finite");
        }
        if cfg.anomaly_type.as_deref().is_some_and(|t| t.trim().is_empty()) {
            bail_config!("anomalyType", "must not be empty (leave it out to keep the type)");
        }
        Ok(Threshold { value: cfg.value, name, op: cfg.op, threshold: cfg.threshold, anomaly_type: cfg.anomaly_type })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        let value = match self.value.number(&msg) {
            Some(v) if v.is_finite() => v,
            _ => match self.value.value(&msg) {
                None | Some(Value::Null) => bail!("field `{}` is missing", self.name),
                Some(other) => bail!("field `{}` is not a number: {other}", self.name),
            },
        };
        if !self.op.holds(value, self.threshold) {
            out.forward("Normal");
            return Ok(());
        }
        let mut anomaly = msg
            .with_meta("threshold", self.threshold.to_string())
            .with_meta("thresholdOp", self.op.symbol())
            .with_meta("thresholdValue", value.to_string());
        if let Some(t) = &self.anomaly_type {
            anomaly.set_msg_type(t.clone());
        }
        out.emit("Anomaly", anomaly);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn detector(config: Value) -> TestDriver {
        TestDriver::node_from_json::<Threshold>(&config.to_string()).unwrap()
    }

    fn reading(value: Value) -> Msg {
        Msg::telemetry("S-1", json!({ "value": value })).with_id("m1").with_ts(1_000)
    }

    #[test]
    fn seed_4_value_above_100_is_an_anomaly() -> Result<()> {
        let mut d = detector(json!({"value": "data.value", "op": ">", "threshold": 100}));
        let out = d.send(reading(json!(150)))?;
        assert_eq!(out.relations(), ["Anomaly"]);
        let expected = reading(json!(150))
            .with_meta("threshold", "100")
            .with_meta("thresholdOp", ">")
            .with_meta("thresholdValue", "150");
        assert_eq!(out.messages(), [&expected]);
        // Exactly at the threshold is normal for `>`, and forwarded unchanged.
        let out = d.send(reading(json!(100)))?;
        assert_eq!(out.relations(), ["Normal"]);
        assert_eq!(out.messages(), [&reading(json!(100))]);
        assert_eq!(d.send(reading(json!(-3.5)))?.relations(), ["Normal"]);
        Ok(())
    }

    #[test]
    fn numbers_sent_as_strings_count() -> Result<()> {
        let mut d = detector(json!({"value": "data.value", "op": ">", "threshold": 100.0}));
        let out = d.send(reading(json!("100.25")))?;
        assert_eq!(out.relations(), ["Anomaly"]);
        assert_eq!(out.messages()[0].meta("thresholdValue"), Some("100.25"));
        assert_eq!(out.messages()[0].data(), &json!({"value": "100.25"}), "data untouched");
        assert_eq!(d.send(reading(json!(" 99 ")))?.relations(), ["Normal"]);
        Ok(())
    }

    #[test]
    fn every_operator() -> Result<()> {
        // (op, value, anomaly?) against threshold 10.
        let cases = [
            (">", 11.0, true),
            (">", 10.0, false),
            (">=", 10.0, true),
            (">=", 9.9, false),
            ("<", 9.0, true),
            ("<", 10.0, false),
            ("<=", 10.0, true),
            ("<=", 10.5, false),
            ("==", 10.0, true),
            ("==", 10.1, false),
            ("!=", 10.1, true),
            ("!=", 10.0, false),
        ];
        for (op, value, anomaly) in cases {
            let out =
                detector(json!({"value": "data.value", "op": op, "threshold": 10})).send(reading(json!(value)))?;
            assert_eq!(out.relations(), [if anomaly { "Anomaly" } else { "Normal" }], "{value} {op} 10");
        }
        Ok(())
    }

    #[test]
    fn metadata_and_ts_values_and_anomaly_type() -> Result<()> {
        let mut d =
            detector(json!({"value": "metadata.rssi", "op": "<", "threshold": -90, "anomalyType": "WEAK_SIGNAL"}));
        let out = d.send(Msg::telemetry("D", json!({})).with_meta("rssi", "-97"))?;
        assert_eq!(out.relations(), ["Anomaly"]);
        let m = out.messages()[0];
        assert_eq!(m.msg_type(), "WEAK_SIGNAL");
        assert_eq!(
            (m.meta("threshold"), m.meta("thresholdOp"), m.meta("thresholdValue")),
            (Some("-90"), Some("<"), Some("-97"))
        );
        let normal = d.send(Msg::telemetry("D", json!({})).with_meta("rssi", "-60"))?;
        assert_eq!(normal.messages()[0].msg_type(), "POST_TELEMETRY_REQUEST");

        let mut d = detector(json!({"value": "ts", "op": ">=", "threshold": 2000}));
        assert_eq!(d.send(reading(json!(1)).with_ts(2000))?.relations(), ["Anomaly"]);
        assert_eq!(d.send(reading(json!(1)).with_ts(1999))?.relations(), ["Normal"]);
        Ok(())
    }

    #[test]
    fn missing_or_non_numeric_values_fail_naming_the_field() -> Result<()> {
        let mut d = detector(json!({"value": "data.value", "op": ">", "threshold": 100}));
        let cases = [
            (json!({}), "field `data.value` is missing"),
            (json!({"value": null}), "field `data.value` is missing"),
            (json!({"value": "hot"}), "field `data.value` is not a number: \"hot\""),
            (json!({"value": true}), "field `data.value` is not a number: true"),
            (json!({"value": [1]}), "field `data.value` is not a number: [1]"),
            (json!({"value": "NaN"}), "field `data.value` is not a number: \"NaN\""),
            (json!({"value": "inf"}), "field `data.value` is not a number: \"inf\""),
            (json!([150]), "field `data.value` is missing"),
        ];
        for (data, error) in cases {
            let out = d.send(Msg::telemetry("S", data.clone()))?;
            assert_eq!(out.relations(), ["Failure"], "{data}");
            assert_eq!(out.messages()[0].meta("error"), Some(error), "{data}");
        }
        let mut d = detector(json!({"value": "metadata.rssi", "op": ">", "threshold": 1}));
        let out = d.send(Msg::telemetry("S", json!({})))?;
        assert_eq!(out.messages()[0].meta("error"), Some("field `metadata.rssi` is missing"));
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        let parse = |config: Value| TestDriver::node_from_json::<Threshold>(&config.to_string()).err().unwrap();
        let ok = json!({"value": "data.v", "op": ">", "threshold": 1});
        let with = |key: &str, v: Value| {
            let mut c = ok.clone();
            c[key] = v;
            c
        };
        assert_eq!(parse(with("op", json!("=>"))).field, "op");
        assert_eq!(parse(with("op", json!("gt"))).field, "op");
        assert_eq!(parse(with("threshold", json!("100"))).field, "threshold");
        assert_eq!(parse(with("value", json!("temperature"))).field, "value");
        assert_eq!(parse(with("anomalyType", json!(3))).field, "anomalyType");
        assert_eq!(parse(with("extra", json!(1))).field, "extra");
        assert_eq!(parse(json!({"op": ">", "threshold": 1})).field, "value");
        assert_eq!(parse(json!({"value": "data.v", "threshold": 1})).field, "op");
        let err = parse(with("value", json!("originator")));
        assert!(err.message.starts_with("config field `value`"), "{err}");
        let err = parse(with("anomalyType", json!("")));
        assert!(err.message.starts_with("config field `anomalyType`"), "{err}");
        // JSON has no infinity; a number too large for f64 is refused by the parser.
        assert_eq!(parse(with("threshold", json!(null))).field, "threshold");
    }
}

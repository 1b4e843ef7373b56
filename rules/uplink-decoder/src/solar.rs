//! `format: solar-module`: ThingsBoard's solar module simulator payload,
//! `{"name": "Module 1", "panel": "Panel 1", "power": 5}`.
use sluice_sdk::prelude::*;
use sluice_sdk::serde_json::{Map, Number};

use crate::{Config, Point, Uplink, name_text, non_empty, objects};

pub struct SolarDecoder {
    device_type: String,
}

impl SolarDecoder {
    pub fn new(cfg: Config) -> Result<Self> {
        Ok(SolarDecoder { device_type: non_empty("deviceType", cfg.device_type, "SolarModule")? })
    }

    pub fn decode(&self, payload: Value) -> Result<Vec<Uplink>> {
        objects(payload, "a solar module")?.iter().map(|obj| self.module(obj)).collect()
    }

    fn module(&self, obj: &Map<String, Value>) -> Result<Uplink> {
        let text = |key: &str| match obj.get(key) {
            None => bail!("payload has no `{key}`"),
            Some(v) => name_text(v).ok_or_else(|| Error::new(format!("`{key}` is not a name: {v}"))),
        };
        let (name, panel) = (text("name")?, text("panel")?);
        let power = match obj.get("power") {
            None => bail!("payload has no `power`"),
            Some(Value::Number(n)) => Value::Number(n.clone()),
            Some(v) => number(v).ok_or_else(|| Error::new(format!("`power` is not a number: {v}")))?,
        };
        let mut values = Map::new();
        values.insert("power".into(), power);
        values.insert("panel".into(), Value::String(panel.clone()));
        let mut attributes = Map::new();
        attributes.insert("panel".into(), Value::String(panel));
        Ok(Uplink {
            device_name: name,
            device_type: self.device_type.clone(),
            attributes,
            telemetry: vec![Point { ts: None, values }],
        })
    }
}

/// A numeric string as a JSON number: an integer when it is one, else a finite float.
fn number(value: &Value) -> Option<Value> {
    let text = value.as_str()?.trim();
    if let Ok(i) = text.parse::<i64>() {
        return Some(Value::from(i));
    }
    text.parse::<f64>().ok().and_then(Number::from_f64).map(Value::Number)
}

#[cfg(test)]
mod tests {
    use crate::tests::{config_error, driver, failure};
    use sluice_sdk::prelude::*;

    fn module(data: Value) -> Msg {
        Msg::new("POST_TELEMETRY_REQUEST", Originator::device("Module 1 Simulator"), data).with_id("g1").with_ts(10_000)
    }

    /// The simulator's own message (tbdocs-solar_module_simulator.json, "Module 1 Simulator").
    #[test]
    fn simulator_payload() -> Result<()> {
        let out = driver(json!({"format": "solar-module"}))
            .send(module(json!({"power": 5, "name": "Module 1", "panel": "Panel 1"})))?;
        assert_eq!(out.relations(), ["Success", "Success"]);
        let base = |msg: Msg| {
            msg.with_ts(10_000)
                .with_meta("deviceName", "Module 1")
                .with_meta("deviceType", "SolarModule")
                .with_meta("ts", "10000")
        };
        let telemetry = base(Msg::telemetry("Module 1", json!({"power": 5, "panel": "Panel 1"}))).with_id("g1:0");
        let attributes = base(Msg::attributes("Module 1", json!({"panel": "Panel 1"}))).with_id("g1:1");
        assert_eq!(out.messages(), [&telemetry, &attributes]);
        Ok(())
    }

    #[test]
    fn power_as_a_string_becomes_a_number() -> Result<()> {
        let mut d = driver(json!({"format": "solar-module", "deviceType": "Panel module"}));
        let out = d.send(module(json!({"name": "Module 3", "panel": "Panel 2", "power": "33"})))?;
        assert_eq!(out.messages()[0].data(), &json!({"power": 33, "panel": "Panel 2"}));
        assert_eq!(out.messages()[0].meta("deviceType"), Some("Panel module"));
        let out = d.send(module(json!({"name": "Module 3", "panel": 2, "power": " 2.5 ", "extra": 1})))?;
        assert_eq!(out.messages()[0].data(), &json!({"power": 2.5, "panel": "2"}));
        Ok(())
    }

    #[test]
    fn several_modules_at_once() -> Result<()> {
        let payload = json!([{"name": "M1", "panel": "P", "power": 1}, {"name": "M2", "panel": "P", "power": 2}]);
        let out = driver(json!({"format": "solar-module"})).send(module(payload))?;
        let summary: Vec<_> =
            out.messages().iter().map(|m| (m.originator().name.as_str(), m.msg_type(), m.id())).collect();
        assert_eq!(
            summary,
            [
                ("M1", "POST_TELEMETRY_REQUEST", "g1:0"),
                ("M1", "POST_ATTRIBUTES_REQUEST", "g1:1"),
                ("M2", "POST_TELEMETRY_REQUEST", "g1:2"),
                ("M2", "POST_ATTRIBUTES_REQUEST", "g1:3"),
            ]
        );
        Ok(())
    }

    #[test]
    fn incomplete_modules_fail() -> Result<()> {
        let mut d = driver(json!({"format": "solar-module"}));
        assert_eq!(failure(&d.send(module(json!({"panel": "P", "power": 1})))?), "payload has no `name`");
        assert_eq!(failure(&d.send(module(json!({"name": "M", "power": 1})))?), "payload has no `panel`");
        assert_eq!(failure(&d.send(module(json!({"name": "M", "panel": "P"})))?), "payload has no `power`");
        let e = failure(&d.send(module(json!({"name": "M", "panel": "P", "power": "high"})))?);
        assert!(e.contains("`power` is not a number"), "{e}");
        let e = failure(&d.send(module(json!({"name": "M", "panel": "P", "power": null})))?);
        assert!(e.contains("`power` is not a number"), "{e}");
        let e = failure(&d.send(module(json!({"name": null, "panel": "P", "power": 1})))?);
        assert!(e.contains("`name` is not a name"), "{e}");
        let e = failure(&d.send(module(json!("5")))?);
        assert!(e.contains("not a solar module object"), "{e}");
        Ok(())
    }

    #[test]
    fn bad_solar_options_name_the_field() {
        let e = config_error(json!({"format": "solar-module", "deviceType": ""}));
        assert!(e.message.starts_with("config field `deviceType`"), "{e}");
        assert_eq!(config_error(json!({"format": "solar-module", "deviceType": 1})).field, "deviceType");
    }
}

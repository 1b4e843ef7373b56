//! `format: json`: generic JSON payloads, with the keys named in the config.
use sluice_sdk::prelude::*;
use sluice_sdk::serde_json::Map;

use crate::{Config, Point, Uplink, name_text, non_empty, objects};

/// ThingsBoard's name for a device without a profile of its own.
const DEFAULT_TYPE: &str = "default";

pub struct JsonDecoder {
    device_name_field: String,
    device_type: DeviceType,
    ts_field: Option<String>,
    telemetry: Option<Vec<String>>,
    attributes: Vec<String>,
}

enum DeviceType {
    Constant(String),
    Field(String),
}

impl JsonDecoder {
    pub fn new(cfg: Config) -> Result<Self> {
        let device_name_field = non_empty("deviceNameField", cfg.device_name_field, "deviceName")?;
        let device_type = match (cfg.device_type, cfg.device_type_field) {
            (Some(_), Some(_)) => {
                bail_config!("deviceType", "give either `deviceType` (a constant) or `deviceTypeField`, not both")
            }
            (Some(t), None) => DeviceType::Constant(non_empty("deviceType", Some(t), "")?),
            (None, field) => DeviceType::Field(non_empty("deviceTypeField", field, "deviceType")?),
        };
        let ts_field = match cfg.ts_field {
            Some(f) => Some(non_empty("tsField", Some(f), "")?),
            None => None,
        };
        for (field, keys) in [("telemetry", &cfg.telemetry), ("attributes", &cfg.attributes)] {
            for (i, key) in keys.iter().flatten().enumerate() {
                if key.trim().is_empty() {
                    bail_config!(format!("{field}[{i}]"), "must not be empty");
                }
            }
        }
        Ok(JsonDecoder {
            device_name_field,
            device_type,
            ts_field,
            telemetry: cfg.telemetry,
            attributes: cfg.attributes.unwrap_or_default(),
        })
    }

    pub fn decode(&self, payload: Value) -> Result<Vec<Uplink>> {
        objects(payload, "a JSON")?.iter().map(|obj| self.device(obj)).collect()
    }

    fn device(&self, obj: &Map<String, Value>) -> Result<Uplink> {
        let name_field = &self.device_name_field;
        let device_name = match obj.get(name_field) {
            None => bail!("payload has no `{name_field}`"),
            Some(v) => name_text(v).ok_or_else(|| Error::new(format!("`{name_field}` is not a device name: {v}")))?,
        };
        let (device_type, type_field) = match &self.device_type {
            DeviceType::Constant(t) => (t.clone(), None),
            DeviceType::Field(f) => match obj.get(f) {
                None | Some(Value::Null) => (DEFAULT_TYPE.to_string(), Some(f)),
                Some(v) => {
                    (name_text(v).ok_or_else(|| Error::new(format!("`{f}` is not a device type: {v}")))?, Some(f))
                }
            },
        };
        let ts = match self.ts_field.as_ref().map(|f| (f, obj.get(f))) {
            None | Some((_, None | Some(Value::Null))) => None,
            Some((f, Some(v))) => {
                Some(millis(v).ok_or_else(|| Error::new(format!("`{f}` is not a time in milliseconds: {v}")))?)
            }
        };
        let present = |key: &String| obj.get(key).filter(|v| !v.is_null()).map(|v| (key.clone(), v.clone()));
        let attributes: Map<String, Value> = self.attributes.iter().filter_map(present).collect();
        let values: Map<String, Value> = match &self.telemetry {
            Some(keys) => keys.iter().filter_map(present).collect(),
            None => {
                let reserved = |k: &String| {
                    k == name_field
                        || Some(k) == type_field
                        || Some(k) == self.ts_field.as_ref()
                        || self.attributes.contains(k)
                };
                obj.iter().filter(|(k, v)| !reserved(k) && !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect()
            }
        };
        Ok(Uplink { device_name, device_type, attributes, telemetry: vec![Point { ts, values }] })
    }
}

/// A time in ms: an integral number, or a string holding one.
fn millis(value: &Value) -> Option<i64> {
    if let Some(ms) = value.as_i64() {
        return Some(ms);
    }
    let x = sluice_sdk::as_number(value)?;
    (x.is_finite() && x.fract() == 0.0 && x.abs() < 9.0e15).then_some(x as i64)
}

#[cfg(test)]
mod tests {
    use crate::tests::{config_error, driver, failure};
    use sluice_sdk::prelude::*;

    fn uplink(data: Value) -> Msg {
        Msg::new("UPLINK", Originator::device("gw"), data).with_id("u7").with_ts(1_700_000_000_000)
    }

    #[test]
    fn flat_payload_becomes_one_telemetry_message() -> Result<()> {
        let msg = uplink(json!({"deviceName": "T-1", "deviceType": "Thermometer", "temp": 21.5, "hum": "40"}))
            .with_meta("source", "gw-a")
            .with_meta("ts", "1");
        let out = driver(json!({"format": "json"})).send(msg)?;
        let (rel, m) = out.single().unwrap();
        assert_eq!(rel, "Success");
        let expected = Msg::telemetry("T-1", json!({"temp": 21.5, "hum": "40"}))
            .with_id("u7:0")
            .with_ts(1_700_000_000_000)
            .with_meta("source", "gw-a")
            .with_meta("deviceName", "T-1")
            .with_meta("deviceType", "Thermometer")
            .with_meta("ts", "1700000000000");
        assert_eq!(m, &expected);
        Ok(())
    }

    #[test]
    fn telemetry_attributes_and_ts_fields() -> Result<()> {
        let config = json!({"format": "json", "deviceNameField": "serial", "deviceType": "Meter", "tsField": "time",
                            "telemetry": ["kwh", "volts", "absent"], "attributes": ["fw", "site"]});
        let payload = json!({"serial": 1234, "time": "1700000000500", "kwh": 12.5, "volts": null, "fw": "1.2",
                             "site": "North", "noise": 3});
        let out = driver(config).send(uplink(payload))?;
        assert_eq!(out.relations(), ["Success", "Success"]);
        let (t, a) = (out.messages()[0], out.messages()[1]);
        assert_eq!(
            (t.msg_type(), t.ts(), t.data()),
            ("POST_TELEMETRY_REQUEST", 1_700_000_000_500, &json!({"kwh": 12.5}))
        );
        assert_eq!(t.originator(), &Originator::device("1234"));
        assert_eq!(t.meta("ts"), Some("1700000000500"));
        assert_eq!(t.meta("deviceType"), Some("Meter"));
        assert_eq!((a.msg_type(), a.ts()), ("POST_ATTRIBUTES_REQUEST", 1_700_000_000_000));
        assert_eq!(a.data(), &json!({"fw": "1.2", "site": "North"}));
        assert_eq!((t.id(), a.id()), ("u7:0", "u7:1"));
        Ok(())
    }

    #[test]
    fn default_telemetry_is_every_other_key() -> Result<()> {
        let config = json!({"format": "json", "tsField": "ts", "attributes": ["fw"]});
        let payload =
            json!({"deviceName": "D", "deviceType": "T", "ts": 1_700_000_000_001i64, "fw": "2", "a": 1, "b": [1, 2]});
        let out = driver(config).send(uplink(payload))?;
        assert_eq!(out.messages()[0].data(), &json!({"a": 1, "b": [1, 2]}));
        assert_eq!(out.messages()[0].ts(), 1_700_000_000_001);
        assert_eq!(out.messages()[1].data(), &json!({"fw": "2"}));
        // A payload without a type: ThingsBoard's "default"; a missing ts field: the message's time.
        let out =
            driver(json!({"format": "json", "tsField": "ts"})).send(uplink(json!({"deviceName": "D", "x": 0})))?;
        let m = out.single().unwrap().1.clone();
        assert_eq!((m.meta("deviceType"), m.ts()), (Some("default"), 1_700_000_000_000));
        Ok(())
    }

    #[test]
    fn an_array_payload_is_several_devices() -> Result<()> {
        let payload = json!([{"deviceName": "A", "t": 1}, {"deviceName": "B", "t": 2}]);
        let out = driver(json!({"format": "json", "deviceTypeField": "kind"})).send(uplink(payload))?;
        let names: Vec<_> = out.messages().iter().map(|m| m.originator().name.clone()).collect();
        assert_eq!(names, ["A", "B"]);
        assert_eq!(out.messages()[1].data(), &json!({"t": 2}));
        assert_eq!(out.messages()[1].id(), "u7:1");
        Ok(())
    }

    #[test]
    fn bad_payloads_fail() -> Result<()> {
        let mut d = driver(json!({"format": "json", "tsField": "ts"}));
        assert_eq!(failure(&d.send(uplink(json!({"t": 1})))?), "payload has no `deviceName`");
        let e = failure(&d.send(uplink(json!({"deviceName": "", "t": 1})))?);
        assert!(e.contains("`deviceName` is not a device name"), "{e}");
        let e = failure(&d.send(uplink(json!({"deviceName": null, "t": 1})))?);
        assert!(e.contains("`deviceName` is not a device name"), "{e}");
        let e = failure(&d.send(uplink(json!({"deviceName": "D", "deviceType": {"x": 1}, "t": 1})))?);
        assert!(e.contains("`deviceType` is not a device type"), "{e}");
        let e = failure(&d.send(uplink(json!({"deviceName": "D", "ts": "soon", "t": 1})))?);
        assert!(e.contains("`ts` is not a time in milliseconds"), "{e}");
        let e = failure(&d.send(uplink(json!({"deviceName": "D", "ts": 1.5, "t": 1})))?);
        assert!(e.contains("`ts` is not a time"), "{e}");
        let e = failure(&d.send(uplink(json!([{"deviceName": "D", "t": 1}, 7])))?);
        assert!(e.contains("payload[1] is not a JSON object"), "{e}");
        Ok(())
    }

    #[test]
    fn bad_json_options_name_the_field() {
        let e = config_error(json!({"format": "json", "deviceType": "A", "deviceTypeField": "kind"}));
        assert!(e.message.starts_with("config field `deviceType`"), "{e}");
        let e = config_error(json!({"format": "json", "deviceNameField": " "}));
        assert!(e.message.starts_with("config field `deviceNameField`: must not be empty"), "{e}");
        let e = config_error(json!({"format": "json", "attributes": ["fw", ""]}));
        assert!(e.message.starts_with("config field `attributes[1]`"), "{e}");
        let e = config_error(json!({"format": "json", "tsField": ""}));
        assert!(e.message.starts_with("config field `tsField`"), "{e}");
        assert_eq!(config_error(json!({"format": "json", "attributes": "fw"})).field, "attributes");
    }
}

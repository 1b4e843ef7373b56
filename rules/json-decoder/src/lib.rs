//! Uplink decoder for JSON payloads, after ThingsBoard's converter contract: a payload becomes
//! `deviceName`, `deviceType`, `attributes` and `telemetry`, and the node emits one
//! `POST_TELEMETRY_REQUEST` per telemetry entry and one `POST_ATTRIBUTES_REQUEST` for attributes,
//! all on `Success`, from the device the payload names.
//!
//! The payload is `data[payloadField]` when that is a string of JSON (as a raw uplink arrives),
//! or `data` itself otherwise. Telemetry may be `{k: v}`, `{"ts": …, "values": {…}}` or an array
//! of those; a payload without `telemetry`/`attributes` keys is read as flat telemetry (every key
//! but the device name, type and `ts`).
//!
//! Config (every field optional):
//! `{"payloadField": "payload", "deviceNameField": "deviceName", "deviceTypeField": "deviceType"}`
use sluice_sdk::prelude::*;
use sluice_sdk::{msg_type, serde_json::Map};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    pub payload_field: String,
    pub device_name_field: String,
    pub device_type_field: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            payload_field: "payload".into(),
            device_name_field: "deviceName".into(),
            device_type_field: "deviceType".into(),
        }
    }
}

pub struct JsonDecoder {
    config: Config,
}

/// Decodes a JSON payload into telemetry and attributes.
#[node(relations = ["Success"])]
impl Node for JsonDecoder {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        if config.device_name_field.is_empty() {
            bail!("deviceNameField must not be empty");
        }
        Ok(JsonDecoder { config })
    }

    fn on_msg(&mut self, mut msg: Msg, out: &mut Outputs) -> Result<()> {
        let cfg = &self.config;
        // The top-level key alone (`field` would also follow a dotted path).
        let field = match cfg.payload_field.contains('.') {
            false => msg.field(&cfg.payload_field),
            true => msg.data().get(&cfg.payload_field),
        };
        let payload: Value = match field {
            Some(Value::String(text)) => serde_json::from_str(text)?,
            _ => msg.take_data(),
        };
        let Value::Object(mut payload) = payload else {
            bail!("payload is not a JSON object");
        };
        let device = match payload.remove(&cfg.device_name_field) {
            Some(Value::String(name)) if !name.is_empty() => name,
            Some(other) => bail!("`{}` is not a device name: {other}", cfg.device_name_field),
            None => bail!("payload has no `{}`", cfg.device_name_field),
        };
        let device_type = match payload.remove(&cfg.device_type_field) {
            Some(Value::String(t)) => Some(t),
            _ => None,
        };
        let ts = msg.ts();
        let telemetry = payload.remove("telemetry");
        let attributes = payload.remove("attributes");
        if telemetry.is_none() && attributes.is_none() {
            // The common case, one message: the incoming one changed in place, so that only the
            // parts that change cross back to the host (its metadata is neither read nor sent).
            // It is a new message all the same, with the id the engine gives a first output.
            let ts = payload.remove("ts").and_then(|v| v.as_i64()).unwrap_or(ts);
            let id = sluice_sdk::derived_id(msg.id(), 0);
            msg.set_id(id);
            msg.set_msg_type(msg_type::POST_TELEMETRY_REQUEST);
            msg.set_originator(Originator::device(&device));
            msg.set_meta("deviceName", device);
            if let Some(t) = device_type {
                msg.set_meta("deviceType", t);
            }
            msg.set_ts(ts);
            msg.set_meta("ts", ts.to_string());
            msg.set_data(Value::Object(payload));
            out.emit(relation::SUCCESS, msg);
            return Ok(());
        }
        let mut metadata = msg.metadata().clone();
        metadata.insert("deviceName".into(), device.clone());
        if let Some(t) = device_type {
            metadata.insert("deviceType".into(), t);
        }
        let mut base = Msg::new(msg_type::POST_TELEMETRY_REQUEST, Originator::device(&device), Value::Null).with_ts(ts);
        base.set_metadata(metadata);
        match telemetry {
            None => {}
            Some(Value::Array(entries)) => {
                for entry in entries {
                    emit_entry(out, &base, ts, entry)?;
                }
            }
            Some(entry) => emit_entry(out, &base, ts, entry)?,
        }
        match attributes {
            None => {}
            Some(Value::Object(attrs)) => {
                let mut m = base.clone();
                m.set_msg_type(msg_type::POST_ATTRIBUTES_REQUEST);
                m.set_data(Value::Object(attrs));
                out.emit(relation::SUCCESS, m);
            }
            Some(other) => bail!("`attributes` is not an object: {other}"),
        }
        Ok(())
    }
}

/// One telemetry entry: `{k: v}` or `{"ts": …, "values": {…}}`.
fn emit_entry(out: &mut Outputs, base: &Msg, default_ts: i64, entry: Value) -> Result<()> {
    let Value::Object(mut obj) = entry else {
        bail!("telemetry entry is not an object: {entry}");
    };
    if let Some(Value::Object(values)) = obj.remove("values") {
        let ts = obj.get("ts").and_then(Value::as_i64).unwrap_or(default_ts);
        emit_telemetry(out, base, ts, values);
    } else {
        emit_telemetry(out, base, default_ts, obj);
    }
    Ok(())
}

fn emit_telemetry(out: &mut Outputs, base: &Msg, ts: i64, values: Map<String, Value>) {
    let mut m = base.clone();
    m.set_ts(ts);
    m.set_meta("ts", ts.to_string());
    m.set_data(Value::Object(values));
    out.emit(relation::SUCCESS, m);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn driver() -> TestDriver {
        TestDriver::node::<JsonDecoder>(Config::default()).unwrap()
    }

    fn uplink(payload: &str) -> Msg {
        Msg::new("UPLINK", Originator::device("gateway"), json!({ "payload": payload })).with_ts(1000)
    }

    #[test]
    fn flat_payload_becomes_telemetry() -> Result<()> {
        let out = driver().send(uplink(r#"{"deviceName":"M-1","deviceType":"Meter","kwh":12.5}"#))?;
        let (rel, m) = out.single().unwrap();
        assert_eq!(rel, "Success");
        assert_eq!(m.originator(), &Originator::device("M-1"));
        assert_eq!(m.msg_type(), "POST_TELEMETRY_REQUEST");
        assert_eq!(m.meta("deviceType"), Some("Meter"));
        assert_eq!(m.data(), &json!({"kwh": 12.5}));
        assert_eq!(m.ts(), 1000);
        Ok(())
    }

    #[test]
    fn converter_shape_with_timestamps_and_attributes() -> Result<()> {
        let out = driver().send(uplink(
            r#"{"deviceName":"M-1","telemetry":[{"ts":5,"values":{"a":1}},{"ts":6,"values":{"a":2}}],"attributes":{"fw":"1.2"}}"#,
        ))?;
        assert_eq!(out.relations(), ["Success", "Success", "Success"]);
        let m = out.messages();
        assert_eq!((m[0].ts(), m[0].data()), (5, &json!({"a": 1})));
        assert_eq!((m[1].ts(), m[1].data()), (6, &json!({"a": 2})));
        assert_eq!(m[2].msg_type(), "POST_ATTRIBUTES_REQUEST");
        assert_eq!(m[2].data(), &json!({"fw": "1.2"}));
        Ok(())
    }

    #[test]
    fn missing_device_name_fails_with_reason() -> Result<()> {
        let out = driver().send(uplink(r#"{"kwh":1}"#))?;
        let (rel, m) = out.single().unwrap();
        assert_eq!(rel, "Failure");
        assert_eq!(m.meta("error"), Some("payload has no `deviceName`"));
        Ok(())
    }

    #[test]
    fn bad_json_fails() -> Result<()> {
        let out = driver().send(uplink("{not json"))?;
        assert_eq!(out.relations(), ["Failure"]);
        Ok(())
    }

    #[test]
    fn bad_config_names_field() {
        let err = TestDriver::node_from_json::<JsonDecoder>(r#"{"payloadFeld":"x"}"#).err().unwrap();
        assert_eq!(err.field, "payloadFeld");
    }
}

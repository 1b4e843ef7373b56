//! Uplink decoder: turns a device uplink (JSON, or base64 bytes) into ThingsBoard telemetry and
//! attribute messages with one of the shipped decoders (generic JSON, the solar module sample,
//! The Things Network v3 smart meters).
//!
//! It follows the contract of ThingsBoard's integration *uplink converters*: a payload plus the
//! message's metadata go in; each device found in it comes out as `{deviceName, deviceType,
//! attributes, telemetry}`, where telemetry is a list of data points `{ts, values}` (a point
//! without a `ts` takes the incoming message's). A payload may describe several devices.
//!
//! **The payload** is the incoming message's `data`:
//! - a JSON object or array (a JSON uplink), used as it is;
//! - a string with `metadata.payloadEncoding = "base64"`: the base64 (standard alphabet, padding
//!   optional) of the uplink's bytes, which must be UTF-8 JSON (a binary uplink, as a gateway or
//!   an HTTP integration hands raw bytes over);
//! - a string without `payloadEncoding` (or with `"json"`): JSON text.
//!
//! Any other `payloadEncoding` is refused.
//!
//! **Outputs**, all on `Success`, in this order for each device in turn:
//! - one `POST_TELEMETRY_REQUEST` per data point with values: originator `DEVICE` named
//!   `deviceName`, `ts` = the point's ts (or the incoming message's), metadata = the incoming
//!   metadata (less `payloadEncoding`) plus `deviceName`, `deviceType` and `ts` (the point's, as
//!   text), data = the point's values;
//! - one `POST_ATTRIBUTES_REQUEST` when the device has attributes: same originator and metadata,
//!   the incoming message's `ts`, data = the attributes.
//!
//! Output `n` (counting from 0) gets the id `derived_id(<incoming id>, n)`, so a replay yields the
//! same ids. A payload that does not decode — not JSON, a missing or mistyped field, bytes that do
//! not fit the layout — goes to `Failure` with `metadata.error` naming what was wrong; so does one
//! that decodes to no telemetry and no attributes at all. Values are passed on as the device sent
//! them (a `"33"` stays a string), except where a decoder below says otherwise. `null` values are
//! left out.
//!
//! **Config**: `format` picks the decoder; the other keys are that decoder's options (an option of
//! another format is refused, naming it).
//!
//! `{"format": "json", ...}` — generic JSON: the payload is an object (one device) or an array of
//! objects (one device each).
//! - `deviceNameField` (default `"deviceName"`): the key holding the device name (a non-empty
//!   string, or a number used as its text).
//! - `deviceTypeField` (default `"deviceType"`): the key holding the device type; a payload
//!   without it gets `"default"` (the name of ThingsBoard's default device profile).
//! - `deviceType` (no default): a constant device type instead; not together with
//!   `deviceTypeField`.
//! - `tsField` (no default): the key holding the reading's time in ms since the epoch (a number
//!   or numeric string, integral); without it, or when the payload lacks it, the message's `ts`.
//! - `telemetry` (default: every other key): the keys sent as telemetry. Every other key means
//!   all but the device name, device type, ts and attribute keys.
//! - `attributes` (default `[]`): the keys sent as attributes.
//!
//! `{"format": "solar-module", "deviceType": "SolarModule"}` — ThingsBoard's solar module
//! simulator payload `{"name": "Module 1", "panel": "Panel 1", "power": 5}` (or an array of
//! them): device `name`, type `deviceType` (default `"SolarModule"`), telemetry `power` (a number;
//! a numeric string is converted) and `panel` (kept in the telemetry because the anomaly chain's
//! windows group by `data.panel`), attribute `panel`. `name`, `panel` and `power` are required;
//! other keys are ignored.
//!
//! `{"format": "ttn-lorawan", "deviceType": "SmartMeter", "useDevEui": false, "fPort": 2}` — a
//! The Things Network (The Things Stack v3) uplink message from a smart meter: one data point per
//! meter reading. Fields read: `end_device_ids.device_id`, `end_device_ids.dev_eui`,
//! `received_at` (RFC 3339; else `uplink_message.received_at`; else the message's `ts`),
//! `uplink_message.f_port`, `uplink_message.frm_payload` (base64) and
//! `uplink_message.rx_metadata[].rssi/snr`.
//! - `deviceType` (default `"SmartMeter"`).
//! - `useDevEui` (default `false`): name the device by its DevEUI instead of its device id.
//! - `fPort` (default `2`, 1–223): the port the meter sends readings on; an uplink on another port
//!   (or without one: a MAC-only uplink) goes to `Failure`.
//!
//! The meter's `frm_payload` (all integers big-endian):
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | interval between readings, in minutes (1–255) |
//! | 1 | flags: bit 0 set = an age follows; the other bits must be 0 |
//! | 2–5 (if bit 0) | `u32` age: seconds from the last reading to `received_at` (0 without it) |
//! | then, N ≥ 1 times | `u32` energy register in Wh, oldest reading first |
//!
//! Reading `i` of `N` (from 0) is taken at `received_at − age·1000 − (N−1−i)·interval·60000` ms
//! and becomes the point `{ts, values: {"energyWh": <u32>}}`. The last (newest) point also
//! carries `rssi` and `snr` of the best gateway: the `rx_metadata` entry with the highest `rssi`
//! (ties: the higher `snr`, then the first); either is left out when no gateway reports it.
//! Attributes: `devEui` (when present) and `fPort`. Example: interval 15, no age, readings
//! 1000 and 1250 Wh received at 12:00:00Z → 1000 Wh at 11:45:00Z, 1250 Wh at 12:00:00Z.
use sluice_sdk::prelude::*;
use sluice_sdk::serde_json::Map;
use sluice_sdk::{derived_id, msg_type};

mod json;
mod solar;
mod ttn;

/// The node's config as written: `format` and the options of every format (each checked
/// against `format` in [`UplinkDecoder::init`]).
///
/// Not a serde internally-tagged enum on purpose: serde buffers such an enum's content before
/// deserializing the variant, which loses the path of a wrongly typed option (`telemetry[1]`
/// would be reported as the config as a whole). A flat struct keeps every path.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub format: Format,
    pub device_name_field: Option<String>,
    pub device_type_field: Option<String>,
    pub device_type: Option<String>,
    pub ts_field: Option<String>,
    pub telemetry: Option<Vec<String>>,
    pub attributes: Option<Vec<String>>,
    pub use_dev_eui: Option<bool>,
    pub f_port: Option<u8>,
}

/// The shipped decoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Json,
    SolarModule,
    TtnLorawan,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::SolarModule => "solar-module",
            Format::TtnLorawan => "ttn-lorawan",
        }
    }

    /// The options this format takes.
    fn options(self) -> &'static [&'static str] {
        match self {
            Format::Json => &["deviceNameField", "deviceTypeField", "deviceType", "tsField", "telemetry", "attributes"],
            Format::SolarModule => &["deviceType"],
            Format::TtnLorawan => &["deviceType", "useDevEui", "fPort"],
        }
    }
}

impl Config {
    /// The options given, by their names in the config.
    fn given(&self) -> [(&'static str, bool); 8] {
        [
            ("deviceNameField", self.device_name_field.is_some()),
            ("deviceTypeField", self.device_type_field.is_some()),
            ("deviceType", self.device_type.is_some()),
            ("tsField", self.ts_field.is_some()),
            ("telemetry", self.telemetry.is_some()),
            ("attributes", self.attributes.is_some()),
            ("useDevEui", self.use_dev_eui.is_some()),
            ("fPort", self.f_port.is_some()),
        ]
    }
}

/// One device found in a payload: a ThingsBoard uplink converter's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Uplink {
    pub device_name: String,
    pub device_type: String,
    pub attributes: Map<String, Value>,
    pub telemetry: Vec<Point>,
}

/// One data point: values at `ts` (`None`: the incoming message's time).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub ts: Option<i64>,
    pub values: Map<String, Value>,
}

/// A configured decoder: payload (and the message, for its time) in, devices out.
enum Decoder {
    Json(json::JsonDecoder),
    Solar(solar::SolarDecoder),
    Ttn(ttn::TtnDecoder),
}

pub struct UplinkDecoder {
    decoder: Decoder,
}

/// Decodes a device uplink into telemetry and attributes (ThingsBoard's uplink converter contract).
#[node(relations = ["Success"])]
impl Node for UplinkDecoder {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        let format = config.format;
        let allowed = format.options();
        for (option, given) in config.given() {
            if given && !allowed.contains(&option) {
                bail!(
                    "config field `{option}`: not an option of format `{}` (its options: {})",
                    format.name(),
                    allowed.join(", ")
                );
            }
        }
        let decoder = match format {
            Format::Json => Decoder::Json(json::JsonDecoder::new(config)?),
            Format::SolarModule => Decoder::Solar(solar::SolarDecoder::new(config)?),
            Format::TtnLorawan => Decoder::Ttn(ttn::TtnDecoder::new(config)?),
        };
        Ok(UplinkDecoder { decoder })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        let payload = payload(&msg)?;
        let uplinks = match &self.decoder {
            Decoder::Json(d) => d.decode(payload)?,
            Decoder::Solar(d) => d.decode(payload)?,
            Decoder::Ttn(d) => d.decode(payload, msg.ts())?,
        };
        for m in messages(&msg, uplinks)? {
            out.emit(relation::SUCCESS, m);
        }
        Ok(())
    }
}

/// The payload of `msg` as JSON, after the encoding its metadata names.
pub fn payload(msg: &Msg) -> Result<Value> {
    use base64::Engine as _;
    match (msg.meta("payloadEncoding"), msg.data()) {
        (Some("base64"), Value::String(text)) => {
            let bytes = BASE64
                .decode(text.trim())
                .map_err(|e| Error::new(format!("data is not base64 (metadata `payloadEncoding` is base64): {e}")))?;
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::new(format!("the base64-decoded payload is not JSON: {e}")))
        }
        (Some("base64"), other) => {
            bail!("data must be a base64 string (metadata `payloadEncoding` is base64), not {other}")
        }
        (Some(enc), _) if enc != "json" => {
            bail!("metadata `payloadEncoding`: `{enc}` is not supported (use `base64`, or leave it out for JSON)")
        }
        (_, Value::String(text)) => serde_json::from_str(text).map_err(|e| {
            Error::new(format!(
                "data is a string but not JSON text (for bytes set metadata `payloadEncoding` to base64): {e}"
            ))
        }),
        (_, value) => Ok(value.clone()),
    }
}

/// Standard base64, with or without padding (devices and gateways differ).
pub const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// The output messages for the devices decoded from `msg`'s payload.
pub fn messages(msg: &Msg, uplinks: Vec<Uplink>) -> Result<Vec<Msg>> {
    let mut meta = msg.metadata().clone();
    meta.remove("payloadEncoding");
    let (id, msg_ts) = (msg.id(), msg.ts());
    let mut outputs = Vec::new();
    for uplink in uplinks {
        let mut base = Msg::new(msg_type::POST_TELEMETRY_REQUEST, Originator::device(&uplink.device_name), Value::Null);
        let mut base_meta = meta.clone();
        base_meta.insert("deviceName".into(), uplink.device_name);
        base_meta.insert("deviceType".into(), uplink.device_type);
        base.set_metadata(base_meta);
        let mut push = |msg_type: &str, ts: i64, data: Map<String, Value>| {
            let mut m = base.clone().with_ts(ts).with_id(derived_id(id, outputs.len())).with_type(msg_type);
            m.set_meta("ts", ts.to_string());
            m.set_data(Value::Object(data));
            outputs.push(m);
        };
        for point in uplink.telemetry.into_iter().filter(|p| !p.values.is_empty()) {
            push(msg_type::POST_TELEMETRY_REQUEST, point.ts.unwrap_or(msg_ts), point.values);
        }
        if !uplink.attributes.is_empty() {
            push(msg_type::POST_ATTRIBUTES_REQUEST, msg_ts, uplink.attributes);
        }
    }
    if outputs.is_empty() {
        bail!("the payload decoded to no telemetry and no attributes");
    }
    Ok(outputs)
}

/// A device name or type: a non-empty string, or a number as its text.
fn name_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A payload's top level: one object, or an array of objects (`what` names them in errors).
fn objects(payload: Value, what: &str) -> Result<Vec<Map<String, Value>>> {
    match payload {
        Value::Object(obj) => Ok(vec![obj]),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(obj) => Ok(obj),
                other => bail!("payload[{i}] is not {what} object: {other}"),
            })
            .collect(),
        other => bail!("the payload is not {what} object (or an array of them): {other}"),
    }
}

/// A config string option that must not be empty.
fn non_empty(field: &str, value: Option<String>, default: &str) -> Result<String> {
    let value = value.unwrap_or_else(|| default.to_string());
    if value.trim().is_empty() {
        bail_config!(format!("{field}"), "must not be empty");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::config::ConfigError;
    use sluice_sdk::testing::TestDriver;

    pub(crate) fn driver(config: Value) -> TestDriver {
        TestDriver::node_from_json::<UplinkDecoder>(&config.to_string()).unwrap()
    }

    pub(crate) fn config_error(config: Value) -> ConfigError {
        match TestDriver::node_from_json::<UplinkDecoder>(&config.to_string()) {
            Ok(_) => panic!("config accepted: {config}"),
            Err(e) => e,
        }
    }

    /// The single `Failure` output of `out`, and its error text.
    pub(crate) fn failure(out: &sluice_sdk::testing::Outcome) -> String {
        assert_eq!(out.relations(), ["Failure"], "{out:?}");
        out.messages()[0].meta("error").unwrap_or_default().to_string()
    }

    fn uplink(data: Value) -> Msg {
        Msg::new("UPLINK", Originator::device("gateway-1"), data).with_id("up-1").with_ts(5_000)
    }

    #[test]
    fn base64_payload_is_decoded_as_json() -> Result<()> {
        // {"deviceName":"D","t":1} in base64, written out by hand (RFC 4648 table).
        let text = r#"{"deviceName":"D","t":1}"#;
        let b64 = "eyJkZXZpY2VOYW1lIjoiRCIsInQiOjF9";
        assert_eq!(text.len(), 24); // 24 bytes → 32 characters, no padding
        let msg = uplink(json!(b64)).with_meta("payloadEncoding", "base64").with_meta("gw", "g1");
        let out = driver(json!({"format": "json"})).send(msg)?;
        let (rel, m) = out.single().unwrap();
        assert_eq!(rel, "Success");
        assert_eq!(m.data(), &json!({"t": 1}));
        assert_eq!(m.meta("payloadEncoding"), None, "the encoding described the input, not the output");
        assert_eq!(m.meta("gw"), Some("g1"));
        // Unpadded base64 too: `{"deviceName":"D","t":10}` is 25 bytes → 34 characters, "==" dropped.
        let unpadded = "eyJkZXZpY2VOYW1lIjoiRCIsInQiOjEwfQ";
        let out =
            driver(json!({"format": "json"})).send(uplink(json!(unpadded)).with_meta("payloadEncoding", "base64"))?;
        assert_eq!(out.single().unwrap().1.data(), &json!({"t": 10}));
        Ok(())
    }

    #[test]
    fn json_text_payload_is_parsed() -> Result<()> {
        let out = driver(json!({"format": "json"})).send(uplink(json!(r#"{"deviceName":"D","t":"33"}"#)))?;
        assert_eq!(out.single().unwrap().1.data(), &json!({"t": "33"}));
        Ok(())
    }

    #[test]
    fn undecodable_payloads_fail_naming_the_problem() -> Result<()> {
        let mut d = driver(json!({"format": "json"}));
        let e = failure(&d.send(uplink(json!("!!not base64!!")).with_meta("payloadEncoding", "base64"))?);
        assert!(e.contains("not base64"), "{e}");
        // "bm90IGpzb24=" is base64 of "not json".
        let e = failure(&d.send(uplink(json!("bm90IGpzb24=")).with_meta("payloadEncoding", "base64"))?);
        assert!(e.contains("base64-decoded payload is not JSON"), "{e}");
        let e = failure(&d.send(uplink(json!({"a": 1})).with_meta("payloadEncoding", "base64"))?);
        assert!(e.contains("must be a base64 string"), "{e}");
        let e = failure(&d.send(uplink(json!("00ff")).with_meta("payloadEncoding", "hex"))?);
        assert!(e.contains("`hex` is not supported"), "{e}");
        let e = failure(&d.send(uplink(json!("temp=3")))?);
        assert!(e.contains("not JSON text"), "{e}");
        let e = failure(&d.send(uplink(json!(42)))?);
        assert!(e.contains("not a JSON object"), "{e}");
        // The failed message is the input, unchanged but for the error.
        let msg = uplink(json!(null));
        let out = d.send(msg.clone())?;
        assert_eq!(out.messages()[0].data(), msg.data());
        Ok(())
    }

    #[test]
    fn a_payload_with_nothing_to_send_fails() -> Result<()> {
        let mut d = driver(json!({"format": "json"}));
        let e = failure(&d.send(uplink(json!({"deviceName": "D", "t": null})))?);
        assert!(e.contains("no telemetry and no attributes"), "{e}");
        let e = failure(&d.send(uplink(json!([])))?);
        assert!(e.contains("no telemetry and no attributes"), "{e}");
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        assert_eq!(config_error(json!({})).field, "format");
        let e = config_error(json!({"format": "xml"}));
        assert_eq!(e.field, "format");
        assert!(e.message.contains("ttn-lorawan"), "{e}");
        assert_eq!(config_error(json!({"format": "json", "deviceNameFeld": "n"})).field, "deviceNameFeld");
        assert_eq!(config_error(json!({"format": "json", "telemetry": ["a", 1]})).field, "telemetry[1]");
        assert_eq!(config_error(json!({"format": "json", "tsField": 3})).field, "tsField");
        assert_eq!(config_error(json!({"format": "ttn-lorawan", "fPort": 300})).field, "fPort");
        assert_eq!(config_error(json!({"format": "ttn-lorawan", "useDevEui": "yes"})).field, "useDevEui");
        // An option of another format is refused by name.
        let e = config_error(json!({"format": "solar-module", "tsField": "t"}));
        assert!(e.message.contains("config field `tsField`: not an option of format `solar-module`"), "{e}");
        let e = config_error(json!({"format": "ttn-lorawan", "telemetry": ["a"]}));
        assert!(e.message.contains("`telemetry`"), "{e}");
        let e = config_error(json!({"format": "json", "useDevEui": true}));
        assert!(e.message.contains("`useDevEui`"), "{e}");
    }
}

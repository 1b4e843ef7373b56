//! A custom uplink decoder: an environmental sensor's 4-byte payload → telemetry.
//!
//! The sensor (call it *EnvSense*) sends its readings as 4 bytes, which its gateway forwards as
//! text in `data.payload` — hex (`"00EB3A5F"`) or base64 (`"AOs6Xw=="`):
//!
//! | bytes | meaning |
//! |---|---|
//! | 0–1 | temperature, `i16` big-endian, in tenths of °C (`0x00EB` = 235 → 23.5 °C) |
//! | 2 | relative humidity, `u8`, % (0–100) |
//! | 3 | battery, `u8`, % (0–100) |
//!
//! The node replaces `data` with `{"temperature", "humidity", "battery"}` and makes the message a
//! `POST_TELEMETRY_REQUEST`; originator, `ts`, id and metadata are kept. It goes to `Success`; a
//! payload that is missing, not hex/base64, not 4 bytes long or out of range goes to `Failure`
//! with `metadata.error` saying why.
//!
//! Config (both optional): `{"field": "payload", "encoding": "hex"}`
//! - `field` (default `"payload"`): the key of `data` holding the payload text.
//! - `encoding` (default `"hex"`): `"hex"` or `"base64"`.
use base64::Engine as _;
use sluice_sdk::msg_type;
use sluice_sdk::prelude::*;

/// The node's `config` in the chain file, parsed once when the chain loads.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    /// Key of `data` that holds the payload text.
    pub field: String,
    /// How the bytes are written as text.
    pub encoding: Encoding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Hex,
    Base64,
}

impl Default for Config {
    fn default() -> Self {
        Config { field: "payload".into(), encoding: Encoding::Hex }
    }
}

/// One decoded reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub temperature: f64,
    pub humidity: u8,
    pub battery: u8,
}

/// Decodes the sensor's 4 bytes.
pub fn decode(bytes: &[u8]) -> Result<Reading> {
    let [t_hi, t_lo, humidity, battery] = bytes else {
        bail!("payload has {} bytes; EnvSense sends 4", bytes.len());
    };
    if *humidity > 100 {
        bail!("humidity {humidity} % is out of range (0-100)");
    }
    if *battery > 100 {
        bail!("battery {battery} % is out of range (0-100)");
    }
    let tenths = i16::from_be_bytes([*t_hi, *t_lo]);
    Ok(Reading { temperature: f64::from(tenths) / 10.0, humidity: *humidity, battery: *battery })
}

/// Decodes an EnvSense 4-byte payload (hex or base64) into telemetry.
///
/// `Ok(msg)` → "Success", `Err` → "Failure" (with `metadata.error`). The first line is the
/// module's description in its manifest (`sluice rules describe`).
#[transform]
pub fn env_sense(mut msg: Msg, cfg: &Config) -> Result<Msg> {
    let Some(text) = msg.field(&cfg.field).and_then(Value::as_str) else {
        bail!("no `{}` text in the message data", cfg.field);
    };
    let text = text.trim();
    let bytes = match cfg.encoding {
        Encoding::Hex => hex::decode(text).map_err(|e| Error::new(format!("`{}` is not hex: {e}", cfg.field)))?,
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| Error::new(format!("`{}` is not base64: {e}", cfg.field)))?,
    };
    let r = decode(&bytes)?;
    msg.set_msg_type(msg_type::POST_TELEMETRY_REQUEST);
    msg.set_data(json!({"temperature": r.temperature, "humidity": r.humidity, "battery": r.battery}));
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn uplink(payload: &str) -> Msg {
        Msg::telemetry("env-1", json!({ "payload": payload })).with_meta("deviceType", "EnvSense").with_ts(1000)
    }

    fn hex_driver() -> TestDriver {
        TestDriver::transform(env_sense, Config::default())
    }

    #[test]
    fn decodes_a_hex_payload() -> Result<()> {
        // 0x00EB = 235 → 23.5 °C; 0x3A = 58 %; 0x5F = 95 %.
        let out = hex_driver().send(uplink("00EB3A5F"))?;
        let (relation, msg) = out.single().unwrap();
        assert_eq!(relation, "Success");
        assert_eq!(msg.data(), &json!({"temperature": 23.5, "humidity": 58, "battery": 95}));
        assert_eq!(
            (msg.originator().name.as_str(), msg.ts(), msg.meta("deviceType")),
            ("env-1", 1000, Some("EnvSense"))
        );
        Ok(())
    }

    #[test]
    fn negative_temperatures_and_lowercase_hex() -> Result<()> {
        // 0xFFC9 = 65481 − 65536 = −55 → −5.5 °C; 0x50 = 80 %; 0x64 = 100 %.
        let out = hex_driver().send(uplink(" ffc95064 "))?;
        assert_eq!(out.single().unwrap().1.data(), &json!({"temperature": -5.5, "humidity": 80, "battery": 100}));
        Ok(())
    }

    #[test]
    fn decodes_a_base64_payload_from_another_field() -> Result<()> {
        // Bytes 00 EB 3A 5F: 000000 001110 101100 111010 | 010111 11(0000) → A O s 6 X w, padded "==".
        let config = Config { field: "raw".into(), encoding: Encoding::Base64 };
        let msg = Msg::telemetry("env-1", json!({"raw": "AOs6Xw=="}));
        let out = TestDriver::transform(env_sense, config).send(msg)?;
        assert_eq!(out.single().unwrap().1.data(), &json!({"temperature": 23.5, "humidity": 58, "battery": 95}));
        Ok(())
    }

    #[test]
    fn bad_payloads_go_to_failure() -> Result<()> {
        let error = |msg: Msg| -> Result<String> {
            let out = hex_driver().send(msg)?;
            assert_eq!(out.relations(), ["Failure"]);
            Ok(out.messages()[0].meta("error").unwrap_or_default().to_string())
        };
        assert_eq!(error(uplink("00EB3A"))?, "payload has 3 bytes; EnvSense sends 4");
        assert!(error(uplink("00EB3A5Fzz"))?.contains("`payload` is not hex"));
        assert_eq!(error(uplink("00EB655F"))?, "humidity 101 % is out of range (0-100)");
        assert_eq!(error(uplink("00EB3AFF"))?, "battery 255 % is out of range (0-100)");
        assert_eq!(error(Msg::telemetry("env-1", json!({"payload": 235})))?, "no `payload` text in the message data");
        assert_eq!(error(Msg::telemetry("env-1", json!({})))?, "no `payload` text in the message data");
        Ok(())
    }

    #[test]
    fn config_errors_name_the_field() {
        // What `#[transform]` does at load: the config JSON through the SDK's parser.
        let parse = |text: &str| sluice_sdk::config::parse::<Config>(text.as_bytes());
        assert_eq!(parse("{}").unwrap().encoding, Encoding::Hex);
        assert_eq!(parse(r#"{"encoding": "base32"}"#).unwrap_err().field, "encoding");
        assert_eq!(parse(r#"{"field": 1}"#).unwrap_err().field, "field");
        assert_eq!(parse(r#"{"fields": "x"}"#).unwrap_err().field, "fields");
    }
}

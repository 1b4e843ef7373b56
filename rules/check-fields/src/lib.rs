//! Check fields presence (ThingsBoard's `TbCheckMessageNode`): `True` when the message has the
//! listed data keys and metadata keys — all of them, or any one with `checkAllKeys: false` —
//! `False` otherwise.
//!
//! A data key is present when the data object has it, whatever its value: `{"t": null}` has `t`.
//! ThingsBoard's `TbCheckMessageNode.onMsg` parses the data into a map (`dataToMap`, Gson, which
//! keeps `null` entries) and asks `map.containsKey(field)` (`allKeysExist` /
//! `atLeastOneKeyExist`), so a key whose value is `null` counts as there.
//!
//! Config: `{"messageNames": ["windSpeed"], "metadataNames": ["deviceType"], "checkAllKeys": true}`
use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub message_names: Vec<String>,
    #[serde(default)]
    pub metadata_names: Vec<String>,
    #[serde(default = "yes")]
    pub check_all_keys: bool,
}

fn yes() -> bool {
    true
}

/// Keeps messages that carry the configured keys.
#[filter]
pub fn check_fields(msg: &Msg, cfg: &Config) -> Result<bool> {
    let in_data = cfg.message_names.iter().map(|k| msg.has_field(k));
    let in_meta = cfg.metadata_names.iter().map(|k| msg.meta(k).is_some());
    let mut checks = in_data.chain(in_meta);
    Ok(if cfg.check_all_keys { checks.all(|present| present) } else { checks.any(|present| present) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn config(all: bool) -> Config {
        Config {
            message_names: vec!["windSpeed".into()],
            metadata_names: vec!["cs_geoZone".into()],
            check_all_keys: all,
        }
    }

    #[test]
    fn all_keys() -> Result<()> {
        let mut d = TestDriver::filter(check_fields, config(true));
        let both = Msg::telemetry("WS", json!({"windSpeed": "33"})).with_meta("cs_geoZone", "A");
        assert_eq!(d.send(both)?.relations(), ["True"]);
        let data_only = Msg::telemetry("WS", json!({"windSpeed": 1}));
        assert_eq!(d.send(data_only)?.relations(), ["False"]);
        Ok(())
    }

    /// ThingsBoard: `TbCheckMessageNode.allKeysExist` / `atLeastOneKeyExist` ask
    /// `containsKey` of the Gson map of the data, which holds `null` values: present.
    #[test]
    fn a_null_value_is_present() -> Result<()> {
        let mut d = TestDriver::filter(check_fields, config(true));
        let null_value = Msg::telemetry("WS", json!({"windSpeed": null})).with_meta("cs_geoZone", "A");
        assert_eq!(d.send(null_value)?.relations(), ["True"]);
        let mut d = TestDriver::filter(check_fields, config(false));
        assert_eq!(d.send(Msg::telemetry("WS", json!({"windSpeed": null})))?.relations(), ["True"]);
        Ok(())
    }

    #[test]
    fn any_key() -> Result<()> {
        let mut d = TestDriver::filter(check_fields, config(false));
        assert_eq!(d.send(Msg::telemetry("WS", json!({"windSpeed": 1})))?.relations(), ["True"]);
        assert_eq!(d.send(Msg::telemetry("WS", json!({"t": 1})))?.relations(), ["False"]);
        Ok(())
    }

    #[test]
    fn forwards_the_message_unchanged() -> Result<()> {
        let msg = Msg::telemetry("WS", json!({"windSpeed": 1})).with_meta("cs_geoZone", "A").with_id("x");
        let out = TestDriver::filter(check_fields, config(true)).send(msg.clone())?;
        assert_eq!(out.messages(), [&msg]);
        Ok(())
    }
}

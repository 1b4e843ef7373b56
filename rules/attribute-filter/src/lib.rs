//! Attribute filter: `True` when the message's metadata has the listed values and keys and its
//! data has the listed keys (not null), `False` otherwise — e.g. "weather stations with a geo
//! zone and a wind speed".
//!
//! Config (every field optional):
//! `{"equals": {"deviceType": "WeatherStation"}, "present": ["cs_geoZone"], "dataPresent": ["windSpeed"]}`
use std::collections::BTreeMap;

use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    /// Metadata keys that must hold exactly these values.
    pub equals: BTreeMap<String, String>,
    /// Metadata keys that must be present.
    pub present: Vec<String>,
    /// Data keys that must be present and not null.
    pub data_present: Vec<String>,
}

/// Keeps messages that match every condition.
#[filter]
pub fn attribute_filter(msg: &Msg, cfg: &Config) -> Result<bool> {
    Ok(cfg.equals.iter().all(|(k, v)| msg.meta(k) == Some(v.as_str()))
        && cfg.present.iter().all(|k| msg.metadata.contains_key(k))
        && cfg.data_present.iter().all(|k| msg.field(k).is_some_and(|v| !v.is_null())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn driver() -> TestDriver {
        let cfg = Config {
            equals: [("deviceType".to_string(), "WeatherStation".to_string())].into(),
            present: vec!["cs_geoZone".into()],
            data_present: vec!["windSpeed".into()],
        };
        TestDriver::filter(attribute_filter, cfg)
    }

    fn station(device_type: &str, zone: Option<&str>, data: Value) -> Msg {
        let msg = Msg::telemetry("WS-1", data).with_meta("deviceType", device_type);
        match zone {
            Some(z) => msg.with_meta("cs_geoZone", z),
            None => msg,
        }
    }

    #[test]
    fn keeps_stations_with_zone_and_wind() -> Result<()> {
        let out = driver().send(station("WeatherStation", Some("A"), json!({"windSpeed": "33"})))?;
        assert_eq!(out.relations(), ["True"]);
        Ok(())
    }

    #[test]
    fn rejects_each_missing_condition() -> Result<()> {
        let mut d = driver();
        assert_eq!(d.send(station("Thermometer", Some("A"), json!({"windSpeed": 1})))?.relations(), ["False"]);
        assert_eq!(d.send(station("WeatherStation", None, json!({"windSpeed": 1})))?.relations(), ["False"]);
        assert_eq!(d.send(station("WeatherStation", Some("A"), json!({"t": 1})))?.relations(), ["False"]);
        assert_eq!(d.send(station("WeatherStation", Some("A"), json!({"windSpeed": null})))?.relations(), ["False"]);
        Ok(())
    }

    #[test]
    fn empty_config_keeps_everything() -> Result<()> {
        let out = TestDriver::filter(attribute_filter, Config::default()).send(Msg::telemetry("d", json!({})))?;
        assert_eq!(out.relations(), ["True"]);
        Ok(())
    }

    #[derive(Debug)]
    struct Probe;
    impl Node for Probe {
        type Config = Config;
        fn init(_: Config) -> Result<Self> {
            Ok(Probe)
        }
        fn on_msg(&mut self, _: Msg, _: &mut Outputs) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bad_config_names_the_field() {
        let err = TestDriver::node_from_json::<Probe>(r#"{"equals": {"deviceType": 3}}"#).err().unwrap();
        assert_eq!(err.field, "equals.deviceType");
    }
}

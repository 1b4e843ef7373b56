//! Attribute filter: forwards the message unchanged on `True` when its metadata has the listed
//! values and keys and its data has the listed keys (not null), on `False` otherwise — e.g.
//! "weather stations with a geo zone and a wind speed". It never fails.
//!
//! Config (every field optional, default empty; an empty config keeps everything):
//! `{"equals": {"deviceType": "WeatherStation"}, "present": ["cs_geoZone"], "dataPresent": ["windSpeed"]}`
//! - `equals`: metadata key → value; the metadata value must be exactly this string.
//! - `present`: metadata keys that must exist (any value, even empty).
//! - `dataPresent`: keys of `data` that must exist and not be `null`.
use std::collections::BTreeMap;

use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
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
        && cfg.present.iter().all(|k| msg.meta(k).is_some())
        && cfg.data_present.iter().all(|k| msg.has_value(k)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    /// The config of the module docs.
    const WEATHER: &str =
        r#"{"equals": {"deviceType": "WeatherStation"}, "present": ["cs_geoZone"], "dataPresent": ["windSpeed"]}"#;

    /// What `#[filter]` generates for the wasm build (natively it generates nothing): the config
    /// parsed as at load, `attribute_filter` per message.
    struct AsLoaded(Config);

    impl Node for AsLoaded {
        type Config = Config;
        fn init(config: Config) -> Result<Self> {
            Ok(AsLoaded(config))
        }
        fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
            sluice_sdk::node::filter_outputs(attribute_filter(&msg, &self.0)?, out);
            Ok(())
        }
    }

    fn loaded(config: &str) -> TestDriver {
        TestDriver::node_from_json::<AsLoaded>(config).unwrap()
    }

    fn station(device_type: &str, zone: Option<&str>, data: Value) -> Msg {
        let msg = Msg::telemetry("WS-1", data).with_meta("deviceType", device_type);
        match zone {
            Some(z) => msg.with_meta("cs_geoZone", z),
            None => msg,
        }
    }

    #[test]
    fn keeps_stations_with_zone_and_wind_unchanged() -> Result<()> {
        let msg = station("WeatherStation", Some("A"), json!({"windSpeed": "33", "t": 1})).with_id("m1").with_ts(7);
        let out = loaded(WEATHER).send(msg.clone())?;
        assert_eq!(out.relations(), ["True"]);
        assert_eq!(out.messages(), [&msg]);
        // Present with an empty value still counts; zero and false are values, not null.
        let out = loaded(WEATHER).send(station("WeatherStation", Some(""), json!({"windSpeed": 0})))?;
        assert_eq!(out.relations(), ["True"]);
        Ok(())
    }

    #[test]
    fn rejects_each_missing_condition() -> Result<()> {
        let mut d = loaded(WEATHER);
        // Wrong type; a type that differs only in case; no deviceType at all.
        assert_eq!(d.send(station("Thermometer", Some("A"), json!({"windSpeed": 1})))?.relations(), ["False"]);
        assert_eq!(d.send(station("weatherstation", Some("A"), json!({"windSpeed": 1})))?.relations(), ["False"]);
        let untyped = Msg::telemetry("WS-1", json!({"windSpeed": 1})).with_meta("cs_geoZone", "A");
        assert_eq!(d.send(untyped)?.relations(), ["False"]);
        // No zone; no wind speed; a null wind speed; data that is not an object.
        assert_eq!(d.send(station("WeatherStation", None, json!({"windSpeed": 1})))?.relations(), ["False"]);
        assert_eq!(d.send(station("WeatherStation", Some("A"), json!({"t": 1})))?.relations(), ["False"]);
        assert_eq!(d.send(station("WeatherStation", Some("A"), json!({"windSpeed": null})))?.relations(), ["False"]);
        assert_eq!(d.send(station("WeatherStation", Some("A"), json!([1, 2])))?.relations(), ["False"]);
        // windSpeed in metadata is not windSpeed in data.
        let in_meta = station("WeatherStation", Some("A"), json!({})).with_meta("windSpeed", "3");
        assert_eq!(d.send(in_meta)?.relations(), ["False"]);
        Ok(())
    }

    #[test]
    fn every_equals_entry_must_match() -> Result<()> {
        let mut d = loaded(r#"{"equals": {"deviceType": "Meter", "site": "North"}}"#);
        let meter =
            |site: &str| Msg::telemetry("m", json!({})).with_meta("deviceType", "Meter").with_meta("site", site);
        assert_eq!(d.send(meter("North"))?.relations(), ["True"]);
        assert_eq!(d.send(meter("South"))?.relations(), ["False"]);
        Ok(())
    }

    #[test]
    fn empty_config_keeps_everything() -> Result<()> {
        for config in ["", "null", "{}"] {
            let out = loaded(config).send(Msg::telemetry("d", json!({})))?;
            assert_eq!(out.relations(), ["True"], "config {config:?}");
        }
        let out = TestDriver::filter(attribute_filter, Config::default()).send(Msg::telemetry("d", Value::Null))?;
        assert_eq!(out.relations(), ["True"]);
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        let parse = |text: &str| TestDriver::node_from_json::<AsLoaded>(text).err().unwrap();
        assert_eq!(parse(r#"{"equals": {"deviceType": 3}}"#).field, "equals.deviceType");
        assert_eq!(parse(r#"{"present": ["a", 1]}"#).field, "present[1]");
        assert_eq!(parse(r#"{"dataPresent": "windSpeed"}"#).field, "dataPresent");
        assert_eq!(parse(r#"{"data_present": ["windSpeed"]}"#).field, "data_present");
    }
}

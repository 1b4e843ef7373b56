//! Kafka action: produces the message to a Kafka topic through the chain's connector —
//! ThingsBoard's "kafka" node (`TbKafkaNode`: `topicPattern`, `keyPattern`, metadata as headers).
//!
//! The node builds `{"topic", "key", "headers", "value"}` and calls the connector the chain
//! granted it (`"connector": NAME`): a Kafka producer (idempotent, `acks=all`) in production, a
//! file in tests. It returns only once the connector has the delivery report, so a message is
//! acked only after it is in Kafka. On `Success` the message goes on with ThingsBoard's metadata
//! `offset`, `partition` and `topic`; a failed delivery → `Failure` with the connector's reason.
//!
//! Config:
//! ```json
//! {"topic": "weather-stations-data", "key": "${deviceName}", "headers": {"source": "sluice"},
//!  "metadataHeaders": false, "value": "data"}
//! ```
//! - `topic` (required): a template (`${metadataKey}`, `$[dataKey]`).
//! - `key` (default none): a template for the record key.
//! - `headers` (default none): header name → template.
//! - `metadataHeaders` (default false): also send every metadata entry as a header
//!   (ThingsBoard's `addMetadataKeyValuesAsKafkaHeaders`).
//! - `value` (default `"data"`): `"data"` sends the message data (ThingsBoard's behaviour),
//!   `"message"` the whole message (id, ts, type, originator, metadata, data).
//! - `template` (default none): the record value as text rendered from this template instead —
//!   ThingsBoard 1.x's `KafkaPluginAction` sent a Velocity template, e.g.
//!   `{"geoZone":"${cs_geoZone}", "windSpeed":$[windSpeed]}` (`sluice import thingsboard`
//!   translates `$cs.get('geoZone')` and `$windSpeed.valueAsString` so). It replaces `value`.
use std::collections::BTreeMap;

use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub topic: Template,
    #[serde(default)]
    pub key: Option<Template>,
    #[serde(default)]
    pub headers: BTreeMap<String, Template>,
    #[serde(default)]
    pub metadata_headers: bool,
    #[serde(default)]
    pub value: ValueKind,
    #[serde(default)]
    pub template: Option<Template>,
}

/// What the record's value is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    #[default]
    Data,
    Message,
}

/// The request the connector gets for `msg`.
pub fn request(msg: &Msg, cfg: &Config) -> Result<Value> {
    let mut headers = BTreeMap::new();
    if cfg.metadata_headers {
        headers.extend(msg.metadata().iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    for (name, template) in &cfg.headers {
        headers.insert(name.clone(), template.render(msg)?);
    }
    let value = match (&cfg.template, cfg.value) {
        (Some(template), _) => Value::String(template.render(msg)?),
        (None, ValueKind::Data) => msg.data().clone(),
        (None, ValueKind::Message) => serde_json::to_value(msg)?,
    };
    let key = cfg.key.as_ref().map(|k| k.render(msg)).transpose()?;
    Ok(json!({"topic": cfg.topic.render(msg)?, "key": key, "headers": headers, "value": value}))
}

pub struct KafkaAction {
    config: Config,
}

/// Produces the message to a Kafka topic through the granted connector.
#[node(relations = ["Success"])]
impl Node for KafkaAction {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        Ok(KafkaAction { config })
    }

    fn on_msg(&mut self, mut msg: Msg, out: &mut Outputs) -> Result<()> {
        let request = request(&msg, &self.config)?;
        let answer = action::call(&request)?;
        if let Some(topic) = request["topic"].as_str() {
            msg.set_meta("topic", topic);
        }
        for key in ["offset", "partition"] {
            if let Some(v) = answer.get(key).filter(|v| !v.is_null()) {
                msg.set_meta(key, v.as_str().map_or_else(|| v.to_string(), str::to_string));
            }
        }
        out.emit(relation::SUCCESS, msg);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn zone_avg() -> Msg {
        Msg::new("ZONE_WIND_SPEED", Originator::asset("A"), json!({"avg": 12.5, "count": 4}))
            .with_meta("key", "A")
            .with_id("w1")
    }

    #[test]
    fn a_template_is_the_value_as_text() -> Result<()> {
        let config = r#"{"topic": "weather-stations-data", "template": "{\"geoZone\":\"${cs_geoZone}\", \"windSpeed\":$[windSpeed]}"}"#;
        let cfg: Config = serde_json::from_str(config)?;
        let msg = Msg::telemetry("WS-1", json!({"windSpeed": 33.5})).with_meta("cs_geoZone", "Zone A");
        let request = request(&msg, &cfg)?;
        assert_eq!(request["value"], json!("{\"geoZone\":\"Zone A\", \"windSpeed\":33.5}"));
        // A value the message lacks is an error naming it.
        let err = super::request(&Msg::telemetry("WS-1", json!({})), &cfg).unwrap_err();
        assert!(err.to_string().contains("cs_geoZone"), "{err}");
        Ok(())
    }

    #[test]
    fn produces_data_with_rendered_topic_key_and_headers() -> Result<()> {
        let cfg = r#"{"topic": "weather-stations-data", "key": "${key}", "headers": {"zone": "$[count]"}}"#;
        let mut d = TestDriver::node_from_json::<KafkaAction>(cfg).unwrap();
        let out = d.send(zone_avg())?;
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(
            d.actions(),
            [json!({"topic": "weather-stations-data", "key": "A", "headers": {"zone": "4"},
                    "value": {"avg": 12.5, "count": 4}})]
        );
        assert_eq!(out.messages()[0].meta("topic"), Some("weather-stations-data"));
        Ok(())
    }

    #[test]
    fn delivery_report_lands_in_metadata_and_failures_go_to_failure() -> Result<()> {
        let cfg = r#"{"topic": "t", "metadataHeaders": true, "value": "message"}"#;
        let mut d = TestDriver::node_from_json::<KafkaAction>(cfg)
            .unwrap()
            .with_actions(|_| Ok(json!({"partition": 3, "offset": 42})));
        let out = d.send(zone_avg())?;
        let msg = out.messages()[0];
        assert_eq!((msg.meta("partition"), msg.meta("offset")), (Some("3"), Some("42")));
        assert_eq!(d.actions()[0]["headers"], json!({"key": "A"}));
        assert_eq!(d.actions()[0]["value"]["originator"]["name"], "A");

        let mut failing =
            TestDriver::node_from_json::<KafkaAction>(cfg).unwrap().with_actions(|_| Err("broker down".into()));
        let out = failing.send(zone_avg())?;
        assert_eq!(out.relations(), ["Failure"]);
        assert!(out.messages()[0].meta("error").unwrap().contains("broker down"));
        Ok(())
    }

    #[test]
    fn a_missing_template_value_fails_the_message_not_the_node() -> Result<()> {
        let mut d = TestDriver::node_from_json::<KafkaAction>(r#"{"topic": "zone-${region}"}"#).unwrap();
        let out = d.send(zone_avg())?;
        assert_eq!(out.relations(), ["Failure"]);
        assert!(out.messages()[0].meta("error").unwrap().contains("${region}"));
        assert!(d.actions().is_empty(), "nothing produced");
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        let parse = |text: &str| TestDriver::node_from_json::<KafkaAction>(text).err().unwrap();
        assert_eq!(parse(r#"{}"#).field, "topic");
        assert_eq!(parse(r#"{"topic": "t-${open"}"#).field, "topic");
        assert_eq!(parse(r#"{"topic": "t", "value": "body"}"#).field, "value");
        assert_eq!(parse(r#"{"topic": "t", "headers": {"h": 1}}"#).field, "headers.h");
    }
}

//! MQTT action: publishes the message through the chain's MQTT connector — ThingsBoard's "mqtt"
//! node (`TbMqttNode`, `topicPattern`), plus ThingsBoard's gateway API payload shapes.
//!
//! The node builds `{"topic", "qos", "retain", "payload"}` and calls the connector the chain
//! granted it; QoS 1 by default, so the connector answers once the broker acknowledged it.
//! `Success` carries the message on unchanged; a failed publish → `Failure`.
//!
//! Config:
//! ```json
//! {"topic": "v1/gateway/telemetry", "qos": 1, "retain": false, "payload": "gateway-telemetry"}
//! ```
//! - `topic` (required): a template (`${metadataKey}`, `$[dataKey]`).
//! - `qos` (default 1): 0, 1 or 2.
//! - `retain` (default false).
//! - `payload` (default `"data"`): `"data"` — the message data; `"gateway-telemetry"` —
//!   ThingsBoard's gateway telemetry shape `{"<originator name>": [{"ts": <ts>, "values": <data>}]}`;
//!   `"gateway-attributes"` — `{"<originator name>": <data>}`; `"message"` — the whole message.
//! - `parseToPlainText` (default false): ThingsBoard's option of the same name.
//!
//! With `payload: "data"`, what is published is the message data as JSON text, exactly as
//! ThingsBoard's `TbMqttNode.onMsg` publishes `msg.getData()` (`getData(tbMsg, false)`): a string
//! data `"on"` goes out as the five bytes `"on"`, quotes included. Only with `parseToPlainText`
//! does it go out as `on` (ThingsBoard's `JacksonUtil.toPlainText`: a JSON string loses its
//! quotes, anything else is published as it is). The connector publishes a string `payload` as
//! is and any other value as JSON, so a string data is handed to it JSON-encoded.
use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub topic: Template,
    #[serde(default = "default_qos")]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    #[serde(default)]
    pub payload: Payload,
    #[serde(default)]
    pub parse_to_plain_text: bool,
}

fn default_qos() -> u8 {
    1
}

/// The shape of what is published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Payload {
    #[default]
    Data,
    GatewayTelemetry,
    GatewayAttributes,
    Message,
}

/// The request the connector gets for `msg`.
pub fn request(msg: &Msg, cfg: &Config) -> Result<Value> {
    let payload = match cfg.payload {
        Payload::Data => match msg.data() {
            // The connector sends a string as is: hand it the JSON text, quotes and all.
            Value::String(text) if !cfg.parse_to_plain_text => Value::String(serde_json::to_string(text)?),
            data => data.clone(),
        },
        Payload::GatewayTelemetry => json!({ msg.originator_name(): [{"ts": msg.ts(), "values": msg.data()}] }),
        Payload::GatewayAttributes => json!({ msg.originator_name(): msg.data() }),
        Payload::Message => serde_json::to_value(msg)?,
    };
    Ok(json!({"topic": cfg.topic.render(msg)?, "qos": cfg.qos, "retain": cfg.retain, "payload": payload}))
}

pub struct MqttAction {
    config: Config,
}

/// Publishes the message through the granted MQTT connector.
#[node(relations = ["Success"])]
impl Node for MqttAction {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        if config.qos > 2 {
            bail_config!("qos", "{} is not an MQTT QoS (0, 1 or 2)", config.qos);
        }
        Ok(MqttAction { config })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        action::call(&request(&msg, &self.config)?)?;
        out.forward(relation::SUCCESS);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    #[test]
    fn gateway_shapes() -> Result<()> {
        let msg = Msg::telemetry("Device A", json!({"temperature": 21.5})).with_ts(1_700_000_000_000);
        let cfg = r#"{"topic": "v1/gateway/telemetry", "payload": "gateway-telemetry"}"#;
        let mut d = TestDriver::node_from_json::<MqttAction>(cfg).unwrap();
        assert_eq!(d.send(msg.clone())?.relations(), ["Success"]);
        assert_eq!(
            d.actions(),
            [json!({"topic": "v1/gateway/telemetry", "qos": 1, "retain": false,
                    "payload": {"Device A": [{"ts": 1_700_000_000_000_i64, "values": {"temperature": 21.5}}]}})]
        );
        let cfg = r#"{"topic": "v1/gateway/attributes", "payload": "gateway-attributes", "qos": 0, "retain": true}"#;
        let mut d = TestDriver::node_from_json::<MqttAction>(cfg).unwrap();
        d.send(msg)?;
        assert_eq!(d.actions()[0]["payload"], json!({"Device A": {"temperature": 21.5}}));
        assert_eq!((d.actions()[0]["qos"].clone(), d.actions()[0]["retain"].clone()), (json!(0), json!(true)));
        Ok(())
    }

    #[test]
    fn topic_template_and_failure() -> Result<()> {
        let msg = Msg::telemetry("WS-1", json!({"windSpeed": 3})).with_meta("deviceName", "WS-1");
        let mut d = TestDriver::node_from_json::<MqttAction>(r#"{"topic": "v1/devices/${deviceName}/telemetry"}"#)
            .unwrap()
            .with_actions(|_| Err("not connected".into()));
        let out = d.send(msg)?;
        assert_eq!(d.actions()[0]["topic"], "v1/devices/WS-1/telemetry");
        assert_eq!(d.actions()[0]["payload"], json!({"windSpeed": 3}));
        assert_eq!(out.relations(), ["Failure"]);
        Ok(())
    }

    /// ThingsBoard: `TbMqttNode.onMsg` publishes `getData(tbMsg, parseToPlainText)` — the
    /// message data as JSON text (`tbMsg.getData()`), a string with its quotes; with
    /// `parseToPlainText`, `JacksonUtil.toPlainText` strips them.
    #[test]
    fn string_data_is_published_json_encoded() -> Result<()> {
        let msg = Msg::telemetry("D", json!("on"));
        let mut d = TestDriver::node_from_json::<MqttAction>(r#"{"topic": "t"}"#).unwrap();
        d.send(msg.clone())?;
        assert_eq!(d.actions()[0]["payload"], json!("\"on\""));
        let mut d = TestDriver::node_from_json::<MqttAction>(r#"{"topic": "t", "parseToPlainText": true}"#).unwrap();
        d.send(msg)?;
        assert_eq!(d.actions()[0]["payload"], json!("on"));
        let mut d = TestDriver::node_from_json::<MqttAction>(r#"{"topic": "t", "parseToPlainText": true}"#).unwrap();
        d.send(Msg::telemetry("D", json!({"a": 1})))?;
        assert_eq!(d.actions()[0]["payload"], json!({"a": 1}));
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        let parse = |text: &str| TestDriver::node_from_json::<MqttAction>(text).err().unwrap();
        assert!(parse(r#"{"topic": "t", "qos": 3}"#).message.contains("`qos`"));
        assert_eq!(parse(r#"{"topic": "t", "qos": -1}"#).field, "qos");
        assert_eq!(parse(r#"{"topic": "t", "payload": "gateway"}"#).field, "payload");
        assert_eq!(parse(r#"{"topic": "t", "retian": true}"#).field, "retian");
    }
}

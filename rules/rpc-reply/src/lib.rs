//! RPC call reply (ThingsBoard's `TbSendRPCReplyNode`): answers an RPC request a device sent
//! (`TO_SERVER_RPC_REQUEST`, routed on `RPC Request from Device`) by publishing the message
//! data as the reply through the chain's MQTT connector.
//!
//! As `TbSendRPCReplyNode.onMsg`: the request id is the metadata value named by
//! `requestIdMetaDataAttribute` (default `requestId`, which ThingsBoard's transport sets from
//! the topic `v1/devices/me/rpc/request/{id}`; Sluice's MQTT source does not subscribe to device
//! RPC requests yet, so whatever brings them in must set it); the originator must be a device. Its failures, with ThingsBoard's texts, go to `Failure` with `metadata.error`
//! (`Message originator is not a device entity!`, `Request id is not present in the
//! metadata!`), as does a connector failure (not connected, no PUBACK before the connector's
//! `timeoutMs`). A reply the broker acknowledged → `Success`, the message unchanged.
//!
//! What is published is the message data as JSON text, as ThingsBoard hands `msg.getData()` to
//! the device session (a string data keeps its quotes), on `topic` — a template that also sees
//! `${requestId}` and `${deviceName}` (the originator's name when the metadata has none),
//! default `v1/devices/${deviceName}/rpc/response/${requestId}`. Not ThingsBoard's
//! `v1/devices/me/rpc/response/{id}`, for the reason given in `rpc-request`: `me` is the device's
//! own session on ThingsBoard, and on a broker serving many devices it would reach them all;
//! set `"topic": "v1/devices/me/rpc/response/${requestId}"` for a broker that maps `me` per
//! client.
//!
//! What it does not do: ThingsBoard also needs the `serviceId` and `sessionId` metadata (the
//! device's session on a ThingsBoard node); Sluice has no device sessions, so they are neither
//! required nor used — the topic is the session. There is no gateway form: ThingsBoard's gateway
//! API carries server-side RPC only (`v1/gateway/rpc`), a device behind a gateway cannot send
//! RPC requests to be answered. Edge replies (`edgeId`) are not queued to an edge.
//!
//! Config:
//! ```json
//! {"requestIdMetaDataAttribute": "requestId", "topic": "v1/devices/${deviceName}/rpc/response/${requestId}", "qos": 1}
//! ```
use sluice_sdk::prelude::*;

/// The default reply topic.
pub const DEVICE_TOPIC: &str = "v1/devices/${deviceName}/rpc/response/${requestId}";

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// The metadata key holding the request id (ThingsBoard's option of the same name).
    #[serde(default = "default_request_id_key", rename = "requestIdMetaDataAttribute")]
    pub request_id_key: String,
    /// A template; `${requestId}` and `${deviceName}` are set. Default [`DEVICE_TOPIC`].
    #[serde(default)]
    pub topic: Option<Template>,
    #[serde(default = "default_qos")]
    pub qos: u8,
}

fn default_request_id_key() -> String {
    "requestId".into()
}

fn default_qos() -> u8 {
    1
}

/// The request the connector gets for `msg`.
pub fn request(msg: &Msg, cfg: &Config, topic: &Template) -> Result<Value> {
    if msg.originator().entity_type != "DEVICE" {
        bail!("Message originator is not a device entity!");
    }
    let Some(id) = msg.meta(&cfg.request_id_key).filter(|id| !id.is_empty()) else {
        bail!("Request id is not present in the metadata!")
    };
    let mut scope = msg.clone();
    scope.set_meta("requestId", id.to_string());
    if scope.meta("deviceName").is_none() {
        scope.set_meta("deviceName", msg.originator_name().into_owned());
    }
    let payload = match msg.data() {
        // The connector sends a string as is: hand it the JSON text, quotes and all.
        Value::String(text) => Value::String(serde_json::to_string(text)?),
        data => data.clone(),
    };
    Ok(json!({"topic": topic.render(&scope)?, "qos": cfg.qos, "retain": false, "payload": payload}))
}

pub struct RpcReply {
    config: Config,
    topic: Template,
}

/// Answers a device's RPC request through the granted MQTT connector.
#[node(relations = ["Success"])]
impl Node for RpcReply {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        if config.qos > 2 {
            bail_config!("qos", "{} is not an MQTT QoS (0, 1 or 2)", config.qos);
        }
        if config.request_id_key.is_empty() {
            bail_config!("requestIdMetaDataAttribute", "empty");
        }
        let topic = match &config.topic {
            Some(topic) => topic.clone(),
            None => Template::parse(DEVICE_TOPIC).map_err(Error::new)?,
        };
        Ok(RpcReply { config, topic })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        action::call(&request(&msg, &self.config, &self.topic)?)?;
        out.forward(relation::SUCCESS);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn rpc(device: &str, data: Value) -> Msg {
        Msg::new("TO_SERVER_RPC_REQUEST", Originator::device(device), data)
    }

    /// `TbSendRPCReplyNode.onMsg`: the `requestId` metadata names the request; the message data
    /// is the reply body (`sendRpcReplyToDevice(…, msg.getData())`); the message goes on
    /// `Success` unchanged.
    #[test]
    fn replies_with_the_data_on_the_request_topic() -> Result<()> {
        let mut d = TestDriver::node_from_json::<RpcReply>("{}").unwrap();
        let out = d.send(rpc("Thermostat-1", json!({"time": 1_700_000_000_000_i64})).with_meta("requestId", "17"))?;
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(
            d.actions(),
            [json!({"topic": "v1/devices/Thermostat-1/rpc/response/17", "qos": 1, "retain": false,
                    "payload": {"time": 1_700_000_000_000_i64}})]
        );
        // `msg.getData()` is JSON text: a string reply keeps its quotes.
        d.send(rpc("T", json!("ok")).with_meta("requestId", "18"))?;
        assert_eq!(d.actions()[1]["payload"], json!("\"ok\""));
        Ok(())
    }

    #[test]
    fn request_id_key_and_topic_are_configurable() -> Result<()> {
        let cfg =
            r#"{"requestIdMetaDataAttribute": "rpcId", "topic": "v1/devices/me/rpc/response/${requestId}", "qos": 0}"#;
        let mut d = TestDriver::node_from_json::<RpcReply>(cfg).unwrap();
        d.send(rpc("T", json!({"ok": true})).with_meta("rpcId", "5"))?;
        assert_eq!(d.actions()[0]["topic"], "v1/devices/me/rpc/response/5");
        assert_eq!(d.actions()[0]["qos"], 0);
        Ok(())
    }

    /// `TbSendRPCReplyNode.onMsg`'s failures, with its texts, and a connector failure.
    #[test]
    fn failures_as_thingsboard() -> Result<()> {
        let mut d = TestDriver::node_from_json::<RpcReply>("{}").unwrap();
        for (msg, error) in [
            (rpc("T", json!({})), "Request id is not present in the metadata!"),
            (rpc("T", json!({})).with_meta("requestId", ""), "Request id is not present in the metadata!"),
            (
                Msg::new("TO_SERVER_RPC_REQUEST", Originator::asset("A"), json!({})).with_meta("requestId", "1"),
                "Message originator is not a device entity!",
            ),
        ] {
            let out = d.send(msg)?;
            assert_eq!(out.relations(), ["Failure"]);
            assert_eq!(out.messages()[0].meta("error"), Some(error));
        }
        assert!(d.actions().is_empty());
        let mut d = TestDriver::node_from_json::<RpcReply>("{}").unwrap().with_actions(|_| Err("not connected".into()));
        let out = d.send(rpc("T", json!({})).with_meta("requestId", "1"))?;
        assert_eq!(out.relations(), ["Failure"]);
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        let parse = |text: &str| TestDriver::node_from_json::<RpcReply>(text).err().unwrap();
        assert!(parse(r#"{"qos": 3}"#).message.contains("`qos`"));
        assert!(parse(r#"{"requestIdMetaDataAttribute": ""}"#).message.contains("`requestIdMetaDataAttribute`"));
        assert_eq!(parse(r#"{"serviceIdMetaDataAttribute": "serviceId"}"#).field, "serviceIdMetaDataAttribute");
    }
}

//! RPC call request (ThingsBoard's `TbSendRPCRequestNode`): sends a server-side RPC to the
//! message's originator device by publishing it through the chain's MQTT connector, on the
//! topics of ThingsBoard's MQTT device API or gateway API.
//!
//! The request is built as `TbSendRPCRequestNode.onMsg` builds it from the message data:
//! `method` and `params` are required (`Method is not present in the message!`, `Params are not
//! present in the message!` → `Failure`), the originator must be a device (`Message originator
//! is not a device entity!`), and the request id is the data's `requestId` when it has one.
//! ThingsBoard otherwise draws a random `int`; here it is derived from the message id (a
//! positive 31-bit hash), so that a replay after a crash sends the same request id. What is
//! published is what ThingsBoard's MQTT transport sends the device (`JsonMqttAdaptor`):
//! - `mode: "device"` (the default): `{"method": …, "params": …}` on `topic`, a template that
//!   also sees `${requestId}` and `${deviceName}` (the originator's name when the metadata has
//!   none). The default topic is `v1/devices/${deviceName}/rpc/request/${requestId}`, not
//!   ThingsBoard's `v1/devices/me/rpc/request/{id}`: on ThingsBoard, `me` is the device's own
//!   authenticated session, but a broker serves many devices, and every one subscribed to
//!   `v1/devices/me/rpc/request/+` would receive every other device's commands. A broker that
//!   serves one device (or maps `me` per client, as a mosquitto ACL `%c` pattern does) can use
//!   `"topic": "v1/devices/me/rpc/request/${requestId}"`.
//! - `mode: "gateway"`: ThingsBoard's gateway API, `{"device": <name>, "data": {"id": <requestId>,
//!   "method": …, "params": …}}` on `v1/gateway/rpc` (or `topic`), which the gateway subscribed
//!   to for all the devices behind it.
//!
//! Published at QoS 1 by default: the connector answers once the broker acknowledged the
//! publish, and the node then sends on `Success`, as ThingsBoard does for a one-way RPC that
//! was sent: a new message with the same metadata (plus `requestId`) and data `{}`
//! (`processRpcResponse`, `TbMsg.EMPTY_JSON_OBJECT`). A connector failure (not connected, no
//! PUBACK before the connector's `timeoutMs` — the node's timeout: the importer sets it from
//! `timeoutInSeconds` —, circuit open) → `Failure` with `metadata.error`.
//!
//! What it does not do: two-way RPC. ThingsBoard waits for the device's answer and sends it on
//! `Success`; that needs a subscription to the device's response topic, which an action
//! connector does not have (it publishes, it does not listen). `Success` here means *delivered
//! to the broker*, never *answered*; a device's answer can come back into a chain through an
//! MQTT source subscribed to `v1/devices/+/rpc/response/+`. Nor does it persist RPCs
//! (`persistent`), retry on the device's reconnection, or honour `expirationTime`.
//!
//! Config:
//! ```json
//! {"mode": "device", "topic": "v1/devices/${deviceName}/rpc/request/${requestId}", "qos": 1}
//! ```
use serde_json::Map;
use sluice_sdk::prelude::*;

/// The per-device topic of the default `device` mode.
pub const DEVICE_TOPIC: &str = "v1/devices/${deviceName}/rpc/request/${requestId}";
/// ThingsBoard's gateway RPC topic.
pub const GATEWAY_TOPIC: &str = "v1/gateway/rpc";

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub mode: Mode,
    /// A template; `${requestId}` and `${deviceName}` are set. Default by `mode`.
    #[serde(default)]
    pub topic: Option<Template>,
    #[serde(default = "default_qos")]
    pub qos: u8,
}

fn default_qos() -> u8 {
    1
}

/// Which of ThingsBoard's MQTT APIs the device listens on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The device API: `{"method", "params"}` on a topic per request.
    #[default]
    Device,
    /// The gateway API: `{"device", "data": {"id", "method", "params"}}` on `v1/gateway/rpc`.
    Gateway,
}

/// A positive 31-bit request id from the message id (FNV-1a): stable across replays.
pub fn request_id_of(msg_id: &str) -> i64 {
    let hash = msg_id.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    i64::from(hash & 0x7fff_ffff)
}

/// The request id: the data's `requestId` (`getAsInt`, a number or a numeric string), else one
/// derived from the message id.
fn request_id(msg: &Msg, data: &Map<String, Value>) -> Result<i64> {
    match data.get("requestId") {
        None => Ok(request_id_of(msg.id())),
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| i32::try_from(n).is_ok()) => {
            Ok(n.as_i64().unwrap_or_default())
        }
        Some(Value::String(s)) if s.trim().parse::<i32>().is_ok() => Ok(s.trim().parse::<i32>().map(i64::from)?),
        Some(other) => bail!("requestId {other} is not an int"),
    }
}

/// `(requestId, the request for the connector)` for `msg`.
pub fn request(msg: &Msg, cfg: &Config, topic: &Template) -> Result<(i64, Value)> {
    if msg.originator().entity_type != "DEVICE" {
        bail!("Message originator is not a device entity!");
    }
    let Value::Object(data) = msg.data() else { bail!("Message data is not a JSON object!") };
    let Some(method) = data.get("method") else { bail!("Method is not present in the message!") };
    let Some(params) = data.get("params") else { bail!("Params are not present in the message!") };
    let id = request_id(msg, data)?;
    let device = msg.originator_name().into_owned();
    let mut scope = msg.clone();
    scope.set_meta("requestId", id.to_string());
    if scope.meta("deviceName").is_none() {
        scope.set_meta("deviceName", device.clone());
    }
    let payload = match cfg.mode {
        Mode::Device => json!({"method": method, "params": params}),
        Mode::Gateway => json!({"device": device, "data": {"id": id, "method": method, "params": params}}),
    };
    Ok((id, json!({"topic": topic.render(&scope)?, "qos": cfg.qos, "retain": false, "payload": payload})))
}

pub struct RpcRequest {
    config: Config,
    topic: Template,
}

/// Sends a one-way RPC to the originator device through the granted MQTT connector.
#[node(relations = ["Success"])]
impl Node for RpcRequest {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        if config.qos > 2 {
            bail_config!("qos", "{} is not an MQTT QoS (0, 1 or 2)", config.qos);
        }
        let topic = match (&config.topic, config.mode) {
            (Some(topic), _) => topic.clone(),
            (None, Mode::Device) => Template::parse(DEVICE_TOPIC).map_err(Error::new)?,
            (None, Mode::Gateway) => Template::parse(GATEWAY_TOPIC).map_err(Error::new)?,
        };
        Ok(RpcRequest { config, topic })
    }

    fn on_msg(&mut self, mut msg: Msg, out: &mut Outputs) -> Result<()> {
        let (id, request) = request(&msg, &self.config, &self.topic)?;
        action::call(&request)?;
        msg.set_meta("requestId", id.to_string());
        msg.set_data(json!({}));
        out.emit(relation::SUCCESS, msg);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn command(device: &str, data: Value) -> Msg {
        Msg::new("RPC_CALL_FROM_SERVER_TO_DEVICE", Originator::device(device), data).with_id("m-1")
    }

    /// `TbSendRPCRequestNode.onMsg`: `method`, `params` and `requestId` from the data; the device
    /// gets `{"method", "params"}` (`JsonMqttAdaptor.convertToDevicePublish`); a one-way send
    /// answers `Success` with data `{}` (`processRpcResponse`, `EMPTY_JSON_OBJECT`).
    #[test]
    fn device_mode_publishes_method_and_params_per_device() -> Result<()> {
        let mut d = TestDriver::node_from_json::<RpcRequest>("{}").unwrap();
        let msg = command("Valve-7", json!({"method": "setOpen", "params": {"open": true}, "requestId": 42}))
            .with_meta("deviceType", "valve");
        let out = d.send(msg)?;
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(
            d.actions(),
            [json!({"topic": "v1/devices/Valve-7/rpc/request/42", "qos": 1, "retain": false,
                    "payload": {"method": "setOpen", "params": {"open": true}}})]
        );
        let sent = &out.messages()[0];
        assert_eq!(sent.data(), &json!({}));
        assert_eq!((sent.meta("requestId"), sent.meta("deviceType")), (Some("42"), Some("valve")));
        Ok(())
    }

    /// ThingsBoard's gateway API: `{"device", "data": {"id", "method", "params"}}` on
    /// `v1/gateway/rpc` (`JsonMqttAdaptor.convertToGatewayPublish`).
    #[test]
    fn gateway_mode_wraps_the_request_for_the_gateway() -> Result<()> {
        let mut d = TestDriver::node_from_json::<RpcRequest>(r#"{"mode": "gateway", "qos": 0}"#).unwrap();
        d.send(command("Pump 3", json!({"method": "stop", "params": 5, "requestId": "7"})))?;
        assert_eq!(
            d.actions(),
            [json!({"topic": "v1/gateway/rpc", "qos": 0, "retain": false,
                    "payload": {"device": "Pump 3", "data": {"id": 7, "method": "stop", "params": 5}}})]
        );
        Ok(())
    }

    #[test]
    fn request_id_is_stable_without_one_and_topic_is_configurable() -> Result<()> {
        let cfg = r#"{"topic": "v1/devices/me/rpc/request/${requestId}"}"#;
        let mut d = TestDriver::node_from_json::<RpcRequest>(cfg).unwrap();
        d.send(command("D", json!({"method": "reboot", "params": {}})))?;
        d.send(command("D", json!({"method": "reboot", "params": {}})))?;
        let id = request_id_of("m-1");
        assert!((0..=i64::from(i32::MAX)).contains(&id));
        let topic = format!("v1/devices/me/rpc/request/{id}");
        assert_eq!([d.actions()[0]["topic"].clone(), d.actions()[1]["topic"].clone()], [json!(topic), json!(topic)]);
        Ok(())
    }

    /// `TbSendRPCRequestNode.onMsg`'s failures, with its own error texts, and a connector
    /// failure (no PUBACK in time) → `Failure`; nothing is published for a bad message.
    #[test]
    fn failures_as_thingsboard() -> Result<()> {
        let mut d = TestDriver::node_from_json::<RpcRequest>("{}").unwrap();
        for (msg, error) in [
            (command("D", json!({"params": {}})), "Method is not present in the message!"),
            (command("D", json!({"method": "m"})), "Params are not present in the message!"),
            (
                Msg::new("POST_TELEMETRY_REQUEST", Originator::asset("A"), json!({"method": "m", "params": 1})),
                "Message originator is not a device entity!",
            ),
        ] {
            let out = d.send(msg)?;
            assert_eq!(out.relations(), ["Failure"]);
            assert_eq!(out.messages()[0].meta("error"), Some(error));
        }
        assert!(d.actions().is_empty());
        let mut d = TestDriver::node_from_json::<RpcRequest>("{}")
            .unwrap()
            .with_actions(|_| Err("no PUBACK within 300 ms".into()));
        let out = d.send(command("D", json!({"method": "m", "params": 1})))?;
        assert_eq!(out.relations(), ["Failure"]);
        assert!(out.messages()[0].meta("error").unwrap_or_default().contains("no PUBACK"));
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        let parse = |text: &str| TestDriver::node_from_json::<RpcRequest>(text).err().unwrap();
        assert!(parse(r#"{"qos": 3}"#).message.contains("`qos`"));
        assert_eq!(parse(r#"{"mode": "me"}"#).field, "mode");
        assert_eq!(parse(r#"{"topic": "t-${"}"#).field, "topic");
    }
}

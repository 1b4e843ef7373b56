//! REST action: an HTTP call built from the message — ThingsBoard's "rest api call" node
//! (`TbRestApiCallNode`) — plus ThingsBoard's own telemetry flow as a mode.
//!
//! The node builds `{"method", "url", "headers", "body"}` and calls the chain's HTTP connector
//! (which holds the base URL, timeout and connection pool). As in ThingsBoard: a 2xx answer goes
//! on `Success` with metadata `status`, `statusCode` and `statusReason` and the response body as
//! the new data (when `useResponseBody`, the default); any other status goes to `Failure` with
//! the same metadata plus `error` = the status and `errorBody` = the body; a network error or
//! timeout → `Failure` with the connector's reason.
//!
//! Config (`"mode": "call"`, the default):
//! ```json
//! {"method": "POST", "url": "/api/v1/${deviceName}/telemetry",
//!  "headers": {"Content-Type": "application/json"}, "body": null, "useResponseBody": true}
//! ```
//! - `method` (default `POST`); `url` (required, a template: `${metadataKey}`, `$[dataKey]`;
//!   relative URLs resolve against the connector's `baseUrl`); `headers`: name → template.
//! - `body` (default `null`: the message data as JSON): a template for a text body.
//!
//! Config (`"mode": "thingsboard-asset-telemetry"`) — the seed's flow into ThingsBoard:
//! ```json
//! {"mode": "thingsboard-asset-telemetry", "username": "tenant@thingsboard.org", "password": "tenant",
//!  "assetName": "${key}", "assetType": "GeoZone"}
//! ```
//! Logs in (`POST /api/auth/login` → JWT, kept and renewed on a 401), gets the asset by name
//! (`GET /api/tenant/assets?assetName=…`) or creates it (`POST /api/asset`), caching name → id,
//! and posts the message data as the asset's telemetry
//! (`POST /api/plugins/telemetry/ASSET/{id}/timeseries/values` with `{"ts", "values"}`).
//! `Success` adds metadata `assetId`.
use std::collections::{BTreeMap, HashMap};

use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub url: Option<Template>,
    #[serde(default)]
    pub headers: BTreeMap<String, Template>,
    #[serde(default)]
    pub body: Option<Template>,
    #[serde(default = "yes")]
    pub use_response_body: bool,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub asset_name: Option<Template>,
    #[serde(default = "default_asset_type")]
    pub asset_type: String,
}

/// What the node does with the message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Call,
    ThingsboardAssetTelemetry,
}

fn default_asset_type() -> String {
    "default".into()
}

fn default_method() -> String {
    "POST".into()
}
fn yes() -> bool {
    true
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// One HTTP answer, as the connector gives it.
#[derive(Debug, Deserialize, JsonSchema)]
struct Answer {
    status: u16,
    #[serde(default)]
    body: Value,
}

fn call(method: &str, url: &str, headers: Value, body: Value) -> Result<Answer> {
    let answer = action::call(&json!({"method": method, "url": url, "headers": headers, "body": body}))?;
    Ok(serde_json::from_value(answer)?)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn with_status(mut msg: Msg, status: u16) -> Msg {
    msg.set_meta("status", reason(status));
    msg.set_meta("statusCode", status.to_string());
    msg.set_meta("statusReason", reason(status));
    msg
}

fn failed(msg: Msg, answer: &Answer, what: &str) -> Msg {
    let body = answer.body.as_str().map_or_else(|| answer.body.to_string(), str::to_string);
    with_status(msg, answer.status)
        .with_meta("error", format!("{what}: HTTP {} {}", answer.status, reason(answer.status)))
        .with_meta("errorBody", body)
}

pub struct RestAction {
    config: Config,
    /// The ThingsBoard flow's JWT and asset ids, per instance (renewed on a 401, rebuilt after a
    /// restart: a cache, not state).
    token: Option<String>,
    assets: HashMap<String, String>,
}

/// Makes an HTTP call built from the message through the granted connector.
#[node(relations = ["Success"])]
impl Node for RestAction {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        let method = &config.method;
        if !METHODS.contains(&method.to_ascii_uppercase().as_str()) {
            bail_config!("method", "{method:?} is not one of {}", METHODS.join(", "));
        }
        let required: &[(&str, bool)] = match config.mode {
            Mode::Call => &[("url", config.url.is_some())],
            Mode::ThingsboardAssetTelemetry => &[
                ("username", config.username.is_some()),
                ("password", config.password.is_some()),
                ("assetName", config.asset_name.is_some()),
            ],
        };
        if let Some((field, _)) = required.iter().find(|(_, present)| !present) {
            bail_config!(format!("{field}"), "required in mode {:?}", config.mode);
        }
        Ok(RestAction { config, token: None, assets: HashMap::new() })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        let cfg = self.config.clone();
        let require = |t: &Option<Template>| t.clone().ok_or_else(|| Error::new("checked at init"));
        match cfg.mode {
            Mode::Call => {
                let url = require(&cfg.url)?.render(&msg)?;
                let mut rendered = serde_json::Map::new();
                for (k, v) in &cfg.headers {
                    rendered.insert(k.clone(), Value::String(v.render(&msg)?));
                }
                let body = match &cfg.body {
                    Some(t) => Value::String(t.render(&msg)?),
                    None => msg.data().clone(),
                };
                let answer = call(&cfg.method.to_ascii_uppercase(), &url, Value::Object(rendered), body)?;
                if (200..300).contains(&answer.status) {
                    let mut msg = with_status(msg, answer.status);
                    if cfg.use_response_body && !answer.body.is_null() {
                        msg.set_data(answer.body);
                    }
                    out.emit(relation::SUCCESS, msg);
                } else {
                    out.emit(relation::FAILURE, failed(msg, &answer, &url));
                }
            }
            Mode::ThingsboardAssetTelemetry => {
                let name = require(&cfg.asset_name)?.render(&msg)?;
                let (username, password) = (cfg.username.unwrap_or_default(), cfg.password.unwrap_or_default());
                let login = Login { username: &username, password: &password };
                match self.asset_telemetry(&login, &name, &cfg.asset_type, &msg)? {
                    Ok(id) => out.emit(relation::SUCCESS, msg.with_meta("assetId", id)),
                    Err((answer, what)) => out.emit(relation::FAILURE, failed(msg, &answer, &what)),
                }
            }
        }
        Ok(())
    }
}

struct Login<'a> {
    username: &'a str,
    password: &'a str,
}

impl RestAction {
    /// An authorised call; logs in first if needed, and once more on a 401 (expired token).
    fn authorised(&mut self, login: &Login, method: &str, url: &str, body: Value) -> Result<Answer> {
        for attempt in 0..2 {
            let token = match &self.token {
                Some(t) => t.clone(),
                None => {
                    let answer = call(
                        "POST",
                        "/api/auth/login",
                        json!({}),
                        json!({"username": login.username, "password": login.password}),
                    )?;
                    match answer.body.get("token").and_then(Value::as_str) {
                        Some(t) if answer.status == 200 => self.token.insert(t.to_string()).clone(),
                        _ => bail!(
                            "ThingsBoard login as {} failed: HTTP {} {}",
                            login.username,
                            answer.status,
                            answer.body
                        ),
                    }
                }
            };
            let answer = call(method, url, json!({"X-Authorization": format!("Bearer {token}")}), body.clone())?;
            if answer.status == 401 && attempt == 0 {
                self.token = None;
                continue;
            }
            return Ok(answer);
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// The asset's id, then its telemetry posted. `Ok(Err(msg))` is a ThingsBoard refusal routed
    /// to `Failure` with the status.
    fn asset_telemetry(
        &mut self,
        login: &Login,
        name: &str,
        asset_type: &str,
        msg: &Msg,
    ) -> Result<std::result::Result<String, (Answer, String)>> {
        let id = match self.assets.get(name) {
            Some(id) => id.clone(),
            None => {
                let url = format!("/api/tenant/assets?assetName={}", encode(name));
                let mut answer = self.authorised(login, "GET", &url, Value::Null)?;
                if answer.status == 404 {
                    let asset = json!({"name": name, "type": asset_type});
                    answer = self.authorised(login, "POST", "/api/asset", asset)?;
                }
                let id = answer.body.pointer("/id/id").and_then(Value::as_str);
                match id {
                    Some(id) if (200..300).contains(&answer.status) => {
                        self.assets.insert(name.to_string(), id.to_string());
                        id.to_string()
                    }
                    _ => return Ok(Err((answer, format!("asset {name}")))),
                }
            }
        };
        let url = format!("/api/plugins/telemetry/ASSET/{id}/timeseries/values");
        let answer = self.authorised(login, "POST", &url, json!({"ts": msg.ts(), "values": msg.data()}))?;
        if (200..300).contains(&answer.status) { Ok(Ok(id)) } else { Ok(Err((answer, url))) }
    }
}

/// Percent-encoding of a query value (asset names have spaces).
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[test]
    fn call_renders_and_routes_by_status() -> Result<()> {
        let cfg = r#"{"url": "/api/v1/${token}/telemetry", "headers": {"X-Zone": "$[zone]"}}"#;
        let status = Rc::new(RefCell::new(200));
        let s = status.clone();
        let mut d = TestDriver::node_from_json::<RestAction>(cfg)
            .unwrap()
            .with_actions(move |_| Ok(json!({"status": *s.borrow(), "headers": {}, "body": {"ok": true}})));
        let msg = Msg::telemetry("d", json!({"zone": "A", "v": 1})).with_meta("token", "T1");
        let out = d.send(msg.clone())?;
        assert_eq!(
            d.actions()[0],
            json!({"method": "POST", "url": "/api/v1/T1/telemetry", "headers": {"X-Zone": "A"}, "body": {"zone": "A", "v": 1}})
        );
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(out.messages()[0].data(), &json!({"ok": true}));
        assert_eq!(out.messages()[0].meta("statusCode"), Some("200"));
        *status.borrow_mut() = 400;
        let out = d.send(msg)?;
        assert_eq!(out.relations(), ["Failure"]);
        assert_eq!(out.messages()[0].meta("statusCode"), Some("400"));
        assert_eq!(out.messages()[0].meta("errorBody"), Some(r#"{"ok":true}"#));
        Ok(())
    }

    /// A stand-in ThingsBoard: tokens, assets by name, telemetry.
    fn thingsboard(requests: Rc<RefCell<Vec<String>>>) -> impl FnMut(&Value) -> std::result::Result<Value, String> {
        let mut assets: HashMap<String, String> = HashMap::new();
        let mut logins = 0;
        move |req| {
            let (method, url) = (req["method"].as_str().unwrap(), req["url"].as_str().unwrap());
            requests.borrow_mut().push(format!("{method} {url}"));
            let auth = req["headers"]["X-Authorization"].as_str().unwrap_or_default().to_string();
            let reply = |status: u16, body: Value| Ok(json!({"status": status, "headers": {}, "body": body}));
            if url == "/api/auth/login" {
                logins += 1;
                return reply(200, json!({"token": format!("jwt{logins}")}));
            }
            // The first token expires after its first use.
            if auth != format!("Bearer jwt{logins}") || (logins == 1 && requests.borrow().len() > 2) {
                return reply(401, json!({"message": "expired"}));
            }
            if let Some(name) = url.strip_prefix("/api/tenant/assets?assetName=") {
                return match assets.get(name) {
                    Some(id) => reply(200, json!({"id": {"id": id}})),
                    None => reply(404, Value::Null),
                };
            }
            if url == "/api/asset" {
                let name = req["body"]["name"].as_str().unwrap().replace(' ', "%20");
                let id = format!("asset-{}", assets.len() + 1);
                assets.insert(name, id.clone());
                return reply(200, json!({"id": {"id": id}}));
            }
            reply(200, Value::Null)
        }
    }

    #[test]
    fn thingsboard_flow_logs_in_creates_the_asset_once_and_posts() -> Result<()> {
        let cfg = r#"{"mode": "thingsboard-asset-telemetry", "username": "u", "password": "p",
                      "assetName": "${key}", "assetType": "GeoZone"}"#;
        let requests = Rc::new(RefCell::new(Vec::new()));
        let mut d = TestDriver::node_from_json::<RestAction>(cfg).unwrap().with_actions(thingsboard(requests.clone()));
        let zone = |avg: f64| {
            Msg::new("ZONE", Originator::asset("Zone A"), json!({"avg": avg})).with_meta("key", "Zone A").with_ts(10)
        };
        let out = d.send(zone(1.0))?;
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(out.messages()[0].meta("assetId"), Some("asset-1"));
        d.send(zone(2.0))?;
        assert_eq!(
            *requests.borrow(),
            [
                "POST /api/auth/login",
                "GET /api/tenant/assets?assetName=Zone%20A",
                "POST /api/asset",
                // The first token has expired: log in again, retry.
                "POST /api/auth/login",
                "POST /api/asset",
                "POST /api/plugins/telemetry/ASSET/asset-1/timeseries/values",
                // The second message: cached token and asset id.
                "POST /api/plugins/telemetry/ASSET/asset-1/timeseries/values",
            ]
        );
        let posted: Vec<&Value> =
            d.actions().iter().filter(|a| a["url"].as_str().unwrap().contains("timeseries")).collect();
        assert_eq!(posted[1]["body"], json!({"ts": 10, "values": {"avg": 2.0}}));
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        let parse = |text: &str| TestDriver::node_from_json::<RestAction>(text).err().unwrap();
        assert!(parse(r#"{"url": "/x", "method": "FETCH"}"#).message.contains("`method`"));
        assert_eq!(parse(r#"{"url": "/x-${"}"#).field, "url");
        assert!(parse(r#"{"mode": "thingsboard-asset-telemetry", "username": "u"}"#).message.contains("`password`"));
        assert!(parse(r#"{"method": "GET"}"#).message.contains("`url`"));
        assert_eq!(parse(r#"{"mode": "soap", "url": "/x"}"#).field, "mode");
    }
}

//! The HTTP connector: a request `{"method", "url", "headers"?, "body"?}` becomes an HTTP call;
//! the answer is `{"status", "headers", "body"}` — `body` parsed as JSON when it is JSON, else a
//! string. Any status is an answer (the REST node decides what a 4xx means); a connection
//! error or a timeout is an error.
//!
//! `url` may be relative to the connector's `baseUrl`. Headers of the connector (an API key, say)
//! go on every request, under the request's own. The client is built on first use, in the worker
//! thread that uses it: reqwest's blocking client must not be created inside the async runtime.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use super::Connector;
use crate::flow::Ack;

/// Default time for one HTTP exchange.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Default retries.
pub const DEFAULT_RETRIES: u32 = 3;

#[derive(Debug)]
pub struct HttpConnector {
    base_url: Option<reqwest::Url>,
    timeout: Duration,
    headers: BTreeMap<String, String>,
    client: OnceLock<Result<reqwest::blocking::Client, String>>,
}

impl HttpConnector {
    pub fn new(
        base_url: Option<&str>,
        timeout_ms: Option<u64>,
        headers: BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let base_url = match base_url {
            Some(url) => Some(reqwest::Url::parse(url).map_err(|e| format!("baseUrl {url:?}: {e}"))?),
            None => None,
        };
        Ok(HttpConnector {
            base_url,
            timeout: Duration::from_millis(timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)),
            headers,
            client: OnceLock::new(),
        })
    }

    /// WIP: retries (the REST helper builds them).
    pub fn with_retries(self, _retries: u32, _backoff_ms: Option<u64>) -> Self {
        self
    }

    fn client(&self) -> Result<&reqwest::blocking::Client, String> {
        self.client
            .get_or_init(|| {
                reqwest::blocking::Client::builder().timeout(self.timeout).build().map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn url(&self, url: &str) -> Result<reqwest::Url, String> {
        match &self.base_url {
            Some(base) => base.join(url).map_err(|e| format!("url {url:?} against {base}: {e}")),
            None => {
                reqwest::Url::parse(url).map_err(|e| format!("url {url:?}: {e} (no baseUrl to resolve it against)"))
            }
        }
    }
}

impl Connector for HttpConnector {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn call(&self, _node: &str, request: &Value, _ack: &Ack) -> Result<Value, String> {
        let method = request.get("method").and_then(Value::as_str).unwrap_or("POST");
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("request method {method:?} is not an HTTP method"))?;
        let url = request.get("url").and_then(Value::as_str).ok_or("request has no `url`")?;
        let url = self.url(url)?;
        let mut call = self.client()?.request(method.clone(), url.clone());
        for (k, v) in &self.headers {
            call = call.header(k, v);
        }
        if let Some(headers) = request.get("headers").and_then(Value::as_object) {
            for (k, v) in headers {
                call = call.header(k, v.as_str().map_or_else(|| v.to_string(), str::to_string));
            }
        }
        call = match request.get("body") {
            None | Some(Value::Null) => call,
            Some(Value::String(text)) => call.body(text.clone()),
            Some(json) => call.header("content-type", "application/json").body(json.to_string()),
        };
        let response = call.send().map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status().as_u16();
        let headers: BTreeMap<String, String> = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let text = response.text().map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Ok(json!({"status": status, "headers": headers, "body": body}))
    }
}

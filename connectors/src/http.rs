//! The HTTP connector: a request `{"method", "url", "headers"?, "body"?}` becomes an HTTP call;
//! the answer is `{"status", "headers", "body"}` — `body` parsed as JSON when it is JSON, else a
//! string. Any status is an answer (the REST node decides what a 4xx means); a connection
//! error or a timeout is an error.
//!
//! `url` may be relative to the connector's `baseUrl`. Headers of the connector (an API key, say)
//! go on every request, under the request's own. The client is built on first use, in the worker
//! thread that uses it: reqwest's blocking client must not be created inside the async runtime.
//!
//! # Failures
//!
//! One call is one exchange; the connector's policy (`super::policy`) retries it. A network
//! error and a timeout are retryable errors; so is a 5xx answer (the server is restarting,
//! overloaded, or a proxy lost its upstream), which carries the answer along: when the retries
//! are spent the REST node gets that answer and sends the message to `Failure` with the status
//! and the body, which says more than "gave up". A 4xx is an answer, never retried: it is the
//! server's considered answer about *this* request, and asking again would get the same one.
//!
//! Every request carries `Idempotency-Key` (the message id, the node and the request's own
//! fingerprint): the same on every retry and on a replay after a crash, so the server can drop
//! a duplicate of a request whose answer was lost.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{Value, json};

use super::{Call, Connector, ConnectorError};

/// Default time for one HTTP exchange.
pub use sluice_core::connector::DEFAULT_TIMEOUT_MS;

#[derive(Debug)]
pub struct HttpConnector {
    base_url: Option<reqwest::Url>,
    headers: BTreeMap<String, String>,
    client: OnceLock<Result<reqwest::blocking::Client, String>>,
}

/// One attempt's outcome.
enum Attempt {
    /// The server answered (any status).
    Answer { status: u16, answer: Value },
    /// No answer: connection refused or reset, timeout, unreadable body.
    Failed(String),
}

impl HttpConnector {
    pub fn new(base_url: Option<&str>, headers: BTreeMap<String, String>) -> Result<Self, super::OpenError> {
        let base_url = match base_url {
            Some(url) => Some(
                reqwest::Url::parse(url)
                    .map_err(|e| super::OpenError::BaseUrl { url: url.into(), reason: e.to_string() })?,
            ),
            None => None,
        };
        Ok(HttpConnector { base_url, headers, client: OnceLock::new() })
    }

    fn client(&self) -> Result<&reqwest::blocking::Client, String> {
        self.client
            .get_or_init(|| {
                // No client-wide timeout: each request has its own (the policy's `timeoutMs`).
                reqwest::blocking::Client::builder().timeout(None).build().map_err(|e| e.to_string())
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

    /// One exchange. The request is rebuilt per attempt (a blocking body can be sent once).
    fn attempt(
        &self,
        client: &reqwest::blocking::Client,
        method: &reqwest::Method,
        url: &reqwest::Url,
        call: &Call<'_>,
    ) -> Attempt {
        let request = call.request;
        let mut call = client
            .request(method.clone(), url.clone())
            .timeout(call.timeout)
            .header("idempotency-key", call.idempotency_key);
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
        let response = match call.send() {
            Ok(response) => response,
            Err(e) => return Attempt::Failed(error_chain(&e)),
        };
        let status = response.status().as_u16();
        let headers: BTreeMap<String, String> = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let text = match response.text() {
            Ok(text) => text,
            Err(e) => return Attempt::Failed(format!("reading the body of a {status} answer: {}", error_chain(&e))),
        };
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Attempt::Answer { status, answer: json!({"status": status, "headers": headers, "body": body}) }
    }
}

/// An error with its causes: reqwest's own message ("error sending request") hides the reason
/// (connection refused, timed out) in its source chain.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl Connector for HttpConnector {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn call(&self, call: &Call<'_>) -> Result<Value, ConnectorError> {
        let request = call.request;
        let method = request.get("method").and_then(Value::as_str).unwrap_or("POST");
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("request method {method:?} is not an HTTP method"))?;
        let url = request.get("url").and_then(Value::as_str).ok_or("request has no `url`")?;
        let url = self.url(url)?;
        let client = self.client()?;
        match self.attempt(client, &method, &url, call) {
            Attempt::Answer { status, answer } if status >= 500 => {
                Err(ConnectorError::retryable(format!("{method} {url}: HTTP {status}")).with_answer(answer))
            }
            Attempt::Answer { answer, .. } => Ok(answer),
            Attempt::Failed(error) => Err(ConnectorError::retryable(format!("{method} {url}: {error}"))),
        }
    }
}

//! The HTTP connector: a request `{"method", "url", "headers"?, "body"?}` becomes an HTTP call;
//! the answer is `{"status", "headers", "body"}` — `body` parsed as JSON when it is JSON, else a
//! string. Any status is an answer (the REST node decides what a 4xx means); a connection
//! error or a timeout is an error.
//!
//! `url` may be relative to the connector's `baseUrl`. Headers of the connector (an API key, say)
//! go on every request, under the request's own. The client is built on first use, in the worker
//! thread that uses it: reqwest's blocking client must not be created inside the async runtime.
//!
//! # Retries
//!
//! What may pass if asked again is asked again: a network error, a timeout and a 5xx answer
//! (the server is restarting, overloaded, or a proxy lost its upstream) are retried up to
//! `retries` times, waiting `backoffMs`, then twice that, and so on (capped at [`MAX_BACKOFF`]),
//! so a struggling server is given room instead of a burst. A 4xx is never retried: it is the
//! server's considered answer about *this* request, and asking again would get the same one.
//!
//! When the retries are spent, a 5xx is still an answer — the REST node sends the message to
//! `Failure` with the status and the body, which says more than "gave up" — while a network
//! error becomes an error naming the method, the URL and the number of attempts.
//!
//! The wait blocks the worker thread, on purpose: the message is not done (not acked) until its
//! call is, and a worker busy retrying slows the source down instead of piling up messages. No
//! jitter is added: retries come from different workers and messages at different moments
//! already, and a fixed schedule keeps the behaviour predictable (and testable).

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use super::Connector;
use crate::flow::Ack;

/// Default time for one HTTP exchange.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Default retries after the first attempt: enough to ride out a restart behind a proxy
/// (100 + 200 + 400 ms of waiting with the default backoff) without holding a worker for long.
pub const DEFAULT_RETRIES: u32 = 3;
/// Default wait before the first retry.
pub const DEFAULT_BACKOFF_MS: u64 = 100;
/// The longest wait between two attempts, however many retries are configured: beyond this a
/// longer wait only holds the worker without making success likelier.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The wait before retry number `retry` (1 for the first retry): `first`, doubled per retry,
/// capped at [`MAX_BACKOFF`].
pub fn backoff(first: Duration, retry: u32) -> Duration {
    let factor = 2u32.checked_pow(retry.saturating_sub(1)).unwrap_or(u32::MAX);
    first.checked_mul(factor).unwrap_or(MAX_BACKOFF).min(MAX_BACKOFF)
}

#[derive(Debug)]
pub struct HttpConnector {
    base_url: Option<reqwest::Url>,
    timeout: Duration,
    headers: BTreeMap<String, String>,
    retries: u32,
    backoff: Duration,
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
            retries: DEFAULT_RETRIES,
            backoff: Duration::from_millis(DEFAULT_BACKOFF_MS),
            client: OnceLock::new(),
        })
    }

    /// Retries after the first attempt (0: none), and the first wait (default
    /// [`DEFAULT_BACKOFF_MS`]); see the module docs.
    pub fn with_retries(mut self, retries: u32, backoff_ms: Option<u64>) -> Self {
        self.retries = retries;
        self.backoff = Duration::from_millis(backoff_ms.unwrap_or(DEFAULT_BACKOFF_MS));
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

    /// One exchange. The request is rebuilt per attempt (a blocking body can be sent once).
    fn attempt(
        &self,
        client: &reqwest::blocking::Client,
        method: &reqwest::Method,
        url: &reqwest::Url,
        request: &Value,
    ) -> Attempt {
        let mut call = client.request(method.clone(), url.clone());
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

    fn call(&self, node: &str, request: &Value, _ack: &Ack) -> Result<Value, String> {
        let method = request.get("method").and_then(Value::as_str).unwrap_or("POST");
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("request method {method:?} is not an HTTP method"))?;
        let url = request.get("url").and_then(Value::as_str).ok_or("request has no `url`")?;
        let url = self.url(url)?;
        let client = self.client()?;
        let attempts = self.retries.saturating_add(1);
        let mut attempt = 1;
        loop {
            let outcome = self.attempt(client, &method, &url, request);
            let why = match outcome {
                Attempt::Answer { status, answer } if status < 500 || attempt == attempts => return Ok(answer),
                Attempt::Answer { status, .. } => format!("HTTP {status}"),
                Attempt::Failed(error) if attempt == attempts => {
                    let tries = if attempts == 1 { "1 attempt".to_string() } else { format!("{attempts} attempts") };
                    return Err(format!("{method} {url}: {error} (gave up after {tries})"));
                }
                Attempt::Failed(error) => error,
            };
            let delay = backoff(self.backoff, attempt);
            tracing::warn!(
                node,
                %method,
                %url,
                attempt,
                of = attempts,
                error = %why,
                next_in_ms = delay.as_millis() as u64,
                "HTTP call failed; retrying"
            );
            std::thread::sleep(delay);
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_wait_and_is_capped() {
        let first = Duration::from_millis(100);
        assert_eq!(backoff(first, 1), Duration::from_millis(100));
        assert_eq!(backoff(first, 2), Duration::from_millis(200));
        assert_eq!(backoff(first, 3), Duration::from_millis(400));
        assert_eq!(backoff(first, 8), Duration::from_millis(10_000)); // 12.8 s, capped
        assert_eq!(backoff(first, 40), MAX_BACKOFF); // 2^39 overflows u32: still the cap
        assert_eq!(backoff(Duration::ZERO, 5), Duration::ZERO);
    }
}

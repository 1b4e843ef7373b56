//! ThingsBoard's HTTP device API as a source: devices that already post to ThingsBoard post to
//! Sluice unchanged.
//!
//! ```text
//! POST /api/v1/{token}/telemetry   {"temp": 21.5}                        → POST_TELEMETRY_REQUEST
//!                                  {"ts": 1700000000000, "values": {…}}   (one per point)
//!                                  [point, point, …]
//! POST /api/v1/{token}/attributes  {"firmware": "1.2"}                   → POST_ATTRIBUTES_REQUEST
//! ```
//!
//! A device is known by its access token, as in ThingsBoard; the token file (JSON, or TOML when
//! it ends in `.toml`; shared with the MQTT source, see [`super::tokens`]) says which device
//! each token is:
//! `{"A1_TEST_TOKEN": {"deviceName": "Thermostat A1", "deviceType": "thermostat"}}`. Messages
//! come from originator `DEVICE` `deviceName`, with metadata `deviceName`, `deviceType` and `ts`,
//! as ThingsBoard's own would.
//!
//! # When the device hears back
//!
//! The answer waits until every message the request became has been processed — its
//! [`Ack`] fired: each branch sunk, dropped by design, or failed — and is then `200`. So a
//! `200` means "done", not "queued": a device (or a gateway's retry queue) that sees its request
//! fail sends it again, and nothing it was told is safe is lost on a crash. The other answers:
//!
//! | status | when |
//! |--------|------|
//! | `400`  | the body is not JSON, or not telemetry / attributes; the message says what and where |
//! | `401`  | the token is not in the token file |
//! | `503`  | the pipeline no longer takes messages (shutting down): try again later |
//!
//! Errors are JSON, `{"status": 401, "message": "…"}`, like ThingsBoard's. A request is taken
//! whole or not at all: its body is checked before any of its messages enters the pipeline.
//! Every answer is counted by outcome ([`HttpSourceStats`], served at `/metrics`), so devices
//! posting with a wrong token or a broken body show up without reading logs at debug level.
//!
//! Every message is read from partition [`PARTITION`]: an HTTP server sees one stream, in arrival
//! order, whatever device sent it. The chain's `eventTime.latenessMs` covers points that arrive
//! out of order; devices whose clocks disagree want `eventTime.per = "originator"`, a watermark
//! per device ([`sluice_engine::state::time`]).
//!
//! The mapping from a body to messages is a pure function ([`telemetry`], [`attributes`]),
//! tested on its own; the server around it ([`serve`]) only looks up tokens, feeds and waits.

use serde::Deserialize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};
use sluice_sdk::{Originator, TbMsg, msg_type};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

pub use super::tokens::{DEFAULT_DEVICE_TYPE, Device, TokenFileError, Tokens};
use super::{Feed, Source, SourceContext, SourceError, SourceFuture, SourceReport};
use sluice_core::{Ack, AckTarget, Metrics};

/// The source partition of every HTTP message (see the module docs).
pub const PARTITION: u32 = 0;

/// Namespace of the ids given to HTTP messages (uuid v5 of the instance and a sequence number).
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x5a1c_e000_0000_4000_8000_6874_7470_0001);

/// Why the HTTP source cannot run.
#[derive(Debug, thiserror::Error)]
pub enum HttpSourceError {
    /// The token file is missing, unreadable, or not a map of tokens to devices.
    #[error(transparent)]
    Tokens(#[from] TokenFileError),
    /// The listen address is taken, not ours, or not an address.
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    /// The server stopped on an I/O error.
    #[error("HTTP source on {addr}: {source}")]
    Serve { addr: String, source: std::io::Error },
}

/// What the source answered and fed, for `/metrics` (the service registers every field) and
/// tests. Each request is counted under exactly one outcome, once its answer is decided.
#[derive(Debug, Default)]
pub struct HttpSourceStats {
    /// `200`: every message of the request was processed (or it had none).
    pub accepted: AtomicU64,
    /// `401`: the token is not in the token file — a device not set up here, or a wrong token.
    pub unauthorized: AtomicU64,
    /// `400`: the body is not JSON, or not telemetry / attributes.
    pub bad_request: AtomicU64,
    /// `503`: the pipeline no longer takes messages (shutting down).
    pub unavailable: AtomicU64,
    /// `500`: the messages were lost before being processed (a bug, if it ever shows).
    pub failed: AtomicU64,
    /// Messages handed to the chain (a telemetry array is one per point).
    pub messages: AtomicU64,
}

impl HttpSourceStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }
}

/// A body that is not telemetry or attributes; the text says what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

/// The messages a telemetry body becomes, as ThingsBoard reads it: a plain object of values
/// (at `now_ms`), an object `{"ts", "values"}`, or an array of either — one
/// `POST_TELEMETRY_REQUEST` per point. Ids are left empty for the caller to assign.
pub fn telemetry(device: &Device, body: &[u8], now_ms: i64) -> Result<Vec<TbMsg>, PayloadError> {
    let err = |message: String| PayloadError(message);
    match parse_body(body)? {
        Value::Array(points) => points
            .into_iter()
            .enumerate()
            .map(|(i, point)| {
                telemetry_point(device, point, now_ms).map_err(|e| err(format!("telemetry point [{i}]: {e}")))
            })
            .collect(),
        point @ Value::Object(_) => Ok(vec![telemetry_point(device, point, now_ms).map_err(err)?]),
        other => {
            Err(err(format!("telemetry must be an object or an array of objects, not {}", super::json_kind(&other))))
        }
    }
}

/// The message an attributes body becomes: a plain object of values, one
/// `POST_ATTRIBUTES_REQUEST` at `now_ms`.
pub fn attributes(device: &Device, body: &[u8], now_ms: i64) -> Result<Vec<TbMsg>, PayloadError> {
    match parse_body(body)? {
        Value::Object(values) => {
            check_values(&values).map_err(PayloadError)?;
            Ok(vec![message(msg_type::POST_ATTRIBUTES_REQUEST, device, now_ms, values)])
        }
        other => Err(PayloadError(format!("attributes must be an object, not {}", super::json_kind(&other)))),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, PayloadError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(PayloadError("the body is empty; expected JSON".into()));
    }
    super::parse_json(body).map_err(|e| PayloadError(format!("the body is not JSON: {e}")))
}

/// One point: `{"ts", "values"}` when it has both keys (ThingsBoard's test), else plain values.
fn telemetry_point(device: &Device, point: Value, now_ms: i64) -> Result<TbMsg, String> {
    let Value::Object(mut point) = point else {
        return Err(format!("a point must be an object, not {}", super::json_kind(&point)));
    };
    if !(point.contains_key("ts") && point.contains_key("values")) {
        check_values(&point)?;
        return Ok(message(msg_type::POST_TELEMETRY_REQUEST, device, now_ms, point));
    }
    let ts = timestamp(point.remove("ts").unwrap_or_default())?;
    let values = match point.remove("values").unwrap_or_default() {
        Value::Object(values) => values,
        other => return Err(format!("`values` must be an object, not {}", super::json_kind(&other))),
    };
    // Keys beside `ts` and `values` would be dropped without a word: refuse them instead.
    if let Some(key) = point.keys().next() {
        return Err(format!("unexpected key `{key}` beside `ts` and `values`"));
    }
    check_values(&values)?;
    Ok(message(msg_type::POST_TELEMETRY_REQUEST, device, ts, values))
}

/// Milliseconds since the epoch: an integer, or a string holding one (ThingsBoard takes both).
fn timestamp(ts: Value) -> Result<i64, String> {
    let parsed = match &ts {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| format!("`ts` must be an integer of milliseconds since the epoch, not {ts}"))
}

/// ThingsBoard stores strings, numbers, booleans and JSON (objects, arrays); a `null` is no value
/// and would be silently dropped there, so it is refused here.
/// Values nested so deep that the message around them passes [`super::MAX_DEPTH`] are refused.
fn check_values(values: &Map<String, Value>) -> Result<(), String> {
    if let Some((key, _)) = values.iter().find(|(_, v)| v.is_null()) {
        return Err(format!("`{key}` is null; a value is a string, number, boolean, object or array"));
    }
    // The message object, then `data` (this map), then each value.
    if 2 + values.values().map(super::depth).max().unwrap_or(0) > super::MAX_DEPTH {
        return Err(super::depth_error());
    }
    Ok(())
}

fn message(msg_type: &str, device: &Device, ts: i64, values: Map<String, Value>) -> TbMsg {
    TbMsg::new(msg_type, Originator::device(&device.device_name), Value::Object(values))
        .with_ts(ts)
        .with_meta("deviceName", &device.device_name)
        .with_meta("deviceType", &device.device_type)
        .with_meta("ts", ts.to_string())
}

/// The device API as a [`Source`]: ThingsBoard's HTTP telemetry and attribute requests,
/// each answered once its messages are processed.
pub struct HttpSource {
    spec: HttpSourceSpec,
    base: std::path::PathBuf,
}

impl HttpSource {
    /// The source `spec` describes; its token file is relative to `base` (the `sluice.toml`'s
    /// directory).
    pub fn new(spec: HttpSourceSpec, base: &Path) -> Self {
        HttpSource { spec, base: base.to_path_buf() }
    }
}

impl Source for HttpSource {
    fn describe(&self) -> String {
        format!("HTTP device API on {}", self.spec.listen)
    }

    fn id(&self) -> String {
        format!("http:{}", self.spec.listen)
    }

    fn run(self: Box<Self>, cx: SourceContext) -> SourceFuture {
        Box::pin(async move {
            let stats = Arc::new(HttpSourceStats::default());
            register_metrics(&cx.metrics, &stats);
            let result = run_with_stats(self.spec, &self.base, cx.feed, cx.shutdown, stats.clone()).await;
            let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
            let report = SourceReport {
                records: load(&stats.messages),
                malformed: load(&stats.bad_request),
                ..Default::default()
            };
            (report, result.map_err(SourceError::from))
        })
    }
}

/// Its counters on `/metrics`, from the start (before the first request).
fn register_metrics(metrics: &Metrics, stats: &Arc<HttpSourceStats>) {
    const REQUESTS: &str = "sluice_http_source_requests_total";
    const HELP: &str = "Device API requests by answer: accepted (200, processed), unauthorized (401, unknown \
                        token), bad_request (400, not telemetry or attributes), unavailable (503, shutting down), \
                        failed (500).";
    metrics.register_stats(
        stats,
        [
            (REQUESTS, HELP, "counter", &[("outcome", "accepted")], |s| s.accepted.load(Ordering::Relaxed)),
            (REQUESTS, HELP, "counter", &[("outcome", "unauthorized")], |s| s.unauthorized.load(Ordering::Relaxed)),
            (REQUESTS, HELP, "counter", &[("outcome", "bad_request")], |s| s.bad_request.load(Ordering::Relaxed)),
            (REQUESTS, HELP, "counter", &[("outcome", "unavailable")], |s| s.unavailable.load(Ordering::Relaxed)),
            (REQUESTS, HELP, "counter", &[("outcome", "failed")], |s| s.failed.load(Ordering::Relaxed)),
            (
                "sluice_http_source_messages_total",
                "Messages handed to the chain (one per telemetry point).",
                "counter",
                &[],
                |s| s.messages.load(Ordering::Relaxed),
            ),
        ],
    );
}

/// Runs the source `spec` describes until `shutdown` turns `true` (or its sender is dropped):
/// loads the token file (relative to `base_dir`, the `sluice.toml`'s directory), listens, serves.
///
/// Requests in flight when shutdown comes are answered first, and they wait for their messages:
/// stop this source before the pipeline, so that they can finish.
pub async fn run(
    spec: HttpSourceSpec,
    base_dir: &Path,
    feed: Feed,
    shutdown: watch::Receiver<bool>,
) -> Result<(), HttpSourceError> {
    run_with_stats(spec, base_dir, feed, shutdown, Arc::new(HttpSourceStats::default())).await
}

/// [`run`], counting into `stats`.
pub async fn run_with_stats(
    spec: HttpSourceSpec,
    base_dir: &Path,
    feed: Feed,
    shutdown: watch::Receiver<bool>,
    stats: Arc<HttpSourceStats>,
) -> Result<(), HttpSourceError> {
    let tokens = Tokens::load(&base_dir.join(&spec.tokens))?;
    let listener = bind(&spec.listen).await?;
    serve_with_stats(listener, tokens, feed, shutdown, stats).await
}

/// Listens on `addr` (`host:port`; port 0 picks a free one, see `local_addr`).
pub async fn bind(addr: &str) -> Result<TcpListener, HttpSourceError> {
    TcpListener::bind(addr).await.map_err(|source| HttpSourceError::Bind { addr: addr.to_string(), source })
}

/// Serves the device API on `listener` until `shutdown` turns `true` (or its sender is dropped:
/// nobody is left to ask for a stop, nor to run the pipeline for long).
pub async fn serve(
    listener: TcpListener,
    tokens: Tokens,
    feed: Feed,
    shutdown: watch::Receiver<bool>,
) -> Result<(), HttpSourceError> {
    serve_with_stats(listener, tokens, feed, shutdown, Arc::new(HttpSourceStats::default())).await
}

/// [`serve`], counting into `stats`.
pub async fn serve_with_stats(
    listener: TcpListener,
    tokens: Tokens,
    feed: Feed,
    mut shutdown: watch::Receiver<bool>,
    stats: Arc<HttpSourceStats>,
) -> Result<(), HttpSourceError> {
    let addr = listener.local_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
    tracing::info!(%addr, devices = tokens.len(), "HTTP device API listening");
    let app = router(tokens, feed, &addr, stats);
    let stop = async move {
        while !*shutdown.borrow_and_update() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
        .map_err(|source| HttpSourceError::Serve { addr: addr.clone(), source })?;
    tracing::info!(%addr, "HTTP device API stopped");
    Ok(())
}

/// What every request handler shares.
struct Shared {
    tokens: Tokens,
    feed: Feed,
    ids: Ids,
    stats: Arc<HttpSourceStats>,
}

/// Message ids: uuid v5 of this server instance and a sequence number — unique without a
/// random source, and each id says nothing about the device's token.
struct Ids {
    instance: String,
    next: AtomicU64,
}

impl Ids {
    fn new(addr: &str) -> Self {
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Ids { instance: format!("http:{addr}:{}:{}", std::process::id(), started.as_nanos()), next: AtomicU64::new(0) }
    }

    fn next(&self) -> (u64, String) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n, Uuid::new_v5(&ID_NAMESPACE, format!("{}:{n}", self.instance).as_bytes()).to_string())
    }
}

fn router(tokens: Tokens, feed: Feed, addr: &str, stats: Arc<HttpSourceStats>) -> Router {
    let shared = Arc::new(Shared { tokens, feed, ids: Ids::new(addr), stats });
    Router::new()
        .route("/api/v1/{token}/telemetry", post(post_telemetry))
        .route("/api/v1/{token}/attributes", post(post_attributes))
        .with_state(shared)
}

async fn post_telemetry(State(shared): State<Arc<Shared>>, UrlPath(token): UrlPath<String>, body: Bytes) -> Response {
    accept(&shared, &token, &body, "telemetry", telemetry).await
}

async fn post_attributes(State(shared): State<Arc<Shared>>, UrlPath(token): UrlPath<String>, body: Bytes) -> Response {
    accept(&shared, &token, &body, "attributes", attributes).await
}

/// A route's body → messages mapping: [`telemetry`] or [`attributes`].
type Mapping = fn(&Device, &[u8], i64) -> Result<Vec<TbMsg>, PayloadError>;

/// Looks the device up, maps the body, feeds the messages and waits until they are done; counts
/// the outcome before answering, so a client that has its answer finds it in `/metrics`.
async fn accept(shared: &Shared, token: &str, body: &[u8], what: &str, map: Mapping) -> Response {
    let stats = &shared.stats;
    let count = |counter: &AtomicU64| {
        counter.fetch_add(1, Ordering::Relaxed);
    };
    let Some(device) = shared.tokens.device(token) else {
        tracing::debug!(what, "request with an unknown access token");
        count(&stats.unauthorized);
        return error(StatusCode::UNAUTHORIZED, "unknown access token".into());
    };
    let msgs = match map(device, body, shared.feed.now_ms()) {
        Ok(msgs) => msgs,
        Err(e) => {
            tracing::debug!(device = %device.device_name, what, error = %e, "malformed request");
            count(&stats.bad_request);
            return error(StatusCode::BAD_REQUEST, format!("{what} of {}: {e}", device.device_name));
        }
    };
    if msgs.is_empty() {
        count(&stats.accepted);
        return StatusCode::OK.into_response();
    }
    let (done_tx, done) = oneshot::channel();
    let (request, _) = shared.ids.next();
    // One ack for the whole request, cloned onto each of its messages: it fires once the last
    // of them is done.
    let ack = Ack::new(Arc::new(Answer(Mutex::new(Some(done_tx)))), request);
    for mut msg in msgs {
        msg.id = shared.ids.next().1;
        if shared.feed.push(msg, PARTITION, ack.clone()).await.is_err() {
            // Messages already in stay in (at least once): the device sends the request again.
            count(&stats.unavailable);
            return error(StatusCode::SERVICE_UNAVAILABLE, "the rule engine is shutting down; try again later".into());
        }
        count(&stats.messages);
    }
    drop(ack);
    match done.await {
        Ok(()) => {
            count(&stats.accepted);
            StatusCode::OK.into_response()
        }
        // An ack always fires before its target is dropped; this would be a bug, and the device
        // had better send again than believe its data safe.
        Err(_) => {
            count(&stats.failed);
            error(StatusCode::INTERNAL_SERVER_ERROR, "the messages were lost before being processed".into())
        }
    }
}

/// Completes a request: its ack target, fired when every message of the request is done.
struct Answer(Mutex<Option<oneshot::Sender<()>>>);

impl AckTarget for Answer {
    fn ack(&self, _request: u64) {
        if let Some(done) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // The device may have hung up; its messages were processed all the same.
            let _ = done.send(());
        }
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({"status": status.as_u16(), "message": message}))).into_response()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpSourceSpec {
    /// `host:port` to listen on, e.g. `0.0.0.0:8080` — ThingsBoard's HTTP transport port, so
    /// that devices need only their host changed to post here.
    pub listen: String,
    /// A JSON file (TOML when it ends in `.toml`) mapping access tokens to devices:
    /// `{"TOKEN": {"deviceName": …, "deviceType": …}}`, relative to `sluice.toml`. A file of
    /// its own, so that `sluice.toml` can be committed while the device credentials stay out.
    pub tokens: String,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn thermostat() -> Device {
        Device::new("Thermostat A1", "thermostat")
    }

    fn expected(msg_type: &str, ts: i64, data: Value) -> TbMsg {
        let mut metadata = BTreeMap::new();
        metadata.insert("deviceName".to_string(), "Thermostat A1".to_string());
        metadata.insert("deviceType".to_string(), "thermostat".to_string());
        metadata.insert("ts".to_string(), ts.to_string());
        TbMsg {
            id: String::new(),
            ts,
            msg_type: msg_type.to_string(),
            originator: Originator { entity_type: "DEVICE".into(), name: "Thermostat A1".into(), id: None },
            metadata,
            data,
        }
    }

    #[test]
    fn plain_values_are_one_point_at_now() {
        let msgs = telemetry(&thermostat(), br#"{"temperature": 42, "humidity": 73.5, "on": true}"#, 1000).unwrap();
        assert_eq!(
            msgs,
            [expected("POST_TELEMETRY_REQUEST", 1000, json!({"temperature": 42, "humidity": 73.5, "on": true}))]
        );
    }

    #[test]
    fn a_point_with_ts_and_values_keeps_its_time() {
        let body = br#"{"ts": 1451649600512, "values": {"key1": "value1", "key2": {"nested": [1, 2]}}}"#;
        assert_eq!(
            telemetry(&thermostat(), body, 1000).unwrap(),
            [expected("POST_TELEMETRY_REQUEST", 1451649600512, json!({"key1": "value1", "key2": {"nested": [1, 2]}}))]
        );
        // ThingsBoard also takes the time as a string.
        let body = br#"{"ts": "1451649600512", "values": {"a": 1}}"#;
        assert_eq!(telemetry(&thermostat(), body, 0).unwrap()[0].ts, 1451649600512);
    }

    #[test]
    fn an_array_is_one_message_per_point_in_order() {
        let body = br#"[{"ts": 10, "values": {"t": 1}}, {"t": 2}, {"ts": 5, "values": {}}]"#;
        assert_eq!(
            telemetry(&thermostat(), body, 77).unwrap(),
            [
                expected("POST_TELEMETRY_REQUEST", 10, json!({"t": 1})),
                expected("POST_TELEMETRY_REQUEST", 77, json!({"t": 2})),
                expected("POST_TELEMETRY_REQUEST", 5, json!({})),
            ]
        );
        assert_eq!(telemetry(&thermostat(), b"[]", 0).unwrap(), []);
    }

    #[test]
    fn a_ts_without_values_is_just_a_value() {
        // ThingsBoard's test is "has `ts` and `values`"; `ts` alone is a key like any other.
        assert_eq!(
            telemetry(&thermostat(), br#"{"ts": 3, "t": 1}"#, 9).unwrap(),
            [expected("POST_TELEMETRY_REQUEST", 9, json!({"ts": 3, "t": 1}))]
        );
    }

    #[test]
    fn attributes_are_one_message_at_now() {
        assert_eq!(
            attributes(&thermostat(), br#"{"firmware": "1.2", "inside": true}"#, 500).unwrap(),
            [expected("POST_ATTRIBUTES_REQUEST", 500, json!({"firmware": "1.2", "inside": true}))]
        );
    }

    #[test]
    fn malformed_bodies_say_what_and_where() {
        let d = thermostat();
        let e = |r: Result<Vec<TbMsg>, PayloadError>| r.unwrap_err().0;
        assert_eq!(e(telemetry(&d, b"", 0)), "the body is empty; expected JSON");
        let not_json = e(telemetry(&d, b"{\"t\": }", 0));
        assert!(not_json.starts_with("the body is not JSON: expected value at line 1 column 7"), "{not_json}");
        assert_eq!(e(telemetry(&d, b"42", 0)), "telemetry must be an object or an array of objects, not a number");
        assert_eq!(
            e(telemetry(&d, br#"[{"t": 1}, "x"]"#, 0)),
            "telemetry point [1]: a point must be an object, not a string"
        );
        assert_eq!(
            e(telemetry(&d, br#"[{"ts": "soon", "values": {}}]"#, 0)),
            "telemetry point [0]: `ts` must be an integer of milliseconds since the epoch, not \"soon\""
        );
        assert_eq!(e(telemetry(&d, br#"{"ts": 1, "values": [1]}"#, 0)), "`values` must be an object, not an array");
        assert_eq!(
            e(telemetry(&d, br#"{"ts": 1, "values": {}, "extra": 2}"#, 0)),
            "unexpected key `extra` beside `ts` and `values`"
        );
        assert_eq!(
            e(telemetry(&d, br#"{"t": null}"#, 0)),
            "`t` is null; a value is a string, number, boolean, object or array"
        );
        assert_eq!(e(attributes(&d, br#"[{"a": 1}]"#, 0)), "attributes must be an object, not an array");
        assert!(e(attributes(&d, br#"{"a": null}"#, 0)).starts_with("`a` is null"));
    }
}

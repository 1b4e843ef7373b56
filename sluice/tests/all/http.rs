//! HTTP both ways, against real servers on loopback ports: the REST connector's retries (an axum
//! server in the test that answers from a script and records what it was sent), and ThingsBoard's
//! HTTP device API as a source (posted to with reqwest, through a running pipeline into the
//! output sink).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicI64;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sluice::chain::Loader;
use sluice::config::HttpSourceSpec;
use sluice::connectors::{self, CallPolicySpec, ConnectorKind, ConnectorSpec, Guarded};
use sluice::flow::{Ack, Pipeline, PipelineConfig, Sinks};
use sluice::host::Clock;
use sluice::sinks::jsonl::{self as output, SinkItem, SinkSender};
use sluice::sinks::{JsonLinesSink, Output, Sink, SinkContext};
use sluice::sources::Feed;
use sluice::sources::http::{self, HttpSourceError, Tokens};
use sluice::state::StateStore;
use sluice::state::time::Watermarks;
use sluice_sdk::{Originator, TbMsg};
use tokio::sync::{oneshot, watch};

use crate::support::{ChainDir, runtime};

// ---------------------------------------------------------------------------------------------
// The REST connector's retries
// ---------------------------------------------------------------------------------------------

/// What the scripted server does for one request.
#[derive(Clone)]
enum Reply {
    /// Answers 200 with `{"ok": true}`.
    Ok,
    /// Answers with this status and text body.
    Status(u16, &'static str),
    /// Answers 200, but only after this long (longer than the client waits).
    Late(Duration),
}

/// One request the server saw.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    path: String,
    body: String,
    /// The `Idempotency-Key` header.
    key: Option<String>,
}

/// A real HTTP server on a free 127.0.0.1 port, answering the n-th request with `script[n]` (the
/// last entry once the script runs out). Stopped (its runtime dropped) when this is dropped.
struct ScriptedServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone)]
struct Script {
    replies: Arc<Vec<Reply>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn scripted(State(script): State<Script>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let n = {
        let mut seen = script.seen.lock().unwrap();
        seen.push(Seen {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            body: String::from_utf8_lossy(&body).into_owned(),
            key: parts.headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string),
        });
        seen.len() - 1
    };
    match script.replies.get(n).or(script.replies.last()).cloned() {
        Some(Reply::Ok) | None => axum::Json(json!({"ok": true})).into_response(),
        Some(Reply::Status(status, text)) => (StatusCode::from_u16(status).unwrap(), text).into_response(),
        Some(Reply::Late(wait)) => {
            tokio::time::sleep(wait).await;
            axum::Json(json!({"ok": "late"})).into_response()
        }
    }
}

impl ScriptedServer {
    fn start(replies: Vec<Reply>) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Script { replies: Arc::new(replies), seen: seen.clone() };
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                addr_tx.send(listener.local_addr().expect("addr")).expect("send addr");
                let app = Router::new().fallback(scripted).with_state(script);
                // Not a graceful stop: a handler still sleeping (the timeout test) is cut off.
                tokio::select! {
                    _ = axum::serve(listener, app).into_future() => {}
                    _ = stopped => {}
                }
            });
        });
        let addr = addr_rx.recv().expect("the server did not start");
        ScriptedServer { addr, seen, stop: Some(stop), thread: Some(thread) }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An HTTP connector to `base_url` as a chain would declare it.
fn connector(base_url: &str, timeout_ms: u64, retries: u32) -> Arc<Guarded> {
    let spec = ConnectorSpec {
        kind: ConnectorKind::Http { base_url: Some(base_url.to_string()), headers: Default::default() },
        policy: CallPolicySpec {
            timeout_ms: Some(timeout_ms),
            retries: Some(retries),
            backoff_ms: Some(5),
            ..Default::default()
        },
    };
    connectors::open("api", &spec, Path::new(".")).expect("connector")
}

fn post_reading(connector: &Arc<Guarded>) -> Result<Value, String> {
    let request = json!({"method": "POST", "url": "/api/readings", "body": {"t": 21.5}});
    connector.call("rest", &request, &Ack::none(), "m-1:rest:0").map_err(|e| e.to_string())
}

fn reading_request() -> Seen {
    // Every attempt carries the call's idempotency key.
    Seen {
        method: "POST".into(),
        path: "/api/readings".into(),
        body: r#"{"t":21.5}"#.into(),
        key: Some("m-1:rest:0".into()),
    }
}

#[test]
fn server_errors_are_retried_until_an_answer() {
    let server = ScriptedServer::start(vec![Reply::Status(503, "busy"), Reply::Status(503, "busy"), Reply::Ok]);
    let answer = post_reading(&connector(&format!("http://{}", server.addr), 5_000, 3)).unwrap();
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["body"], json!({"ok": true}));
    // The same request, body included, each time.
    assert_eq!(server.seen(), vec![reading_request(); 3]);
}

#[test]
fn client_errors_are_answers_and_not_retried() {
    let server = ScriptedServer::start(vec![Reply::Status(404, "no such device"), Reply::Ok]);
    let answer = post_reading(&connector(&format!("http://{}", server.addr), 5_000, 3)).unwrap();
    assert_eq!(answer["status"], 404);
    assert_eq!(answer["body"], "no such device");
    assert_eq!(server.seen(), vec![reading_request()]);
}

#[test]
fn the_last_server_error_is_the_answer() {
    let server = ScriptedServer::start(vec![Reply::Status(502, "upstream gone")]);
    let answer = post_reading(&connector(&format!("http://{}", server.addr), 5_000, 2)).unwrap();
    // An answer, not an error: the REST node routes it to Failure with the status and body.
    assert_eq!(answer["status"], 502);
    assert_eq!(answer["body"], "upstream gone");
    assert_eq!(server.seen().len(), 1 + 2);
}

#[test]
fn a_server_that_is_down_is_an_error_after_every_attempt() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = post_reading(&connector(&format!("http://127.0.0.1:{port}"), 5_000, 2)).unwrap_err();
    assert!(e.contains(&format!("POST http://127.0.0.1:{port}/api/readings")), "{e}");
    assert!(e.contains("gave up after 3 attempts"), "{e}");
}

#[test]
fn a_timeout_is_retried() {
    let server = ScriptedServer::start(vec![Reply::Late(Duration::from_secs(30)), Reply::Ok]);
    let answer = post_reading(&connector(&format!("http://{}", server.addr), 200, 1)).unwrap();
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["body"], json!({"ok": true}));
    assert_eq!(server.seen(), vec![reading_request(); 2]);
}

#[test]
fn without_retries_a_timeout_is_an_error() {
    let server = ScriptedServer::start(vec![Reply::Late(Duration::from_secs(30))]);
    let e = post_reading(&connector(&format!("http://{}", server.addr), 200, 0)).unwrap_err();
    assert!(e.contains("/api/readings") && e.contains("gave up after 1 attempt"), "{e}");
    assert_eq!(server.seen().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// The HTTP device API source
// ---------------------------------------------------------------------------------------------

const TOKENS: &str = r#"{
  "A1_TEST_TOKEN": {"deviceName": "Thermostat A1", "deviceType": "thermostat"},
  "B2_TEST_TOKEN": {"deviceName": "Meter B2", "deviceType": "meter"}
}"#;

/// The time of the test's clock: what "now" is for points without a `ts`.
const NOW: i64 = 1_700_000_000_000;

/// What the source should make of a post: computed by hand from ThingsBoard's rules.
fn expected(msg_type: &str, device: &str, device_type: &str, ts: i64, data: Value) -> TbMsg {
    TbMsg {
        id: String::new(),
        ts,
        msg_type: msg_type.into(),
        originator: Originator::device(device),
        metadata: [("deviceName", device), ("deviceType", device_type), ("ts", &ts.to_string())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        data,
    }
}

/// A pipeline whose chain is a single output sink, and its feed. Shut down in order when dropped.
struct Running {
    dir: ChainDir,
    pipeline: Option<Pipeline>,
    feed: Option<Feed>,
    output: Option<(SinkSender, std::thread::JoinHandle<std::io::Result<u64>>)>,
    out_path: PathBuf,
}

impl Running {
    /// Writes the output to a JSON-lines file, as `sluice run` does.
    fn to_file() -> Self {
        let dir = ChainDir::new();
        let out_path = dir.dir.path().join("out.jsonl");
        let sink = JsonLinesSink::file(out_path.clone());
        let cx = SinkContext { name: "output", append: false, metrics: Default::default() };
        let Output { tx, thread, .. } = Box::new(sink).start(cx).expect("output thread");
        Self::start(dir, tx.clone(), Some((tx, thread)), out_path)
    }

    /// Sinks into a channel the test reads (and acks) itself.
    fn to_channel() -> (Self, Receiver<SinkItem>) {
        let (tx, rx) = sync_channel(16);
        let dir = ChainDir::new();
        (Self::start(dir, tx, None, PathBuf::new()), rx)
    }

    fn start(
        dir: ChainDir,
        sink: SinkSender,
        output: Option<(SinkSender, std::thread::JoinHandle<std::io::Result<u64>>)>,
        out_path: PathBuf,
    ) -> Self {
        dir.write("tokens.json", TOKENS);
        let path = dir.write_json("chain.json", &json!({"entry": "out", "nodes": [{"id": "out", "sink": "output"}]}));
        // A sink-only chain needs no rule modules.
        let chain = Arc::new(Loader::new(&runtime(), vec![]).load(&path).expect("chain"));
        let clock = Clock::Manual(Arc::new(AtomicI64::new(NOW)));
        let config =
            PipelineConfig { workers: 2, queue: 4, clock: clock.clone(), flush_at_end: false, ..Default::default() };
        let pipeline = Pipeline::start(
            runtime(),
            chain.clone(),
            StateStore::default(),
            Sinks { output: Some(sink), ..Default::default() },
            config,
        )
        .expect("pipeline");
        let feed = Feed::new(pipeline.sender(), &chain, Watermarks::new(&chain.event_time), clock);
        Running { dir, pipeline: Some(pipeline), feed: Some(feed), output, out_path }
    }

    fn feed(&self) -> Feed {
        self.feed.clone().expect("the pipeline runs")
    }

    /// Everything the output sink has written so far (flushed first).
    fn written(&self) -> Vec<TbMsg> {
        let (tx, _) = self.output.as_ref().expect("a file output");
        output::flush(tx).expect("flush");
        let text = std::fs::read_to_string(&self.out_path).expect("read output");
        text.lines().map(|line| serde_json::from_str(line).expect("output is a message")).collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.feed = None;
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.shutdown();
        }
        if let Some((tx, writer)) = self.output.take() {
            drop(tx);
            let _ = writer.join();
        }
    }
}

/// The HTTP source serving on a free port, on a runtime of its own. Stopped when dropped.
struct Source {
    rt: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<Result<(), HttpSourceError>>>,
}

impl Source {
    fn serve(running: &Running) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let tokens = Tokens::load(&running.dir.dir.path().join("tokens.json")).expect("tokens");
        let listener = rt.block_on(http::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = watch::channel(false);
        let task = rt.spawn(http::serve(listener, tokens, running.feed(), stopped));
        Source { rt: Some(rt), addr, stop, task: Some(task) }
    }

    /// Asks the server to stop and waits for it.
    fn stop(&mut self) -> Result<(), HttpSourceError> {
        let _ = self.stop.send(true);
        match (self.rt.as_ref(), self.task.take()) {
            (Some(rt), Some(task)) => rt.block_on(task).expect("the server task panicked"),
            _ => Ok(()),
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let _ = self.stop();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// POSTs `body` to `http://addr{path}`; the status and the body of the answer.
fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let client = reqwest::blocking::Client::new();
    let response = client
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .expect("the source answers");
    let status = response.status().as_u16();
    (status, response.text().expect("body"))
}

/// The messages with their ids checked (present, distinct) and then blanked for comparison.
fn without_ids(msgs: Vec<TbMsg>) -> Vec<TbMsg> {
    let ids: std::collections::BTreeSet<_> = msgs.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids.len(), msgs.len(), "ids are unique: {msgs:?}");
    assert!(!ids.contains(""), "every message has an id");
    msgs.into_iter().map(|m| TbMsg { id: String::new(), ..m }).collect()
}

#[test]
fn device_posts_become_messages_in_the_output() {
    let running = Running::to_file();
    let source = Source::serve(&running);

    let (status, _) = post(source.addr, "/api/v1/A1_TEST_TOKEN/telemetry", r#"{"temperature": 21.5, "heating": true}"#);
    assert_eq!(status, 200);
    // Answered once the sink had written it (the sink acks after writing): it is in the output.
    assert_eq!(
        without_ids(running.written()),
        [expected(
            "POST_TELEMETRY_REQUEST",
            "Thermostat A1",
            "thermostat",
            NOW,
            json!({"temperature": 21.5, "heating": true})
        )]
    );

    let points = r#"[{"ts": 1699999990000, "values": {"kwh": 3.25}}, {"ts": 1699999995000, "values": {"kwh": 3.5}}]"#;
    assert_eq!(post(source.addr, "/api/v1/B2_TEST_TOKEN/telemetry", points).0, 200);
    assert_eq!(post(source.addr, "/api/v1/B2_TEST_TOKEN/attributes", r#"{"firmware": "2.1.0"}"#).0, 200);

    assert_eq!(
        without_ids(running.written()),
        [
            expected(
                "POST_TELEMETRY_REQUEST",
                "Thermostat A1",
                "thermostat",
                NOW,
                json!({"temperature": 21.5, "heating": true})
            ),
            expected("POST_TELEMETRY_REQUEST", "Meter B2", "meter", 1_699_999_990_000, json!({"kwh": 3.25})),
            expected("POST_TELEMETRY_REQUEST", "Meter B2", "meter", 1_699_999_995_000, json!({"kwh": 3.5})),
            expected("POST_ATTRIBUTES_REQUEST", "Meter B2", "meter", NOW, json!({"firmware": "2.1.0"})),
        ]
    );
    drop(source);
}

#[test]
fn bad_requests_are_refused_and_nothing_enters() {
    let running = Running::to_file();
    let source = Source::serve(&running);

    let (status, body) = post(source.addr, "/api/v1/NOT_A_TOKEN/telemetry", r#"{"t": 1}"#);
    assert_eq!(status, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"status": 401, "message": "unknown access token"})
    );

    let (status, body) = post(source.addr, "/api/v1/A1_TEST_TOKEN/telemetry", r#"{"t": 1,"#);
    assert_eq!(status, 400);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], 400);
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("telemetry of Thermostat A1: the body is not JSON: EOF"), "{message}");
    assert!(message.contains("line 1 column 8"), "{message}");

    // The first point is fine, the second is not: the request is refused whole.
    let (status, body) = post(
        source.addr,
        "/api/v1/A1_TEST_TOKEN/telemetry",
        r#"[{"ts": 1, "values": {"t": 1}}, {"ts": 2, "values": 5}]"#,
    );
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (
            400,
            json!({"status": 400, "message": "telemetry of Thermostat A1: telemetry point [1]: `values` must be an object, not a number"})
        )
    );

    let (status, _) = post(source.addr, "/api/v1/A1_TEST_TOKEN/attributes", "[1, 2]");
    assert_eq!(status, 400);
    assert_eq!(post(source.addr, "/api/v1/A1_TEST_TOKEN/rpc", "{}").0, 404);

    assert_eq!(running.written(), []);
    assert_eq!(post(source.addr, "/api/v1/A1_TEST_TOKEN/telemetry", r#"{"t": 2}"#).0, 200);
    assert_eq!(
        without_ids(running.written()),
        [expected("POST_TELEMETRY_REQUEST", "Thermostat A1", "thermostat", NOW, json!({"t": 2}))]
    );
}

#[test]
fn the_answer_waits_until_every_message_is_acked() {
    let (running, sunk) = Running::to_channel();
    let source = Source::serve(&running);
    let addr = source.addr;
    let (answered_tx, answered) = std::sync::mpsc::channel();
    let device = std::thread::spawn(move || {
        let answer = post(
            addr,
            "/api/v1/A1_TEST_TOKEN/telemetry",
            r#"[{"ts": 1, "values": {"t": 1}}, {"ts": 2, "values": {"t": 2}}]"#,
        );
        answered_tx.send(answer.0).unwrap();
    });
    // The sink holds both messages' acks: no answer may come while it does.
    let mut held = Vec::new();
    while held.len() < 2 {
        let msgs = sunk.recv().expect("a message reaches the sink").into_msgs();
        held.extend(msgs.into_iter().map(|(bytes, ack)| (bytes.to_tb(), ack)));
    }
    assert_eq!(held.iter().map(|(m, _)| m.ts).collect::<Vec<_>>(), [1, 2]);
    // While an ack is held the source cannot answer, so the wait below always runs out with
    // correct code; it only gives an answer sent too early the time to arrive and fail the test.
    let window = Duration::from_millis(300);
    assert!(answered.recv_timeout(window).is_err(), "answered before the messages were done");
    let (_, first) = held.remove(0);
    drop(first);
    assert!(answered.recv_timeout(window).is_err(), "answered with one message still in the sink");
    drop(held);
    assert_eq!(answered.recv().unwrap(), 200);
    device.join().unwrap();
}

#[test]
fn run_reads_the_token_file_next_to_the_config_and_stops_on_shutdown() {
    let running = Running::to_file();
    // A free port: bound, then released for the source to take.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let spec = HttpSourceSpec { listen: format!("127.0.0.1:{port}"), tokens: "tokens.json".into() };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (stop, stopped) = watch::channel(false);
    let base_dir = running.dir.dir.path().to_path_buf();
    let task = rt.spawn({
        let feed = running.feed();
        async move { http::run(spec, &base_dir, feed, stopped).await }
    });
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The listener may not be up the instant the task starts: the first connection is retried.
    let status = (0..200)
        .find_map(|_| {
            let client = reqwest::blocking::Client::new();
            match client.post(format!("http://{addr}/api/v1/B2_TEST_TOKEN/telemetry")).body(r#"{"kwh": 1}"#).send() {
                Ok(response) => Some(response.status().as_u16()),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    None
                }
            }
        })
        .expect("the source listens");
    assert_eq!(status, 200);
    stop.send(true).unwrap();
    rt.block_on(task).unwrap().expect("a clean stop");
    assert_eq!(
        without_ids(running.written()),
        [expected("POST_TELEMETRY_REQUEST", "Meter B2", "meter", NOW, json!({"kwh": 1}))]
    );
}

#[test]
fn run_names_a_bad_token_file_and_a_taken_address() {
    let running = Running::to_file();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let base_dir = running.dir.dir.path().to_path_buf();
    running.dir.write("bad-tokens.json", "{\n  \"T\": {\"deviceName\": \"d\", \"name\": \"x\"}\n}");
    let (_stop, stopped) = watch::channel(false);

    let spec = HttpSourceSpec { listen: "127.0.0.1:0".into(), tokens: "bad-tokens.json".into() };
    let e = rt.block_on(http::run(spec, &base_dir, running.feed(), stopped.clone())).unwrap_err().to_string();
    assert!(e.contains(&base_dir.join("bad-tokens.json").display().to_string()), "{e}");
    assert!(e.contains("unknown field `name`") && e.contains("line 2"), "{e}");

    let spec = HttpSourceSpec { listen: "127.0.0.1:0".into(), tokens: "missing.json".into() };
    let e = rt.block_on(http::run(spec, &base_dir, running.feed(), stopped.clone())).unwrap_err().to_string();
    assert!(e.contains("missing.json") && e.contains("cannot read"), "{e}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let spec = HttpSourceSpec { listen: addr.clone(), tokens: "tokens.json".into() };
    let e = rt.block_on(http::run(spec, &base_dir, running.feed(), stopped)).unwrap_err();
    assert!(matches!(e, HttpSourceError::Bind { .. }), "{e}");
    assert!(e.to_string().starts_with(&format!("cannot listen on {addr}: ")), "{e}");
}

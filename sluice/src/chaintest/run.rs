//! Running one test: the chain loaded as `sluice run` loads it, driven on the calling thread by
//! the engine's own [`Worker`] — the code every pipeline worker runs — with both clocks virtual.
//!
//! - **Event time** is the messages' (`ts`, or the chain's `eventTime.from`), stamped with
//!   watermarks exactly as a source stamps them ([`Watermarks`]), so lateness and window closing
//!   are the engine's.
//! - **Processing time** is a [`Clock::Manual`] the test moves (`advanceMs`): timers due on the
//!   way fire in the order they fall due, each at its own time, and the watermark moves on for
//!   what fell idle, as a running source's does. A test of a one-hour window runs in
//!   milliseconds.
//! - **Outputs** are seen where they happen: every node's outputs through a [`Tap`] on the
//!   worker, the sinks through their channels, connectors' requests through a capturing
//!   connector put in place of each (unless the test makes it live).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use sluice_connectors::Granted;
use sluice_connectors::policy::Guarded;
use sluice_core::connector::{Call, Connector, ConnectorError};
use sluice_core::message::Message;
use sluice_core::spec::{CallPolicySpec, CircuitBreakerSpec};
use sluice_core::{Ack, Clock, SinkItem};
use sluice_engine::Runtime;
use sluice_engine::chain::{Chain, Loader, NodeKind};
use sluice_engine::flow::worker::{Tap, Worker};
use sluice_engine::flow::{Envelope, Sinks, check_state_on};
use sluice_engine::state::StateStore;
use sluice_engine::state::time::Watermarks;

use super::matching::Matching;
use super::spec::{ConnectorTest, DEFAULT_START_MS, DEFAULT_TOLERANCE, Expect, Step, TestCase};

/// Why a test failed: the step (1-based) and what it found.
#[derive(Debug, Clone)]
pub struct Failure {
    pub step: usize,
    /// The step, in short (`expect output sink`).
    pub what: String,
    pub message: String,
    /// What was found, in full, when it helps (the messages that came).
    pub found: Option<String>,
}

/// A test that could not run: its chain does not load, a step names something the chain does
/// not have, a file it sends cannot be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// What a step found wrong, before it is numbered.
enum StepError {
    Failed { message: String, found: Option<String> },
    Setup(String),
}

impl StepError {
    fn failed(message: impl Into<String>) -> Self {
        StepError::Failed { message: message.into(), found: None }
    }
}

/// Runs `test` (from the test file `file`): `Ok(None)` when it passed.
pub fn run(
    runtime: &Arc<Runtime>,
    module_dirs: &[PathBuf],
    file: &Path,
    defaults: &BTreeMap<String, ConnectorTest>,
    default_chain: Option<&str>,
    test: &TestCase,
) -> Result<Option<Failure>, SetupError> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let chain_name = test
        .chain
        .as_deref()
        .or(default_chain)
        .ok_or_else(|| SetupError("no chain: name it in the test file (`chain`) or in the test".into()))?;
    let mut connectors = defaults.clone();
    connectors.extend(test.connectors.clone());
    let mut harness = Harness::start(runtime, module_dirs, &dir.join(chain_name), &connectors, test)?;
    for (n, step) in test.steps.iter().enumerate() {
        match harness.step(dir, step) {
            Ok(()) => {}
            Err(StepError::Setup(message)) => {
                return Err(SetupError(format!("step {} ({}): {message}", n + 1, describe(step))));
            }
            Err(StepError::Failed { message, found }) => {
                return Ok(Some(Failure { step: n + 1, what: describe(step), message, found }));
            }
        }
    }
    Ok(None)
}

/// A step in short, for a failure's heading.
fn describe(step: &Step) -> String {
    match step {
        Step::Send(_) => "send".into(),
        Step::SendFile(path) => format!("sendFile {path}"),
        Step::AdvanceMs(ms) => format!("advanceMs {ms}"),
        Step::EndOfInput(_) => "endOfInput".into(),
        Step::Expect(e) => {
            let place = match (&e.node, &e.relation, &e.sink, &e.connector, &e.state, &e.table) {
                (Some(node), Some(relation), ..) => format!("node {node} on {relation}"),
                (Some(node), None, ..) => format!("node {node}"),
                (_, _, Some(sink), ..) => format!("sink {sink}"),
                (_, _, _, Some(c), ..) => format!("connector {c}"),
                (_, _, _, _, Some(s), _) => format!("state of {s}"),
                (.., Some(t)) => format!("table {t}"),
                _ => "nothing named".into(),
            };
            format!("expect {place}")
        }
    }
}

/// Outputs of nodes, by (node, relation), not yet checked.
type Tapped = Arc<Mutex<HashMap<(String, String), Vec<Arc<Message>>>>>;

/// A chain under test.
struct Harness {
    worker: Worker,
    chain: Arc<Chain>,
    state: StateStore,
    clock: Arc<AtomicI64>,
    watermarks: Watermarks,
    tapped: Tapped,
    output: Receiver<SinkItem>,
    dead_letter: Receiver<SinkItem>,
    /// Sink messages not yet checked: `output`, `deadLetter`.
    sinks: BTreeMap<&'static str, Vec<Arc<Message>>>,
    captures: BTreeMap<String, Arc<Capture>>,
    /// Requests of each connector already checked.
    checked_requests: HashMap<String, usize>,
    /// Input messages so far (their line numbers, for their ids).
    sent: u64,
    source: String,
}

impl Harness {
    fn start(
        runtime: &Arc<Runtime>,
        module_dirs: &[PathBuf],
        chain_file: &Path,
        connectors: &BTreeMap<String, ConnectorTest>,
        test: &TestCase,
    ) -> Result<Self, SetupError> {
        let overrides = connectors.iter().filter_map(|(n, c)| c.spec.clone().map(|s| (n.clone(), s))).collect();
        let mut chain = Loader::new(runtime, module_dirs.to_vec())
            .with_connectors(overrides)
            .load(chain_file)
            .map_err(|e| SetupError(e.to_string()))?;
        let captures = capture_connectors(&mut chain, connectors)?;
        let chain = Arc::new(chain);
        let clock = Arc::new(AtomicI64::new(test.start_ms.unwrap_or(DEFAULT_START_MS)));
        let state = StateStore::default();
        check_state_on(runtime, &chain, &state, &Clock::Manual(clock.clone()))
            .map_err(|e| SetupError(e.to_string()))?;
        // Far larger than a test sends between two steps; drained after every message.
        let (out_tx, output) = std::sync::mpsc::sync_channel(1 << 16);
        let (dead_tx, dead_letter) = std::sync::mpsc::sync_channel(1 << 16);
        let sinks = Sinks { output: Some(out_tx), dead_letter: Some(dead_tx) };
        let tapped: Tapped = Arc::default();
        let into = tapped.clone();
        let tap: Tap = Box::new(move |node, relation, msg| {
            let mut tapped = into.lock().unwrap_or_else(|p| p.into_inner());
            tapped.entry((node.to_string(), relation.to_string())).or_default().push(msg.clone());
        });
        let worker = Worker::standalone_with_state(runtime.clone(), chain.clone(), sinks, state.clone())
            .clocked(Clock::Manual(clock.clone()))
            .tapping(tap);
        let watermarks = Watermarks::new(&chain.event_time);
        Ok(Harness {
            worker,
            chain,
            state,
            clock,
            watermarks,
            tapped,
            output,
            dead_letter,
            sinks: BTreeMap::new(),
            captures,
            checked_requests: HashMap::new(),
            sent: 0,
            source: format!("test:{}", test.name),
        })
    }

    fn now(&self) -> i64 {
        self.clock.load(Ordering::Relaxed)
    }

    fn step(&mut self, dir: &Path, step: &Step) -> Result<(), StepError> {
        match step {
            Step::Send(msgs) => {
                for value in msgs.clone().into_vec() {
                    let text = serde_json::to_string(&value).map_err(|e| StepError::Setup(e.to_string()))?;
                    self.send(&text, "a message of this step")?;
                }
            }
            Step::SendFile(path) => {
                let path = dir.join(path);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| StepError::Setup(format!("cannot read {}: {e}", path.display())))?;
                for (n, line) in text.lines().enumerate() {
                    if !line.trim().is_empty() {
                        self.send(line, &format!("{} line {}", path.display(), n + 1))?;
                    }
                }
            }
            Step::AdvanceMs(ms) => self.advance(*ms)?,
            Step::EndOfInput(end) => {
                if *end {
                    self.worker.end_of_input();
                }
            }
            Step::Expect(expect) => {
                self.drain();
                self.expect(expect)?;
            }
        }
        self.drain();
        Ok(())
    }

    /// One input record, at the current processing time.
    fn send(&mut self, text: &str, what: &str) -> Result<(), StepError> {
        self.sent += 1;
        let now = self.now();
        let parsed = sluice_io::sources::jsonl::parse_line_as(&self.source, self.sent, text, now, &self.chain.input)
            .map_err(|e| StepError::Setup(format!("{what} is not a message: {}", e.message)))?;
        let Some(msg) = parsed else { return Ok(()) };
        let msg = Message::from(msg);
        let event_time = self.chain.time_field.event_time(&msg, now);
        let key = Envelope::key_of(msg.entity_type(), msg.name());
        let stamp = self.watermarks.stamp(0, msg.name(), event_time, now);
        let envelope = Envelope::new(Arc::new(msg), key, Ack::none()).with_stamp(stamp).with_partition(0);
        self.worker.process(envelope);
        self.drain();
        Ok(())
    }

    /// Processing time moves on by `ms`: each timer due on the way fires at its own time.
    fn advance(&mut self, ms: u64) -> Result<(), StepError> {
        let target = self.now().saturating_add(ms as i64);
        // A timer that re-arms itself at or before now would fire forever.
        let mut fired = 0u64;
        while let Some(at) = self.next_timer().filter(|at| *at <= target) {
            fired += 1;
            if fired > 1_000_000 {
                return Err(StepError::failed(format!(
                    "more than a million timers fired within {ms} ms: a timer that re-arms itself for now?"
                )));
            }
            self.clock.store(at.max(self.now()), Ordering::Relaxed);
            self.idle_check();
            self.worker.tick();
            self.drain();
        }
        self.clock.store(target, Ordering::Relaxed);
        self.idle_check();
        self.worker.tick();
        Ok(())
    }

    /// The watermark moves on for what fell idle by now, as a running source's idle check does.
    fn idle_check(&mut self) {
        if let Some(combined) = self.watermarks.advance(self.now()) {
            drop(self.worker.progress().issue(combined));
        }
    }

    /// When the earliest timer of any node is due.
    fn next_timer(&self) -> Option<i64> {
        let rules = self.chain.nodes.iter().filter(|n| matches!(n.kind, NodeKind::Rule(_)));
        rules.filter_map(|n| self.state.node(&n.id).timers.snapshot().iter().map(|t| t.1).min()).min()
    }

    /// What the sinks received, into their lists.
    fn drain(&mut self) {
        for (name, rx) in [("output", &self.output), ("deadLetter", &self.dead_letter)] {
            let got = rx.try_iter().flat_map(SinkItem::into_msgs).map(|(msg, _)| msg);
            self.sinks.entry(name).or_default().extend(got);
        }
    }

    fn expect(&mut self, e: &Expect) -> Result<(), StepError> {
        let matching = Matching { exact: e.exact, tolerance: e.tolerance.unwrap_or(DEFAULT_TOLERANCE) };
        let places = [e.node.is_some(), e.sink.is_some(), e.connector.is_some(), e.state.is_some(), e.table.is_some()];
        if places.iter().filter(|p| **p).count() != 1 {
            return Err(StepError::Setup(
                "an `expect` names exactly one of `node`, `sink`, `connector`, `state`, `table`".into(),
            ));
        }
        if let Some(node) = &e.node {
            self.known_node(node)?;
            let counts = self.worker.counts().node(node);
            if let Some(late) = e.late
                && counts.late != late
            {
                return Err(StepError::failed(format!("expected {late} late messages, got {}", counts.late)));
            }
            if let Some(failed) = e.failed
                && counts.failures != failed
            {
                return Err(StepError::failed(format!("expected {failed} failures, got {}", counts.failures)));
            }
            return match &e.relation {
                Some(relation) => {
                    let key = (node.clone(), relation.clone());
                    let got = self.tapped.lock().unwrap_or_else(|p| p.into_inner()).remove(&key).unwrap_or_default();
                    check_messages(e, &matching, &got)
                }
                None if e.messages.is_some() || e.count.is_some() => {
                    Err(StepError::Setup("name the `relation` whose messages are expected".into()))
                }
                None if e.late.is_none() && e.failed.is_none() => Err(StepError::Setup(
                    "say what to expect of the node: `relation` with `messages` or `count`, `late`, `failed`".into(),
                )),
                None => Ok(()),
            };
        }
        if let Some(sink) = &e.sink {
            let name = match sink.as_str() {
                "output" => "output",
                "deadLetter" => "deadLetter",
                other => {
                    return Err(StepError::Setup(format!(
                        "no sink `{other}`: the sinks are `output` and `deadLetter`"
                    )));
                }
            };
            let got = std::mem::take(self.sinks.entry(name).or_default());
            return check_messages(e, &matching, &got);
        }
        if let Some(connector) = &e.connector {
            let Some(capture) = self.captures.get(connector) else {
                let known: Vec<_> = self.captures.keys().map(String::as_str).collect();
                return Err(StepError::Setup(format!(
                    "no captured connector `{connector}` (captured: {}; a live connector's requests are not seen)",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )));
            };
            let all = capture.requests();
            let from = self.checked_requests.insert(connector.clone(), all.len()).unwrap_or(0);
            let got = &all[from.min(all.len())..];
            let expected = e.requests.as_ref().or(e.messages.as_ref());
            return check_values(expected, e.count, &matching, got, "requests");
        }
        let (found, of) = if let Some(node) = &e.state {
            self.known_node(node)?;
            let key = e.key.as_deref().ok_or_else(|| StepError::Setup("a state check needs its `key`".into()))?;
            let bytes = self.state.node(node).kv.get(key.as_bytes());
            (bytes.map(|b| serde_json::from_slice(&b).unwrap_or_else(|_| json!(String::from_utf8_lossy(&b)))), key)
        } else {
            let table = e.table.as_deref().unwrap_or_default();
            let key = e.key.as_deref().ok_or_else(|| StepError::Setup("a table check needs its `key`".into()))?;
            (self.state.tables().get(table, key), key)
        };
        match (found, &e.value, e.absent) {
            (None, _, true) => Ok(()),
            (Some(v), _, true) => Err(StepError::failed(format!("expected no value at `{of}`, got {v}"))),
            (None, Some(_), false) => Err(StepError::failed(format!("expected a value at `{of}`, there is none"))),
            (Some(v), Some(want), false) => matching
                .check(want, &v)
                .map_err(|m| StepError::Failed { message: m.to_string(), found: Some(v.to_string()) }),
            (_, None, false) => Err(StepError::Setup("say the `value` expected (or `absent: true`)".into())),
        }
    }

    fn known_node(&self, node: &str) -> Result<(), StepError> {
        if self.chain.find(node).is_some() {
            return Ok(());
        }
        let ids: Vec<_> = self.chain.nodes.iter().map(|n| n.id.as_str()).collect();
        Err(StepError::Setup(format!("no node `{node}` in the chain (nodes: {})", ids.join(", "))))
    }
}

/// Checks the messages that reached a node's relation or a sink.
fn check_messages(e: &Expect, matching: &Matching, got: &[Arc<Message>]) -> Result<(), StepError> {
    let values: Vec<Value> = got.iter().map(|m| serde_json::to_value(&**m).unwrap_or(Value::Null)).collect();
    check_values(e.messages.as_ref(), e.count, matching, &values, "messages")
}

/// Checks values (messages, requests) against what is expected of them: their number, each in
/// order.
fn check_values(
    expected: Option<&Vec<Value>>,
    count: Option<u64>,
    matching: &Matching,
    got: &[Value],
    what: &str,
) -> Result<(), StepError> {
    if expected.is_none() && count.is_none() {
        return Err(StepError::Setup(format!("say the `{what}` expected, or their `count`")));
    }
    let listing = || {
        let lines: Vec<String> = got.iter().take(20).map(Value::to_string).collect();
        let more = got.len().saturating_sub(20);
        let more = if more > 0 { format!("\n… and {more} more") } else { String::new() };
        Some(if lines.is_empty() { format!("no {what}") } else { lines.join("\n") + &more })
    };
    let n = got.len() as u64;
    if let Some(count) = count
        && count != n
    {
        return Err(StepError::Failed { message: format!("expected {count} {what}, got {n}"), found: listing() });
    }
    if let Some(expected) = expected {
        if expected.len() != got.len() {
            let message = format!("expected {} {what}, got {}", expected.len(), got.len());
            return Err(StepError::Failed { message, found: listing() });
        }
        for (i, (want, value)) in expected.iter().zip(got).enumerate() {
            if let Err(m) = matching.check(want, value) {
                let message = format!("{} {} of {}: {m}", singular(what), i + 1, got.len());
                return Err(StepError::Failed { message, found: Some(value.to_string()) });
            }
        }
    }
    Ok(())
}

fn singular(what: &str) -> &str {
    what.strip_suffix('s').unwrap_or(what)
}

/// Puts a capturing connector in place of each connector the test does not make live; returns
/// them by name.
fn capture_connectors(
    chain: &mut Chain,
    tests: &BTreeMap<String, ConnectorTest>,
) -> Result<BTreeMap<String, Arc<Capture>>, SetupError> {
    let mut captures: BTreeMap<String, (Arc<Capture>, Arc<Guarded>)> = BTreeMap::new();
    for node in &mut chain.nodes {
        let NodeKind::Rule(rule) = &mut node.kind else { continue };
        let Some(granted) = &rule.connector else { continue };
        let name = granted.name.to_string();
        let mode = tests.get(&name).cloned().unwrap_or_default();
        if mode.live || mode.spec.is_some() {
            continue;
        }
        if !captures.contains_key(&name) {
            let capture = Arc::new(Capture {
                kind: granted.connector.kind(),
                replies: mode.replies.clone(),
                reply: mode.reply.clone(),
                fail: mode.fail.clone(),
                requests: Mutex::default(),
            });
            // No retry, no circuit: a captured failure is one answer, at once.
            let policy = CallPolicySpec {
                retries: Some(0),
                circuit_breaker: Some(CircuitBreakerSpec { enabled: false, failures: None, open_ms: None }),
                ..CallPolicySpec::default()
            };
            let guarded = Guarded::new(&name, capture.clone(), &policy)
                .map_err(|e| SetupError(format!("connector `{name}`: {e}")))?;
            captures.insert(name.clone(), (capture, Arc::new(guarded)));
        }
        let (_, guarded) = &captures[&name];
        rule.connector = Some(Granted { name: name.as_str().into(), connector: guarded.clone() });
    }
    for name in tests.keys() {
        if !chain
            .nodes
            .iter()
            .any(|n| matches!(&n.kind, NodeKind::Rule(r) if r.connector.as_ref().is_some_and(|g| &*g.name == name)))
        {
            return Err(SetupError(format!("`connectors.{name}`: no node of the chain is granted connector `{name}`")));
        }
    }
    Ok(captures.into_iter().map(|(name, (capture, _))| (name, capture)).collect())
}

/// A connector that records requests instead of executing them.
#[derive(Debug)]
struct Capture {
    kind: &'static str,
    replies: Vec<Value>,
    reply: Option<Value>,
    fail: Option<String>,
    requests: Mutex<Vec<Value>>,
}

impl Capture {
    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What the connector's kind answers when a request succeeds.
    fn success(&self, n: usize) -> Value {
        match self.kind {
            "http" => json!({"status": 200, "headers": {}, "body": null}),
            "kafka" => json!({"partition": 0, "offset": n}),
            "file" => json!({"written": true}),
            _ => json!({}),
        }
    }
}

impl Connector for Capture {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn call(&self, call: &Call<'_>) -> Result<Value, ConnectorError> {
        let n = {
            let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            requests.push(call.request.clone());
            requests.len() - 1
        };
        match (&self.fail, &self.reply) {
            (Some(reason), _) => Err(ConnectorError::permanent(reason.clone())),
            _ if n < self.replies.len() => Ok(self.replies[n].clone()),
            (None, Some(reply)) => Ok(reply.clone()),
            (None, None) => Ok(self.success(n)),
        }
    }
}

//! The MQTT connector: a request `{"topic", "qos"?, "retain"?, "payload"}` becomes a publish;
//! the answer is `{}` once the broker has it — after its PUBACK for QoS 1 (the default), its
//! PUBCOMP for QoS 2, after it was written to the socket for QoS 0. A string `payload` is sent as is; any other JSON value
//! is sent serialized (`{"t": 1}` → the bytes `{"t":1}`).
//!
//! Calls come from the chain's worker threads, outside the async runtime, and block until the
//! publish is confirmed. The connection lives on a thread of its own, started on the first call,
//! driving rumqttc's sync [`Connection`]; several workers publish through it at once.
//!
//! ## How a PUBACK finds its caller
//!
//! Calls are *not* serialized: that would cost one broker round trip per message across all
//! workers. Instead each call is queued, and the connection thread matches packet ids. rumqttc
//! picks the packet id when it takes a publish off its request channel, and reports it as
//! `Outgoing::Publish(pkid)` — in channel order. A call sends its publish to the channel and
//! appends itself to a FIFO *under one lock*, so the n-th `Outgoing::Publish` is the n-th queued
//! call: it moves to the in-flight map under its packet id, and `Incoming::PubAck(pkid)` answers
//! it (for QoS 2, `PubRec` sets it aside — rumqttc may reuse the id from then on — and `PubComp`
//! answers it). (`Outgoing::AwaitAck(pkid)` — rumqttc holding a publish back because the broker acked out
//! of order — takes the FIFO's head the same way; its later `Outgoing::Publish` is the same call.)
//!
//! ## Reconnects
//!
//! A connection error ends the connection's *generation*: the client, its channel and rumqttc's
//! state are dropped whole, and a new pair is made after a backoff (100 ms doubling to 10 s,
//! logged). Every call not yet confirmed is then published again on the new connection, in the
//! order the calls came. Rebuilding instead of letting rumqttc reconnect in place is what keeps
//! the matching exact: rumqttc would silently drop, or resend, publishes it had taken from its
//! channel before the error, and a packet id could no longer be tied to a call. The connector
//! uses a clean session (it subscribes to nothing, and it re-sends itself), so delivery is
//! at least once: a publish whose PUBACK was lost with the connection is sent twice — with QoS 2
//! too, whose exactly-once holds only within one connection.
//!
//! An attempt that gets no confirmation within the connector's `timeoutMs` (default
//! [`CALL_TIMEOUT`]) fails with a message saying so (and the last connection error); it is not
//! re-sent by the connection after that — the policy's retry, if any, is a new publish.
//!
//! ## Idempotency keys
//!
//! With `protocolVersion: "5"` the connector speaks MQTT 5, and every publish carries the call's
//! idempotency key (`{message id}:{node}:{request hash}`, the same on every retry and on a replay
//! of the message) as the user property `idempotency-key`, so a subscriber can drop duplicates.
//! MQTT 3.1.1 (the default, what every broker speaks) has no user properties: a receiver that
//! must drop duplicates then needs an id inside the payload. Over MQTT 5 a PUBACK or PUBREC with
//! a failure reason code (not authorized, quota exceeded, …) fails the call with that reason.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PubAckReason, PubRecReason, PublishProperties};
use rumqttc::{Client, Event, Incoming, MqttOptions, Outgoing, QoS, TlsConfiguration, Transport};
use serde_json::{Value, json};

use super::spec::{MqttConnection, MqttVersion};
use super::{Call, Connector, ConnectorError};

/// How long a call waits for its publish to be confirmed, across reconnects.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Keep-alive when the connection does not say (seconds).
pub const DEFAULT_KEEP_ALIVE_S: u64 = 30;
/// The largest MQTT packet (the protocol's own limit, 256 MiB): Sluice refuses nothing the broker
/// accepted — a smaller limit on incoming packets would make rumqttc drop the connection, and
/// a persistent session would then redeliver the same publish forever.
pub const MAX_PACKET: usize = 268_435_455;
/// Publishes waiting for rumqttc's request channel, at most.
const REQUEST_CAPACITY: usize = 1024;

/// A connection block that cannot be used; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MqttConfigError {
    #[error("`url` {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("`caFile` {path:?}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("`keepAliveS` {0}: at most 65535 seconds (MQTT's limit)")]
    KeepAlive(u64),
    #[error("`clientId` must not be empty (leave it out for a generated one)")]
    EmptyClientId,
    #[error("`password` without `username`: MQTT 3.1.1 sends a password only with a user name")]
    PasswordWithoutUser,
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Env(#[from] super::EnvError),
}

/// Where a broker is, from `mqtt://host[:port]` or `mqtts://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl BrokerUrl {
    /// Parses `url`; the port defaults to 1883 (`mqtt`) or 8883 (`mqtts`).
    pub fn parse(url: &str) -> Result<BrokerUrl, MqttConfigError> {
        let bad = |reason: &str| MqttConfigError::Url { url: url.to_string(), reason: reason.to_string() };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err(bad("must start with mqtt:// or mqtts://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("only host and port are taken (credentials go in `username`/`password`)"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed `[` in an IPv6 address"))?;
            (host, after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => {
                if tls {
                    8883
                } else {
                    1883
                }
            }
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad("the port is not 1-65535"))?,
        };
        Ok(BrokerUrl { host: host.to_string(), port, tls })
    }
}

/// `spec` with `${VAR}` expanded in its text fields, so chain files keep secrets out.
pub fn expand(spec: &MqttConnection) -> Result<MqttConnection, MqttConfigError> {
    let expand = |s: &Option<String>| s.as_deref().map(super::expand_env).transpose().map_err(MqttConfigError::Env);
    Ok(MqttConnection {
        url: super::expand_env(&spec.url).map_err(MqttConfigError::Env)?,
        client_id: expand(&spec.client_id)?,
        username: expand(&spec.username)?,
        password: expand(&spec.password)?,
        ca_file: expand(&spec.ca_file)?,
        keep_alive_s: spec.keep_alive_s,
        protocol_version: spec.protocol_version,
    })
}

/// rumqttc's options for `spec`: address, TLS, credentials, keep-alive, and the configured client
/// id — or `{prefix}-` and a random suffix when there is none (two instances must not share one:
/// the broker would disconnect the first when the second connects).
pub fn options(spec: &MqttConnection, prefix: &str) -> Result<MqttOptions, MqttConfigError> {
    let broker = BrokerUrl::parse(&spec.url)?;
    let client_id = match &spec.client_id {
        Some(id) if id.is_empty() => return Err(MqttConfigError::EmptyClientId),
        Some(id) => id.clone(),
        None => format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
    };
    let keep_alive = spec.keep_alive_s.unwrap_or(DEFAULT_KEEP_ALIVE_S);
    if keep_alive > u64::from(u16::MAX) {
        return Err(MqttConfigError::KeepAlive(keep_alive));
    }
    let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    options.set_keep_alive(Duration::from_secs(keep_alive)).set_max_packet_size(MAX_PACKET, MAX_PACKET);
    match (&spec.username, &spec.password) {
        (Some(user), password) => {
            options.set_credentials(user.clone(), password.clone().unwrap_or_default());
        }
        (None, Some(_)) => return Err(MqttConfigError::PasswordWithoutUser),
        (None, None) => {}
    }
    if broker.tls {
        let config = tls_config(spec.ca_file.as_deref())?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(config))));
    } else if let Some(path) = &spec.ca_file {
        return Err(MqttConfigError::CaFile {
            path: path.clone(),
            reason: "given for an mqtt:// url (use mqtts://)".into(),
        });
    }
    Ok(options)
}

/// [`options`] for an MQTT 5 client: the same checks and settings.
pub fn options_v5(spec: &MqttConnection, prefix: &str) -> Result<rumqttc::v5::MqttOptions, MqttConfigError> {
    let v4 = options(spec, prefix)?;
    let (host, port) = v4.broker_address();
    let mut options = rumqttc::v5::MqttOptions::new(v4.client_id(), host, port);
    options.set_keep_alive(v4.keep_alive()).set_max_packet_size(Some(MAX_PACKET as u32)).set_transport(v4.transport());
    if let Some(login) = v4.credentials() {
        options.set_credentials(login.username, login.password);
    }
    Ok(options)
}

/// A rustls client configuration on the *ring* provider (the build carries no aws-lc), trusting
/// the CA in `ca_file`, or else the platform's roots.
fn tls_config(ca_file: Option<&str>) -> Result<rustls::ClientConfig, MqttConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let ca_err = |reason: String| MqttConfigError::CaFile { path: path.to_string(), reason };
            let file = std::fs::File::open(path).map_err(|e| ca_err(e.to_string()))?;
            for cert in rustls_pemfile::certs(&mut std::io::BufReader::new(file)) {
                let cert = cert.map_err(|e| ca_err(format!("not PEM: {e}")))?;
                roots.add(cert).map_err(|e| ca_err(format!("not a CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(ca_err("no certificate in the file".into()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A platform root rustls cannot use is skipped, as browsers do.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(MqttConfigError::Tls(
                    "no trusted roots found on this machine; set `caFile` to the broker's CA".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MqttConfigError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Exponential backoff between connection attempts: 100 ms, doubled up to 10 s; back to the
/// start once connected.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(100);
    pub const CAP: Duration = Duration::from_secs(10);

    pub fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        delay
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Publishes action requests to an MQTT broker (see the module docs).
#[derive(Debug)]
pub struct MqttConnector {
    name: String,
    url: String,
    options: Options,
    shared: Arc<Shared>,
}

/// How to connect: MQTT 3.1.1 or 5.
#[derive(Debug, Clone)]
enum Options {
    V311(Box<MqttOptions>),
    V5(Box<rumqttc::v5::MqttOptions>),
}

/// The current connection's client, of either protocol.
enum AnyClient {
    V311(Client),
    V5(rumqttc::v5::Client),
}

impl AnyClient {
    /// Queues `waiter`'s publish; `false` when rumqttc's request channel is full.
    fn try_publish(&self, waiter: &Waiter) -> bool {
        let (topic, qos, retain, payload) = (waiter.topic.clone(), waiter.qos, waiter.retain, waiter.payload.clone());
        match self {
            AnyClient::V311(client) => client.try_publish(topic, qos, retain, payload).is_ok(),
            AnyClient::V5(client) => {
                let mut properties = PublishProperties::default();
                if let Some(key) = &waiter.key {
                    properties.user_properties.push((IDEMPOTENCY_PROPERTY.to_string(), key.clone()));
                }
                let qos = match qos {
                    QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                    QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
                };
                client.try_publish_with_properties(topic, qos, retain, payload, properties).is_ok()
            }
        }
    }

    fn try_disconnect(&self) {
        let _ = match self {
            AnyClient::V311(client) => client.try_disconnect().map_err(drop),
            AnyClient::V5(client) => client.try_disconnect().map_err(drop),
        };
    }
}

/// The MQTT 5 user property that carries a publish's idempotency key.
pub const IDEMPOTENCY_PROPERTY: &str = "idempotency-key";

/// What the connection thread acts on, from either protocol's events.
#[derive(Debug, PartialEq)]
enum Seen {
    Connected,
    Published(u16),
    AwaitAck(u16),
    /// PUBACK; `Some(reason)` when the broker refused the publish (MQTT 5).
    Acked(u16, Option<String>),
    Received(u16, Option<String>),
    Completed(u16),
    Other,
}

fn seen_v311(event: Event) -> Seen {
    match event {
        Event::Incoming(Incoming::ConnAck(_)) => Seen::Connected,
        Event::Outgoing(Outgoing::Publish(pkid)) => Seen::Published(pkid),
        Event::Outgoing(Outgoing::AwaitAck(pkid)) => Seen::AwaitAck(pkid),
        Event::Incoming(Incoming::PubAck(ack)) => Seen::Acked(ack.pkid, None),
        Event::Incoming(Incoming::PubRec(rec)) => Seen::Received(rec.pkid, None),
        Event::Incoming(Incoming::PubComp(comp)) => Seen::Completed(comp.pkid),
        _ => Seen::Other,
    }
}

fn seen_v5(event: rumqttc::v5::Event) -> Seen {
    use rumqttc::v5::Event as E;
    match event {
        E::Incoming(Packet5::ConnAck(_)) => Seen::Connected,
        E::Outgoing(Outgoing::Publish(pkid)) => Seen::Published(pkid),
        E::Outgoing(Outgoing::AwaitAck(pkid)) => Seen::AwaitAck(pkid),
        E::Incoming(Packet5::PubAck(ack)) => {
            let refused = !matches!(ack.reason, PubAckReason::Success | PubAckReason::NoMatchingSubscribers);
            Seen::Acked(ack.pkid, refused.then(|| format!("the broker refused the publish: {:?}", ack.reason)))
        }
        E::Incoming(Packet5::PubRec(rec)) => {
            let refused = !matches!(rec.reason, PubRecReason::Success | PubRecReason::NoMatchingSubscribers);
            Seen::Received(rec.pkid, refused.then(|| format!("the broker refused the publish: {:?}", rec.reason)))
        }
        E::Incoming(Packet5::PubComp(comp)) => Seen::Completed(comp.pkid),
        _ => Seen::Other,
    }
}

/// One call waiting for its confirmation.
#[derive(Debug)]
struct Waiter {
    /// Arrival order: re-sends after a reconnect keep it.
    seq: u64,
    topic: String,
    qos: QoS,
    retain: bool,
    payload: Vec<u8>,
    /// Sent as a user property over MQTT 5.
    key: Option<String>,
    done: SyncSender<Result<(), String>>,
    /// The caller gave up (timeout): never re-sent, its answer is dropped.
    abandoned: AtomicBool,
}

impl Waiter {
    fn finish(&self, result: Result<(), String>) {
        // Capacity 1 and a single answer per waiter: this never blocks. A caller that timed out
        // has dropped the receiver; the answer goes nowhere.
        let _ = self.done.try_send(result);
    }
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the connection thread from its backoff when the connector is dropped.
    wake: Condvar,
    seq: AtomicU64,
}

#[derive(Default)]
struct State {
    /// The current generation's client; `None` while (re)connecting.
    client: Option<AnyClient>,
    /// Sent on the current client, packet id not yet known (channel order).
    queue: VecDeque<Arc<Waiter>>,
    /// Sent, waiting for the PUBACK (QoS 1) or PUBREC (QoS 2) of this packet id.
    inflight: HashMap<u16, Arc<Waiter>>,
    /// QoS 2, received by the broker (PUBREC), waiting for the PUBCOMP of this packet id.
    releasing: HashMap<u16, Arc<Waiter>>,
    /// Held back by rumqttc until the broker acks the packet id it collided with.
    collided: Option<(u16, Arc<Waiter>)>,
    /// Arrived while there was no client: sent when the next connection is made.
    unsent: Vec<Arc<Waiter>>,
    started: bool,
    closed: bool,
    last_error: Option<String>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("connected", &self.client.is_some())
            .field("queued", &self.queue.len())
            .field("inflight", &self.inflight.len())
            .field("releasing", &self.releasing.len())
            .field("unsent", &self.unsent.len())
            .field("closed", &self.closed)
            .field("last_error", &self.last_error)
            .finish_non_exhaustive()
    }
}

impl State {
    /// Every call not yet confirmed, in arrival order, taken out of the per-connection maps.
    fn take_unconfirmed(&mut self) -> Vec<Arc<Waiter>> {
        let mut all: Vec<Arc<Waiter>> = self.unsent.drain(..).collect();
        all.extend(self.queue.drain(..));
        all.extend(self.inflight.drain().map(|(_, w)| w));
        all.extend(self.releasing.drain().map(|(_, w)| w));
        all.extend(self.collided.take().map(|(_, w)| w));
        all.sort_by_key(|w| w.seq);
        all
    }

    /// rumqttc wrote a publish with packet id `pkid` (0: QoS 0).
    fn published(&mut self, pkid: u16) {
        if pkid != 0 && self.collided.as_ref().is_some_and(|(p, _)| *p == pkid) {
            if let Some((pkid, waiter)) = self.collided.take() {
                self.inflight.insert(pkid, waiter);
            }
            return;
        }
        if pkid != 0 && self.inflight.contains_key(&pkid) {
            return; // a retransmission of a call already in flight
        }
        let Some(waiter) = self.queue.pop_front() else {
            tracing::error!(pkid, "MQTT connector: a publish nobody is waiting for (please report)");
            return;
        };
        if pkid == 0 {
            waiter.finish(Ok(()));
        } else {
            self.inflight.insert(pkid, waiter);
        }
    }

    fn await_ack(&mut self, pkid: u16) {
        if let Some(waiter) = self.queue.pop_front() {
            self.collided = Some((pkid, waiter));
        }
    }

    fn acked(&mut self, pkid: u16, refused: Option<String>) {
        if let Some(waiter) = self.inflight.remove(&pkid) {
            waiter.finish(refused.map_or(Ok(()), Err));
        }
    }

    /// QoS 2: the broker has the publish; its release (PUBREL → PUBCOMP) is under way — unless
    /// the broker refused it (MQTT 5).
    fn received(&mut self, pkid: u16, refused: Option<String>) {
        if let Some(waiter) = self.inflight.remove(&pkid) {
            match refused {
                None => {
                    self.releasing.insert(pkid, waiter);
                }
                Some(reason) => waiter.finish(Err(reason)),
            }
        }
    }

    fn completed(&mut self, pkid: u16) {
        if let Some(waiter) = self.releasing.remove(&pkid) {
            waiter.finish(Ok(()));
        }
    }

    /// Hands `waiter` to the current client, or keeps it for the next one.
    fn send(&mut self, waiter: Arc<Waiter>) -> Result<(), String> {
        let Some(client) = &self.client else {
            self.unsent.push(waiter);
            return Ok(());
        };
        if client.try_publish(&waiter) {
            self.queue.push_back(waiter);
            Ok(())
        } else {
            Err(format!("{REQUEST_CAPACITY} publishes already wait for the broker; not queuing more"))
        }
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

impl MqttConnector {
    /// Checks `spec` (URL, TLS files, credentials); connects on the first call.
    pub fn new(name: &str, spec: &MqttConnection) -> Result<Self, MqttConfigError> {
        let spec = expand(spec)?;
        let options = match spec.protocol_version.unwrap_or_default() {
            MqttVersion::V311 => {
                let mut options = options(&spec, "sluice-connector")?;
                options.set_clean_session(true).set_inflight(100);
                Options::V311(Box::new(options))
            }
            MqttVersion::V5 => {
                let mut options = options_v5(&spec, "sluice-connector")?;
                options.set_clean_start(true).set_outgoing_inflight_upper_limit(100);
                Options::V5(Box::new(options))
            }
        };
        Ok(MqttConnector {
            name: name.to_string(),
            url: spec.url.clone(),
            options,
            shared: Arc::new(Shared::default()),
        })
    }

    fn start(&self, state: &mut State) -> Result<(), String> {
        if state.started {
            return Ok(());
        }
        let shared = self.shared.clone();
        let options = self.options.clone();
        let url = self.url.clone();
        std::thread::Builder::new()
            .name(format!("sluice-mqtt-{}", self.name))
            .spawn(move || drive(shared, options, url))
            .map_err(|e| format!("cannot start the connection thread: {e}"))?;
        state.started = true;
        Ok(())
    }
}

impl Drop for MqttConnector {
    fn drop(&mut self) {
        let mut state = lock(&self.shared);
        state.closed = true;
        if let Some(client) = state.client.take() {
            client.try_disconnect();
        }
        for waiter in state.take_unconfirmed() {
            waiter.finish(Err("the connector was closed".into()));
        }
        self.shared.wake.notify_all();
    }
}

/// The parts of a request, checked.
struct Request {
    topic: String,
    qos: QoS,
    retain: bool,
    payload: Vec<u8>,
}

fn parse_request(request: &Value) -> Result<Request, String> {
    let topic = match request.get("topic") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        Some(other) => return Err(format!("request `topic` must be a non-empty string, not {other}")),
        None => return Err("request has no `topic`".into()),
    };
    if !rumqttc::valid_topic(&topic) {
        return Err(format!("request `topic` {topic:?}: a topic to publish to has no wildcards (`+`, `#`)"));
    }
    let qos = match request.get("qos") {
        None | Some(Value::Null) => QoS::AtLeastOnce,
        Some(v) => match v.as_u64() {
            Some(0) => QoS::AtMostOnce,
            Some(1) => QoS::AtLeastOnce,
            Some(2) => QoS::ExactlyOnce,
            _ => return Err(format!("request `qos` must be 0, 1 or 2, not {v}")),
        },
    };
    let retain = match request.get("retain") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("request `retain` must be true or false, not {other}")),
    };
    let payload = match request.get("payload") {
        None => return Err("request has no `payload`".into()),
        Some(Value::String(text)) => text.as_bytes().to_vec(),
        Some(json) => json.to_string().into_bytes(),
    };
    // Fixed header (5 bytes at most), topic length (2), topic, packet id (2): a larger packet
    // would make rumqttc drop the connection instead of refusing the one publish.
    if payload.len() + topic.len() + 9 > MAX_PACKET {
        return Err(format!("payload of {} bytes is larger than an MQTT packet can be", payload.len()));
    }
    Ok(Request { topic, qos, retain, payload })
}

impl Connector for MqttConnector {
    fn kind(&self) -> &'static str {
        "mqtt"
    }

    fn default_timeout(&self) -> Duration {
        CALL_TIMEOUT
    }

    fn call(&self, call: &Call<'_>) -> Result<Value, ConnectorError> {
        let Request { topic, qos, retain, payload } = parse_request(call.request)?;
        let (done, answer) = sync_channel(1);
        let waiter = Arc::new(Waiter {
            seq: self.shared.seq.fetch_add(1, Ordering::Relaxed),
            topic,
            qos,
            retain,
            payload,
            key: Some(call.idempotency_key.to_string()),
            done,
            abandoned: AtomicBool::new(false),
        });
        {
            let mut state = lock(&self.shared);
            if state.closed {
                return Err("the connector was closed".into());
            }
            self.start(&mut state)?;
            state.send(waiter.clone()).map_err(ConnectorError::retryable)?;
        }
        match answer.recv_timeout(call.timeout) {
            Ok(Ok(())) => Ok(json!({})),
            Ok(Err(e)) => Err(ConnectorError::retryable(e)),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                waiter.abandoned.store(true, Ordering::SeqCst);
                let last = lock(&self.shared).last_error.clone();
                let what = if waiter.qos == QoS::AtMostOnce { "publish was not written" } else { "no PUBACK" };
                Err(ConnectorError::retryable(format!(
                    "{what} for topic `{}` within {} s from {}{}",
                    waiter.topic,
                    call.timeout.as_secs_f64(),
                    self.url,
                    last.map(|e| format!(" (last connection error: {e})")).unwrap_or_default()
                )))
            }
        }
    }
}

/// The connection thread: one generation per connection, until the connector is dropped.
fn drive(shared: Arc<Shared>, options: Options, url: String) {
    let mut backoff = Backoff::new();
    loop {
        let error = match &options {
            Options::V311(options) => {
                let (client, mut connection) = Client::new((**options).clone(), REQUEST_CAPACITY);
                let events = connection.iter().map(|e| e.map(seen_v311).map_err(|e| e.to_string()));
                generation(&shared, &url, &mut backoff, AnyClient::V311(client), events)
            }
            Options::V5(options) => {
                let (client, mut connection) = rumqttc::v5::Client::new((**options).clone(), REQUEST_CAPACITY);
                let events = connection.iter().map(|e| e.map(seen_v5).map_err(|e| e.to_string()));
                generation(&shared, &url, &mut backoff, AnyClient::V5(client), events)
            }
        };
        let Some(error) = error else { return };
        let mut state = lock(&shared);
        state.client = None;
        if state.closed {
            return;
        }
        let delay = backoff.next_delay();
        tracing::warn!(url, error, retry_in_ms = delay.as_millis() as u64, "MQTT connector: broker connection lost");
        state.last_error = Some(error);
        // Sleeps the backoff unless the connector is dropped meanwhile.
        let (state, _) = shared.wake.wait_timeout_while(state, delay, |s| !s.closed).unwrap_or_else(|p| p.into_inner());
        if state.closed {
            return;
        }
    }
}

/// One connection: re-sends what is unconfirmed, then matches events to calls until the
/// connection ends (`Some(error)`) or the connector is dropped (`None`).
fn generation(
    shared: &Shared,
    url: &str,
    backoff: &mut Backoff,
    client: AnyClient,
    events: impl Iterator<Item = Result<Seen, String>>,
) -> Option<String> {
    {
        let mut state = lock(shared);
        if state.closed {
            return None;
        }
        state.client = Some(client);
        for waiter in state.take_unconfirmed() {
            if waiter.abandoned.load(Ordering::SeqCst) {
                continue;
            }
            if let Err(e) = state.send(waiter.clone()) {
                waiter.finish(Err(e));
            }
        }
    }
    for event in events {
        let mut state = lock(shared);
        match event {
            Ok(Seen::Connected) => {
                tracing::info!(url, "MQTT connector connected");
                backoff.reset();
                state.last_error = None;
            }
            Ok(Seen::Published(pkid)) => state.published(pkid),
            Ok(Seen::AwaitAck(pkid)) => state.await_ack(pkid),
            Ok(Seen::Acked(pkid, refused)) => state.acked(pkid, refused),
            Ok(Seen::Received(pkid, refused)) => state.received(pkid, refused),
            Ok(Seen::Completed(pkid)) => state.completed(pkid),
            Ok(Seen::Other) => {}
            Err(e) => return Some(e),
        }
        // Dropped: the DISCONNECT it queued was sent, or at the latest the next keep-alive
        // ping ends the thread (rumqttc's event loop holds a sender of its own channel, so
        // the channel never closes by itself).
        if state.closed {
            return None;
        }
    }
    Some("connection ended".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let parse = |u: &str| BrokerUrl::parse(u);
        assert_eq!(
            parse("mqtt://10.0.0.1:1884").unwrap(),
            BrokerUrl { host: "10.0.0.1".into(), port: 1884, tls: false }
        );
        assert_eq!(parse("mqtt://broker").unwrap().port, 1883);
        assert_eq!(
            parse("mqtts://broker.example/").unwrap(),
            BrokerUrl { host: "broker.example".into(), port: 8883, tls: true }
        );
        assert_eq!(parse("mqtt://[::1]:1999").unwrap(), BrokerUrl { host: "::1".into(), port: 1999, tls: false });
        for bad in
            ["tcp://h:1", "mqtt://", "mqtt://h:0", "mqtt://h:70000", "mqtt://u:p@h", "mqtt://h/path", "mqtt://[::1"]
        {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().starts_with(&format!("`url` {bad:?}")), "{e}");
        }
    }

    fn connection(url: &str) -> MqttConnection {
        MqttConnection {
            url: url.into(),
            client_id: None,
            username: None,
            password: None,
            ca_file: None,
            keep_alive_s: None,
            protocol_version: None,
        }
    }

    #[test]
    fn options_check_every_field() {
        let mut spec = connection("mqtt://127.0.0.1:1");
        let o = options(&spec, "x").unwrap();
        assert!(o.client_id().starts_with("x-") && o.client_id().len() == 14, "{}", o.client_id());
        assert_eq!(o.keep_alive(), Duration::from_secs(30));
        spec.client_id = Some(String::new());
        assert_eq!(options(&spec, "x").unwrap_err(), MqttConfigError::EmptyClientId);
        spec.client_id = Some("me".into());
        spec.keep_alive_s = Some(70_000);
        assert_eq!(options(&spec, "x").unwrap_err(), MqttConfigError::KeepAlive(70_000));
        spec.keep_alive_s = Some(5);
        spec.password = Some("p".into());
        assert_eq!(options(&spec, "x").unwrap_err(), MqttConfigError::PasswordWithoutUser);
        spec.username = Some("u".into());
        let o = options(&spec, "x").unwrap();
        assert_eq!(o.client_id(), "me");
        assert_eq!(o.credentials().map(|l| (l.username, l.password)), Some(("u".into(), "p".into())));
        spec.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(options(&spec, "x").unwrap_err(), MqttConfigError::CaFile { .. }));
        spec.url = "mqtts://127.0.0.1:1".into();
        let e = options(&spec, "x").unwrap_err().to_string();
        assert!(e.starts_with("`caFile` \"/nonexistent/ca.pem\""), "{e}");
    }

    #[test]
    fn requests_are_checked_before_anything_is_sent() {
        let ok = parse_request(&json!({"topic": "a/b", "payload": {"t": 1}})).unwrap();
        assert_eq!((ok.qos, ok.retain, ok.payload), (QoS::AtLeastOnce, false, br#"{"t":1}"#.to_vec()));
        let ok = parse_request(&json!({"topic": "a", "qos": 0, "retain": true, "payload": "raw text"})).unwrap();
        assert_eq!((ok.qos, ok.retain, ok.payload), (QoS::AtMostOnce, true, b"raw text".to_vec()));
        for (request, expected) in [
            (json!({"payload": 1}), "no `topic`"),
            (json!({"topic": "", "payload": 1}), "`topic` must be a non-empty string"),
            (json!({"topic": "a/+", "payload": 1}), "wildcards"),
            (json!({"topic": "a", "qos": 3, "payload": 1}), "`qos` must be 0, 1 or 2, not 3"),
            (json!({"topic": "a", "retain": "yes", "payload": 1}), "`retain` must be true or false"),
            (json!({"topic": "a"}), "no `payload`"),
        ] {
            let e = parse_request(&request).err().unwrap_or_else(|| panic!("{request} accepted"));
            assert!(e.contains(expected), "{request}: {e}");
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..10).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    fn waiter(seq: u64, qos: QoS) -> (Arc<Waiter>, std::sync::mpsc::Receiver<Result<(), String>>) {
        let (done, answer) = sync_channel(1);
        let waiter = Waiter {
            seq,
            topic: "t".into(),
            qos,
            retain: false,
            payload: vec![],
            key: None,
            done,
            abandoned: AtomicBool::new(false),
        };
        (Arc::new(waiter), answer)
    }

    #[test]
    fn packet_ids_find_their_callers() {
        let mut state = State::default();
        let mut answers = Vec::new();
        for (seq, qos) in [(0, QoS::AtLeastOnce), (1, QoS::AtMostOnce), (2, QoS::AtLeastOnce), (3, QoS::AtLeastOnce)] {
            let (w, answer) = waiter(seq, qos);
            state.queue.push_back(w);
            answers.push(answer);
        }
        state.published(7); // call 0 is packet 7
        state.published(0); // call 1, QoS 0: written, done
        state.published(8); // call 2 is packet 8
        state.await_ack(7); // call 3 collides with packet 7, still in flight
        assert!(answers[1].try_recv().unwrap().is_ok());
        state.acked(8, None);
        assert!(answers[2].try_recv().unwrap().is_ok());
        assert!(answers[0].try_recv().is_err() && answers[3].try_recv().is_err());
        state.acked(7, None); // call 0 confirmed; rumqttc now sends call 3 as packet 7
        state.published(7);
        assert!(answers[0].try_recv().unwrap().is_ok());
        assert!(answers[3].try_recv().is_err());
        state.acked(7, None);
        assert!(answers[3].try_recv().unwrap().is_ok());
        assert!(state.queue.is_empty() && state.inflight.is_empty() && state.collided.is_none());

        // QoS 2: PUBREC sets the call aside, so its packet id may be reused before its PUBCOMP.
        let (exactly_once, answer_4) = waiter(4, QoS::ExactlyOnce);
        let (at_least_once, answer_5) = waiter(5, QoS::AtLeastOnce);
        state.queue.extend([exactly_once, at_least_once]);
        state.published(9);
        state.received(9, None);
        state.published(9); // call 5 reuses packet 9
        state.acked(9, None);
        assert!(answer_5.try_recv().unwrap().is_ok());
        assert!(answer_4.try_recv().is_err());
        state.completed(9);
        assert!(answer_4.try_recv().unwrap().is_ok());
    }

    #[test]
    fn unconfirmed_calls_are_resent_in_arrival_order() {
        let mut state = State::default();
        let calls: Vec<_> = (0..5).map(|seq| waiter(seq, QoS::AtLeastOnce).0).collect();
        state.unsent.push(calls[4].clone());
        state.queue.push_back(calls[3].clone());
        state.inflight.insert(3, calls[1].clone());
        state.releasing.insert(2, calls[0].clone());
        state.collided = Some((3, calls[2].clone()));
        let order: Vec<u64> = state.take_unconfirmed().iter().map(|w| w.seq).collect();
        assert_eq!(order, [0, 1, 2, 3, 4]);
        assert!(state.inflight.is_empty() && state.releasing.is_empty() && state.collided.is_none());
    }
}

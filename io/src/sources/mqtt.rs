//! The MQTT source: subscriptions on a broker, QoS 1, a message PUBACKed only once the chain is
//! done with it.
//!
//! ```text
//! broker ──PUBLISH──▶ connection task ──▶ feeder ──TbMsg + Ack──▶ Feed ──▶ chain
//!    ▲                  (rumqttc loop)     (payload → messages)            │ every branch done
//!    └──────PUBACK────── acker ◀─────────── PublishAck ◀───────────────────┘
//! ```
//!
//! ## Delivery
//!
//! Acks are manual: a publish is acknowledged when the [`Ack`] of every message made from it has
//! fired — every branch sunk, dropped or failed — so a crash between receipt and the end of the
//! chain loses nothing. With a `clientId` the session is persistent (`clean_session = false`) and
//! the broker redelivers what was not acknowledged, to the restarted Sluice; without one the id is
//! random and what was in flight dies with the connection. Delivery is at least once: a message
//! whose PUBACK was lost comes again.
//!
//! A PUBACK names a packet id, and packet ids are per session. Each ack therefore carries the
//! session *generation* it was received in; the generation moves on when the broker answers a
//! connect with `session_present = false` (the old session, and the meaning of its ids, is gone),
//! and an ack of an older generation is dropped instead of acknowledging some newer message that
//! happens to have the same id.
//!
//! ## Connection
//!
//! One rumqttc event loop, polled by its own task so that keep-alive pings go on while the chain
//! is slow. Publishes go from it to the feeder through a bounded queue ([`HANDOFF`]); a full
//! queue stops reading from the socket, and the broker's in-flight window (QoS 1 messages sent,
//! not yet acknowledged: 20 by default in Mosquitto) bounds what is held. When the broker is
//! down at start or goes away, the source retries with exponential backoff (100 ms doubling to
//! 10 s), logs each failure with the next delay, and subscribes again on every connect.
//!
//! ## Shutdown
//!
//! When `shutdown` turns true: no new publish is taken (those the broker sends meanwhile are left
//! unacknowledged, for the next session), the publish being pushed is finished, and the
//! connection stays up for at most [`DRAIN_TIMEOUT`] so the messages already in the chain get
//! their PUBACK; then DISCONNECT.
//!
//! ## Payloads
//!
//! ThingsBoard's MQTT device and gateway APIs, whatever `format` says:
//!
//! | topic | payload | messages |
//! |---|---|---|
//! | `v1/devices/{deviceName}/telemetry` | `{"temperature": 42}`, `{"ts": 1451649600512, "values": {…}}`, or an array of these | one `POST_TELEMETRY_REQUEST` per point, `ts` of the point or now |
//! | `v1/devices/{deviceName}/attributes` | `{"attribute1": "value1"}` | one `POST_ATTRIBUTES_REQUEST` |
//! | `v1/gateway/telemetry` | `{"Device A": [{"ts": …, "values": {…}}, …], "Device B": …}` (each device's value as for device telemetry) | one `POST_TELEMETRY_REQUEST` per device per point |
//! | `v1/gateway/attributes` | `{"Device A": {"attribute1": "value1"}, …}` | one `POST_ATTRIBUTES_REQUEST` per device |
//! | `v1/gateway/connect` | `{"device": "Device A", "type": "Thermostat"}` | one `CONNECT_EVENT` (type default `default`) |
//!
//! Each comes from the `DEVICE` named, with metadata `deviceName`, `ts` and `topic` (and
//! `deviceType` for a connect event; gateway telemetry and attributes carry none). As in
//! ThingsBoard, an object is a `ts`/`values` point only when it has both keys; any other object
//! is the values themselves, taken at the time of receipt.
//!
//! The device is the topic's segment. ThingsBoard's own device topic is `v1/devices/me/…`, with
//! the device found from the access token given as user name. A broker does not tell its
//! subscribers who published (MQTT 3.1.1 has no field for it), so the broker must put the user
//! name in the topic: Sluice's mosquitto plugin (`examples/deploy/mosquitto`) moves
//! `v1/devices/me/{telemetry,attributes}` published by user `TOKEN` to
//! `v1/tokens/TOKEN/{telemetry,attributes}`, and the source resolves the token through its
//! token file (`tokens`, the HTTP source's: [`super::tokens`]):
//!
//! | topic | payload | messages |
//! |---|---|---|
//! | `v1/tokens/{token}/telemetry` | as device telemetry | from the token's device, with its `deviceType`; metadata `topic` = `v1/devices/me/telemetry` |
//! | `v1/tokens/{token}/attributes` | as device attributes | likewise |
//!
//! A token is a credential: errors name the topic as `v1/tokens/…/telemetry`, and the messages
//! the topic the device used. An unknown token, a token topic without a token file, and a
//! `v1/devices/me/…` that arrives unchanged (no plugin, no user name) are refused (logged as
//! malformed, saying why).
//!
//! ## Watermarks
//!
//! MQTT keeps the order of one topic's publishes, not across topics, so each topic is a source
//! partition of its own ([`topic_partition`]): a device on its own topic is judged by its own
//! readings' watermark, whatever the broker's interleaving of topics.
//!
//! Any other topic, by `format`:
//! - `json`: the payload is read like a line of JSON input — a full TbMsg (with `originator`),
//!   or ThingsBoard's simple form `{"ts", "deviceName", "deviceType", <values>}`;
//! - `raw`: for an uplink decoder — `data` is the payload as a string (base64, with
//!   `metadata.payloadEncoding = "base64"`, when it is not UTF-8), the device is the topic's last
//!   level, the type is `msgType` (default `POST_TELEMETRY_REQUEST`).
//!
//! Every message gets metadata `topic` (a full TbMsg keeps its own if it has one) and, unless
//! it brought one, a random id. A payload that fits none of this is logged with its topic and
//! the reason, counted ([`MqttSourceStats::malformed`]) and acknowledged: redelivering it would
//! only fail again. The mapping is a pure function, [`PayloadMapping::messages`].

use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, Outgoing, Publish, QoS, SubscribeFilter, SubscribeReasonCode};
use serde_json::{Map, Value};
use sluice_sdk::{Originator, TbMsg, msg_type};
use tokio::sync::{Notify, mpsc, watch};

use super::PayloadFormat;
use super::tokens::{Device, TokenFileError, Tokens};
use super::{Feed, Source, SourceContext, SourceError, SourceFuture, SourceReport};
use sluice_connectors::mqtt::{Backoff, MqttConfigError, options};
use sluice_core::{Ack, AckTarget, Metrics};
use sluice_engine::chain::spec::MqttConnection;
use sluice_engine::flow::Closed;

/// Topic filters when the configuration names none: ThingsBoard's device and gateway APIs.
pub const DEFAULT_TOPICS: [&str; 5] = [
    "v1/devices/+/telemetry",
    "v1/devices/+/attributes",
    "v1/gateway/telemetry",
    "v1/gateway/attributes",
    "v1/gateway/connect",
];

/// Added to the default topics when the source has a token file: where the broker's token plugin
/// puts what devices publish to `v1/devices/me/…` (see the module docs).
pub const TOKEN_TOPICS: [&str; 2] = ["v1/tokens/+/telemetry", "v1/tokens/+/attributes"];

/// After `shutdown`, how long the connection is kept for the PUBACKs of messages still in the
/// chain. What is not done by then is redelivered to the next session.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// After the drain, how long the DISCONNECT may take before the connection is just dropped.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Publishes between the connection task and the feeder.
pub const HANDOFF: usize = 256;
/// Requests (PUBACKs, subscriptions) waiting for the event loop.
const REQUEST_CAPACITY: usize = 1024;

/// Why the source stopped other than by `shutdown`, or could not start.
#[derive(Debug, thiserror::Error)]
pub enum MqttSourceError {
    #[error("MQTT source: {0}")]
    Config(#[from] MqttConfigError),
    #[error("MQTT source: `topics`: {0:?} is not an MQTT topic filter")]
    Filter(String),
    #[error("MQTT source: `protocolVersion` \"5\": the source speaks MQTT 3.1.1 (only connectors speak 5)")]
    Version5,
    #[error("MQTT source: the pipeline stopped taking messages")]
    PipelineClosed,
    #[error("MQTT source: {0}")]
    Tokens(#[from] TokenFileError),
}

/// What the source did, for `/metrics` (the service registers every field) and tests.
#[derive(Debug, Default)]
pub struct MqttSourceStats {
    /// Publishes received.
    pub publishes: AtomicU64,
    /// Messages handed to the chain (a gateway publish can carry several, a malformed one none).
    pub messages: AtomicU64,
    /// Publishes that were not messages (logged with their topic, and acknowledged).
    pub malformed: AtomicU64,
    /// PUBACKs sent.
    pub acked: AtomicU64,
    /// Connections made (the first included): more than one means the source reconnected.
    pub connects: AtomicU64,
    /// Failed connection attempts and lost connections, each followed by a retry after the
    /// backoff: a broker that is down shows as this growing while `connected` stays false.
    pub connection_errors: AtomicU64,
    /// Connected to the broker now (from its CONNACK until the connection fails or closes).
    pub connected: AtomicBool,
    /// Subscriptions the broker confirmed (SUBACKs; one per connection).
    pub subscribed: AtomicU64,
}

impl MqttSourceStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }
}

/// The MQTT source as a [`Source`]: subscribes with the spec's topics and hands every publish
/// to the chain, PUBACKing it once processed.
pub struct MqttSource {
    spec: MqttSourceSpec,
}

impl MqttSource {
    /// The source `spec` describes; its token file is relative to `base` (the `sluice.toml`'s
    /// directory).
    pub fn new(mut spec: MqttSourceSpec, base: &Path) -> Self {
        if let Some(tokens) = spec.tokens.as_mut() {
            *tokens = base.join(&*tokens).to_string_lossy().into_owned();
        }
        MqttSource { spec }
    }
}

impl Source for MqttSource {
    fn describe(&self) -> String {
        format!("MQTT {}", self.spec.connection.url)
    }

    fn discovers_partitions(&self) -> bool {
        // Its topics are its partitions, heard of only as they come.
        true
    }

    fn id(&self) -> String {
        format!("mqtt:{}", self.spec.connection.url)
    }

    fn run(self: Box<Self>, cx: SourceContext) -> SourceFuture {
        Box::pin(async move {
            let stats = Arc::new(MqttSourceStats::default());
            register_metrics(&cx.metrics, &stats);
            let result = run_with_stats(self.spec, cx.feed, cx.shutdown, stats.clone()).await;
            let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
            let report = SourceReport {
                records: load(&stats.messages),
                malformed: load(&stats.malformed),
                ..Default::default()
            };
            (report, result.map_err(SourceError::from))
        })
    }
}

/// Its counters on `/metrics`, from the start: a source that never connects is what an operator
/// most needs to see.
fn register_metrics(metrics: &Metrics, stats: &Arc<MqttSourceStats>) {
    metrics.register_stats(
        stats,
        [
            ("sluice_mqtt_source_publishes_total", "Publishes received from the broker.", "counter", &[], |s| {
                s.publishes.load(Ordering::Relaxed)
            }),
            (
                "sluice_mqtt_source_messages_total",
                "Messages handed to the chain (a gateway publish can carry several).",
                "counter",
                &[],
                |s| s.messages.load(Ordering::Relaxed),
            ),
            (
                "sluice_mqtt_source_malformed_total",
                "Publishes that were not messages: logged with their topic, acknowledged and skipped.",
                "counter",
                &[],
                |s| s.malformed.load(Ordering::Relaxed),
            ),
            (
                "sluice_mqtt_source_acks_total",
                "PUBACKs sent, each once every message of its publish was processed.",
                "counter",
                &[],
                |s| s.acked.load(Ordering::Relaxed),
            ),
            ("sluice_mqtt_source_connected", "1 while connected to the broker, else 0.", "gauge", &[], |s| {
                u64::from(s.connected.load(Ordering::Relaxed))
            }),
            (
                "sluice_mqtt_source_connects_total",
                "Connections to the broker made (the first included; more means reconnects).",
                "counter",
                &[],
                |s| s.connects.load(Ordering::Relaxed),
            ),
            (
                "sluice_mqtt_source_connection_errors_total",
                "Failed connection attempts and lost connections, each retried after a backoff.",
                "counter",
                &[],
                |s| s.connection_errors.load(Ordering::Relaxed),
            ),
        ],
    );
}

/// Runs the source until `shutdown` becomes true (or its sender is dropped): connects,
/// subscribes, and hands every publish to `feed`. Errors only on a configuration that cannot
/// work or a pipeline that closed; a broker that is down is retried for as long as it takes.
pub async fn run(spec: MqttSourceSpec, feed: Feed, shutdown: watch::Receiver<bool>) -> Result<(), MqttSourceError> {
    run_with_stats(spec, feed, shutdown, Arc::new(MqttSourceStats::default())).await
}

/// [`run`], counting into `stats`.
pub async fn run_with_stats(
    spec: MqttSourceSpec,
    feed: Feed,
    mut shutdown: watch::Receiver<bool>,
    stats: Arc<MqttSourceStats>,
) -> Result<(), MqttSourceError> {
    let persistent = spec.connection.client_id.is_some();
    if spec.connection.protocol_version == Some(sluice_engine::chain::spec::MqttVersion::V5) {
        return Err(MqttSourceError::Version5);
    }
    let mut options = options(&spec.connection, "sluice-source")?;
    options.set_clean_session(!persistent).set_manual_acks(true);
    let tokens = spec.tokens.as_ref().map(|path| Tokens::load(Path::new(path))).transpose()?.map(Arc::new);
    let filters: Vec<String> = if !spec.topics.is_empty() {
        spec.topics.clone()
    } else if tokens.is_some() {
        DEFAULT_TOPICS.iter().chain(&TOKEN_TOPICS).map(|t| t.to_string()).collect()
    } else {
        DEFAULT_TOPICS.map(String::from).to_vec()
    };
    if let Some(bad) = filters.iter().find(|f| !rumqttc::valid_filter(f)) {
        return Err(MqttSourceError::Filter(bad.clone()));
    }
    let mapping = PayloadMapping {
        format: spec.format,
        msg_type: spec.msg_type.clone().unwrap_or_else(|| msg_type::POST_TELEMETRY_REQUEST.to_string()),
        tokens,
        input: feed.input_form().clone(),
    };
    let url = spec.connection.url.clone();

    let (client, eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let session = Arc::new(Session {
        generation: AtomicU64::new(0),
        in_chain: AtomicUsize::new(0),
        drained: Notify::new(),
        acks: ack_tx,
        stats,
    });
    let (publish_tx, publish_rx) = mpsc::channel(HANDOFF);
    let (stop_tx, stop) = watch::channel(false);
    let acker = tokio::spawn(acker(client.clone(), ack_rx, session.clone()));
    let mut feeder = tokio::spawn(feeder(publish_rx, feed, mapping, session.clone(), stop.clone()));
    let mut connection = tokio::spawn(connect(
        eventloop,
        Connection { client: client.clone(), filters, url: url.clone(), session: session.clone() },
        publish_tx,
        stop,
    ));

    let fed = tokio::select! {
        // A dropped sender means nobody can ask any more: stop as if asked.
        _ = shutdown.wait_for(|stop| *stop) => None,
        fed = &mut feeder => Some(fed),
    };
    let _ = stop_tx.send(true);
    let fed = match fed {
        Some(fed) => fed,
        // Finishes the publish in hand: a message half pushed would be acknowledged unprocessed.
        None => feeder.await,
    };
    let pending = tokio::time::timeout(DRAIN_TIMEOUT, session.drain()).await;
    if pending.is_err() {
        tracing::warn!(
            url,
            in_chain = session.in_chain.load(Ordering::SeqCst),
            "MQTT source stopping with publishes still in the chain, not acknowledged (with a `clientId` the broker \
             redelivers them to the next session)"
        );
    }
    let _ = client.try_disconnect();
    if tokio::time::timeout(DISCONNECT_TIMEOUT, &mut connection).await.is_err() {
        connection.abort();
    }
    // However the connection task ended (DISCONNECT, abort), there is no connection any more.
    session.stats.connected.store(false, Ordering::Relaxed);
    acker.abort();
    tracing::info!(url, "MQTT source stopped");
    match fed {
        Ok(Ok(())) => Ok(()),
        Ok(Err(Closed)) => Err(MqttSourceError::PipelineClosed),
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

/// What the tasks share.
struct Session {
    /// Moves on when the broker starts a new session (see the module docs).
    generation: AtomicU64,
    /// Publishes handed to the chain whose PUBACK is not yet queued.
    in_chain: AtomicUsize,
    drained: Notify,
    /// `generation << 16 | packet id` of publishes to acknowledge.
    acks: mpsc::UnboundedSender<u64>,
    stats: Arc<MqttSourceStats>,
}

impl Session {
    fn one_done(&self) {
        if self.in_chain.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.drained.notify_one();
        }
    }

    async fn drain(&self) {
        while self.in_chain.load(Ordering::SeqCst) > 0 {
            self.drained.notified().await;
        }
    }
}

/// The ack target of one publish: every message made from it holds a clone of one [`Ack`].
struct PublishAck {
    session: Arc<Session>,
    needs_puback: bool,
    /// The publish was not fully handed over (the pipeline closed): no PUBACK, let it come again.
    cancelled: AtomicBool,
}

impl AckTarget for PublishAck {
    fn ack(&self, position: u64) {
        if self.needs_puback && !self.cancelled.load(Ordering::SeqCst) && self.session.acks.send(position).is_ok() {
            return; // the acker counts it done once the PUBACK is queued
        }
        self.session.one_done();
    }
}

/// Sends PUBACKs. A task of its own: the request channel may be full, and waiting for it must
/// not stop the event loop, which empties it.
async fn acker(client: AsyncClient, mut positions: mpsc::UnboundedReceiver<u64>, session: Arc<Session>) {
    while let Some(position) = positions.recv().await {
        if position >> 16 == session.generation.load(Ordering::SeqCst) {
            let mut publish = Publish::new("", QoS::AtLeastOnce, Vec::new());
            publish.pkid = (position & 0xffff) as u16;
            if client.ack(&publish).await.is_ok() {
                session.stats.acked.fetch_add(1, Ordering::Relaxed);
            }
        }
        session.one_done();
    }
}

/// A publish as received, with the session generation it belongs to.
struct Received {
    publish: Publish,
    generation: u64,
}

/// Turns publishes into messages and pushes them, one publish at a time.
async fn feeder(
    mut publishes: mpsc::Receiver<Received>,
    feed: Feed,
    mapping: PayloadMapping,
    session: Arc<Session>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Closed> {
    loop {
        let received = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
            received = publishes.recv() => match received {
                Some(received) => received,
                None => return Ok(()),
            },
        };
        let Received { publish, generation } = received;
        let target = Arc::new(PublishAck {
            session: session.clone(),
            needs_puback: publish.qos != QoS::AtMostOnce,
            cancelled: AtomicBool::new(false),
        });
        session.in_chain.fetch_add(1, Ordering::SeqCst);
        let ack = Ack::new(target.clone(), (generation << 16) | u64::from(publish.pkid));
        match mapping.messages(&publish.topic, &publish.payload, feed.now_ms()) {
            Err(e) => {
                session.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    topic = e.topic,
                    error = e.reason,
                    "MQTT source: malformed publish acknowledged and skipped"
                );
            }
            Ok(messages) => {
                for mut msg in messages {
                    if msg.id.is_empty() {
                        msg.id = uuid::Uuid::new_v4().to_string();
                    }
                    if feed.push(msg, topic_partition(&publish.topic), ack.clone()).await.is_err() {
                        target.cancelled.store(true, Ordering::SeqCst);
                        return Err(Closed);
                    }
                    session.stats.messages.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // The last holder of `ack` is now the chain (or nobody: a malformed or empty publish is
        // acknowledged here).
        drop(ack);
    }
}

/// The source partition of a topic: MQTT keeps the order of one topic's publishes (from one
/// client), not across topics, so each topic has a watermark of its own. A stable hash, so that
/// a checkpoint's watermarks and state owners mean the same topics after a restart.
pub fn topic_partition(topic: &str) -> u32 {
    // The top bit clear: never `UNOWNED` (u32::MAX), which marks state no partition owns.
    fxhash::hash32(topic.as_bytes()) & 0x7fff_ffff
}

/// What the connection task needs besides its event loop.
struct Connection {
    client: AsyncClient,
    filters: Vec<String>,
    url: String,
    session: Arc<Session>,
}

/// Polls the event loop: connects, reconnects with backoff, subscribes on every connect, and
/// forwards publishes. Ends at DISCONNECT, or when stopping while not connected.
async fn connect(
    mut eventloop: EventLoop,
    connection: Connection,
    publishes: mpsc::Sender<Received>,
    mut stop: watch::Receiver<bool>,
) {
    let Connection { client, filters, url, session } = connection;
    let mut backoff = Backoff::new();
    loop {
        let stopping = *stop.borrow();
        let event = if eventloop.network.is_none() {
            if stopping {
                return;
            }
            // Connecting: abandoning the attempt loses nothing. (A connected poll is never
            // cancelled — it may be halfway through writing a packet.)
            tokio::select! {
                event = eventloop.poll() => event,
                _ = stop.wait_for(|stop| *stop) => return,
            }
        } else {
            eventloop.poll().await
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(connack))) => {
                backoff.reset();
                session.stats.connects.fetch_add(1, Ordering::Relaxed);
                session.stats.connected.store(true, Ordering::Relaxed);
                if !connack.session_present {
                    session.generation.fetch_add(1, Ordering::SeqCst);
                }
                tracing::info!(url, session_present = connack.session_present, "MQTT source connected");
                // Every time, session or not: a broker that lost its state lost the
                // subscriptions too, and subscribing again is harmless.
                let client = client.clone();
                let subscriptions: Vec<SubscribeFilter> =
                    filters.iter().map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)).collect();
                tokio::spawn(async move { client.subscribe_many(subscriptions).await });
            }
            Ok(Event::Incoming(Incoming::SubAck(suback))) => {
                session.stats.subscribed.fetch_add(1, Ordering::Relaxed);
                tracing::info!("MQTT source subscribed");
                for (filter, code) in filters.iter().zip(&suback.return_codes) {
                    if *code == SubscribeReasonCode::Failure {
                        tracing::error!(url, filter, "MQTT source: the broker refused the subscription");
                    }
                }
            }
            Ok(Event::Incoming(Incoming::Publish(publish))) => {
                session.stats.publishes.fetch_add(1, Ordering::Relaxed);
                if stopping {
                    continue; // not acknowledged: the next session gets it
                }
                let generation = session.generation.load(Ordering::SeqCst);
                // Fails only when the feeder has stopped; the publish then stays unacknowledged.
                let _ = publishes.send(Received { publish, generation }).await;
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                session.stats.connected.store(false, Ordering::Relaxed);
                return;
            }
            Ok(_) => {}
            Err(error) => {
                session.stats.connected.store(false, Ordering::Relaxed);
                if stopping {
                    return;
                }
                // Counted only when retried: an error while stopping is the end, not an outage.
                session.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                let delay = backoff.next_delay();
                tracing::warn!(
                    url,
                    %error,
                    retry_in_ms = delay.as_millis() as u64,
                    "MQTT source: no connection to the broker"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
            }
        }
    }
}

/// A publish that is not messages: its topic and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic `{topic}`: {reason}")]
pub struct PayloadError {
    pub topic: String,
    pub reason: String,
}

/// How publishes become messages (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadMapping {
    /// For topics outside ThingsBoard's API.
    pub format: PayloadFormat,
    /// Type of `raw` messages.
    pub msg_type: String,
    /// Access tokens → devices, for `v1/tokens/{token}/…` (none: those topics are refused).
    pub tokens: Option<Arc<Tokens>>,
    /// How flat JSON payloads become messages (the chain's `input`).
    pub input: super::jsonl::InputForm,
}

/// The ThingsBoard API a topic belongs to.
enum Api<'a> {
    DeviceTelemetry(&'a str),
    DeviceAttributes(&'a str),
    GatewayTelemetry,
    GatewayAttributes,
    GatewayConnect,
    /// `v1/tokens/{token}/telemetry`: a device's telemetry, moved there by the broker's plugin.
    TokenTelemetry(&'a str),
    TokenAttributes(&'a str),
    Other,
}

fn api(topic: &str) -> Api<'_> {
    let levels: Vec<&str> = topic.split('/').collect();
    match levels.as_slice() {
        ["v1", "devices", device, "telemetry"] => Api::DeviceTelemetry(device),
        ["v1", "devices", device, "attributes"] => Api::DeviceAttributes(device),
        ["v1", "gateway", "telemetry"] => Api::GatewayTelemetry,
        ["v1", "gateway", "attributes"] => Api::GatewayAttributes,
        ["v1", "gateway", "connect"] => Api::GatewayConnect,
        ["v1", "tokens", token, "telemetry"] => Api::TokenTelemetry(token),
        ["v1", "tokens", token, "attributes"] => Api::TokenAttributes(token),
        _ => Api::Other,
    }
}

/// A topic as errors may show it: a token is a credential, so a token topic is named by the
/// topic the device used instead.
fn shown_topic(topic: &str) -> &str {
    match api(topic) {
        Api::TokenTelemetry(_) => "v1/tokens/…/telemetry",
        Api::TokenAttributes(_) => "v1/tokens/…/attributes",
        _ => topic,
    }
}

impl PayloadMapping {
    /// The messages a publish of `payload` on `topic` stands for, in payload order; ids are
    /// left empty unless the payload gave one. `now_ms` stands in for a missing `ts`.
    pub fn messages(&self, topic: &str, payload: &[u8], now_ms: i64) -> Result<Vec<TbMsg>, PayloadError> {
        let messages = self.map(topic, payload, now_ms)?;
        for msg in &messages {
            super::check_depth(msg).map_err(|reason| PayloadError { topic: shown_topic(topic).to_string(), reason })?;
        }
        Ok(messages)
    }

    fn map(&self, topic: &str, payload: &[u8], now_ms: i64) -> Result<Vec<TbMsg>, PayloadError> {
        let api = api(topic);
        let err = |reason: String| PayloadError { topic: shown_topic(topic).to_string(), reason };
        let json = || super::parse_json(payload).map_err(|e| format!("payload is not JSON: {e}"));
        match api {
            Api::TokenTelemetry(token) => {
                let device = self.device_of_token(token).map_err(err)?;
                let points = telemetry(json().map_err(err)?, now_ms).map_err(err)?;
                let topic = "v1/devices/me/telemetry";
                Ok(points.into_iter().map(|(ts, values)| token_msg(telemetry_msg, device, ts, values, topic)).collect())
            }
            Api::TokenAttributes(token) => {
                let device = self.device_of_token(token).map_err(err)?;
                let attributes = object(json().map_err(err)?, "attributes").map_err(err)?;
                Ok(vec![token_msg(attributes_msg, device, now_ms, attributes, "v1/devices/me/attributes")])
            }
            Api::DeviceTelemetry(device) => {
                let device = device_of_topic(device).map_err(err)?;
                let points = telemetry(json().map_err(err)?, now_ms).map_err(err)?;
                Ok(points.into_iter().map(|(ts, values)| telemetry_msg(device, ts, values, topic)).collect())
            }
            Api::DeviceAttributes(device) => {
                let device = device_of_topic(device).map_err(err)?;
                let attributes = object(json().map_err(err)?, "attributes").map_err(err)?;
                Ok(vec![attributes_msg(device, now_ms, attributes, topic)])
            }
            Api::GatewayTelemetry => {
                let mut out = Vec::new();
                for (device, value) in devices(json().map_err(err)?).map_err(err)? {
                    let points = telemetry(value, now_ms).map_err(|e| err(format!("device `{device}`: {e}")))?;
                    out.extend(points.into_iter().map(|(ts, values)| telemetry_msg(&device, ts, values, topic)));
                }
                Ok(out)
            }
            Api::GatewayAttributes => {
                let mut out = Vec::new();
                for (device, value) in devices(json().map_err(err)?).map_err(err)? {
                    let attributes = object(value, "attributes").map_err(|e| err(format!("device `{device}`: {e}")))?;
                    out.push(attributes_msg(&device, now_ms, attributes, topic));
                }
                Ok(out)
            }
            Api::GatewayConnect => Ok(vec![connect_msg(json().map_err(err)?, now_ms, topic).map_err(err)?]),
            Api::Other => match self.format {
                PayloadFormat::Json => self.json_line(topic, payload, now_ms).map(|msg| vec![msg]).map_err(err),
                PayloadFormat::Raw => self.raw(topic, payload, now_ms).map(|msg| vec![msg]).map_err(err),
            },
        }
    }

    /// The device of an access token, from the token file.
    fn device_of_token(&self, token: &str) -> Result<&Device, String> {
        let tokens = self.tokens.as_ref().ok_or_else(|| {
            "a device's access token, but the source has no token file to resolve it (`tokens` in [source])".to_string()
        })?;
        tokens.device(token).ok_or_else(|| "unknown access token (not in the token file)".to_string())
    }

    fn json_line(&self, topic: &str, payload: &[u8], now_ms: i64) -> Result<TbMsg, String> {
        let text = std::str::from_utf8(payload)
            .map_err(|_| "payload is not UTF-8 text, so not JSON (format = \"raw\" takes bytes)".to_string())?;
        let mut msg = super::jsonl::parse_message_as(topic, 1, text, now_ms, &self.input)
            .map_err(|e| e.message)?
            .ok_or_else(|| "empty payload".to_string())?;
        msg.metadata.entry("topic".into()).or_insert_with(|| topic.to_string());
        Ok(msg)
    }

    fn raw(&self, topic: &str, payload: &[u8], now_ms: i64) -> Result<TbMsg, String> {
        let device =
            topic.rsplit('/').next().filter(|d| !d.is_empty()).ok_or_else(|| {
                "the topic's last level, which names the device of a raw payload, is empty".to_string()
            })?;
        let mut msg = TbMsg::new(self.msg_type.clone(), Originator::device(device), Value::Null)
            .with_ts(now_ms)
            .with_meta("deviceName", device)
            .with_meta("ts", now_ms.to_string())
            .with_meta("topic", topic);
        msg.data = match std::str::from_utf8(payload) {
            Ok(text) => Value::String(text.to_string()),
            Err(_) => {
                msg.metadata.insert("payloadEncoding".into(), "base64".into());
                Value::String(base64::engine::general_purpose::STANDARD.encode(payload))
            }
        };
        Ok(msg)
    }
}

/// The device named by a `v1/devices/{name}/…` topic.
fn device_of_topic(device: &str) -> Result<&str, String> {
    match device {
        "" => Err("no device name between `v1/devices/` and the API".into()),
        "me" => Err("`v1/devices/me/…` names the device by the access token it logged in with, and a broker \
                     does not tell subscribers who published: load Sluice's token plugin into the broker \
                     (examples/deploy/mosquitto), which moves these publishes to `v1/tokens/{token}/…`, and \
                     give the source a `tokens` file — or publish to `v1/devices/{deviceName}/…`"
            .into()),
        name => Ok(name),
    }
}

/// A message of a token's device: as from `v1/devices/{deviceName}/…`, with its `deviceType`,
/// and the topic the device published to (the token stays out of the message).
fn token_msg(
    make: fn(&str, i64, Map<String, Value>, &str) -> TbMsg,
    device: &Device,
    ts: i64,
    values: Map<String, Value>,
    topic: &str,
) -> TbMsg {
    make(&device.device_name, ts, values, topic).with_meta("deviceType", &device.device_type)
}

fn object(value: Value, what: &str) -> Result<Map<String, Value>, String> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(format!("{what} must be a JSON object, not {}", super::json_kind(&other))),
    }
}

/// A gateway payload: device name → that device's part.
fn devices(value: Value) -> Result<Vec<(String, Value)>, String> {
    let devices = object(value, "a gateway payload (device name → data)")?;
    if let Some(empty) = devices.keys().find(|d| d.is_empty()) {
        return Err(format!("device name {empty:?} is empty"));
    }
    Ok(devices.into_iter().collect())
}

/// One telemetry point: its time and its values.
type Point = (i64, Map<String, Value>);

/// Telemetry points: one object, or an array of them.
fn telemetry(value: Value, now_ms: i64) -> Result<Vec<Point>, String> {
    match value {
        Value::Array(points) => points
            .into_iter()
            .enumerate()
            .map(|(i, point)| telemetry_point(point, now_ms).map_err(|e| format!("point [{i}]: {e}")))
            .collect(),
        point => Ok(vec![telemetry_point(point, now_ms)?]),
    }
}

fn telemetry_point(value: Value, now_ms: i64) -> Result<Point, String> {
    let mut point = object(value, "telemetry")?;
    if !(point.contains_key("ts") && point.contains_key("values")) {
        return Ok((now_ms, point));
    }
    let ts = point.remove("ts").unwrap_or_default();
    let ts = ts.as_i64().ok_or_else(|| format!("`ts` must be an integer of milliseconds, not {ts}"))?;
    let values = object(point.remove("values").unwrap_or_default(), "`values`")?;
    if let Some(extra) = point.keys().next() {
        return Err(format!("`{extra}` next to `ts` and `values` (telemetry goes inside `values`)"));
    }
    Ok((ts, values))
}

fn device_msg(kind: &str, device: &str, ts: i64, data: Map<String, Value>, topic: &str) -> TbMsg {
    TbMsg::new(kind, Originator::device(device), Value::Object(data))
        .with_ts(ts)
        .with_meta("deviceName", device)
        .with_meta("ts", ts.to_string())
        .with_meta("topic", topic)
}

fn telemetry_msg(device: &str, ts: i64, values: Map<String, Value>, topic: &str) -> TbMsg {
    device_msg(msg_type::POST_TELEMETRY_REQUEST, device, ts, values, topic)
}

fn attributes_msg(device: &str, ts: i64, attributes: Map<String, Value>, topic: &str) -> TbMsg {
    device_msg(msg_type::POST_ATTRIBUTES_REQUEST, device, ts, attributes, topic)
}

/// `{"device": "Device A", "type": "Thermostat"}` → a connect event from that device.
fn connect_msg(value: Value, now_ms: i64, topic: &str) -> Result<TbMsg, String> {
    let mut connect = object(value, "a connect payload")?;
    let device = match connect.remove("device") {
        Some(Value::String(name)) if !name.is_empty() => name,
        Some(other) => return Err(format!("`device` must be a non-empty string, not {other}")),
        None => return Err("no `device`".into()),
    };
    let device_type = match connect.remove("type") {
        None => "default".to_string(),
        Some(Value::String(t)) if !t.is_empty() => t,
        Some(other) => return Err(format!("`type` must be a non-empty string, not {other}")),
    };
    Ok(device_msg(msg_type::CONNECT_EVENT, &device, now_ms, Map::new(), topic).with_meta("deviceType", device_type))
}

/// MQTT subscriptions; see `sources::mqtt` for how each topic's payload becomes messages.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MqttSourceSpec {
    /// The broker and the login, as for an MQTT connector. Setting `clientId` also makes the
    /// session persistent (`clean_session = false`): the broker keeps the subscriptions and
    /// redelivers every QoS 1 message not yet acknowledged when Sluice comes back after a crash.
    /// Without it the id is random and the session ends with the connection.
    #[serde(flatten)]
    pub connection: MqttConnection,
    /// Topic filters, subscribed with QoS 1. Default: ThingsBoard's device API under
    /// `v1/devices/+/telemetry` and `v1/devices/+/attributes`, and the gateway API
    /// `v1/gateway/{telemetry,attributes,connect}`.
    #[serde(default)]
    pub topics: Vec<String>,
    /// How a payload on a topic *outside* ThingsBoard's API becomes a message (the API topics
    /// have their own fixed shapes): a JSON line, or bytes for an uplink decoder.
    #[serde(default)]
    pub format: PayloadFormat,
    /// Message type of `raw` payloads (default `POST_TELEMETRY_REQUEST`), so that a chain can
    /// tell undecoded uplinks from telemetry.
    #[serde(default)]
    pub msg_type: Option<String>,
    /// The token file (as the HTTP source's: `{"TOKEN": {"deviceName", "deviceType"}}`, relative
    /// to `sluice.toml`) resolving `v1/tokens/{token}/telemetry` and `…/attributes`: where the
    /// broker's token plugin (`examples/deploy/mosquitto`) moves what ThingsBoard devices
    /// publish to `v1/devices/me/…` with their access token as user name. With it, the default
    /// topics include those two.
    #[serde(default)]
    pub tokens: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000_000;

    fn json_mapping() -> PayloadMapping {
        PayloadMapping {
            format: PayloadFormat::Json,
            msg_type: "POST_TELEMETRY_REQUEST".into(),
            tokens: None,
            input: Default::default(),
        }
    }

    fn map(topic: &str, payload: &str) -> Result<Vec<TbMsg>, PayloadError> {
        json_mapping().messages(topic, payload.as_bytes(), NOW)
    }

    /// A message written out in full, to compare against.
    fn expected(kind: &str, device: &str, ts: i64, data: Value, topic: &str) -> TbMsg {
        TbMsg {
            id: String::new(),
            ts,
            msg_type: kind.into(),
            originator: Originator { entity_type: "DEVICE".into(), name: device.into(), id: None },
            metadata: [("deviceName", device), ("ts", &ts.to_string()), ("topic", topic)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            data,
        }
    }

    #[test]
    fn device_telemetry_plain_object_is_one_point_now() {
        let topic = "v1/devices/Thermo-1/telemetry";
        assert_eq!(
            map(topic, r#"{"temperature": 42}"#).unwrap(),
            [expected("POST_TELEMETRY_REQUEST", "Thermo-1", NOW, json!({"temperature": 42}), topic)]
        );
    }

    #[test]
    fn device_telemetry_with_ts_and_arrays() {
        let topic = "v1/devices/Thermo-1/telemetry";
        assert_eq!(
            map(topic, r#"{"ts": 1451649600512, "values": {"temperature": 42, "humidity": 73}}"#).unwrap(),
            [expected(
                "POST_TELEMETRY_REQUEST",
                "Thermo-1",
                1451649600512,
                json!({"temperature": 42, "humidity": 73}),
                topic
            )]
        );
        let points = r#"[{"ts": 1451649600512, "values": {"temperature": 42}},
                         {"temperature": 43},
                         {"ts": 1451649601512, "values": {"temperature": 44}}]"#;
        assert_eq!(
            map(topic, points).unwrap(),
            [
                expected("POST_TELEMETRY_REQUEST", "Thermo-1", 1451649600512, json!({"temperature": 42}), topic),
                expected("POST_TELEMETRY_REQUEST", "Thermo-1", NOW, json!({"temperature": 43}), topic),
                expected("POST_TELEMETRY_REQUEST", "Thermo-1", 1451649601512, json!({"temperature": 44}), topic),
            ]
        );
        // Only `ts` without `values` is a plain object whose keys are all values (ThingsBoard's rule).
        assert_eq!(map(topic, r#"{"ts": 5, "x": 1}"#).unwrap()[0].data, json!({"ts": 5, "x": 1}));
        assert_eq!(map(topic, "[]").unwrap(), []);
    }

    #[test]
    fn device_attributes() {
        let topic = "v1/devices/Thermo-1/attributes";
        assert_eq!(
            map(topic, r#"{"firmware": "1.2", "active": true}"#).unwrap(),
            [expected("POST_ATTRIBUTES_REQUEST", "Thermo-1", NOW, json!({"firmware": "1.2", "active": true}), topic)]
        );
    }

    #[test]
    fn gateway_telemetry_per_device_per_point() {
        let topic = "v1/gateway/telemetry";
        let payload = r#"{
            "Device A": [{"ts": 1483228800000, "values": {"temperature": 42, "humidity": 80}},
                         {"ts": 1483228801000, "values": {"temperature": 43, "humidity": 81}}],
            "Device B": [{"ts": 1483228800000, "values": {"temperature": 42, "humidity": 80}}]
        }"#;
        assert_eq!(
            map(topic, payload).unwrap(),
            [
                expected(
                    "POST_TELEMETRY_REQUEST",
                    "Device A",
                    1483228800000,
                    json!({"temperature": 42, "humidity": 80}),
                    topic
                ),
                expected(
                    "POST_TELEMETRY_REQUEST",
                    "Device A",
                    1483228801000,
                    json!({"temperature": 43, "humidity": 81}),
                    topic
                ),
                expected(
                    "POST_TELEMETRY_REQUEST",
                    "Device B",
                    1483228800000,
                    json!({"temperature": 42, "humidity": 80}),
                    topic
                ),
            ]
        );
        // A device's part may also be one plain object, as on the device API.
        assert_eq!(
            map(topic, r#"{"Device C": {"rpm": 900}}"#).unwrap(),
            [expected("POST_TELEMETRY_REQUEST", "Device C", NOW, json!({"rpm": 900}), topic)]
        );
    }

    #[test]
    fn gateway_attributes_per_device() {
        let topic = "v1/gateway/attributes";
        let payload = r#"{"Device A": {"attribute1": "value1", "attribute2": 42},
                          "Device B": {"attribute1": "value1", "attribute2": 42}}"#;
        assert_eq!(
            map(topic, payload).unwrap(),
            [
                expected(
                    "POST_ATTRIBUTES_REQUEST",
                    "Device A",
                    NOW,
                    json!({"attribute1": "value1", "attribute2": 42}),
                    topic
                ),
                expected(
                    "POST_ATTRIBUTES_REQUEST",
                    "Device B",
                    NOW,
                    json!({"attribute1": "value1", "attribute2": 42}),
                    topic
                ),
            ]
        );
    }

    #[test]
    fn gateway_connect_is_a_connect_event() {
        let topic = "v1/gateway/connect";
        let mut thermostat = expected("CONNECT_EVENT", "Device A", NOW, json!({}), topic);
        thermostat.metadata.insert("deviceType".into(), "Thermostat".into());
        assert_eq!(map(topic, r#"{"device": "Device A", "type": "Thermostat"}"#).unwrap(), [thermostat]);
        let untyped = map(topic, r#"{"device": "Device B"}"#).unwrap();
        assert_eq!(untyped[0].meta("deviceType"), Some("default"));
    }

    #[test]
    fn other_topics_as_json_lines() {
        let simple =
            map("plant/line-3", r#"{"ts": 7, "deviceName": "press-9", "deviceType": "Press", "force": 12.5}"#).unwrap();
        let mut press = expected("POST_TELEMETRY_REQUEST", "press-9", 7, json!({"force": 12.5}), "plant/line-3");
        press.metadata.insert("deviceType".into(), "Press".into());
        assert_eq!(simple, [press]);

        let full = r#"{"id": "m-1", "ts": 9, "type": "ALARM", "originator": {"entityType": "ASSET", "name": "Plant"},
                       "metadata": {"topic": "own"}, "data": {"level": "high"}}"#;
        let msg = &map("plant/alarms", full).unwrap()[0];
        assert_eq!((msg.id.as_str(), msg.msg_type.as_str(), msg.ts), ("m-1", "ALARM", 9));
        assert_eq!(msg.originator, Originator::asset("Plant"));
        assert_eq!(msg.meta("topic"), Some("own"), "a full message keeps its own metadata");
    }

    #[test]
    fn other_topics_as_raw_bytes() {
        let raw = PayloadMapping {
            format: PayloadFormat::Raw,
            msg_type: "UPLINK".into(),
            tokens: None,
            input: Default::default(),
        };
        let text = expected("UPLINK", "node-7", NOW, json!("01 ff 3a"), "lora/uplink/node-7");
        assert_eq!(raw.messages("lora/uplink/node-7", b"01 ff 3a", NOW).unwrap(), [text]);

        let binary = raw.messages("lora/uplink/node-8", &[0x01, 0xff, 0x3a], NOW).unwrap();
        assert_eq!(binary[0].data, json!("Af86"));
        assert_eq!(binary[0].meta("payloadEncoding"), Some("base64"));
        // The API topics keep their shapes whatever the format.
        assert_eq!(raw.messages("v1/devices/d/telemetry", br#"{"x": 1}"#, NOW).unwrap()[0].data, json!({"x": 1}));
    }

    #[test]
    fn token_topics_resolve_to_the_device_with_its_type() {
        let tokens = Tokens::from_devices([("A1_TOKEN".to_string(), Device::new("Thermostat A1", "thermostat"))]);
        let mapping = PayloadMapping { tokens: Some(Arc::new(tokens)), ..json_mapping() };
        let msgs =
            mapping.messages("v1/tokens/A1_TOKEN/telemetry", br#"{"ts": 5, "values": {"t": 21.5}}"#, NOW).unwrap();
        let mut want =
            expected("POST_TELEMETRY_REQUEST", "Thermostat A1", 5, json!({"t": 21.5}), "v1/devices/me/telemetry");
        want.metadata.insert("deviceType".into(), "thermostat".into());
        assert_eq!(msgs, [want]);
        let attrs = mapping.messages("v1/tokens/A1_TOKEN/attributes", br#"{"fw": "1.2"}"#, NOW).unwrap();
        assert_eq!(attrs[0].msg_type, "POST_ATTRIBUTES_REQUEST");
        assert_eq!(attrs[0].meta("topic"), Some("v1/devices/me/attributes"), "the token stays out of the message");
        assert_eq!(attrs[0].meta("deviceType"), Some("thermostat"));

        // An unknown token, or no token file: refused, and the error does not show the token.
        let e = mapping.messages("v1/tokens/WRONG_TOKEN/telemetry", br#"{"t": 1}"#, NOW).unwrap_err();
        assert_eq!(e.to_string(), "topic `v1/tokens/…/telemetry`: unknown access token (not in the token file)");
        let e = json_mapping().messages("v1/tokens/A1_TOKEN/telemetry", br#"{"t": 1}"#, NOW).unwrap_err();
        assert!(e.reason.contains("no token file") && !e.to_string().contains("A1_TOKEN"), "{e}");
        let e = mapping.messages("v1/tokens/A1_TOKEN/telemetry", b"{oops", NOW).unwrap_err();
        assert!(!e.to_string().contains("A1_TOKEN"), "{e}");
    }

    #[test]
    fn malformed_payloads_name_topic_and_reason() {
        let cases = [
            ("v1/devices/me/telemetry", r#"{"x": 1}"#, "access token"),
            ("v1/devices//telemetry", r#"{"x": 1}"#, "no device name"),
            ("v1/devices/d/telemetry", "{oops", "payload is not JSON"),
            ("v1/devices/d/telemetry", "42", "telemetry must be a JSON object, not a number"),
            (
                "v1/devices/d/telemetry",
                r#"[{"x": 1}, "y"]"#,
                "point [1]: telemetry must be a JSON object, not a string",
            ),
            ("v1/devices/d/telemetry", r#"{"ts": "soon", "values": {}}"#, "`ts` must be an integer"),
            ("v1/devices/d/telemetry", r#"{"ts": 1, "values": 3}"#, "`values` must be a JSON object"),
            ("v1/devices/d/telemetry", r#"{"ts": 1, "values": {}, "x": 2}"#, "`x` next to `ts` and `values`"),
            ("v1/devices/d/attributes", "[1]", "attributes must be a JSON object, not an array"),
            ("v1/gateway/telemetry", "[]", "a gateway payload (device name → data) must be a JSON object"),
            ("v1/gateway/telemetry", r#"{"A": [1]}"#, "device `A`: point [0]"),
            ("v1/gateway/telemetry", r#"{"": {"x": 1}}"#, "device name \"\" is empty"),
            ("v1/gateway/attributes", r#"{"A": 1}"#, "device `A`: attributes must be a JSON object"),
            ("v1/gateway/connect", r#"{"type": "T"}"#, "no `device`"),
            ("v1/gateway/connect", r#"{"device": 5}"#, "`device` must be a non-empty string, not 5"),
            ("other/topic", "", "empty payload"),
            ("other/topic", r#"{"x": 1}"#, "deviceName"),
        ];
        for (topic, payload, reason) in cases {
            let e = map(topic, payload).expect_err(payload);
            assert_eq!(e.topic, topic);
            assert!(e.reason.contains(reason), "{topic} {payload}: {e}");
            assert!(e.to_string().starts_with(&format!("topic `{topic}`: ")), "{e}");
        }
        let e = json_mapping().messages("other/topic", &[0xff, 0xfe], NOW).unwrap_err();
        assert!(e.reason.contains("not UTF-8"), "{e}");
        let raw = PayloadMapping {
            format: PayloadFormat::Raw,
            msg_type: "UPLINK".into(),
            tokens: None,
            input: Default::default(),
        };
        assert!(raw.messages("ends/with/", b"x", NOW).unwrap_err().reason.contains("last level"));
    }
}

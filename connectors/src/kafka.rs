//! The Kafka connector: requests `{"topic", "key"?, "headers"?, "value"}` become records,
//! produced by librdkafka (the `rdkafka` crate) — idempotent, `acks=all`.
//!
//! A message is done only when its records are *delivered*: the producer hands each record's
//! delivery report a clone of the message's [`Ack`], dropped when the broker confirms. So the
//! source (a Kafka consumer) commits an offset only once everything that offset caused is on
//! the output topic — at-least-once end to end, without making the node wait for the broker.
//! With `awaitDelivery`, the node does wait, and gets `{"partition", "offset"}` (ThingsBoard's
//! Kafka node puts them in metadata) at the cost of one broker round trip per message.
//!
//! Delivery that fails after librdkafka's own retries (by default it retries until the broker
//! is back: `message.timeout.ms = 0`) keeps the message's ack for ever: its offset is never
//! committed, so a restart delivers it again. Such failures are logged and counted.
//!
//! The same producer serves the `output` sink and dead letters when they are Kafka topics
//! ([`sluice_io::sinks::kafka`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde_json::{Value, json};

use super::spec::KafkaConnection;
use super::{Call, Connector, ConnectorError};
use sluice_core::Ack;

/// How long a node waits for a delivery report with `awaitDelivery`.
const AWAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A librdkafka producer with Sluice's defaults, shared by every node granted the connector.
pub struct KafkaProducer {
    producer: ThreadedProducer<Deliveries>,
    name: String,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer").field("name", &self.name).finish()
    }
}

/// Sluice's producer defaults; the connection's `properties` override them.
fn producer_config(connection: &KafkaConnection) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &connection.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        // Retry until the broker is back: an outage delays delivery, never drops it.
        .set("message.timeout.ms", "0")
        // Java's partitioner: a key lands on the partition Kafka Streams and Java clients expect.
        .set("partitioner", "murmur2_random");
    for (k, v) in &connection.properties {
        config.set(k, v);
    }
    config
}

/// Why the producer could not be made, take a record, or deliver what it holds.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProducerError {
    #[error("cannot create the Kafka producer for {brokers}: {reason}")]
    Create { brokers: String, reason: String },
    #[error("cannot produce to `{topic}`: {reason}")]
    Produce { topic: String, reason: String },
    #[error("producer `{name}`: flush: {reason}")]
    Flush { name: String, reason: String },
}

impl KafkaProducer {
    /// Creates the producer (librdkafka connects in the background).
    pub fn new(name: &str, connection: &KafkaConnection) -> Result<Self, ProducerError> {
        let producer = producer_config(connection)
            .create_with_context(Deliveries::default())
            .map_err(|e| ProducerError::Create { brokers: connection.brokers.clone(), reason: e.to_string() })?;
        Ok(KafkaProducer { producer, name: name.to_string() })
    }

    /// Queues one record; `delivery` learns its fate. Waits while librdkafka's queue is full
    /// (backpressure: a slow broker slows the chain instead of growing memory).
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        value: &[u8],
        delivery: Delivery,
    ) -> Result<(), ProducerError> {
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(delivery)).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(ProducerError::Produce { topic: topic.into(), reason: e.to_string() }),
            }
        }
    }

    /// Waits until every queued record is delivered (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) -> Result<(), ProducerError> {
        self.producer
            .flush(timeout)
            .map_err(|e| ProducerError::Flush { name: self.name.clone(), reason: e.to_string() })
    }

    /// Records whose delivery failed for good (their messages stay unacked).
    pub fn failed(&self) -> u64 {
        self.producer.context().failed.load(Ordering::Relaxed)
    }

    /// Records delivered so far.
    pub fn delivered(&self) -> u64 {
        self.producer.context().delivered.load(Ordering::Relaxed)
    }
}

/// What to do when a record's delivery report arrives.
pub enum Delivery {
    /// Drop the message's ack (on success).
    Ack(Ack),
    /// Answer a waiting node, then drop the ack.
    Answer(std::sync::mpsc::SyncSender<Result<(i32, i64), String>>, Ack),
}

/// The producer's context: counts reports and keeps the acks of failed deliveries.
#[derive(Default)]
pub struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    held: Mutex<Vec<Ack>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Box<Delivery>) {
        let outcome = match result {
            Ok(m) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                Ok((m.partition(), m.offset()))
            }
            Err((e, m)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(topic = m.topic(), error = %e, "Kafka delivery failed: the message stays unacked");
                Err(format!("delivery to `{}` failed: {e}", m.topic()))
            }
        };
        let ack = match *delivery {
            Delivery::Ack(ack) => ack,
            Delivery::Answer(reply, ack) => {
                let _ = reply.send(outcome.clone());
                ack
            }
        };
        if outcome.is_err() {
            // Never acked: the source will not commit past this message.
            self.held.lock().unwrap_or_else(|p| p.into_inner()).push(ack);
        }
    }
}

/// Headers from a request's `headers` object (string values as they are, others as JSON).
pub fn headers_of(value: Option<&Value>) -> Option<OwnedHeaders> {
    let map = value?.as_object().filter(|m| !m.is_empty())?;
    let mut headers = OwnedHeaders::new_with_capacity(map.len());
    for (k, v) in map {
        let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        headers = headers.insert(Header { key: k, value: Some(text.as_bytes()) });
    }
    Some(headers)
}

/// The action connector.
#[derive(Debug)]
pub struct KafkaConnector {
    name: String,
    connection: KafkaConnection,
    producer: OnceLock<Result<Arc<KafkaProducer>, ProducerError>>,
}

impl KafkaConnector {
    pub fn new(name: &str, connection: &KafkaConnection) -> Result<Self, super::OpenError> {
        if connection.brokers.trim().is_empty() {
            return Err(super::OpenError::NoBrokers);
        }
        Ok(KafkaConnector { name: name.into(), connection: connection.clone(), producer: OnceLock::new() })
    }

    /// The producer, created on first use (validating a chain must not reach any broker).
    fn producer(&self) -> Result<&Arc<KafkaProducer>, ProducerError> {
        self.producer
            .get_or_init(|| KafkaProducer::new(&self.name, &self.connection).map(Arc::new))
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl Drop for KafkaConnector {
    fn drop(&mut self) {
        if let Some(Ok(producer)) = self.producer.get()
            && let Err(e) = producer.flush(Duration::from_secs(10))
        {
            tracing::warn!(connector = %self.name, "{e}");
        }
    }
}

impl Connector for KafkaConnector {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn default_timeout(&self) -> Duration {
        AWAIT_TIMEOUT
    }

    fn call(&self, call: &Call<'_>) -> Result<Value, ConnectorError> {
        let (request, ack) = (call.request, call.ack);
        let topic = request.get("topic").and_then(Value::as_str).ok_or("request has no `topic`")?;
        let key = match request.get("key") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(other) => Some(other.to_string()),
        };
        let value = match request.get("value") {
            Some(Value::String(text)) => text.clone().into_bytes(),
            Some(json) => serde_json::to_vec(json).map_err(|e| e.to_string())?,
            None => return Err("request has no `value`".into()),
        };
        let headers = headers_of(request.get("headers"))
            .unwrap_or_default()
            .insert(Header { key: "idempotency-key", value: Some(call.idempotency_key.as_bytes()) });
        let headers = Some(headers);
        let producer = self.producer().map_err(|e| ConnectorError::permanent(e.to_string()))?;
        if !self.connection.await_delivery {
            producer
                .send(topic, key.as_deref().map(str::as_bytes), headers, &value, Delivery::Ack(ack.clone()))
                .map_err(|e| ConnectorError::retryable(e.to_string()))?;
            return Ok(json!({"queued": true}));
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        producer
            .send(topic, key.as_deref().map(str::as_bytes), headers, &value, Delivery::Answer(reply, ack.clone()))
            .map_err(|e| ConnectorError::retryable(e.to_string()))?;
        match answer.recv_timeout(call.timeout) {
            Ok(Ok((partition, offset))) => Ok(json!({"partition": partition, "offset": offset})),
            Ok(Err(e)) => Err(ConnectorError::retryable(e)),
            Err(_) => Err(ConnectorError::retryable(format!(
                "no delivery report from `{topic}` within {} ms",
                call.timeout.as_millis()
            ))),
        }
    }
}

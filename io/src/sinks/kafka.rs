//! The `output` sink (or dead letters) on a Kafka topic: each message is produced as its TbMsg
//! JSON, keyed by its originator's name, and acked on its delivery report.
//!
//! It takes the same [`SinkItem`]s as the JSON-lines writer, on a thread of its own, so sink
//! nodes do not know which one they feed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, sync_channel};

use super::SinkStats;
use std::time::Duration;

use sluice_connectors::kafka::{Delivery, KafkaProducer};
use sluice_core::{SinkItem, SinkSender};

/// Starts the producing thread; returns its sender and its handle (records queued).
pub fn spawn(
    producer: Arc<KafkaProducer>,
    topic: String,
    capacity: usize,
    stats: Arc<SinkStats>,
) -> std::io::Result<(SinkSender, std::thread::JoinHandle<std::io::Result<u64>>)> {
    let (tx, rx) = sync_channel(capacity);
    let handle = std::thread::Builder::new()
        .name("sluice-kafka-out".into())
        .spawn(move || produce(rx, &producer, &topic, &stats))?;
    Ok((tx, handle))
}

fn produce(rx: Receiver<SinkItem>, producer: &KafkaProducer, topic: &str, stats: &SinkStats) -> std::io::Result<u64> {
    let mut n = 0;
    for item in rx {
        match item {
            SinkItem::Msgs(msgs) => {
                let mut payload = Vec::new();
                for (msg, ack) in msgs {
                    payload.clear();
                    serde_json::to_writer(&mut payload, &*msg).map_err(std::io::Error::other)?;
                    let name = msg.name().as_bytes();
                    producer
                        .send(topic, (!name.is_empty()).then_some(name), None, &payload, Delivery::Ack(ack))
                        .map_err(std::io::Error::other)?;
                    n += 1;
                }
                stats.written.store(n, Ordering::Relaxed);
            }
            SinkItem::Flush(reply) => {
                let _ = reply.send(producer.flush(Duration::from_secs(30)).map_err(std::io::Error::other));
                stats.flushes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    producer.flush(Duration::from_secs(30)).map_err(std::io::Error::other)?;
    Ok(n)
}

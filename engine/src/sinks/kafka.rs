//! The `output` sink (or dead letters) on a Kafka topic: each message is produced as its TbMsg
//! JSON, keyed by its originator's name, and acked on its delivery report.
//!
//! It takes the same [`SinkItem`]s as the JSON-lines writer, on a thread of its own, so sink
//! nodes do not know which one they feed.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::Duration;

use serde::Deserialize;

use super::jsonl::{SinkItem, SinkSender};
use crate::connectors::kafka::{Delivery, KafkaProducer};

/// Just the originator's name, to key the record without parsing the whole message.
#[derive(Deserialize)]
struct Keyed<'a> {
    #[serde(borrow)]
    originator: Option<Name<'a>>,
}

#[derive(Deserialize)]
struct Name<'a> {
    #[serde(borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
}

/// Starts the producing thread; returns its sender and its handle (records queued).
pub fn spawn(
    producer: Arc<KafkaProducer>,
    topic: String,
    capacity: usize,
) -> std::io::Result<(SinkSender, std::thread::JoinHandle<std::io::Result<u64>>)> {
    let (tx, rx) = sync_channel(capacity);
    let handle =
        std::thread::Builder::new().name("sluice-kafka-out".into()).spawn(move || produce(rx, &producer, &topic))?;
    Ok((tx, handle))
}

fn produce(rx: Receiver<SinkItem>, producer: &KafkaProducer, topic: &str) -> std::io::Result<u64> {
    let mut n = 0;
    for item in rx {
        match item {
            SinkItem::Msg(msg, ack) => {
                let key = serde_json::from_slice::<Keyed>(&msg)
                    .ok()
                    .and_then(|k| k.originator)
                    .and_then(|o| o.name)
                    .map(|name| name.into_owned());
                producer
                    .send(topic, key.as_deref().map(str::as_bytes), None, &msg, Delivery::Ack(ack))
                    .map_err(std::io::Error::other)?;
                n += 1;
            }
            SinkItem::Flush(reply) => {
                let _ = reply.send(producer.flush(Duration::from_secs(30)).map_err(std::io::Error::other));
            }
        }
    }
    producer.flush(Duration::from_secs(30)).map_err(std::io::Error::other)?;
    Ok(n)
}

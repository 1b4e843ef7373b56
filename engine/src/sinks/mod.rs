//! Sinks: where messages leave. Each acks a message once it is written.

pub mod jsonl;
pub mod kafka;

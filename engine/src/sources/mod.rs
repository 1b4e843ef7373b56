//! Sources: where messages come from. Each turns bytes into a message and gives it an ack
//! handle ([`crate::flow::Ack`]).

pub mod jsonl;

//! Deduplication (ThingsBoard's `TbMsgDeduplicationNode`): per key and event-time interval, one
//! message goes on.
//!
//! Messages are grouped by `key` into tumbling event-time windows of `intervalMs` (aligned to
//! multiples of `intervalMs` since the epoch, judged by the message's `ts`). When the watermark
//! closes a window (its end plus `graceMs`), one message goes out on `Success`:
//!
//! - `first`: the message with the earliest `ts` (on a tie, the one that arrived first),
//!   unchanged — same id, metadata and data;
//! - `last`: the message with the latest `ts` (on a tie, the one that arrived last), unchanged;
//! - `all`: one new message packing every accepted message of the window, as ThingsBoard's ALL
//!   strategy does: type `outMsgType`, the originator and `ts` of the earliest message, metadata
//!   `{"ts": "<that ts>"}`, data `[{"msg": <data>, "metadata": {…}}, …]` ordered by `ts` (ties in
//!   arrival order); its id is derived from the window (`<node>/pack/<key>/<start>:0`), the same
//!   on every replay.
//!
//! Why `first` waits for the window to close instead of passing the first arrival at once: the
//! result is then the earliest *event* of the interval even when messages arrive out of order,
//! the output does not depend on how the input was interleaved, it matches ThingsBoard (which
//! also emits when the interval has passed), and `maxPendingMsgs` means the same for every
//! strategy. The price is latency: a result leaves one interval (plus grace) after its window
//! opened. Only one message per window is kept for `first`/`last` (a host fold), so they cost
//! the same memory whatever the duplicate rate.
//!
//! Like ThingsBoard, at most `maxPendingMsgs` messages are accepted per key and window; a message
//! beyond that goes to `Failure` (`metadata.error` says so) and is not part of the result. A
//! message without the key goes to `Failure`. A message whose window has already closed is late:
//! forwarded unchanged on `late`, or dropped when `late` is `null`.
//!
//! Config:
//! ```json
//! {"key": "originator", "intervalMs": 10000, "strategy": "all",
//!  "outMsgType": "POST_TELEMETRY_REQUEST", "maxPendingMsgs": 100, "graceMs": 0, "late": "Late"}
//! ```
//! - `key` (default `"originator"`): what makes two messages duplicates: `originator` (its name),
//!   `type`, `metadata.<k>` or `data.<k>` (a string, or a number or boolean as text, so `33` and
//!   `"33"` are the same key).
//! - `intervalMs` (required, ≥ 1): the window size.
//! - `strategy` (default `"first"`): `first`, `last` or `all`.
//! - `outMsgType` (default `"POST_TELEMETRY_REQUEST"`): type of the `all` result.
//! - `maxPendingMsgs` (default 100, 1–1000 as in ThingsBoard): messages accepted per key and
//!   window.
//! - `graceMs` (default 0): how long after its end a window still takes late events.
//! - `late` (default `"Late"`): relation for late messages, `null` to drop them.
//!
//! Relations: `Success` (results), `Failure`, and `late`.
use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default = "default_key")]
    pub key: FieldPath,
    pub interval_ms: u64,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default = "default_out_type")]
    pub out_msg_type: String,
    #[serde(default = "default_max_pending")]
    pub max_pending_msgs: u64,
    #[serde(default)]
    pub grace_ms: u64,
    #[serde(default = "default_late")]
    pub late: Option<String>,
}

/// Which message of a window goes on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    First,
    Last,
    All,
}

fn default_key() -> FieldPath {
    FieldPath::Originator
}
fn default_out_type() -> String {
    sluice_sdk::msg_type::POST_TELEMETRY_REQUEST.into()
}
fn default_max_pending() -> u64 {
    100
}
fn default_late() -> Option<String> {
    Some(relation::LATE.to_string())
}

/// ThingsBoard's bounds for `maxPendingMsgs`.
const MAX_PENDING_LIMIT: u64 = 1000;

/// The host fold window: per key and interval, how many messages were accepted and (first/last)
/// the one kept.
const DEDUP: &str = "dedup";
/// The host collect window holding every accepted message (strategy `all` only).
const PACK: &str = "pack";

/// The accumulator of one key's window.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Pending {
    count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kept: Option<Msg>,
}

pub struct Deduplicate {
    config: Config,
    dedup: Window,
    pack: Option<Window>,
}

/// Keeps one message per key and event-time interval (ThingsBoard's deduplication).
#[node(relations = ["Success", config])]
impl Node for Deduplicate {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        if config.interval_ms == 0 {
            bail_config!("intervalMs", "must be at least 1 ms");
        }
        if !(1..=MAX_PENDING_LIMIT).contains(&config.max_pending_msgs) {
            bail_config!("maxPendingMsgs", "must be between 1 and {MAX_PENDING_LIMIT}");
        }
        if config.out_msg_type.is_empty() {
            bail_config!("outMsgType", "must not be empty");
        }
        if config.late.as_deref() == Some("") {
            bail_config!("late", "must not be empty (use null to drop late messages)");
        }
        let dedup = Window::tumbling(DEDUP, config.interval_ms).grace_ms(config.grace_ms).fold().define()?;
        let pack = match config.strategy {
            Strategy::All => {
                Some(Window::tumbling(PACK, config.interval_ms).grace_ms(config.grace_ms).collect().define()?)
            }
            Strategy::First | Strategy::Last => None,
        };
        Ok(Deduplicate { config, dedup, pack })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        let cfg = &self.config;
        let Some(key) = cfg.key.text(&msg) else { bail!("no key: the message has no `{}`", cfg.key.name()) };
        let (max, strategy) = (cfg.max_pending_msgs, cfg.strategy);
        let (ts, mut full) = (msg.ts(), false);
        let added = self.dedup.fold(&key, ts, |pending: Option<Pending>| {
            let mut pending = pending.unwrap_or_default();
            if pending.count >= max {
                full = true;
                return pending;
            }
            pending.count += 1;
            let replace = match (strategy, &pending.kept) {
                (Strategy::All, _) => false,
                (_, None) => true,
                (Strategy::First, Some(kept)) => ts < kept.ts(),
                (Strategy::Last, Some(kept)) => ts >= kept.ts(),
            };
            if replace {
                pending.kept = Some(msg.clone());
            }
            pending
        })?;
        match added {
            Added::Late => {
                if let Some(late) = &cfg.late {
                    out.forward(late);
                }
            }
            Added::Accepted if full => {
                let start = ts.div_euclid(cfg.interval_ms as i64) * cfg.interval_ms as i64;
                bail!("deduplication: maxPendingMsgs ({max}) reached for key `{key}` in the window starting at {start}")
            }
            Added::Accepted => {
                if let Some(pack) = &self.pack {
                    pack.collect(&key, ts, &msg)?;
                }
            }
        }
        Ok(())
    }

    fn on_window(&mut self, closed: ClosedWindow, out: &mut Outputs) -> Result<()> {
        match (closed.window.as_str(), self.config.strategy) {
            (DEDUP, Strategy::First | Strategy::Last) => {
                let Some(fold) = closed.folds().first() else { return Ok(()) };
                let pending: Pending = serde_json::from_value(fold.clone())?;
                if let Some(kept) = pending.kept {
                    out.emit(relation::SUCCESS, kept);
                }
            }
            (PACK, Strategy::All) => {
                let mut msgs = closed
                    .items()
                    .iter()
                    .map(|item| serde_json::from_value(item.clone()))
                    .collect::<Result<Vec<Msg>, _>>()?;
                // Stable: equal timestamps keep their arrival order.
                msgs.sort_by_key(|m| m.ts());
                let Some(earliest) = msgs.first() else { return Ok(()) };
                let (originator, ts) = (earliest.originator().clone(), earliest.ts());
                let packed: Vec<Value> = msgs
                    .into_iter()
                    .map(|mut m| json!({"msg": m.take_data(), "metadata": std::mem::take(m.metadata_mut())}))
                    .collect();
                let result = Msg::new(&self.config.out_msg_type, originator, Value::Array(packed))
                    .with_ts(ts)
                    .with_meta("ts", ts.to_string());
                out.emit(relation::SUCCESS, result);
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn driver(config: Value) -> TestDriver {
        TestDriver::node_from_json::<Deduplicate>(&config.to_string()).unwrap()
    }

    fn reading(device: &str, ts: i64, id: &str, v: f64) -> Msg {
        Msg::telemetry(device, json!({ "t": v })).with_ts(ts).with_id(id).with_meta("seq", id)
    }

    fn ids(msgs: &[&Msg]) -> Vec<String> {
        msgs.iter().map(|m| m.id().to_string()).collect()
    }

    #[test]
    fn first_keeps_the_earliest_per_key_and_window() -> Result<()> {
        let mut d = driver(json!({"intervalMs": 1000}));
        // A: [0, 1000) gets a1 (100), a2 (500); B: b1 (300). a3 (1200) opens [1000, 2000) and its
        // watermark 1200 ≥ 1000 closes the first windows: a1 and b1, unchanged.
        let a1 = reading("A", 100, "a1", 1.0);
        assert!(d.send(a1.clone())?.outputs.is_empty());
        assert!(d.send(reading("A", 500, "a2", 2.0))?.outputs.is_empty());
        let b1 = reading("B", 300, "b1", 3.0);
        assert!(d.send(b1.clone())?.outputs.is_empty());
        let out = d.send(reading("A", 1_200, "a3", 4.0))?;
        assert_eq!(out.relations(), ["Success", "Success"]);
        assert_eq!(out.messages(), [&a1, &b1]);
        // a4 at 1999 is still in a3's window; flushing emits a3.
        assert!(d.send(reading("A", 1_999, "a4", 5.0))?.outputs.is_empty());
        assert_eq!(ids(&d.flush()?.messages()), ["a3"]);
        Ok(())
    }

    #[test]
    fn first_is_by_event_time_not_arrival() -> Result<()> {
        let mut d = driver(json!({"intervalMs": 1000, "strategy": "first"})).with_lateness(1000);
        d.send(reading("A", 700, "late-arrival-but-later-ts", 1.0))?;
        d.send(reading("A", 200, "earliest", 2.0))?;
        d.send(reading("A", 200, "same-ts-after", 3.0))?; // a tie keeps the one that came first
        assert_eq!(ids(&d.flush()?.messages()), ["earliest"]);
        Ok(())
    }

    #[test]
    fn last_keeps_the_latest_and_ties_go_to_the_later_arrival() -> Result<()> {
        let mut d = driver(json!({"intervalMs": 1000, "strategy": "last"})).with_lateness(5000);
        d.send(reading("A", 900, "a900", 1.0))?;
        d.send(reading("A", 100, "a100", 2.0))?;
        d.send(reading("A", 900, "a900-again", 3.0))?;
        d.send(reading("A", 1_000, "next-window", 4.0))?;
        assert_eq!(ids(&d.flush()?.messages()), ["a900-again", "next-window"]);
        Ok(())
    }

    #[test]
    fn all_packs_the_window_like_thingsboard() -> Result<()> {
        let mut d = driver(json!({"intervalMs": 10000, "strategy": "all"})).named("dedup").with_lateness(10_000);
        d.send(reading("M1", 4_000, "m2", 2.5))?;
        d.send(reading("M1", 1_000, "m1", 1.0))?;
        d.send(reading("M1", 12_000, "m3", 7.0))?;
        let out = d.flush()?;
        assert_eq!(out.relations(), ["Success", "Success"]);
        let expected = Msg::new(
            "POST_TELEMETRY_REQUEST",
            Originator::device("M1"),
            json!([
                {"msg": {"t": 1.0}, "metadata": {"seq": "m1"}},
                {"msg": {"t": 2.5}, "metadata": {"seq": "m2"}},
            ]),
        )
        .with_id("dedup/pack/M1/0:0")
        .with_ts(1_000)
        .with_meta("ts", "1000");
        assert_eq!(out.messages()[0], &expected);
        assert_eq!(out.messages()[1].id(), "dedup/pack/M1/10000:0");
        assert_eq!(out.messages()[1].data(), &json!([{"msg": {"t": 7.0}, "metadata": {"seq": "m3"}}]));
        Ok(())
    }

    #[test]
    fn all_uses_out_msg_type() -> Result<()> {
        let mut d = driver(json!({"intervalMs": 5, "strategy": "all", "outMsgType": "PACKED"}));
        d.send(reading("A", 0, "x", 1.0))?;
        let out = d.flush()?;
        assert_eq!(out.messages()[0].msg_type(), "PACKED");
        Ok(())
    }

    #[test]
    fn key_from_data_treats_numbers_sent_as_strings_alike() -> Result<()> {
        let mut d = driver(json!({"key": "data.sensor", "intervalMs": 1000, "strategy": "all"}));
        d.send(Msg::telemetry("gw-1", json!({"sensor": 33, "v": 1})).with_ts(10))?;
        d.send(Msg::telemetry("gw-2", json!({"sensor": "33", "v": 2})).with_ts(20))?;
        d.send(Msg::telemetry("gw-1", json!({"sensor": 34, "v": 3})).with_ts(30))?;
        let out = d.flush()?;
        let sizes: Vec<(String, usize)> = out
            .messages()
            .iter()
            .map(|m| (m.originator().name.clone(), m.data().as_array().map_or(0, Vec::len)))
            .collect();
        // Keys "33" (both devices; the earliest is gw-1's) and "34".
        assert_eq!(sizes, [("gw-1".to_string(), 2), ("gw-1".to_string(), 1)]);
        Ok(())
    }

    #[test]
    fn missing_or_null_key_fails() -> Result<()> {
        let mut d = driver(json!({"key": "metadata.deviceName", "intervalMs": 1000}));
        let no_key = Msg::telemetry("A", json!({})).with_id("n");
        let out = d.send(no_key)?;
        assert_eq!(out.relations(), ["Failure"]);
        assert_eq!(out.messages()[0].meta("error"), Some("no key: the message has no `deviceName`"));
        let mut d = driver(json!({"key": "data.sensor", "intervalMs": 1000}));
        let out = d.send(Msg::telemetry("A", json!({"sensor": null})))?;
        assert_eq!(out.relations(), ["Failure"]);
        assert!(d.flush()?.outputs.is_empty(), "nothing was accepted");
        Ok(())
    }

    #[test]
    fn max_pending_msgs_overflow_goes_to_failure() -> Result<()> {
        let mut d = driver(json!({"intervalMs": 1000, "strategy": "all", "maxPendingMsgs": 2}));
        d.send(reading("A", 100, "a1", 1.0))?;
        d.send(reading("A", 200, "a2", 2.0))?;
        let third = reading("A", 300, "a3", 3.0);
        let out = d.send(third.clone())?;
        assert_eq!(out.relations(), ["Failure"]);
        assert_eq!(
            out.messages()[0].meta("error"),
            Some("deduplication: maxPendingMsgs (2) reached for key `A` in the window starting at 0")
        );
        assert_eq!(out.messages()[0].data(), third.data(), "the refused message itself");
        // Another key, and the next window, are not affected.
        assert!(d.send(reading("B", 400, "b1", 4.0))?.outputs.is_empty());
        let next = d.send(reading("A", 1_100, "a4", 5.0))?;
        let packs: Vec<usize> = next.messages().iter().map(|m| m.data().as_array().map_or(0, Vec::len)).collect();
        assert_eq!(packs, [2, 1], "A's window holds a1 and a2 only; B holds b1");
        Ok(())
    }

    #[test]
    fn max_pending_applies_to_first_too() -> Result<()> {
        let mut d = driver(json!({"intervalMs": 1000, "maxPendingMsgs": 1}));
        d.send(reading("A", 500, "a1", 1.0))?;
        assert_eq!(d.send(reading("A", 100, "a0", 1.0))?.relations(), ["Failure"]);
        assert_eq!(ids(&d.flush()?.messages()), ["a1"], "the refused message is not considered");
        Ok(())
    }

    #[test]
    fn late_messages_go_to_late_or_nowhere() -> Result<()> {
        let mut d = driver(json!({"intervalMs": 1000}));
        d.send(reading("A", 5_000, "now", 1.0))?;
        let late = reading("A", 100, "old", 1.0);
        let out = d.send(late.clone())?;
        assert_eq!(out.relations(), ["Late"]);
        assert_eq!(out.messages(), [&late]);
        let mut d = driver(json!({"intervalMs": 1000, "late": null, "graceMs": 500}));
        d.send(reading("A", 1_400, "now", 1.0))?;
        assert!(d.send(reading("A", 900, "in-grace", 1.0))?.outputs.is_empty());
        d.send(reading("A", 1_500, "closes", 1.0))?;
        assert!(d.send(reading("A", 800, "dropped", 1.0))?.outputs.is_empty());
        assert_eq!(ids(&d.flush()?.messages()), ["now"]);
        Ok(())
    }

    #[test]
    fn bad_configs_name_the_field() {
        let parse = |config: Value| TestDriver::node_from_json::<Deduplicate>(&config.to_string()).err().unwrap();
        assert_eq!(parse(json!({})).field, "intervalMs");
        assert_eq!(parse(json!({"intervalMs": "10s"})).field, "intervalMs");
        assert_eq!(parse(json!({"intervalMs": -5})).field, "intervalMs");
        let err = parse(json!({"intervalMs": 10, "strategy": "middle"}));
        assert_eq!(err.field, "strategy");
        assert!(err.message.contains("middle"), "{}", err.message);
        assert_eq!(parse(json!({"intervalMs": 10, "key": "device"})).field, "key");
        assert_eq!(parse(json!({"intervalMs": 10, "interval": 10})).field, "interval");
        for (config, field) in [
            (json!({"intervalMs": 0}), "`intervalMs`"),
            (json!({"intervalMs": 10, "maxPendingMsgs": 0}), "`maxPendingMsgs`"),
            (json!({"intervalMs": 10, "maxPendingMsgs": 1001}), "`maxPendingMsgs`"),
            (json!({"intervalMs": 10, "outMsgType": ""}), "`outMsgType`"),
            (json!({"intervalMs": 10, "late": ""}), "`late`"),
        ] {
            let err = parse(config.clone());
            assert!(err.message.starts_with(&format!("config field {field}")), "{config}: {}", err.message);
        }
    }
}

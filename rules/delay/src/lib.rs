//! Delay (ThingsBoard's `TbMsgDelayNode`): holds each message `periodMs` of processing time,
//! then sends it on `Success`, unchanged (same id, metadata and data).
//!
//! A held message lives in the node's keyed state under its id, with one host timer per message
//! (key: the id) due `periodMs` after it arrived. State and timers are checkpointed together, so
//! held messages survive a crash or a restart of the engine, and a finite run (`sluice run` on a
//! file) waits for them before it ends. Why one timer per message rather than one for the
//! earliest due: each message is then independent — no sorted queue to rewrite in state on every
//! message (O(1) state per message instead of O(held)), and the host already keeps timers ordered
//! and fires every due one on its tick.
//!
//! At most `maxPendingMsgs` messages are held at once; beyond that a message goes to `Failure`
//! at once, with `metadata.error` saying so (as ThingsBoard does). Two held messages with the
//! same id (a message fanned out twice into this node) are both kept; a message without an id
//! gets a key of its own.
//!
//! The pending count is one value in node state. On one worker it is exact; with several
//! workers, instances on two workers may update it at the same moment (the host has no atomic
//! increment), so under contention the limit is approximate.
//!
//! Config:
//! ```json
//! {"periodMs": 5000, "maxPendingMsgs": 1000}
//! ```
//! - `periodMs` (required): how long to hold each message, in ms of processing time (the host
//!   clock; the engine fires timers on its tick, about every 50 ms, so a message may leave up to
//!   one tick late).
//! - `maxPendingMsgs` (default 1000, 1–100000 as in ThingsBoard): messages held at once.
//!
//! Relations: `Success` (released messages), `Failure` (refused: too many pending).
use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub period_ms: u64,
    #[serde(default = "default_max_pending")]
    pub max_pending_msgs: u64,
}

fn default_max_pending() -> u64 {
    1000
}

/// ThingsBoard's bound for `maxPendingMsgs`.
const MAX_PENDING_LIMIT: u64 = 100_000;
/// State: how many messages are held.
const PENDING: &str = "pending";
/// State: a counter naming messages that have no id.
const UNNAMED: &str = "unnamed";

/// Where the message held under timer key `key` lives in state.
fn slot(key: &str) -> String {
    format!("msg/{key}")
}

pub struct Delay {
    period_ms: i64,
    max_pending: u64,
}

/// Holds each message for a period of processing time (ThingsBoard's delay).
#[node(relations = ["Success"])]
impl Node for Delay {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        let Ok(period_ms) = i64::try_from(config.period_ms) else { bail_config!("periodMs", "too large") };
        if !(1..=MAX_PENDING_LIMIT).contains(&config.max_pending_msgs) {
            bail_config!("maxPendingMsgs", "must be between 1 and {MAX_PENDING_LIMIT}");
        }
        Ok(Delay { period_ms, max_pending: config.max_pending_msgs })
    }

    fn on_msg(&mut self, msg: Msg, _out: &mut Outputs) -> Result<()> {
        let pending: u64 = state::get_json(PENDING)?.unwrap_or(0);
        if pending >= self.max_pending {
            bail!("delay: {pending} messages already pending (maxPendingMsgs is {})", self.max_pending);
        }
        let key = free_key(msg.id())?;
        state::put_json(&slot(&key), &msg)?;
        state::put_json(PENDING, &(pending + 1))?;
        timer::set(&key, clock::now_ms().saturating_add(self.period_ms));
        Ok(())
    }

    fn on_timer(&mut self, timer: Timer, out: &mut Outputs) -> Result<()> {
        let slot = slot(&timer.key);
        let Some(msg) = state::get_json::<Msg>(&slot)? else {
            log::warn(&format!("delay: timer `{}` has no held message", timer.key));
            return Ok(());
        };
        state::delete(slot.as_bytes());
        let pending: u64 = state::get_json(PENDING)?.unwrap_or(0);
        state::put_json(PENDING, &pending.saturating_sub(1))?;
        out.emit(relation::SUCCESS, msg);
        Ok(())
    }
}

/// A timer key no held message uses: the message's id, made unique with `#<n>` when a message
/// with the same id is already held; `#<n>` from a counter when the message has no id.
fn free_key(id: &str) -> Result<String> {
    if id.is_empty() {
        let n: u64 = state::get_json(UNNAMED)?.unwrap_or(0) + 1;
        state::put_json(UNNAMED, &n)?;
        return Ok(format!("#{n}"));
    }
    let mut key = id.to_string();
    let mut n = 1u64;
    while state::get(slot(&key).as_bytes()).is_some() {
        n += 1;
        key = format!("{id}#{n}");
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn driver(config: Value) -> TestDriver {
        TestDriver::node_from_json::<Delay>(&config.to_string()).unwrap()
    }

    fn reading(id: &str, v: Value) -> Msg {
        Msg::telemetry("T-1", json!({ "temperature": v })).with_id(id).with_ts(7).with_meta("deviceType", "thermo")
    }

    fn held(d: &TestDriver) -> usize {
        d.state().keys().filter(|k| k.starts_with(b"msg/")).count()
    }

    #[test]
    fn holds_until_the_clock_passes_the_period() -> Result<()> {
        let mut d = driver(json!({"periodMs": 1000})).at(10_000);
        let m = reading("m1", json!("21.5"));
        assert!(d.send(m.clone())?.outputs.is_empty());
        assert_eq!(held(&d), 1);
        assert!(d.advance_to(10_999)?.outputs.is_empty(), "999 ms is not enough");
        let out = d.advance_to(11_000)?;
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(out.messages(), [&m], "released unchanged, id included");
        assert_eq!(held(&d), 0);
        assert_eq!(d.state().get(b"pending".as_slice()), Some(&b"0".to_vec()));
        assert!(d.advance_to(20_000)?.outputs.is_empty(), "released once");
        Ok(())
    }

    #[test]
    fn each_message_is_held_from_its_own_arrival() -> Result<()> {
        let mut d = driver(json!({"periodMs": 1000})).at(0);
        d.send(reading("a", json!(1)))?;
        d.set_time(400);
        d.send(reading("b", json!(2)))?;
        d.set_time(700);
        d.send(reading("c", json!(null)))?;
        let ids =
            |out: sluice_sdk::testing::Outcome| out.messages().iter().map(|m| m.id().to_string()).collect::<Vec<_>>();
        assert_eq!(ids(d.advance_to(1_000)?), ["a"]);
        assert_eq!(ids(d.advance_to(1_500)?), ["b"], "due at 1400");
        assert!(d.advance_to(1_699)?.outputs.is_empty());
        assert_eq!(ids(d.advance_to(1_700)?), ["c"]);
        Ok(())
    }

    #[test]
    fn overflow_goes_to_failure_until_a_slot_frees() -> Result<()> {
        let mut d = driver(json!({"periodMs": 100, "maxPendingMsgs": 2})).at(0);
        d.send(reading("a", json!(1)))?;
        d.send(reading("b", json!(2)))?;
        let refused = d.send(reading("c", json!(3)))?;
        assert_eq!(refused.relations(), ["Failure"]);
        assert_eq!(refused.messages()[0].id(), "c");
        assert_eq!(
            refused.messages()[0].meta("error"),
            Some("delay: 2 messages already pending (maxPendingMsgs is 2)")
        );
        assert_eq!(held(&d), 2);
        assert_eq!(d.advance_to(100)?.outputs.len(), 2);
        assert!(d.send(reading("d", json!(4)))?.outputs.is_empty(), "room again");
        assert_eq!(d.advance_to(200)?.messages()[0].id(), "d");
        Ok(())
    }

    #[test]
    fn same_id_twice_and_no_id_are_all_kept() -> Result<()> {
        let mut d = driver(json!({"periodMs": 10})).at(0);
        let first = reading("dup", json!(1));
        let second = reading("dup", json!(2));
        let (u1, u2) = (reading("", json!(3)), reading("", json!(4)));
        for m in [&first, &second, &u1, &u2] {
            d.send(m.clone())?;
        }
        assert_eq!(held(&d), 4);
        let out = d.advance_to(10)?;
        let data: Vec<&Value> = out.messages().iter().map(|m| &m.data()["temperature"]).collect();
        // Due at the same time: fired in key order ("#1", "#2", "dup", "dup#2").
        assert_eq!(data, [&json!(3), &json!(4), &json!(1), &json!(2)]);
        assert_eq!(out.messages()[2], &first);
        assert_eq!(out.messages()[3], &second);
        // Messages without an id get one derived from their timer.
        assert_eq!(out.messages()[0].id(), "node/timer/#1/10:0");
        assert_eq!(held(&d), 0);
        Ok(())
    }

    #[test]
    fn bad_configs_name_the_field() {
        let parse = |config: Value| TestDriver::node_from_json::<Delay>(&config.to_string()).err().unwrap();
        assert_eq!(parse(json!({})).field, "periodMs");
        assert_eq!(parse(json!({"periodMs": "5s"})).field, "periodMs");
        assert_eq!(parse(json!({"periodMs": -1})).field, "periodMs");
        assert_eq!(parse(json!({"periodMs": 10, "periodInSeconds": 1})).field, "periodInSeconds");
        assert_eq!(parse(json!({"periodMs": 10, "maxPendingMsgs": 1.5})).field, "maxPendingMsgs");
        for (config, field) in [
            (json!({"periodMs": u64::MAX}), "`periodMs`"),
            (json!({"periodMs": 10, "maxPendingMsgs": 0}), "`maxPendingMsgs`"),
            (json!({"periodMs": 10, "maxPendingMsgs": 100_001}), "`maxPendingMsgs`"),
        ] {
            let err = parse(config.clone());
            assert!(err.message.starts_with(&format!("config field {field}")), "{config}: {}", err.message);
        }
    }
}

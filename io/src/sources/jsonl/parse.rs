//! JSON lines in: the embedded default source (a file or stdin).
//!
//! A line is either a full TbMsg or ThingsBoard's simple telemetry form
//! `{"ts": …, "deviceName": …, "deviceType": …, <values>}`, which becomes a
//! `POST_TELEMETRY_REQUEST` from that device with the values as data — or, when the chain says
//! how to name its originator ([`InputForm`], `input` in the chain file), any flat JSON object.
//! A malformed line is reported with its line number and counted; the run goes on (unless
//! strict).
//!
//! Numbers keep every digit they were written with (serde_json's `arbitrary_precision`): a
//! 39-digit id goes through the nodes that do not touch it and out unchanged. JSON nested deeper
//! than [`crate::sources::MAX_DEPTH`] levels is refused, the error saying so.

use serde_json::{Map, Value};
use sluice_sdk::{Originator, TbMsg, msg_type};
use uuid::Uuid;

pub use sluice_core::input::InputForm;
use sluice_core::message::{Message, Named};

/// Namespace of the ids given to input messages without one (see [`LineIds`]).
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x5a1c_e000_0000_4000_8000_736c_7569_6365);

/// Ids for the lines of one input that carry none: the same input gets the same ids on every
/// run (a replay after a crash writes the same ids), and no two lines of it share one. The
/// source's uuid v5 is computed once; a line's id is that uuid with the line number mixed into
/// its last eight bytes — a bijection, so ids stay unique, and no hash per line (a SHA-1 per line
/// was 2 % of a million-line run).
#[derive(Debug, Clone)]
pub struct LineIds {
    base: [u8; 16],
}

impl LineIds {
    pub fn new(source: &str) -> Self {
        LineIds { base: *Uuid::new_v5(&ID_NAMESPACE, source.as_bytes()).as_bytes() }
    }

    /// The id of line `line`.
    pub fn id(&self, line: u64) -> String {
        Uuid::from_bytes(self.uuid(line)).hyphenated().to_string()
    }

    /// The id of line `line` as the uuid's bytes.
    pub fn uuid(&self, line: u64) -> [u8; 16] {
        let mut bytes = self.base;
        let mut low = [0u8; 8];
        low.copy_from_slice(&bytes[8..]);
        bytes[8..].copy_from_slice(&(u64::from_be_bytes(low) ^ line).to_be_bytes());
        bytes
    }
}

/// A line that is not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input} line {line}: {message}")]
pub struct LineError {
    pub input: String,
    pub line: u64,
    pub message: String,
}

/// [`parse_message_as`] into the engine's [`Message`]: a flat record (the simple form, or one the
/// chain's `input` form names, with scalar values) is kept as its text, not built into a
/// `TbMsg` (see [`sluice_core::message`]); anything else is parsed into one.
pub fn parse_record(
    source: &str,
    line: u64,
    text: &str,
    now_ms: i64,
    form: &InputForm,
) -> Result<Option<Message>, LineError> {
    let trimmed = text.trim();
    let name = |fields: &[(&str, &str)]| form.originator.as_ref().and_then(|t| InputForm::name_raw(t, fields));
    let named = form.originator.as_ref().map(|_| Named {
        entity_type: &form.entity_type,
        msg_type: &form.msg_type,
        name: &name,
    });
    if let Some(msg) = sluice_core::message::scan(trimmed, now_ms, named.as_ref()) {
        return Ok(Some(msg));
    }
    Ok(parse_message_as(source, line, text, now_ms, form)?.map(Message::from))
}

/// Parses one input line (1-based `line`) from `source`. `Ok(None)` for a blank line.
pub fn parse_line(source: &str, line: u64, text: &str, now_ms: i64) -> Result<Option<TbMsg>, LineError> {
    parse_line_as(source, line, text, now_ms, &InputForm::default())
}

/// [`parse_line`], flat records becoming messages as `form` says.
pub fn parse_line_as(
    source: &str,
    line: u64,
    text: &str,
    now_ms: i64,
    form: &InputForm,
) -> Result<Option<TbMsg>, LineError> {
    let mut msg = parse_message_as(source, line, text, now_ms, form)?;
    if let Some(msg) = &mut msg
        && msg.id.is_empty()
    {
        msg.id = LineIds::new(source).id(line);
    }
    Ok(msg)
}

/// [`parse_line`] without the id: a message that carries none keeps an empty `id`, for a source
/// whose input has no stable position to derive one from (an MQTT publish) and gives its own.
pub fn parse_message(source: &str, line: u64, text: &str, now_ms: i64) -> Result<Option<TbMsg>, LineError> {
    parse_message_as(source, line, text, now_ms, &InputForm::default())
}

/// [`parse_message`], flat records becoming messages as `form` says.
pub fn parse_message_as(
    source: &str,
    line: u64,
    text: &str,
    now_ms: i64,
    form: &InputForm,
) -> Result<Option<TbMsg>, LineError> {
    let err = |message: String| LineError { input: source.to_string(), line, message };
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    // A full message (every Kafka record of a TbMsg topic, a replayed output) in one pass: what
    // parses as a `TbMsg` has a top-level `originator`, and is exactly what the path below makes
    // of it, which reads the record once to tell the forms apart and then parses the text again
    // (and words the errors: anything that does not parse here goes that way).
    if memchr::memmem::find(text.as_bytes(), b"\"originator\"").is_some()
        && let Ok(msg) = serde_json::from_str::<TbMsg>(text)
    {
        crate::sources::check_depth(&msg).map_err(err)?;
        return Ok(Some(msg));
    }
    let record: Record = serde_json::from_str(text).map_err(|e| {
        err(match e.classify() {
            serde_json::error::Category::Data => "not a JSON object".into(),
            _ => format!("not JSON: {}", crate::sources::json_error(e)),
        })
    })?;
    let msg = if record.originator {
        // From the text, not from the values just read: going through a `Value` rewrites some
        // numbers (`0.0000000000000055511151239` came out as `5.5511151239e-15`), and numbers must
        // leave as they came.
        serde_json::from_str::<TbMsg>(text).map_err(|e| err(format!("not a message: {e}")))?
    } else if let (None, Some(template)) = (&record.device_name, &form.originator) {
        let mut obj = record.rest;
        if let Some(device_type) = record.device_type {
            obj.insert("deviceType".into(), device_type);
        }
        let name = form.name(template, &obj).map_err(err)?;
        let ts = ts_of(record.ts, now_ms).map_err(err)?;
        let originator = Originator { entity_type: form.entity_type.to_string(), name, id: None };
        TbMsg::new(&*form.msg_type, originator, Value::Object(obj)).with_ts(ts)
    } else {
        simple_form(record, now_ms).map_err(err)?
    };
    crate::sources::check_depth(&msg).map_err(err)?;
    Ok(Some(msg))
}

/// `{"ts", "deviceName", "deviceType", <values>}` → telemetry from `deviceName`.
fn simple_form(record: Record, now_ms: i64) -> Result<TbMsg, String> {
    let device = match record.device_name {
        Some(Value::String(name)) if !name.is_empty() => name,
        Some(other) => return Err(format!("`deviceName` must be a non-empty string, not {other}")),
        None => {
            return Err("neither a message (no `originator`) nor telemetry (no `deviceName`); a chain \
                        reads flat records with `input.originator`"
                .into());
        }
    };
    let ts = ts_of(record.ts, now_ms)?;
    let mut msg = TbMsg::new(msg_type::POST_TELEMETRY_REQUEST, Originator::device(&device), Value::Null).with_ts(ts);
    msg.metadata.insert("deviceName".into(), device);
    msg.metadata.insert("ts".into(), ts.to_string());
    match record.device_type {
        None => {}
        Some(Value::String(t)) => {
            msg.metadata.insert("deviceType".into(), t);
        }
        Some(other) => return Err(format!("`deviceType` must be a string, not {other}")),
    }
    msg.data = Value::Object(record.rest);
    Ok(msg)
}

/// The record's `ts` (`now_ms` when it has none).
fn ts_of(ts: Option<Value>, now_ms: i64) -> Result<i64, String> {
    match ts {
        None => Ok(now_ms),
        Some(v) => v.as_i64().ok_or_else(|| format!("`ts` must be an integer of milliseconds, not {v}")),
    }
}

/// A line's top-level object, read in one pass: the fields the simple form takes out (`ts`,
/// `deviceName`, `deviceType`) are kept aside as they are met, the rest go straight into what
/// becomes `data`. No map of the whole line is built and then taken apart.
struct Record {
    ts: Option<Value>,
    device_name: Option<Value>,
    device_type: Option<Value>,
    /// The line has a top-level `originator`: it is a full message.
    originator: bool,
    rest: Map<String, Value>,
}

impl<'de> serde::Deserialize<'de> for Record {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Record;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Record, A::Error> {
                let mut record =
                    Record { ts: None, device_name: None, device_type: None, originator: false, rest: Map::new() };
                while let Some(Key(key)) = map.next_key()? {
                    match &*key {
                        "ts" => record.ts = Some(map.next_value()?),
                        "deviceName" => record.device_name = Some(map.next_value()?),
                        "deviceType" => record.device_type = Some(map.next_value()?),
                        other => {
                            record.originator |= other == "originator";
                            let value = map.next_value()?;
                            record.rest.insert(key.into_owned(), value);
                        }
                    }
                }
                Ok(record)
            }
        }
        d.deserialize_map(Fields)
    }
}

/// An object key, borrowed from the line when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> serde::de::Visitor<'de> for Text {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(v.into()))
            }

            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(v.to_string().into()))
            }

            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(v.into()))
            }
        }
        d.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn simple_form_becomes_telemetry() {
        let msg =
            parse_line("in", 1, r#"{"ts":5,"deviceName":"WS-1","deviceType":"WeatherStation","windSpeed":"33"}"#, 0)
                .unwrap()
                .unwrap();
        assert_eq!(msg.msg_type, "POST_TELEMETRY_REQUEST");
        assert_eq!(msg.originator, Originator::device("WS-1"));
        assert_eq!(msg.ts, 5);
        assert_eq!(msg.meta("deviceType"), Some("WeatherStation"));
        assert_eq!(msg.data, json!({"windSpeed": "33"}));
        assert!(!msg.id.is_empty());
    }

    #[test]
    fn flat_records_take_their_originator_from_the_chains_template() {
        let spec = sluice_engine::chain::spec::InputSpec {
            originator: "${panel}/${data.module}".into(),
            entity_type: None,
            msg_type: None,
        };
        let form = InputForm::new(Some(&spec)).unwrap();
        let line = r#"{"ts":1700000000000,"panel":"Panel 0042","module":3,"power":312.25}"#;
        let msg = parse_line_as("in", 1, line, 0, &form).unwrap().unwrap();
        assert_eq!(msg.originator, Originator::device("Panel 0042/3"));
        assert_eq!((msg.ts, msg.msg_type.as_str()), (1700000000000, "POST_TELEMETRY_REQUEST"));
        assert_eq!(msg.data, json!({"panel": "Panel 0042", "module": 3, "power": 312.25}));
        // The simple form and full messages are read as before.
        let simple = parse_line_as("in", 2, r#"{"deviceName":"d","x":1}"#, 0, &form).unwrap().unwrap();
        assert_eq!(simple.originator, Originator::device("d"));
        // A record without a field the template names is malformed, saying which.
        let e = parse_line_as("in", 3, r#"{"panel":"P","power":1}"#, 0, &form).unwrap_err();
        assert_eq!(e.to_string(), "in line 3: no `module`, which the chain's `input.originator` names");
        let e = parse_line_as("in", 4, r#"{"panel":{"a":1},"module":1}"#, 0, &form).unwrap_err();
        assert!(e.message.contains("`panel` is an object"), "{e}");
        // Without a template a flat record is malformed, and the error says how to read it.
        let e = parse_line("in", 5, line, 0).unwrap_err();
        assert!(e.message.contains("input.originator"), "{e}");
        // Templates are checked.
        for bad in ["", "${}", "x ${panel", "${a${b}}"] {
            let spec = sluice_engine::chain::spec::InputSpec { originator: bad.into(), ..spec.clone() };
            assert!(InputForm::new(Some(&spec)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ids_are_deterministic_per_line() {
        let a = parse_line("in", 3, r#"{"deviceName":"d","x":1}"#, 0).unwrap().unwrap();
        let b = parse_line("in", 3, r#"{"deviceName":"d","x":1}"#, 0).unwrap().unwrap();
        let c = parse_line("in", 4, r#"{"deviceName":"d","x":1}"#, 0).unwrap().unwrap();
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
    }

    #[test]
    fn a_full_message_is_read_in_one_pass_and_only_a_top_level_originator_makes_one() {
        let line = r#"{"id":"m1","ts":5,"type":"X","originator":{"entityType":"ASSET","name":"a"},
            "metadata":{"k":"v"},"data":{"big":123456789012345678901234567890123456789,"s":"a\"b"}}"#
            .replace('\n', "");
        let msg = parse_line("in", 1, &line, 0).unwrap().unwrap();
        assert_eq!(msg, serde_json::from_str::<TbMsg>(&line).unwrap());
        assert_eq!(
            serde_json::to_value(&msg.data).unwrap().to_string(),
            r#"{"big":123456789012345678901234567890123456789,"s":"a\"b"}"#
        );
        // The word in a value, or a nested key, is not a message: the simple form.
        let simple = r#"{"deviceName":"d","note":"\"originator\"","x":{"originator":{"name":"n"}}}"#;
        let msg = parse_line("in", 2, simple, 0).unwrap().unwrap();
        assert_eq!(msg.originator, Originator::device("d"));
        // A message that does not parse is worded as before.
        let e = parse_line("in", 3, r#"{"type":"X","originator":{"name":"a"},"extra":1}"#, 0).unwrap_err();
        assert!(e.message.starts_with("not a message"), "{e}");
    }

    #[test]
    fn full_messages_keep_their_id() {
        let line = r#"{"id":"m1","type":"X","originator":{"entityType":"ASSET","name":"a"},"data":{}}"#;
        assert_eq!(parse_line("in", 1, line, 0).unwrap().unwrap().id, "m1");
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_line("input.jsonl", 7, "{oops", 0).unwrap_err();
        assert_eq!(e.line, 7);
        assert!(e.to_string().starts_with("input.jsonl line 7: not JSON"), "{e}");
        assert!(parse_line("in", 1, "[1]", 0).is_err());
        assert!(parse_line("in", 1, r#"{"x":1}"#, 0).unwrap_err().message.contains("deviceName"));
        assert!(parse_line("in", 1, r#"{"deviceName":"d","ts":"soon"}"#, 0).is_err());
        assert!(parse_line("in", 1, r#"{"originator":{"entityType":"DEVICE","name":"d"}}"#, 0).is_err());
        assert_eq!(parse_line("in", 1, "   ", 0), Ok(None));
    }

    /// Nested `[` … `]` `n` deep around 0, as text built independently of serde_json.
    fn nested(n: usize) -> String {
        format!("{}0{}", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn nesting_past_the_limit_is_refused_naming_it() {
        // A full message may nest 127 levels in all, its own object included.
        let at = |depth: usize| {
            format!(r#"{{"originator":{{"entityType":"DEVICE","name":"d"}},"type":"T","data":{}}}"#, nested(depth - 1))
        };
        parse_line("in", 1, &at(127), 0).unwrap().unwrap();
        let e = parse_line("in", 4, &at(128), 0).unwrap_err();
        assert!(e.to_string().starts_with("in line 4: not JSON: nesting deeper than 127 levels"), "{e}");
        // The simple form's values become `data`, one level further in than on the line:
        // `depth` levels in the message are `depth - 1` on the line.
        let simple = |depth: usize| format!(r#"{{"deviceName":"d","v":{}}}"#, nested(depth - 2));
        parse_line("in", 1, &simple(127), 0).unwrap().unwrap();
        let e = parse_line("in", 2, &simple(128), 0).unwrap_err();
        assert!(e.message.contains("nesting deeper than 127 levels"), "{e}");
    }

    /// Found by the fuzzer: a message written out and read back as a full message is the same
    /// message, tiny decimals included.
    #[test]
    fn a_message_read_back_is_the_same_message() {
        let line = r#"{"deviceName":"d","f":0.0000000000000055511151239,"g":1E+2,"h":-0.0}"#;
        let msg = parse_line("in", 1, line, 0).unwrap().unwrap();
        let again = serde_json::to_string(&msg).unwrap();
        let reread = parse_line("in", 1, &again, 0).unwrap().unwrap();
        assert_eq!(reread, msg, "{again}");
        assert_eq!(reread.data["f"].to_string(), "0.0000000000000055511151239");
    }

    #[test]
    fn numbers_keep_every_digit() {
        let line = r#"{"deviceName":"d","big":123456789012345678901234567890123456789,"f":0.1000000000000000055511151231257827,"e":1E+2}"#;
        let msg = parse_line("in", 1, line, 0).unwrap().unwrap();
        assert_eq!(msg.data["big"].to_string(), "123456789012345678901234567890123456789");
        assert_eq!(msg.data["f"].to_string(), "0.1000000000000000055511151231257827");
        assert_eq!(msg.data["e"].to_string(), "1e+2");
        assert_eq!(msg.data["big"].as_f64(), Some(1.2345678901234568e38));
    }

    /// A flat record kept as its text answers every question as the `TbMsg` the slow path
    /// parses: the whole message, and each field read through the accessors the host uses.
    #[test]
    fn flat_records_read_as_their_parsed_message() {
        let named = InputForm::new(Some(&sluice_engine::chain::spec::InputSpec {
            originator: "Panel ${panel}/${module}".into(),
            entity_type: Some("ASSET".into()),
            msg_type: Some("READING".into()),
        }))
        .unwrap();
        let lines = [
            r#"{"ts":5,"deviceName":"WS-1","deviceType":"WeatherStation","windSpeed":21.25,"cs_geoZone":"Zone 6"}"#,
            r#"{"deviceType":"T","deviceName":"D","a":"x\"y","b":null,"c":true,"d":-0,"e":1e+2}"#,
            r#"{"deviceName":"D","big":123456789012345678901234567890123456789,"f":0.1000000000000000055511151231257827}"#,
            r#"{"ts":7,"deviceName":"D","a":1,"a":2,"s":" 12.5 ","t":"1.5e3","u":"é\u00e9"}"#,
            r#"  {"deviceName":"D","k.dotted":3}  "#,
            r#"{"ts":9,"panel":"P1","module":3,"power":312.25,"deviceType":"SolarModule"}"#,
            r#"{"ts":9,"panel":"P1","module":true,"power":1}"#,
            r#"{"ts":9,"panel":"P1","module":1.50,"deviceName":"named anyway"}"#,
            r#"{"deviceName":"D"}"#,
        ];
        for form in [InputForm::default(), named] {
            for line in lines {
                let Ok(Some(slow)) = parse_message_as("in", 1, line, 42, &form) else { continue };
                let fast = parse_record("in", 1, line, 42, &form).unwrap().unwrap();
                assert!(fast.is_flat(), "{line}: kept as text");
                assert_eq!(fast.to_tb(), slow, "{line}");
                let tb = Message::from(slow.clone());
                assert_eq!(
                    (fast.ts(), fast.msg_type(), fast.entity_type(), fast.name()),
                    (tb.ts(), tb.msg_type(), tb.entity_type(), tb.name()),
                    "{line}"
                );
                for key in ["deviceName", "deviceType", "ts", "nothing"] {
                    assert_eq!(fast.meta(key), tb.meta(key), "{line}: metadata {key}");
                }
                for key in slow.data.as_object().unwrap().keys().map(String::as_str).chain(["nothing", "k"]) {
                    let (a, b) = (fast.data(key), tb.data(key));
                    assert_eq!(a.map(|f| f.text()), b.map(|f| f.text()), "{line}: {key} as text");
                    assert_eq!(
                        a.and_then(|f| f.number()).map(f64::to_bits),
                        b.and_then(|f| f.number()).map(f64::to_bits),
                        "{line}: {key} as a number"
                    );
                    assert_eq!(a.map(|f| f.presence()), b.map(|f| f.presence()), "{line}: {key} presence");
                }
            }
        }
    }

    /// What is not a flat record takes the slow path, and its errors are worded as before.
    #[test]
    fn records_that_are_not_flat_are_parsed_whole() {
        for line in [
            r#"{"deviceName":"D","nested":{"a":1}}"#,
            r#"{"deviceName":"D","list":[1]}"#,
            r#"{"deviceName":"D","k\u0065y":1}"#,
            r#"{"deviceName":"D\u0041"}"#,
            r#"{"id":"x","type":"T","originator":{"entityType":"DEVICE","name":"n"},"data":{}}"#,
        ] {
            let msg = parse_record("in", 1, line, 0, &InputForm::default()).unwrap().unwrap();
            assert!(!msg.is_flat(), "{line}");
            assert_eq!(msg.to_tb(), parse_message_as("in", 1, line, 0, &InputForm::default()).unwrap().unwrap());
        }
        for line in [
            r#"{"ts":"5","deviceName":"D"}"#,
            r#"{"deviceName":""}"#,
            r#"{"deviceName":"D","deviceType":3}"#,
            r#"{"a":1}"#,
            "[1]",
            "{",
        ] {
            assert_eq!(
                parse_record("in", 3, line, 0, &InputForm::default()).unwrap_err(),
                parse_message_as("in", 3, line, 0, &InputForm::default()).unwrap_err(),
                "{line}"
            );
        }
    }
}

//! The message as the engine carries it: [`Message`], read by the nodes through the host, written
//! by the sinks.
//!
//! Why not simply [`TbMsg`]: a `TbMsg` is a tree of owned strings and maps — about twenty small
//! allocations for a line of telemetry, made by the source's thread and freed by a worker's.
//! Building and freeing them was most of what a message cost the engine once the guests stopped
//! parsing (issue 16's profile: the reader thread 44 %, the worker's frees and map lookups 31 %).
//! Most messages are flat telemetry, and a node reads two or three of their fields.
//!
//! So a flat record — the simple telemetry form `{"ts", "deviceName", "deviceType", <values>}`
//! or a record named by the chain's `input` form, with scalar values and plain keys — is kept as
//! its text plus the positions of its fields ([`Flat`]): one scan of the line (serde_json checks
//! it is JSON and hands each value over as raw text), no tree. A field is read from its text when
//! a node asks: a string as it is (unescaped only if it has escapes), a number parsed then, so it
//! keeps every digit it was written with. Anything else — a full `TbMsg` line, nested values,
//! escaped keys, a message a node made — is a `TbMsg`.
//!
//! Both kinds answer the same questions the same way ([`Message::meta`], [`Message::data`], …),
//! and [`Message::tb`] builds the `TbMsg` a flat record stands for, once, when something needs the
//! whole message (a node that copies it to change it, a sink writing it). That `TbMsg` is exactly
//! what parsing the line into one gives (tested against `sources::jsonl::parse_message_as`).

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use sluice_sdk::abi::{HAS_NULL, HAS_VALUE};
use sluice_sdk::{Originator, TbMsg, as_number, data_path, msg_type, value_text};
use smallvec::SmallVec;

/// A message in the engine: a [`TbMsg`], or a flat record kept as its text.
#[derive(Debug, Default)]
pub struct Message {
    flat: Option<Flat>,
    /// The message as a `TbMsg`: given, or built from `flat` when first needed.
    tb: OnceLock<Box<TbMsg>>,
}

/// A flat record: the text of its line and where its parts are in it.
#[derive(Debug)]
pub struct Flat {
    text: Box<str>,
    id: Id,
    ts: i64,
    name: Text,
    kind: Kind,
    /// `data`: each key and its value as raw JSON (scalars only), in the line's order. A key may
    /// repeat; the last one counts, as when parsing into a map.
    fields: SmallVec<[(Span, Span); 8]>,
}

/// Where a piece of the line is.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn of(text: &str, part: &str) -> Span {
        Span { start: (part.as_ptr() as usize - text.as_ptr() as usize) as u32, len: part.len() as u32 }
    }

    fn get<'t>(&self, text: &'t str) -> &'t str {
        &text[self.start as usize..(self.start + self.len) as usize]
    }
}

/// A part of the message: in the line, or made from it.
#[derive(Debug)]
pub enum Text {
    In(Span),
    Own(String),
}

/// How the record became a message.
#[derive(Debug)]
pub enum Kind {
    /// ThingsBoard's simple telemetry form: a `POST_TELEMETRY_REQUEST` from the device
    /// `deviceName`, with `deviceName`, `ts` and `deviceType` (when given) as metadata.
    Simple { device_type: Option<Span> },
    /// Named by the chain's `input` form: no metadata.
    Named { entity_type: Arc<str>, msg_type: Arc<str> },
}

/// A message's id.
#[derive(Debug, Clone, Default)]
enum Id {
    #[default]
    None,
    Text(String),
    /// A uuid, written out when asked for (an input line's id, see `sources::jsonl::LineIds`).
    Uuid([u8; 16]),
}

/// A field of `data`: a value of a `TbMsg`, or the raw JSON of a flat record's scalar.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    Value(&'a Value),
    Raw(&'a str),
}

impl<'a> Field<'a> {
    /// As text, the way `field::DATA_TEXT` reads it ([`value_text`]): a string as it is, a number
    /// or a boolean written out; null, arrays and objects are not text.
    pub fn text(self) -> Option<Cow<'a, str>> {
        match self {
            Field::Value(v) => value_text(v),
            Field::Raw(raw) => match raw.as_bytes()[0] {
                b'"' if !raw.contains('\\') => Some(Cow::Borrowed(&raw[1..raw.len() - 1])),
                b'"' => serde_json::from_str::<String>(raw).ok().map(Cow::Owned),
                b'n' => None,
                _ => Some(Cow::Borrowed(raw)),
            },
        }
    }

    /// As a number ([`as_number`]: numbers, and strings that parse as one).
    pub fn number(self) -> Option<f64> {
        match self {
            Field::Value(v) => as_number(v),
            Field::Raw(raw) => match raw.as_bytes()[0] {
                b'"' => self.text()?.trim().parse().ok(),
                b't' | b'f' | b'n' => None,
                _ => raw.parse().ok(),
            },
        }
    }

    /// `HAS_NULL` for a JSON null, `HAS_VALUE` otherwise.
    pub fn presence(self) -> i32 {
        match self {
            Field::Value(Value::Null) | Field::Raw("null") => HAS_NULL,
            _ => HAS_VALUE,
        }
    }

    /// Writes the value as JSON.
    pub fn write_json(self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match self {
            Field::Value(v) => serde_json::to_writer(out, v),
            Field::Raw(raw) => {
                out.extend_from_slice(raw.as_bytes());
                Ok(())
            }
        }
    }
}

impl From<TbMsg> for Message {
    fn from(msg: TbMsg) -> Self {
        Message { flat: None, tb: OnceLock::from(Box::new(msg)) }
    }
}

impl Message {
    /// The message as a `TbMsg` (built from a flat record the first time it is asked for).
    pub fn tb(&self) -> &TbMsg {
        self.tb.get_or_init(|| Box::new(self.flat.as_ref().map(Flat::to_tb).unwrap_or_default()))
    }

    /// The message as a `TbMsg` of its own, to change.
    pub fn to_tb(&self) -> TbMsg {
        match self.tb.get() {
            Some(tb) => TbMsg::clone(tb),
            None => self.flat.as_ref().map(Flat::to_tb).unwrap_or_default(),
        }
    }

    /// Whether the message is a flat record kept as its text.
    pub fn is_flat(&self) -> bool {
        self.flat.is_some()
    }

    /// The flat record, unless the whole message was built already.
    fn flat(&self) -> Option<&Flat> {
        match self.tb.get() {
            Some(_) => None,
            None => self.flat.as_ref(),
        }
    }

    pub fn id(&self) -> Cow<'_, str> {
        match self.flat() {
            Some(flat) => match &flat.id {
                Id::None => Cow::Borrowed(""),
                Id::Text(id) => Cow::Borrowed(id),
                Id::Uuid(bytes) => Cow::Owned(uuid::Uuid::from_bytes(*bytes).hyphenated().to_string()),
            },
            None => Cow::Borrowed(&self.tb().id),
        }
    }

    /// Whether the message has an id.
    pub fn has_id(&self) -> bool {
        match self.flat() {
            Some(flat) => !matches!(flat.id, Id::None),
            None => !self.tb().id.is_empty(),
        }
    }

    /// Gives the message the id `id`.
    pub fn set_id(&mut self, id: String) {
        match (&mut self.flat, self.tb.get_mut()) {
            (_, Some(tb)) => tb.id = id,
            (Some(flat), None) => flat.id = Id::Text(id),
            (None, None) => {}
        }
    }

    /// Gives the message the uuid `bytes` as its id, written out only when read.
    pub fn set_uuid(&mut self, bytes: [u8; 16]) {
        match (&mut self.flat, self.tb.get_mut()) {
            (_, Some(tb)) => tb.id = uuid::Uuid::from_bytes(bytes).hyphenated().to_string(),
            (Some(flat), None) => flat.id = Id::Uuid(bytes),
            (None, None) => {}
        }
    }

    pub fn ts(&self) -> i64 {
        match self.flat() {
            Some(flat) => flat.ts,
            None => self.tb().ts,
        }
    }

    pub fn msg_type(&self) -> &str {
        match self.flat() {
            Some(Flat { kind: Kind::Simple { .. }, .. }) => msg_type::POST_TELEMETRY_REQUEST,
            Some(Flat { kind: Kind::Named { msg_type, .. }, .. }) => msg_type,
            None => &self.tb().msg_type,
        }
    }

    pub fn entity_type(&self) -> &str {
        match self.flat() {
            Some(Flat { kind: Kind::Simple { .. }, .. }) => "DEVICE",
            Some(Flat { kind: Kind::Named { entity_type, .. }, .. }) => entity_type,
            None => &self.tb().originator.entity_type,
        }
    }

    /// The originator's name.
    pub fn name(&self) -> &str {
        match self.flat() {
            Some(flat) => flat.name(),
            None => &self.tb().originator.name,
        }
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Option<Cow<'_, str>> {
        match self.flat() {
            Some(flat) => match (&flat.kind, key) {
                (Kind::Simple { .. }, "deviceName") => Some(Cow::Borrowed(flat.name())),
                (Kind::Simple { .. }, "ts") => Some(Cow::Owned(flat.ts.to_string())),
                (Kind::Simple { device_type: Some(t) }, "deviceType") => Some(Cow::Borrowed(t.get(&flat.text))),
                _ => None,
            },
            None => self.tb().meta(key).map(Cow::Borrowed),
        }
    }

    /// A field of `data` by key: the top-level key, else a dotted path ([`data_path`]).
    pub fn data(&self, key: &str) -> Option<Field<'_>> {
        match self.flat() {
            // A flat record has no nested objects: a dotted key is a top-level key or nothing.
            Some(flat) => {
                let text = &*flat.text;
                let found = flat.fields.iter().rev().find(|(k, _)| k.len as usize == key.len() && k.get(text) == key);
                found.map(|(_, v)| Field::Raw(v.get(text)))
            }
            None => data_path(&self.tb().data, key).map(Field::Value),
        }
    }
}

impl Message {
    /// A top-level field of `data` only (no dotted path).
    pub fn data_top(&self, key: &str) -> Option<Field<'_>> {
        match self.flat() {
            Some(_) => self.data(key),
            None => self.tb().data.get(key).map(Field::Value),
        }
    }
}

impl serde::Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.tb().serialize(s)
    }
}

impl Flat {
    fn name(&self) -> &str {
        match &self.name {
            Text::In(span) => span.get(&self.text),
            Text::Own(name) => name,
        }
    }

    /// The `TbMsg` this record stands for (what `sources::jsonl` would have parsed).
    fn to_tb(&self) -> TbMsg {
        let text = &*self.text;
        let mut data = serde_json::Map::new();
        for (k, v) in &self.fields {
            // A scalar this scan accepted as JSON: it parses again.
            data.insert(k.get(text).to_string(), serde_json::from_str(v.get(text)).unwrap_or(Value::Null));
        }
        let id = match &self.id {
            Id::None => String::new(),
            Id::Text(id) => id.clone(),
            Id::Uuid(bytes) => uuid::Uuid::from_bytes(*bytes).hyphenated().to_string(),
        };
        let (originator, msg_type, metadata) = match &self.kind {
            Kind::Simple { device_type } => {
                let mut metadata = sluice_sdk::Metadata::new();
                metadata.insert("deviceName".into(), self.name().to_string());
                metadata.insert("ts".into(), self.ts.to_string());
                if let Some(t) = device_type {
                    metadata.insert("deviceType".into(), t.get(text).to_string());
                }
                (Originator::device(self.name()), msg_type::POST_TELEMETRY_REQUEST.to_string(), metadata)
            }
            Kind::Named { entity_type, msg_type } => (
                Originator { entity_type: entity_type.to_string(), name: self.name().to_string(), id: None },
                msg_type.to_string(),
                Default::default(),
            ),
        };
        TbMsg { id, ts: self.ts, msg_type, originator, metadata, data: Value::Object(data) }
    }
}

/// The chain's `input` form, as [`scan`] uses it: the originator's entity type and the message
/// type, and how to name the originator from a field lookup (`None`: the record needs the slow
/// path, which words the error).
/// Names an originator from a record's fields (key and raw value, in the line's order).
pub type NameFn<'a> = dyn Fn(&[(&str, &str)]) -> Option<String> + 'a;

pub struct Named<'a> {
    pub entity_type: &'a Arc<str>,
    pub msg_type: &'a Arc<str>,
    /// The name from the record's fields (key and raw value, in the line's order).
    pub name: &'a NameFn<'a>,
}

/// Reads `text` (one JSON object, trimmed) as a flat record, or says it is not one (`None`):
/// then it is parsed into a `TbMsg`, which also words any error. `ts` is `now_ms` when the record
/// has none; `named` is the chain's `input` form, if it has one.
pub fn scan(text: &str, now_ms: i64, named: Option<&Named>) -> Option<Message> {
    let mut fields = SmallVec::new();
    {
        use serde::de::DeserializeSeed;
        let mut de = serde_json::Deserializer::from_str(text);
        Fields(&mut fields).deserialize(&mut de).ok()?;
        de.end().ok()?;
    }
    let text_of = |raw: &str| -> Option<Span> {
        // A string without escapes, as it is in the line.
        (raw.len() >= 2 && raw.starts_with('"') && !raw.contains('\\')).then(|| Span::of(text, &raw[1..raw.len() - 1]))
    };
    let mut ts = None;
    let mut device_name = None;
    let mut device_type = None;
    let mut data: SmallVec<[(Span, Span); 8]> = SmallVec::new();
    for (k, v) in fields {
        match k {
            "originator" => return None,
            "ts" => ts = Some(v),
            "deviceName" => device_name = Some(v),
            "deviceType" => device_type = Some((k, v)),
            _ => data.push((Span::of(text, k), Span::of(text, v))),
        }
    }
    let ts = match ts {
        None => now_ms,
        Some(raw) => raw.parse::<i64>().ok()?,
    };
    let (name, kind) = match (device_name, named) {
        (Some(name), _) => {
            let span = text_of(name).filter(|s| s.len > 0)?;
            let device_type = match device_type {
                None => None,
                Some((_, raw)) => Some(text_of(raw)?),
            };
            (Text::In(span), Kind::Simple { device_type })
        }
        (None, Some(named)) => {
            if let Some((k, v)) = device_type {
                // The named form keeps `deviceType` in data.
                data.push((Span::of(text, k), Span::of(text, v)));
            }
            let fields: SmallVec<[(&str, &str); 8]> = data.iter().map(|(k, v)| (k.get(text), v.get(text))).collect();
            let name = (named.name)(&fields).filter(|n| !n.is_empty())?;
            (Text::Own(name), Kind::Named { entity_type: named.entity_type.clone(), msg_type: named.msg_type.clone() })
        }
        (None, None) => return None,
    };
    // Spans point into `text`; the record keeps its own copy, at the same offsets.
    let flat = Flat { text: text.into(), id: Id::None, ts, name, kind, fields: data };
    Some(Message { flat: Some(flat), tb: OnceLock::new() })
}

/// One pass over a record's top-level object: its keys (plain, borrowed from the line) and raw
/// scalar values, into the caller's vector (a seed, so that nothing this size is moved about). A
/// nested value or an escaped key fails the pass: that record is not flat.
struct Fields<'v, 'a>(&'v mut SmallVec<[(&'a str, &'a str); 12]>);

impl<'de> serde::de::DeserializeSeed<'de> for Fields<'_, 'de> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Fields<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a flat JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error;
        // `&str` keys: an escaped key cannot be borrowed, and fails here.
        while let Some(key) = map.next_key::<&'de str>()? {
            let value: &'de serde_json::value::RawValue = map.next_value()?;
            let raw = value.get();
            if raw.starts_with(['{', '[']) {
                return Err(A::Error::custom("nested"));
            }
            self.0.push((key, raw));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_fields_read_as_values_do() {
        for (raw, value) in [
            (r#""a\"b""#, serde_json::json!("a\"b")),
            (r#""12.5 ""#, serde_json::json!("12.5 ")),
            ("12.50", serde_json::from_str("12.50").unwrap()),
            ("true", serde_json::json!(true)),
            ("null", Value::Null),
            ("-0", serde_json::from_str("-0").unwrap()),
            (
                "123456789012345678901234567890123456789",
                serde_json::from_str("123456789012345678901234567890123456789").unwrap(),
            ),
        ] {
            let (a, b) = (Field::Raw(raw), Field::Value(&value));
            assert_eq!(a.text(), b.text(), "{raw}");
            assert_eq!(a.number().map(f64::to_bits), b.number().map(f64::to_bits), "{raw}");
            assert_eq!(a.presence(), b.presence(), "{raw}");
            let (mut x, mut y) = (Vec::new(), Vec::new());
            a.write_json(&mut x).unwrap();
            b.write_json(&mut y).unwrap();
            assert_eq!(serde_json::from_slice::<Value>(&x).unwrap(), serde_json::from_slice::<Value>(&y).unwrap());
        }
    }

    #[test]
    fn absent_is_none() {
        let msg = Message::from(TbMsg::telemetry("d", serde_json::json!({"a": 1})));
        assert!(msg.data("b").is_none());
    }
}

//! The message every node sees: ThingsBoard's `TbMsg`.
//!
//! Two types, one shape:
//!
//! - [`TbMsg`] is the message as data: the JSON form below, with public fields. The engine keeps
//!   each message in flight parsed once by its source (as a `TbMsg`, or a flat line as its text,
//!   read in place); sinks write it back as JSON.
//! - [`Msg`] is what a rule node gets and emits: a *view* of a message. In a module (ABI v2, see
//!   `ABI.md`) it reads the host's message through host calls, one field at a time, and only the
//!   fields the rule asks for: a filter that reads two fields never sees the rest, and nothing is
//!   parsed as a whole. A changed message is sent back as its changes only: the keys set or
//!   removed one by one ([`Msg::set_meta`], [`Msg::set_field`], …) while their part was not read,
//!   else the parts changed. Natively (tests, [`crate::testing::TestDriver`]) the same view simply
//!   owns its fields.
//!
//! ```json
//! {"id": "7b0c…", "ts": 1700000000000, "type": "POST_TELEMETRY_REQUEST",
//!  "originator": {"entityType": "DEVICE", "name": "Wind Turbine 1"},
//!  "metadata": {"deviceType": "WeatherStation", "ts": "1700000000000"},
//!  "data": {"windSpeed": 33}}
//! ```
//!
//! `metadata` is a map of strings, as in ThingsBoard; `data` is any JSON value (an object for
//! telemetry and attributes). A `BTreeMap` keeps metadata in a stable order, so outputs are
//! reproducible.

use std::borrow::Cow;
use std::cell::{OnceCell, RefCell};
use std::ptr::NonNull;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Metadata of a message: string keys to string values, as in ThingsBoard.
pub type Metadata = std::collections::BTreeMap<String, String>;

/// Well-known message types. Any other string is a valid, custom type.
pub mod msg_type {
    pub const POST_TELEMETRY_REQUEST: &str = "POST_TELEMETRY_REQUEST";
    pub const POST_ATTRIBUTES_REQUEST: &str = "POST_ATTRIBUTES_REQUEST";
    pub const ATTRIBUTES_UPDATED: &str = "ATTRIBUTES_UPDATED";
    pub const ATTRIBUTES_DELETED: &str = "ATTRIBUTES_DELETED";
    pub const TIMESERIES_UPDATED: &str = "TIMESERIES_UPDATED";
    pub const TIMESERIES_DELETED: &str = "TIMESERIES_DELETED";
    pub const RPC_CALL_FROM_SERVER_TO_DEVICE: &str = "RPC_CALL_FROM_SERVER_TO_DEVICE";
    pub const TO_SERVER_RPC_REQUEST: &str = "TO_SERVER_RPC_REQUEST";
    pub const CONNECT_EVENT: &str = "CONNECT_EVENT";
    pub const DISCONNECT_EVENT: &str = "DISCONNECT_EVENT";
    pub const ACTIVITY_EVENT: &str = "ACTIVITY_EVENT";
    pub const INACTIVITY_EVENT: &str = "INACTIVITY_EVENT";
    pub const ENTITY_CREATED: &str = "ENTITY_CREATED";
    pub const ENTITY_UPDATED: &str = "ENTITY_UPDATED";
    pub const ENTITY_DELETED: &str = "ENTITY_DELETED";
    pub const ALARM: &str = "ALARM";
}

/// The parts of a message as ABI v2 names them (`ABI.md`, "Reading the message").
pub mod field {
    /// `id`, as text.
    pub const ID: u32 = 0;
    /// `type`, as text.
    pub const TYPE: u32 = 1;
    /// `originator.entityType`, as text.
    pub const ENTITY_TYPE: u32 = 2;
    /// `originator.name`, as text.
    pub const NAME: u32 = 3;
    /// `metadata[key]`, as text.
    pub const META: u32 = 4;
    /// `data[key]` as text: a string as it is, a number or a boolean written out.
    pub const DATA_TEXT: u32 = 5;
    /// `data[key]` as JSON.
    pub const DATA_JSON: u32 = 6;
    /// The whole `data`, as JSON.
    pub const DATA: u32 = 7;
    /// The whole `metadata`, as a JSON object of strings.
    pub const METADATA: u32 = 8;
    /// The whole `originator`, as JSON.
    pub const ORIGINATOR: u32 = 9;
}

/// Who sent the message: a device, an asset, …
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Originator {
    /// `DEVICE`, `ASSET`, `CUSTOMER`, … (ThingsBoard's entity types).
    #[serde(rename = "entityType")]
    pub entity_type: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl Originator {
    pub fn device(name: impl Into<String>) -> Self {
        Originator { entity_type: "DEVICE".into(), name: name.into(), id: None }
    }

    pub fn asset(name: impl Into<String>) -> Self {
        Originator { entity_type: "ASSET".into(), name: name.into(), id: None }
    }
}

impl Default for Originator {
    fn default() -> Self {
        Originator::device("")
    }
}

/// A telemetry message as data: what sources parse, the engine carries and sinks write.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TbMsg {
    /// Unique id. Left empty on a message a node creates, it becomes [`derived_id`] of the
    /// incoming message's id and the output's position (`"<parent>:<n>"`): deterministic, so a
    /// replay yields the same ids.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Event time in milliseconds since the Unix epoch.
    #[serde(default)]
    pub ts: i64,
    /// Message type, e.g. [`msg_type::POST_TELEMETRY_REQUEST`].
    #[serde(rename = "type")]
    pub msg_type: String,
    pub originator: Originator,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default = "empty_object")]
    pub data: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl TbMsg {
    /// A message of any type from `originator`, with empty metadata.
    pub fn new(msg_type: impl Into<String>, originator: Originator, data: Value) -> Self {
        TbMsg { id: String::new(), ts: 0, msg_type: msg_type.into(), originator, metadata: Metadata::new(), data }
    }

    /// A `POST_TELEMETRY_REQUEST` from the device `device`.
    pub fn telemetry(device: impl Into<String>, data: Value) -> Self {
        TbMsg::new(msg_type::POST_TELEMETRY_REQUEST, Originator::device(device), data)
    }

    /// A `POST_ATTRIBUTES_REQUEST` from the device `device`.
    pub fn attributes(device: impl Into<String>, data: Value) -> Self {
        TbMsg::new(msg_type::POST_ATTRIBUTES_REQUEST, Originator::device(device), data)
    }

    /// Builder: sets one metadata entry.
    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Builder: sets the event time.
    pub fn with_ts(mut self, ts: i64) -> Self {
        self.ts = ts;
        self
    }

    /// Builder: sets the id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// A metadata value, if present.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// A field of `data` by key (see [`data_path`]).
    pub fn field(&self, key: &str) -> Option<&Value> {
        data_path(&self.data, key)
    }

    /// A field of `data` read as a number (numeric strings count, see [`as_number`]).
    pub fn number(&self, key: &str) -> Option<f64> {
        as_number(self.field(key)?)
    }
}

/// Sets the top-level `key` of `data`, turning `data` into an object if it is not one (what the
/// host does with a key sent back).
fn insert_field(data: &mut Value, key: String, value: Value) {
    if !data.is_object() {
        *data = empty_object();
    }
    if let Value::Object(map) = data {
        map.insert(key, value);
    }
}

/// A field of `data`: the top-level key `key` if there is one, else `key` as a dotted path into
/// nested objects (`location.zone`). One rule for rules, templates and the host's accessors.
pub fn data_path<'a>(data: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(v) = data.get(key) {
        return Some(v);
    }
    if !key.contains('.') {
        return None;
    }
    key.split('.').try_fold(data, |v, k| v.get(k))
}

/// What kind of JSON value `value` is, for error messages, the same in the host and every rule ("a string", "an object").
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A data value as text, as [`field::DATA_TEXT`] reads it: a string as it is, a number or a
/// boolean written out; anything else (null, arrays, objects) is not text.
pub fn value_text(value: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match value {
        Value::String(s) => Some(std::borrow::Cow::Borrowed(s)),
        Value::Number(n) => Some(std::borrow::Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(std::borrow::Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

/// Which parts of a [`Msg`] were changed, so that only they are sent back.
#[doc(hidden)]
pub mod changed {
    pub const ID: u8 = 1;
    pub const TS: u8 = 2;
    pub const TYPE: u8 = 4;
    pub const ORIGINATOR: u8 = 8;
    pub const METADATA: u8 = 16;
    pub const DATA: u8 = 32;
}

/// A message as a rule node sees it: read with accessors, changed with setters, built with the
/// builders. In a module, the incoming message is read from the host on demand — each part
/// once, and single keys (`meta`, `field`, `number`) without loading the rest; natively and for
/// messages a node builds itself, the view owns its parts.
///
/// An incoming message is readable during the call that received it. To keep one for later
/// (in a node's own memory), keep a [`Clone`]: a clone owns everything it holds.
pub struct Msg {
    /// The host's message this view reads, during the call that received it (wasm only).
    handle: Option<u32>,
    id: OnceCell<String>,
    ts: OnceCell<i64>,
    msg_type: OnceCell<String>,
    originator: OnceCell<Originator>,
    metadata: OnceCell<Metadata>,
    data: OnceCell<Value>,
    /// Single keys read before their whole part was (only with a handle).
    reads: Reads,
    /// Keys set or removed before their whole part was read (only with a handle): sent back
    /// key by key, so that a node that adds a key does not send the whole part.
    edits: Vec<Edit>,
    changed: u8,
}

/// One key set (`Some`) or removed (`None`) in metadata or in `data`'s top level.
#[derive(Debug, Clone)]
#[doc(hidden)]
pub enum Edit {
    Meta(String, Option<String>),
    Field(String, Option<Value>),
}

/// Where a key of `data` is read from (see [`Msg::data_key`]).
enum DataKey<'a> {
    /// From the host's message, through this handle.
    Host(u32),
    /// From its change one by one: its value, or `None` when removed.
    Changed(Option<&'a Value>),
    /// From the loaded data.
    Loaded,
}

/// Answers of single-key reads. Text answers and their keys live in an arena: a call's few reads
/// cost one allocation together, not three each. Append-only while shared: an answer, once handed
/// out as `&str` or `&Value`, stays where it is until the view is borrowed mutably or dropped.
#[derive(Default)]
struct Reads {
    arena: Arena,
    meta: Texts,
    /// `data` fields read as text.
    texts: Texts,
    fields: Answers<Value>,
}

// SAFETY: the pointers in `Texts` point into `arena`, which `Reads` owns and which moves with it
// (a `Bump`'s chunks are on the heap); nothing else holds them.
unsafe impl Send for Reads {}

/// A view's arena, taken from a small pool of this thread's and given back (emptied) when the
/// view is dropped: a call's reads reuse the chunk an earlier call's did, instead of allocating
/// one and freeing it every call (the guest allocator's calls for it were 4–5 % of a run).
struct Arena(Option<bumpalo::Bump>);

/// At most this many emptied arenas are kept for the next views.
const POOLED_ARENAS: usize = 4;

thread_local! {
    static ARENAS: RefCell<Vec<bumpalo::Bump>> = const { RefCell::new(Vec::new()) };
}

impl Default for Arena {
    fn default() -> Self {
        let pooled = ARENAS.try_with(|pool| pool.borrow_mut().pop()).ok().flatten();
        Arena(Some(pooled.unwrap_or_default()))
    }
}

impl std::ops::Deref for Arena {
    type Target = bumpalo::Bump;

    fn deref(&self) -> &bumpalo::Bump {
        self.0.as_ref().expect("an arena is taken only when dropped")
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        let Some(mut arena) = self.0.take() else { return };
        // Nothing points into it any more: its view is being dropped (the view's pointers into
        // it go with it, and are never read in their drop).
        arena.reset();
        let _ = ARENAS.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOLED_ARENAS {
                pool.push(arena);
            }
        });
    }
}

/// Keys read, each with its answer (`None`: absent), both in the arena.
type Texts = RefCell<smallvec::SmallVec<[(NonNull<str>, Option<NonNull<str>>); 4]>>;

/// Keys read, each with its answer (`None`: absent).
type Answers<T> = RefCell<Vec<(Box<str>, Option<Box<T>>)>>;

impl Reads {
    /// The metadata value of `key`: the one read before, else `load`'s, kept.
    fn meta<'a>(&'a self, key: &str, load: impl FnOnce(&'a bumpalo::Bump) -> Option<&'a str>) -> Option<&'a str> {
        self.text_in(&self.meta, key, load)
    }

    /// The `data` field `key` as text: the one read before, else `load`'s, kept.
    fn text<'a>(&'a self, key: &str, load: impl FnOnce(&'a bumpalo::Bump) -> Option<&'a str>) -> Option<&'a str> {
        self.text_in(&self.texts, key, load)
    }

    fn text_in<'a>(
        &'a self,
        cache: &'a Texts,
        key: &str,
        load: impl FnOnce(&'a bumpalo::Bump) -> Option<&'a str>,
    ) -> Option<&'a str> {
        // SAFETY (both derefs): the pointers are to strings in `self.arena`, which is reset (and
        // its memory reused) only when the view is dropped: they outlive this shared borrow.
        let found = cache.borrow().iter().find(|(k, _)| unsafe { k.as_ref() } == key).map(|(_, v)| *v);
        let ptr = match found {
            Some(ptr) => ptr,
            None => {
                let value = load(&self.arena).map(NonNull::from);
                cache.borrow_mut().push((NonNull::from(self.arena.alloc_str(key)), value));
                value
            }
        };
        ptr.map(|p| unsafe { p.as_ref() })
    }

    /// Records `value` (`None`: removed) as the answer for metadata `key`.
    fn set_meta(&mut self, key: &str, value: Option<&str>) {
        let answers = self.meta.get_mut();
        answers.retain(|(k, _)| unsafe { k.as_ref() } != key);
        let value = value.map(|v| NonNull::from(self.arena.alloc_str(v)));
        answers.push((NonNull::from(self.arena.alloc_str(key)), value));
    }

    fn field(&self, key: &str, load: impl FnOnce() -> Option<Value>) -> Option<&Value> {
        answer(&self.fields, key, || load().map(Box::new))
    }

    /// Forgets every answer about `data` (it changed).
    fn forget_data(&mut self) {
        self.fields.get_mut().clear();
        self.texts.get_mut().clear();
    }
}

/// The answer for `key`: the one read before, else `load`'s, kept.
fn answer<'a, T: ?Sized>(cache: &'a Answers<T>, key: &str, load: impl FnOnce() -> Option<Box<T>>) -> Option<&'a T> {
    let found = cache.borrow().iter().find(|(k, _)| &**k == key).map(|(_, v)| v.as_deref().map(|v| v as *const T));
    let ptr = match found {
        Some(ptr) => ptr,
        None => {
            let value = load();
            let ptr = value.as_deref().map(|v| v as *const T);
            cache.borrow_mut().push((key.into(), value));
            ptr
        }
    };
    // SAFETY: the pointer is to a `Box`'s heap data, which no push moves and which is freed only
    // through `&mut` access to the cache (or its drop): it outlives this shared borrow.
    ptr.map(|p| unsafe { &*p })
}

impl Msg {
    /// A message of any type from `originator`, with empty metadata.
    pub fn new(msg_type: impl Into<String>, originator: Originator, data: Value) -> Self {
        Msg::from(TbMsg::new(msg_type, originator, data))
    }

    /// A `POST_TELEMETRY_REQUEST` from the device `device`.
    pub fn telemetry(device: impl Into<String>, data: Value) -> Self {
        Msg::new(msg_type::POST_TELEMETRY_REQUEST, Originator::device(device), data)
    }

    /// A `POST_ATTRIBUTES_REQUEST` from the device `device`.
    pub fn attributes(device: impl Into<String>, data: Value) -> Self {
        Msg::new(msg_type::POST_ATTRIBUTES_REQUEST, Originator::device(device), data)
    }

    /// The view of the host's message `handle` (the SDK's glue, on wasm).
    #[doc(hidden)]
    pub fn from_handle(handle: u32) -> Self {
        Msg {
            handle: Some(handle),
            id: OnceCell::new(),
            ts: OnceCell::new(),
            msg_type: OnceCell::new(),
            originator: OnceCell::new(),
            metadata: OnceCell::new(),
            data: OnceCell::new(),
            reads: Reads::default(),
            edits: Vec::new(),
            changed: 0,
        }
    }

    /// The host message this view reads and the parts changed since (the SDK's glue).
    #[doc(hidden)]
    pub fn changes(&self) -> (Option<u32>, u8) {
        (self.handle, self.changed)
    }

    /// Keys set or removed one by one, in order, after the whole parts in [`Msg::changes`]
    /// (the SDK's glue).
    #[doc(hidden)]
    pub fn edits(&self) -> &[Edit] {
        &self.edits
    }

    /// Where `data`'s `key` is read from. A key changed one by one answers from its change, and
    /// any other top-level key from the host: the host's message is unchanged, and a change to
    /// one key does not touch another. So a node that renames two keys reads and sends only
    /// those. A dotted key may reach into a changed key: only the loaded data (with the changes
    /// applied) can tell, so then it is loaded.
    fn data_key(&self, key: &str) -> DataKey<'_> {
        let Some(handle) = self.handle else { return DataKey::Loaded };
        if self.data.get().is_some() {
            return DataKey::Loaded;
        }
        let changes = || {
            self.edits.iter().filter_map(|e| match e {
                Edit::Field(k, v) => Some((k, v)),
                Edit::Meta(..) => None,
            })
        };
        if changes().next().is_none() {
            return DataKey::Host(handle);
        }
        if key.contains('.') {
            return DataKey::Loaded;
        }
        match changes().rfind(|(k, _)| *k == key) {
            Some((_, value)) => DataKey::Changed(value.as_ref()),
            None => DataKey::Host(handle),
        }
    }

    /// Whether metadata is read key by key from the host (not loaded).
    fn lazy_meta(&self) -> bool {
        self.handle.is_some() && self.metadata.get().is_none()
    }

    /// Builder: sets one metadata entry.
    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_meta(key, value);
        self
    }

    /// Builder: sets the event time.
    pub fn with_ts(mut self, ts: i64) -> Self {
        self.set_ts(ts);
        self
    }

    /// Builder: sets the id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.set_id(id);
        self
    }

    /// Builder: sets the type.
    pub fn with_type(mut self, msg_type: impl Into<String>) -> Self {
        self.set_msg_type(msg_type);
        self
    }

    // Reading.

    /// The id (empty on a message a node built and has not named).
    pub fn id(&self) -> &str {
        self.id.get_or_init(|| self.load_text(field::ID, "").unwrap_or_default())
    }

    /// Event time in milliseconds since the Unix epoch.
    pub fn ts(&self) -> i64 {
        *self.ts.get_or_init(|| self.handle.map_or(0, crate::abi::msg_ts))
    }

    /// The message type, e.g. [`msg_type::POST_TELEMETRY_REQUEST`].
    pub fn msg_type(&self) -> &str {
        self.msg_type.get_or_init(|| self.load_text(field::TYPE, "").unwrap_or_default())
    }

    /// Who sent it.
    pub fn originator(&self) -> &Originator {
        self.originator.get_or_init(|| self.load_json(field::ORIGINATOR, "").unwrap_or_default())
    }

    /// The originator's name, without reading the rest of it.
    pub fn originator_name(&self) -> std::borrow::Cow<'_, str> {
        match (self.originator.get(), self.handle) {
            (None, Some(_)) => self.load_text(field::NAME, "").unwrap_or_default().into(),
            _ => self.originator().name.as_str().into(),
        }
    }

    /// All metadata.
    pub fn metadata(&self) -> &Metadata {
        self.metadata.get_or_init(|| {
            let mut metadata: Metadata = self.load_json(field::METADATA, "").unwrap_or_default();
            for edit in &self.edits {
                if let Edit::Meta(key, value) = edit {
                    match value {
                        Some(v) => metadata.insert(key.clone(), v.clone()),
                        None => metadata.remove(key),
                    };
                }
            }
            metadata
        })
    }

    /// A metadata value, if present.
    pub fn meta(&self, key: &str) -> Option<&str> {
        match (self.metadata.get(), self.handle) {
            (None, Some(h)) => self.reads.meta(key, |arena| crate::abi::msg_str_in(h, field::META, key, arena)),
            _ => self.metadata().get(key).map(String::as_str),
        }
    }

    /// The whole `data`.
    pub fn data(&self) -> &Value {
        self.data.get_or_init(|| {
            let mut data = self.load_json(field::DATA, "").unwrap_or_else(empty_object);
            for edit in &self.edits {
                if let Edit::Field(key, value) = edit {
                    match value {
                        Some(v) => insert_field(&mut data, key.clone(), v.clone()),
                        None => {
                            if let Value::Object(map) = &mut data {
                                map.remove(key);
                            }
                        }
                    }
                }
            }
            data
        })
    }

    /// A field of `data`: a top-level key, or a dotted path into nested objects (`loc.city`).
    pub fn field(&self, key: &str) -> Option<&Value> {
        match self.data_key(key) {
            DataKey::Host(_) => self.reads.field(key, || self.load_json(field::DATA_JSON, key)),
            DataKey::Changed(value) => value,
            DataKey::Loaded => data_path(self.data(), key),
        }
    }

    /// A field of `data` read as a number. Numbers sent as strings (`"33"`, as many devices do)
    /// count as numbers too.
    pub fn number(&self, key: &str) -> Option<f64> {
        match self.data_key(key) {
            DataKey::Host(h) => crate::abi::msg_number(h, field::DATA_TEXT, key),
            _ => as_number(self.field(key)?),
        }
    }

    /// A field of `data` as text: a string as it is, a number or a boolean written out.
    pub fn text(&self, key: &str) -> Option<Cow<'_, str>> {
        match self.data_key(key) {
            DataKey::Host(h) => {
                self.reads.text(key, |arena| crate::abi::msg_str_in(h, field::DATA_TEXT, key, arena)).map(Cow::Borrowed)
            }
            _ => value_text(self.field(key)?),
        }
    }

    /// Whether `data` has the field (a JSON `null` counts as present).
    pub fn has_field(&self, key: &str) -> bool {
        match self.data_key(key) {
            DataKey::Host(h) => crate::abi::msg_has(h, field::DATA_JSON, key) != crate::abi::HAS_NONE,
            _ => self.field(key).is_some(),
        }
    }

    /// Whether `data` has the field with a value other than `null` — without reading the value.
    pub fn has_value(&self, key: &str) -> bool {
        match self.data_key(key) {
            DataKey::Host(h) => crate::abi::msg_has(h, field::DATA_JSON, key) == crate::abi::HAS_VALUE,
            _ => self.field(key).is_some_and(|v| !v.is_null()),
        }
    }

    // Changing.

    pub fn set_id(&mut self, id: impl Into<String>) {
        self.id = OnceCell::from(id.into());
        self.changed |= changed::ID;
    }

    pub fn set_ts(&mut self, ts: i64) {
        self.ts = OnceCell::from(ts);
        self.changed |= changed::TS;
    }

    pub fn set_msg_type(&mut self, msg_type: impl Into<String>) {
        self.msg_type = OnceCell::from(msg_type.into());
        self.changed |= changed::TYPE;
    }

    pub fn set_originator(&mut self, originator: Originator) {
        self.originator = OnceCell::from(originator);
        self.changed |= changed::ORIGINATOR;
    }

    /// The originator, to change in place.
    pub fn originator_mut(&mut self) -> &mut Originator {
        self.originator();
        self.changed |= changed::ORIGINATOR;
        self.originator.get_mut().expect("loaded above")
    }

    /// The metadata, to change in place.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        self.metadata();
        self.changed |= changed::METADATA;
        self.reads.meta.get_mut().clear();
        // The loaded metadata holds the key-by-key changes: it is sent whole instead.
        self.edits.retain(|e| !matches!(e, Edit::Meta(..)));
        self.metadata.get_mut().expect("loaded above")
    }

    /// Sets one metadata entry. On a message read from the host whose metadata is not loaded,
    /// only this key goes back.
    pub fn set_meta(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        if self.lazy_meta() {
            self.reads.set_meta(&key, Some(&value));
            self.edits.push(Edit::Meta(key, Some(value)));
        } else {
            self.metadata_mut().insert(key, value);
        }
    }

    /// Removes one metadata entry, returning its value. Removing an absent key changes nothing.
    pub fn remove_meta(&mut self, key: &str) -> Option<String> {
        let value = self.meta(key)?.to_string();
        if self.lazy_meta() {
            self.reads.set_meta(key, None);
            self.edits.push(Edit::Meta(key.to_string(), None));
            Some(value)
        } else {
            self.metadata_mut().remove(key)
        }
    }

    /// Replaces all metadata.
    pub fn set_metadata(&mut self, metadata: Metadata) {
        self.metadata = OnceCell::from(metadata);
        self.reads.meta.get_mut().clear();
        self.edits.retain(|e| !matches!(e, Edit::Meta(..)));
        self.changed |= changed::METADATA;
    }

    /// The data, to change in place.
    pub fn data_mut(&mut self) -> &mut Value {
        self.data();
        self.changed |= changed::DATA;
        self.reads.forget_data();
        // The loaded data holds the key-by-key changes: it is sent whole instead.
        self.edits.retain(|e| !matches!(e, Edit::Field(..)));
        self.data.get_mut().expect("loaded above")
    }

    /// Replaces the data.
    pub fn set_data(&mut self, data: Value) {
        self.data = OnceCell::from(data);
        self.reads.forget_data();
        self.edits.retain(|e| !matches!(e, Edit::Field(..)));
        self.changed |= changed::DATA;
    }

    /// Sets a top-level field of `data` (turning `data` into an object if it is not one). On a
    /// message read from the host whose data is not loaded, only this key goes back.
    pub fn set_field(&mut self, key: impl Into<String>, value: Value) {
        if self.handle.is_some() && self.data.get().is_none() {
            self.reads.forget_data();
            self.edits.push(Edit::Field(key.into(), Some(value)));
        } else {
            insert_field(self.data_mut(), key.into(), value);
        }
    }

    /// Removes a top-level field of `data`, returning it. Removing an absent key changes nothing.
    pub fn remove_field(&mut self, key: &str) -> Option<Value> {
        // Key by key while `data` is not loaded; a dotted key may name a nested field, which
        // only the loaded data can tell from a top-level one.
        if !key.contains('.') {
            let value = match self.data_key(key) {
                DataKey::Host(_) if !self.has_field(key) => return None,
                DataKey::Host(_) => Some(self.load_json(field::DATA_JSON, key).unwrap_or(Value::Null)),
                DataKey::Changed(value) => Some(value?.clone()),
                DataKey::Loaded => None,
            };
            if let Some(value) = value {
                self.reads.forget_data();
                self.edits.push(Edit::Field(key.to_string(), None));
                return Some(value);
            }
        }
        if !self.has_field(key) {
            return None;
        }
        self.data_mut().as_object_mut()?.remove(key)
    }

    /// Takes the data out of the message (leaving `{}`).
    pub fn take_data(&mut self) -> Value {
        std::mem::replace(self.data_mut(), empty_object())
    }

    /// The message as data, every part read.
    pub fn to_tb(&self) -> TbMsg {
        TbMsg {
            id: self.id().to_string(),
            ts: self.ts(),
            msg_type: self.msg_type().to_string(),
            originator: self.originator().clone(),
            metadata: self.metadata().clone(),
            data: self.data().clone(),
        }
    }

    /// The message as data, every part read, without copying the parts already held.
    pub fn into_tb(mut self) -> TbMsg {
        self.id();
        self.ts();
        self.msg_type();
        self.originator();
        self.metadata();
        self.data();
        TbMsg {
            id: self.id.take().unwrap_or_default(),
            ts: self.ts.take().unwrap_or_default(),
            msg_type: self.msg_type.take().unwrap_or_default(),
            originator: self.originator.take().unwrap_or_default(),
            metadata: self.metadata.take().unwrap_or_default(),
            data: self.data.take().unwrap_or_else(empty_object),
        }
    }

    fn load_text(&self, field: u32, key: &str) -> Option<String> {
        crate::abi::msg_str(self.handle?, field, key)
    }

    fn load_json<T: serde::de::DeserializeOwned>(&self, field: u32, key: &str) -> Option<T> {
        let text = self.load_text(field, key)?;
        serde_json::from_str(&text).ok()
    }
}

impl From<TbMsg> for Msg {
    fn from(m: TbMsg) -> Self {
        Msg {
            handle: None,
            id: OnceCell::from(m.id),
            ts: OnceCell::from(m.ts),
            msg_type: OnceCell::from(m.msg_type),
            originator: OnceCell::from(m.originator),
            metadata: OnceCell::from(m.metadata),
            data: OnceCell::from(m.data),
            reads: Reads::default(),
            edits: Vec::new(),
            changed: 0,
        }
    }
}

impl From<Msg> for TbMsg {
    fn from(m: Msg) -> Self {
        m.into_tb()
    }
}

/// A clone owns every part (it reads the rest first), so it can be kept after the call.
impl Clone for Msg {
    fn clone(&self) -> Self {
        Msg::from(self.to_tb())
    }
}

impl PartialEq for Msg {
    fn eq(&self, other: &Self) -> bool {
        self.to_tb() == other.to_tb()
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_tb().fmt(f)
    }
}

impl Serialize for Msg {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_tb().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Msg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TbMsg::deserialize(d).map(Msg::from)
    }
}

/// Where a value lives in a message, as rule configs name it: `originator` (its name), `type`,
/// `ts`, `metadata.<key>` or `data.<key>` (a dotted path reaches into nested objects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldPath {
    Originator,
    Type,
    Ts,
    Metadata(String),
    Data(String),
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<FieldPath, String> {
        match text {
            "originator" => Ok(FieldPath::Originator),
            "type" => Ok(FieldPath::Type),
            "ts" => Ok(FieldPath::Ts),
            _ => match text.split_once('.') {
                Some(("metadata", key)) if !key.is_empty() => Ok(FieldPath::Metadata(key.into())),
                Some(("data", key)) if !key.is_empty() => Ok(FieldPath::Data(key.into())),
                _ => Err(format!(
                    "`{text}` is not a field: use `originator`, `type`, `ts`, `metadata.<key>` or `data.<key>`"
                )),
            },
        }
    }

    /// The value as text (numbers and booleans rendered; objects and null are not text).
    pub fn text<'m>(&self, msg: &'m Msg) -> Option<Cow<'m, str>> {
        match self {
            FieldPath::Originator => Some(msg.originator_name()),
            FieldPath::Type => Some(Cow::Borrowed(msg.msg_type())),
            FieldPath::Ts => Some(Cow::Owned(msg.ts().to_string())),
            FieldPath::Metadata(k) => msg.meta(k).map(Cow::Borrowed),
            FieldPath::Data(k) => msg.text(k),
        }
    }

    /// The value as a number (numeric strings count).
    pub fn number(&self, msg: &Msg) -> Option<f64> {
        match self {
            FieldPath::Ts => Some(msg.ts() as f64),
            FieldPath::Data(k) => msg.number(k),
            FieldPath::Metadata(k) => msg.meta(k)?.trim().parse().ok(),
            other => other.text(msg)?.trim().parse().ok(),
        }
    }

    /// The value as JSON.
    pub fn value(&self, msg: &Msg) -> Option<Value> {
        match self {
            FieldPath::Data(k) => msg.field(k).cloned(),
            FieldPath::Ts => Some(Value::from(msg.ts())),
            other => other.text(msg).map(|t| Value::String(t.into_owned())),
        }
    }

    /// The key's last part, to name it in an output (`data.panel` → `panel`).
    pub fn name(&self) -> &str {
        match self {
            FieldPath::Originator => "originator",
            FieldPath::Type => "type",
            FieldPath::Ts => "ts",
            FieldPath::Metadata(k) | FieldPath::Data(k) => k,
        }
    }
}

impl<'de> Deserialize<'de> for FieldPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        FieldPath::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for FieldPath {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FieldPath".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "`originator`, `type`, `ts`, `metadata.<key>` or `data.<key>`",
            "pattern": "^(originator|type|ts|metadata\\..+|data\\..+)$"
        })
    }
}

/// The id of the `n`-th output of a node handling the message `parent`, when the node created a
/// message without an id: deterministic, so a replay produces the same ids and duplicates can be
/// recognised downstream. The engine gives it (the SDK leaves a new message's id empty).
pub fn derived_id(parent: &str, n: usize) -> String {
    format!("{parent}:{n}")
}

/// Reads a JSON value as a number, accepting numeric strings such as `"33.5"`.
pub fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_thingsboard_json() {
        let text = r#"{"id":"a","ts":5,"type":"POST_TELEMETRY_REQUEST","originator":{"entityType":"DEVICE","name":"D"},"metadata":{"deviceType":"T"},"data":{"x":1}}"#;
        let msg: Msg = serde_json::from_str(text).unwrap();
        assert_eq!(msg.meta("deviceType"), Some("T"));
        assert_eq!(serde_json::to_string(&msg).unwrap(), text);
        let tb: TbMsg = serde_json::from_str(text).unwrap();
        assert_eq!(msg.to_tb(), tb);
    }

    #[test]
    fn numbers_sent_as_strings_read_as_numbers() {
        let msg = Msg::telemetry("D", json!({"windSpeed": "33", "t": 21.5, "bad": "x"}));
        assert_eq!(msg.number("windSpeed"), Some(33.0));
        assert_eq!(msg.number("t"), Some(21.5));
        assert_eq!(msg.number("bad"), None);
        assert_eq!(msg.number("missing"), None);
    }

    #[test]
    fn data_keys_are_top_level_first_then_dotted_paths() {
        let data = json!({"a.b": 1, "a": {"b": 2, "c": 3}});
        assert_eq!(data_path(&data, "a.b"), Some(&json!(1)));
        assert_eq!(data_path(&data, "a.c"), Some(&json!(3)));
        assert_eq!(data_path(&data, "a.d"), None);
        assert_eq!(value_text(&json!(2.5)).as_deref(), Some("2.5"));
        assert_eq!(value_text(&json!(null)), None);
    }

    #[test]
    fn changes_are_tracked_and_reads_follow_them() {
        let mut msg = Msg::telemetry("D", json!({"t": 1})).with_meta("k", "v");
        assert_eq!(msg.changes().1, changed::METADATA);
        msg.set_field("u", json!(2));
        msg.remove_meta("k");
        assert_eq!(msg.meta("k"), None);
        assert_eq!(msg.number("u"), Some(2.0));
        assert_eq!(msg.changes().1, changed::METADATA | changed::DATA);
        let copy = msg.clone();
        assert_eq!(copy, msg);
        assert_eq!(copy.changes(), (None, 0));
    }

    /// Telemetry values cross the engine unchanged: serde_json's default float parser can be one
    /// ulp off (11.399999999999999 read as 11.4); the SDK turns on `float_roundtrip`.
    #[test]
    fn floats_round_trip_exactly() {
        for x in [11.399999999999999f64, 0.40000000000000036, 1e-300, 123456.78901234567] {
            let text = serde_json::to_string(&json!({ "v": x })).unwrap();
            let back: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back["v"].as_f64(), Some(x), "{text}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let text = r#"{"type":"X","originator":{"entityType":"DEVICE","name":"D"},"colour":1}"#;
        let err = serde_json::from_str::<Msg>(text).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
    }
}

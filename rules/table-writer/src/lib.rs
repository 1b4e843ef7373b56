//! Table writer: keeps a host table up to date from a stream — e.g. a device registry whose
//! messages `{"deviceId": "door-7", "location": {"site": "HQ", "region": "north"}}` become the
//! entry `door-7` of the table `devices`, which `originator-attributes` (or any node calling
//! `table::get`) then reads to enrich events. Tables are shared by name by every node of the
//! chain, on every worker, and checkpointed with the rest of the state.
//!
//! Each message is forwarded unchanged on `Success` once written, so a registry stream can go on
//! to be logged or stored. A message without its key (absent, null, empty, or an object) goes to
//! `Failure` and writes nothing.
//!
//! Config:
//! ```json
//! {"table": "devices", "key": "data.deviceId", "fields": ["location.region", "location.site"],
//!  "merge": true, "delete": {"field": "data.op", "equals": "delete"}}
//! ```
//! - `table` (required, non-empty): the table's name.
//! - `key` (default `"originator"`, the originator's name): where the entry's key is read —
//!   `originator`, `type`, `ts`, `metadata.<k>` or `data.<k>` (a dotted `data.a.b` reaches into
//!   objects; a number or boolean is used as its text).
//! - `fields` (default: absent = the whole `data`, whatever JSON it is): paths into `data` to
//!   store, each a key or a dotted path (`location.region`; a key that itself contains the dots
//!   wins). A field keeps its shape: `location.region` is stored as `{"location": {"region": …}}`,
//!   so readers find it under the same path. Fields the message lacks are left out (with `merge`,
//!   the stored value stays); a `null` is stored as `null`.
//! - `merge` (default `false`): merge into the existing entry instead of replacing it — objects
//!   are merged key by key, recursively; any other value (and a non-object entry) is replaced.
//! - `delete` (default none): `{"field": <path as for key>, "equals": "<text>"}` — when the
//!   field's text equals `equals`, the entry is removed instead of written.
//! - `series` (default none): also append the message's telemetry to the host's telemetry
//!   history of that name (`timeseries` for ThingsBoard's save-timeseries), which
//!   `get-telemetry` queries. The points are those ThingsBoard's `TbMsgTimeseriesNode.onMsg`
//!   saves (`JsonConverter.convertToTelemetry`): every non-null field of a data object at the
//!   message's metadata `ts` (`TbMsg.getMetaDataTs`, else the message `ts`), the fields of
//!   `{"ts": …, "values": {…}}` at its own `ts`, or a list of either; typed as ThingsBoard types
//!   them (integral → long, `1.5` → double, `"22.5"` → double, booleans, strings, JSON). They
//!   belong to the originator (`DEVICE/name`), whatever `key` is. Data that is no telemetry (not
//!   an object or a list of objects, or no value in it) adds no point, and the message is stored
//!   and routed as without `series` — ThingsBoard's node would send it to `Failure` ("Msg body is
//!   empty"), but the table write decides the route here, so that adding the history to a chain
//!   changes no message's route (a REST answer `{}` saved after a call still goes on). Without
//!   `series` the node never calls the history at all.
use sluice_sdk::prelude::*;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub table: String,
    #[serde(default = "originator")]
    pub key: FieldPath,
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    #[serde(default)]
    pub merge: bool,
    #[serde(default)]
    pub delete: Option<DeleteWhen>,
    #[serde(default)]
    pub series: Option<String>,
}

/// When a message removes its entry instead of writing it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeleteWhen {
    pub field: FieldPath,
    pub equals: String,
}

fn originator() -> FieldPath {
    FieldPath::Originator
}

pub struct TableWriter {
    cfg: Config,
}

/// Keeps a host table up to date from a stream.
#[node(relations = ["Success"])]
impl Node for TableWriter {
    type Config = Config;

    fn init(cfg: Config) -> Result<Self> {
        if cfg.table.trim().is_empty() {
            bail_config!("table", "must name a table");
        }
        if let Some(fields) = &cfg.fields {
            if fields.is_empty() {
                bail_config!("fields", "list at least one field, or leave it out to store the whole data");
            }
            for (i, field) in fields.iter().enumerate() {
                if field.is_empty() || field.split('.').any(str::is_empty) {
                    bail_config!(
                        format!("fields[{i}]"),
                        "`{field}` is not a key or a dotted path like `location.region`"
                    );
                }
            }
        }
        if cfg.series.as_ref().is_some_and(|s| s.trim().is_empty()) {
            bail_config!("series", "must name a series, or be left out");
        }
        Ok(TableWriter { cfg })
    }

    fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
        let key = match self.cfg.key.text(&msg) {
            Some(k) if !k.is_empty() => k,
            _ => bail!("no table key: the message has no `{}`", path_name(&self.cfg.key)),
        };
        let deleting = self.cfg.delete.as_ref().is_some_and(|d| d.field.text(&msg).as_deref() == Some(&d.equals));
        if let Some(name) = self.cfg.series.as_ref().filter(|_| !deleting) {
            match series::telemetry_points(msg.data(), series::metadata_ts(&msg)) {
                Ok(points) => series::append(name, &series::entity_of(msg.originator()), &points)?,
                Err(e) => log::debug(&format!("no telemetry history point: {e}")),
            }
        }
        if deleting {
            table::delete(&self.cfg.table, &key);
        } else {
            let picked = match &self.cfg.fields {
                None => msg.data().clone(),
                Some(fields) => pick(&msg, fields),
            };
            let value = match (self.cfg.merge, table::get::<Value>(&self.cfg.table, &key)?) {
                (true, Some(mut stored)) => {
                    merge(&mut stored, picked);
                    stored
                }
                _ => picked,
            };
            table::put(&self.cfg.table, &key, &value)?;
        }
        out.forward(relation::SUCCESS);
        Ok(())
    }
}

/// The config's spelling of a path, for error messages.
fn path_name(path: &FieldPath) -> String {
    match path {
        FieldPath::Metadata(k) => format!("metadata.{k}"),
        FieldPath::Data(k) => format!("data.{k}"),
        other => other.name().to_string(),
    }
}

/// The text at `path`; a `data.` path reaches into objects along its dots.
/// Whether a path was found as one key (`"a.b": …`) or through nested objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Key,
    Nested,
}

/// `path` inside `value`: the key itself first, then the dotted path through objects.
fn lookup<'a>(value: &'a Value, path: &str) -> Option<(Found, &'a Value)> {
    if let Some(v) = value.as_object().and_then(|o| o.get(path)) {
        return Some((Found::Key, v));
    }
    if !path.contains('.') {
        return None;
    }
    path.split('.').try_fold(value, |v, k| v.as_object()?.get(k)).map(|v| (Found::Nested, v))
}

/// The listed fields of `data`, each in the shape it was found in.
fn pick(msg: &Msg, fields: &[String]) -> Value {
    let mut picked = Value::Object(Default::default());
    for field in fields {
        // A plain key is read alone; a dotted path needs the whole data, to tell a key that
        // contains the dots from a path into objects.
        let found = match field.contains('.') {
            false => msg.field(field).map(|v| (Found::Key, v)),
            true => lookup(msg.data(), field),
        };
        let Some((found, value)) = found else { continue };
        let mut shaped = value.clone();
        if found == Found::Nested {
            for part in field.rsplit('.') {
                shaped = json!({ part: shaped });
            }
        } else {
            shaped = json!({ field.as_str(): shaped });
        }
        merge(&mut picked, shaped);
    }
    picked
}

/// Merges `patch` into `target`: objects key by key, recursively; anything else replaces.
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        t.insert(k, v);
                    }
                }
            }
        }
        (target, patch) => *target = patch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    /// Writes with `config`, then reads the table back through a node on the same host.
    struct Probe {
        writer: TableWriter,
    }

    /// `READ` messages answer with the entry of `data.key` of table `data.table` (or `null`);
    /// everything else goes to the table writer.
    impl Node for Probe {
        type Config = Config;
        fn init(cfg: Config) -> Result<Self> {
            Ok(Probe { writer: TableWriter::init(cfg)? })
        }
        fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
            if msg.msg_type() == "READ" {
                let (t, k) = (msg.data()["table"].as_str().unwrap_or(""), msg.data()["key"].as_str().unwrap_or(""));
                let entry = table::get::<Value>(t, k)?.unwrap_or(Value::Null);
                out.emit("Read", Msg::new("ENTRY", Originator::device(k), entry));
                return Ok(());
            }
            self.writer.on_msg(msg, out)
        }
    }

    fn driver(config: &str) -> TestDriver {
        TestDriver::node_from_json::<Probe>(config).unwrap()
    }

    fn read(d: &mut TestDriver, table: &str, key: &str) -> Value {
        let out = d.send(Msg::new("READ", Originator::device("probe"), json!({"table": table, "key": key}))).unwrap();
        out.single().expect("one answer").1.data().clone()
    }

    fn registry(data: Value) -> Msg {
        Msg::new("REGISTER", Originator::device("registry"), data).with_id("r1").with_ts(5)
    }

    const REGISTRY: &str = r#"{"table": "devices", "key": "data.deviceId"}"#;

    #[test]
    fn stores_the_whole_data_under_the_key_and_forwards_unchanged() -> Result<()> {
        let mut d = driver(REGISTRY);
        let msg = registry(json!({"deviceId": "door-7", "location": {"site": "HQ", "region": "north"}}));
        let out = d.send(msg.clone())?;
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(out.messages(), [&msg]);
        assert_eq!(
            read(&mut d, "devices", "door-7"),
            json!({"deviceId": "door-7", "location": {"site": "HQ", "region": "north"}})
        );
        // Without merge a second registration replaces the entry.
        d.send(registry(json!({"deviceId": "door-7", "floor": 2})))?;
        assert_eq!(read(&mut d, "devices", "door-7"), json!({"deviceId": "door-7", "floor": 2}));
        // Another table of the same name space is untouched.
        assert_eq!(read(&mut d, "other", "door-7"), Value::Null);
        Ok(())
    }

    #[test]
    fn default_key_is_the_originator_name() -> Result<()> {
        let mut d = driver(r#"{"table": "latest"}"#);
        d.send(Msg::telemetry("WS-1", json!({"windSpeed": "33"})))?;
        assert_eq!(read(&mut d, "latest", "WS-1"), json!({"windSpeed": "33"}));
        // Data that is not an object is stored as it is.
        d.send(Msg::telemetry("WS-2", json!(12.5)))?;
        assert_eq!(read(&mut d, "latest", "WS-2"), json!(12.5));
        Ok(())
    }

    #[test]
    fn numeric_and_nested_keys_are_used_as_text() -> Result<()> {
        let mut d = driver(r#"{"table": "t", "key": "data.id"}"#);
        d.send(registry(json!({"id": 42, "v": 1})))?;
        assert_eq!(read(&mut d, "t", "42"), json!({"id": 42, "v": 1}));
        let mut d = driver(r#"{"table": "t", "key": "data.device.serial"}"#);
        d.send(registry(json!({"device": {"serial": "S-9"}, "v": 2})))?;
        assert_eq!(read(&mut d, "t", "S-9"), json!({"device": {"serial": "S-9"}, "v": 2}));
        let mut d = driver(r#"{"table": "t", "key": "metadata.deviceName"}"#);
        d.send(registry(json!({"v": 3})).with_meta("deviceName", "m-1"))?;
        assert_eq!(read(&mut d, "t", "m-1"), json!({"v": 3}));
        Ok(())
    }

    #[test]
    fn fields_keep_their_shape_and_missing_ones_are_left_out() -> Result<()> {
        let mut d = driver(
            r#"{"table": "devices", "key": "data.deviceId", "fields": ["location.region", "model", "missing", "a.b"]}"#,
        );
        let msg = registry(json!({"deviceId": "door-7", "location": {"site": "HQ", "region": "north"},
                                  "model": null, "a.b": 1, "extra": true}));
        assert_eq!(d.send(msg)?.relations(), ["Success"]);
        assert_eq!(
            read(&mut d, "devices", "door-7"),
            json!({"location": {"region": "north"}, "model": null, "a.b": 1})
        );
        Ok(())
    }

    #[test]
    fn merge_updates_the_entry_key_by_key() -> Result<()> {
        let mut d = driver(r#"{"table": "devices", "key": "data.deviceId", "merge": true}"#);
        d.send(registry(json!({"deviceId": "door-7", "location": {"site": "HQ", "region": "north"}, "tags": [1]})))?;
        d.send(registry(json!({"deviceId": "door-7", "location": {"region": "south"}, "tags": [2], "floor": 3})))?;
        assert_eq!(
            read(&mut d, "devices", "door-7"),
            json!({"deviceId": "door-7", "location": {"site": "HQ", "region": "south"}, "tags": [2], "floor": 3})
        );
        // An object over a non-object replaces it.
        d.send(registry(json!({"deviceId": "door-7", "floor": {"n": 3}})))?;
        assert_eq!(read(&mut d, "devices", "door-7")["floor"], json!({"n": 3}));
        // A merge into nothing stores the fields.
        d.send(registry(json!({"deviceId": "door-8", "x": 1})))?;
        assert_eq!(read(&mut d, "devices", "door-8"), json!({"deviceId": "door-8", "x": 1}));
        Ok(())
    }

    #[test]
    fn merge_with_fields_keeps_what_the_message_lacks() -> Result<()> {
        let mut d = driver(r#"{"table": "d", "key": "data.id", "fields": ["region", "site"], "merge": true}"#);
        d.send(registry(json!({"id": "x", "region": "north", "site": "HQ"})))?;
        d.send(registry(json!({"id": "x", "site": "Annex"})))?;
        assert_eq!(read(&mut d, "d", "x"), json!({"region": "north", "site": "Annex"}));
        Ok(())
    }

    #[test]
    fn delete_removes_the_entry() -> Result<()> {
        let mut d = driver(r#"{"table": "d", "key": "data.id", "delete": {"field": "data.op", "equals": "delete"}}"#);
        d.send(registry(json!({"id": "x", "v": 1})))?;
        d.send(registry(json!({"id": "y", "v": 2})))?;
        let out = d.send(registry(json!({"id": "x", "op": "delete"})))?;
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(read(&mut d, "d", "x"), Value::Null);
        assert_eq!(read(&mut d, "d", "y"), json!({"id": "y", "v": 2}));
        // Another op value is a plain write; deleting an absent entry is fine.
        d.send(registry(json!({"id": "y", "op": "update"})))?;
        assert_eq!(read(&mut d, "d", "y"), json!({"id": "y", "op": "update"}));
        assert_eq!(d.send(registry(json!({"id": "nobody", "op": "delete"})))?.relations(), ["Success"]);
        Ok(())
    }

    #[test]
    fn a_message_without_its_key_fails_and_writes_nothing() -> Result<()> {
        let mut d = driver(REGISTRY);
        for data in [json!({"x": 1}), json!({"deviceId": null}), json!({"deviceId": ""}), json!({"deviceId": {"a": 1}})]
        {
            let msg = registry(data.clone());
            let out = d.send(msg.clone())?;
            assert_eq!(out.relations(), ["Failure"], "{data}");
            let error = out.messages()[0].meta("error").unwrap_or_default().to_string();
            assert!(error.contains("data.deviceId"), "{error}");
        }
        assert_eq!(read(&mut d, "devices", ""), Value::Null);
        Ok(())
    }

    /// `TbMsgTimeseriesNode.onMsg` → `JsonConverter.convertToTelemetry`: each field at the
    /// metadata ts (`getMetaDataTs`), `{"ts", "values"}` at its own ts, lists of both.
    #[test]
    fn series_appends_the_telemetry_thingsboard_saves() -> Result<()> {
        use sluice_sdk::series::{KvValue, Point};
        let mut d = driver(r#"{"table": "timeseries", "merge": true, "series": "timeseries"}"#);
        let msg = Msg::telemetry("th-1", json!({"temperature": 21.5, "count": 3, "label": "on", "gone": null}))
            .with_ts(1_000);
        assert_eq!(d.send(msg)?.relations(), ["Success"]);
        // The table is written as before.
        assert_eq!(read(&mut d, "timeseries", "th-1")["label"], json!("on"));
        let msg = Msg::telemetry("th-1", json!({"temperature": "22"})).with_ts(2_000).with_meta("ts", "1500");
        d.send(msg)?;
        let list = json!([{"ts": 3_000, "values": {"temperature": 23.0}}, {"count": 4}]);
        d.send(Msg::telemetry("th-1", list).with_ts(2_500))?;
        assert_eq!(
            d.series("timeseries", "DEVICE/th-1", "temperature"),
            [
                Point { ts: 1_000, value: KvValue::Double(21.5) },
                Point { ts: 1_500, value: KvValue::Long(22) },
                Point { ts: 3_000, value: KvValue::Double(23.0) },
            ]
        );
        assert_eq!(
            d.series("timeseries", "DEVICE/th-1", "count"),
            [Point { ts: 1_000, value: KvValue::Long(3) }, Point { ts: 2_500, value: KvValue::Long(4) }]
        );
        assert!(d.series("timeseries", "DEVICE/th-1", "gone").is_empty(), "null is not saved");
        Ok(())
    }

    #[test]
    fn what_is_not_telemetry_adds_no_point_and_keeps_its_route() -> Result<()> {
        let mut d = driver(r#"{"table": "timeseries", "series": "timeseries"}"#);
        for data in [json!(5), json!({}), json!([1]), json!({"ts": 1, "values": 2})] {
            let out = d.send(Msg::telemetry("th-1", data.clone()))?;
            assert_eq!(out.relations(), ["Success"], "{data}");
            assert_eq!(read(&mut d, "timeseries", "th-1"), data, "the table is written as without `series`");
        }
        assert!(d.series("timeseries", "DEVICE/th-1", "ts").is_empty());
        assert!(d.series("timeseries", "DEVICE/th-1", "values").is_empty());
        // Without `series`, nothing is appended.
        let mut d = driver(r#"{"table": "timeseries"}"#);
        d.send(Msg::telemetry("th-1", json!({"t": 1})))?;
        assert!(d.series("timeseries", "DEVICE/th-1", "t").is_empty());
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        let error = |text: &str| TestDriver::node_from_json::<TableWriter>(text).err().expect(text);
        assert_eq!(error("{}").field, "table");
        assert_eq!(error(r#"{"table": "t", "key": "payload.id"}"#).field, "key");
        assert_eq!(error(r#"{"table": "t", "fields": "region"}"#).field, "fields");
        assert_eq!(error(r#"{"table": "t", "merge": "yes"}"#).field, "merge");
        assert_eq!(error(r#"{"table": "t", "delete": {"field": "data.op"}}"#).field, "delete.equals");
        assert_eq!(error(r#"{"table": "t", "colour": 1}"#).field, "colour");
        assert!(error(r#"{"table": " "}"#).message.contains("`table`"));
        assert!(error(r#"{"table": "t", "series": ""}"#).message.contains("`series`"));
        assert!(error(r#"{"table": "t", "fields": []}"#).message.contains("`fields`"));
        assert!(error(r#"{"table": "t", "fields": ["a", "b..c"]}"#).message.contains("`fields[1]`"));
    }
}

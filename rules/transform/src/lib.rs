//! Transform: applies a list of field operations to each message, in order, and sends the result
//! on `Success`. A missing source field sends the message to `Failure` naming the field (or is
//! skipped with `ignoreMissing`); so does a failed `compute`.
//!
//! Config:
//! ```json
//! {"ops": [
//!    {"rename": {"from": "data.t", "to": "data.temperature"}},
//!    {"copy": {"from": "metadata.deviceType", "to": "data.deviceType"}},
//!    {"delete": "metadata.x"},
//!    {"set": {"to": "data.unit", "value": "C"}},
//!    {"compute": {"to": "data.tempF", "expression": "double(msg.temperature) * 9.0 / 5.0 + 32.0"}},
//!    {"msgType": "NEW_TYPE"}
//!  ],
//!  "ignoreMissing": false}
//! ```
//! - `ops` (required, at least one): each op is an object with one key:
//!   - `rename` `{from, to}`: moves a field (the source must exist);
//!   - `copy` `{from, to}`: copies a field (the source must exist);
//!   - `delete` `"path"`: removes a field; removing one that is not there is not an error;
//!   - `set` `{to, value}`: writes a constant (any JSON);
//!   - `compute` `{to, expression}`: writes the value of a CEL expression — the same language,
//!     variables (`msg` is the data as the earlier ops left it, `metadata`, `msgType`,
//!     `originator`, `ts`) and rules as `expression-filter`, compiled when the node starts;
//!   - `msgType` `"TYPE"`: sets the message type.
//!
//!   Paths are `data.<key>` or `metadata.<key>` (top-level keys). Metadata holds strings: a value
//!   written there that is not a string is stored as its JSON text (`21.5` → `"21.5"`,
//!   `true` → `"true"`); a value read from there is a string (`"33"` stays `"33"`: convert in a
//!   `compute` with `double(…)`). Writing to `data.<key>` when `data` is not an object fails.
//! - `ignoreMissing` (default `false`): skip a `rename`/`copy` whose source is missing instead of
//!   failing.
use serde::de::Error as _;
use sluice_expression::Expression;
use sluice_sdk::prelude::*;

/// Where a field lives: `data.<key>` or `metadata.<key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Data(String),
    Metadata(String),
}

impl<'de> Deserialize<'de> for Place {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.split_once('.') {
            Some(("data", key)) if !key.is_empty() => Ok(Place::Data(key.into())),
            Some(("metadata", key)) if !key.is_empty() => Ok(Place::Metadata(key.into())),
            _ => Err(D::Error::custom(format!("`{text}` is not a field: use `data.<key>` or `metadata.<key>`"))),
        }
    }
}

impl JsonSchema for Place {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Place".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^(data|metadata)\\..+$", "description": "`data.<key>` or `metadata.<key>`"})
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Data(k) => write!(f, "data.{k}"),
            Place::Metadata(k) => write!(f, "metadata.{k}"),
        }
    }
}

impl Place {
    fn get(&self, msg: &Msg) -> Option<Value> {
        match self {
            // A top-level key, read alone (`field` would also follow a dotted path).
            Place::Data(k) if !k.contains('.') => msg.field(k).cloned(),
            Place::Data(k) => msg.data().get(k).cloned(),
            Place::Metadata(k) => msg.meta(k).map(|v| Value::String(v.to_string())),
        }
    }

    fn take(&self, msg: &mut Msg) -> Option<Value> {
        match self {
            // Only a field that is there is taken: a missing one leaves `data` unchanged.
            Place::Data(k) if !k.contains('.') && !msg.has_field(k) => None,
            Place::Data(k) => msg.remove_field(k),
            Place::Metadata(k) => {
                msg.meta(k)?;
                msg.remove_meta(k).map(Value::String)
            }
        }
    }

    fn put(&self, msg: &mut Msg, value: Value) -> Result<()> {
        match self {
            Place::Data(k) => match msg.data_mut().as_object_mut() {
                Some(fields) => {
                    fields.insert(k.clone(), value);
                }
                None => bail!("cannot write `{self}`: data is not an object"),
            },
            Place::Metadata(k) => {
                let text = match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                msg.set_meta(k.clone(), text);
            }
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Move {
    pub from: Place,
    pub to: Place,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Set {
    pub to: Place,
    pub value: Value,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Compute {
    pub to: Place,
    /// Compiled as the config is read.
    pub expression: Expression,
}

/// A message type to set (not empty).
#[derive(Debug)]
pub struct MsgType(pub String);

impl<'de> Deserialize<'de> for MsgType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Err(D::Error::custom("the message type must not be empty"));
        }
        Ok(MsgType(text))
    }
}

impl JsonSchema for MsgType {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MsgType".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "minLength": 1, "description": "a message type (not empty)"})
    }
}

/// One operation; in JSON an object with one key.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum Op {
    Rename(Move),
    Copy(Move),
    Delete(Place),
    Set(Set),
    Compute(Compute),
    MsgType(MsgType),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(deserialize_with = "at_least_one")]
    pub ops: Vec<Op>,
    #[serde(default)]
    pub ignore_missing: bool,
}

fn at_least_one<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<Op>, D::Error> {
    let ops = Vec::<Op>::deserialize(d)?;
    if ops.is_empty() {
        return Err(D::Error::custom("list at least one op"));
    }
    Ok(ops)
}

/// Applies rename, copy, delete, set, compute and msgType ops to the message, in order.
#[transform]
pub fn transform(mut msg: Msg, cfg: &Config) -> Result<Msg> {
    for op in &cfg.ops {
        match op {
            Op::Rename(Move { from, to }) | Op::Copy(Move { from, to }) => {
                let value = if matches!(op, Op::Rename(_)) { from.take(&mut msg) } else { from.get(&msg) };
                match value {
                    Some(v) => to.put(&mut msg, v)?,
                    None if cfg.ignore_missing => {}
                    None => bail!("field `{from}` is missing"),
                }
            }
            Op::Delete(place) => {
                place.take(&mut msg);
            }
            Op::Set(Set { to, value }) => to.put(&mut msg, value.clone())?,
            Op::Compute(Compute { to, expression }) => {
                let value = expression.eval_json(&msg).map_err(|e| Error::new(format!("computing `{to}`: {e}")))?;
                to.put(&mut msg, value)?;
            }
            Op::MsgType(MsgType(t)) => msg.set_msg_type(t.clone()),
        }
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    /// What `#[transform]` generates for the wasm build: the config parsed as at load.
    struct AsLoaded(Config);

    impl Node for AsLoaded {
        type Config = Config;
        fn init(config: Config) -> Result<Self> {
            Ok(AsLoaded(config))
        }
        fn on_msg(&mut self, msg: Msg, out: &mut Outputs) -> Result<()> {
            sluice_sdk::node::transform_outputs(transform(msg, &self.0)?, out);
            Ok(())
        }
    }

    fn loaded(config: Value) -> TestDriver {
        TestDriver::node_from_json::<AsLoaded>(&config.to_string()).unwrap()
    }

    fn error_of(config: Value) -> sluice_sdk::config::ConfigError {
        TestDriver::node_from_json::<AsLoaded>(&config.to_string()).err().unwrap()
    }

    /// The config of the module docs.
    fn doc_config() -> Value {
        json!({"ops": [
            {"rename": {"from": "data.t", "to": "data.temperature"}},
            {"copy": {"from": "metadata.deviceType", "to": "data.deviceType"}},
            {"delete": "metadata.x"},
            {"set": {"to": "data.unit", "value": "C"}},
            {"compute": {"to": "data.tempF", "expression": "double(msg.temperature) * 9.0 / 5.0 + 32.0"}},
            {"msgType": "NEW_TYPE"}
        ]})
    }

    #[test]
    fn the_documented_pipeline() -> Result<()> {
        let msg = Msg::telemetry("T-1", json!({"t": "25", "h": 40}))
            .with_meta("deviceType", "Thermometer")
            .with_meta("x", "drop me")
            .with_id("m1")
            .with_ts(9);
        let out = loaded(doc_config()).send(msg)?;
        assert_eq!(out.relations(), ["Success"]);
        // 25 °C = 77 °F.
        let expected = Msg::new(
            "NEW_TYPE",
            Originator::device("T-1"),
            json!({"h": 40, "temperature": "25", "deviceType": "Thermometer", "unit": "C", "tempF": 77.0}),
        )
        .with_meta("deviceType", "Thermometer")
        .with_id("m1")
        .with_ts(9);
        assert_eq!(out.messages(), [&expected]);
        // A number sent as a number computes the same.
        let out = loaded(doc_config()).send(Msg::telemetry("T-1", json!({"t": 100})).with_meta("deviceType", "T"))?;
        assert_eq!(out.messages()[0].data()["tempF"], json!(212.0));
        Ok(())
    }

    #[test]
    fn metadata_values_are_strings() -> Result<()> {
        let config = json!({"ops": [
            {"copy": {"from": "data.t", "to": "metadata.t"}},
            {"copy": {"from": "data.ok", "to": "metadata.ok"}},
            {"copy": {"from": "data.obj", "to": "metadata.obj"}},
            {"set": {"to": "metadata.n", "value": null}},
            {"compute": {"to": "metadata.double", "expression": "double(msg.t) * 2.0"}},
            {"rename": {"from": "metadata.src", "to": "data.src"}}
        ]});
        let msg = Msg::telemetry("D", json!({"t": 21.5, "ok": true, "obj": {"a": [1]}})).with_meta("src", "33");
        let out = loaded(config).send(msg)?;
        let m = out.messages()[0];
        assert_eq!(m.meta("t"), Some("21.5"));
        assert_eq!(m.meta("ok"), Some("true"));
        assert_eq!(m.meta("obj"), Some(r#"{"a":[1]}"#));
        assert_eq!(m.meta("n"), Some("null"));
        assert_eq!(m.meta("double"), Some("43.0"));
        assert_eq!(m.meta("src"), None);
        assert_eq!(m.data()["src"], json!("33"), "read from metadata: a string");
        Ok(())
    }

    #[test]
    fn ops_apply_in_order() -> Result<()> {
        // The compute sees the rename before it; the later set overwrites the compute.
        let config = json!({"ops": [
            {"rename": {"from": "data.a", "to": "data.b"}},
            {"compute": {"to": "data.c", "expression": "msg.b + 1"}},
            {"set": {"to": "data.b", "value": [1, 2]}},
            {"compute": {"to": "data.n", "expression": "size(msg.b)"}}
        ]});
        let out = loaded(config).send(Msg::telemetry("D", json!({"a": 1})))?;
        assert_eq!(out.messages()[0].data(), &json!({"b": [1, 2], "c": 2, "n": 2}));
        Ok(())
    }

    #[test]
    fn missing_sources_fail_or_are_skipped() -> Result<()> {
        let ops = json!([
            {"rename": {"from": "data.t", "to": "data.temperature"}},
            {"copy": {"from": "metadata.zone", "to": "data.zone"}},
            {"delete": "metadata.never"},
            {"set": {"to": "data.seen", "value": true}}
        ]);
        let msg = Msg::telemetry("D", json!({"h": 1}));
        let out = loaded(json!({ "ops": ops })).send(msg.clone())?;
        assert_eq!(out.relations(), ["Failure"]);
        assert_eq!(out.messages()[0].meta("error"), Some("field `data.t` is missing"));
        assert_eq!(out.messages()[0].data(), msg.data(), "the failed message is the incoming one");

        let out = loaded(json!({ "ops": ops, "ignoreMissing": true })).send(msg)?;
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(out.messages()[0].data(), &json!({"h": 1, "seen": true}));

        let out = loaded(json!({ "ops": ops })).send(Msg::telemetry("D", json!({"t": 1})))?;
        assert_eq!(out.messages()[0].meta("error"), Some("field `metadata.zone` is missing"));
        // A null value is present: it is moved as null.
        let out = loaded(json!({ "ops": [ops[0]] })).send(Msg::telemetry("D", json!({"t": null})))?;
        assert_eq!(out.messages()[0].data(), &json!({"temperature": null}));
        Ok(())
    }

    #[test]
    fn compute_errors_and_non_object_data_fail() -> Result<()> {
        let compute = json!({"ops": [{"compute": {"to": "data.f", "expression": "double(msg.t) + 1.0"}}]});
        let out = loaded(compute.clone()).send(Msg::telemetry("D", json!({"t": "warm"})))?;
        assert_eq!(out.relations(), ["Failure"]);
        let error = out.messages()[0].meta("error").unwrap();
        assert!(error.starts_with("computing `data.f`: expression failed:"), "{error}");
        let out = loaded(compute).send(Msg::telemetry("D", json!({})))?;
        assert!(out.messages()[0].meta("error").unwrap().contains("No such key: t"));

        let set = json!({"ops": [{"set": {"to": "data.f", "value": 1}}]});
        let out = loaded(set).send(Msg::telemetry("D", json!([1])))?;
        assert_eq!(out.messages()[0].meta("error"), Some("cannot write `data.f`: data is not an object"));
        // Deleting from non-object data, or to metadata, still works.
        let ok = json!({"ops": [{"delete": "data.x"}, {"set": {"to": "metadata.k", "value": 1}}]});
        let out = loaded(ok).send(Msg::telemetry("D", json!("text")))?;
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(out.messages()[0].meta("k"), Some("1"));
        Ok(())
    }

    #[test]
    fn bad_config_names_the_field() {
        assert_eq!(error_of(json!({})).field, "ops");
        assert_eq!(error_of(json!({"ops": []})).field, "ops");
        assert_eq!(error_of(json!({"ops": [{"rename": {"from": "t", "to": "data.t"}}]})).field, "ops[0].rename.from");
        assert_eq!(error_of(json!({"ops": [{"delete": "ts"}]})).field, "ops[0].delete");
        assert_eq!(error_of(json!({"ops": [{"set": {"to": "data.a"}}]})).field, "ops[0].set.value");
        let err =
            error_of(json!({"ops": [{"delete": "data.a"}, {"compute": {"to": "data.a", "expression": "msg.x +"}}]}));
        assert_eq!(err.field, "ops[1].compute.expression");
        assert!(err.message.contains("Syntax error"), "{err}");
        assert_eq!(error_of(json!({"ops": [{"msgType": ""}]})).field, "ops[0].msgType");
        assert_eq!(error_of(json!({"ops": [{"uppercase": "data.a"}]})).field, "ops[0]");
        assert_eq!(error_of(json!({"ops": [{"delete": "data.a"}], "ignore_missing": true})).field, "ignore_missing");
    }
}

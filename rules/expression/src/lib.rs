//! The expression language of the `expression-filter` and `transform` nodes: Google's
//! [Common Expression Language](https://github.com/google/cel-spec) (CEL), evaluated by the
//! `cel` crate (cel-rust) compiled into the module.
//!
//! An expression sees five variables:
//! - `msg`: the message's `data` (usually an object: `msg.windSpeed`),
//! - `metadata`: the metadata, a map of strings (`metadata.deviceType`),
//! - `msgType`: the message type (`msgType == 'POST_TELEMETRY_REQUEST'`),
//! - `originator`: `{entityType, name}` (and `id` when the message has one),
//! - `ts`: the event time, an int of milliseconds since the epoch.
//!
//! e.g. `metadata.deviceType == 'WeatherStation' && has(metadata.cs_geoZone) && has(msg.windSpeed)`.
//!
//! **Numbers.** JSON integers are CEL `int`s (`uint` above `i64::MAX`), other numbers `double`s;
//! comparisons across `int`, `uint` and `double` work as numbers (`msg.t > 20.0` for `"t": 21`).
//! Arithmetic does not mix them (`int * double` is an error, as CEL specifies), and a number sent
//! as a string (`"windSpeed": "33"`, as many devices do) is a string. When you mean a number, say
//! so with CEL's conversion `double(x)`, which takes an int, a uint, a double or a numeric string:
//! `double(msg.windSpeed) > 20.0` holds for both `"33"` and `33`, and
//! `double(msg.temperature) * 9.0 / 5.0 + 32.0` converts whatever the device sent. (So no extra
//! function is registered: the standard one already does int → double and string → double.)
//!
//! **What is in, what is out.** The standard operators, `has()`, `size`, `contains`, `startsWith`,
//! `endsWith`, `in`, `? :`, list/map literals, `all`/`exists`/`exists_one`/`map`/`filter`, and the
//! conversions `int`, `uint`, `double`, `string`. Left out to keep the module small: `matches`
//! (regular expressions) and timestamps/durations (`ts` is a plain int). Message construction
//! (`Type{field: …}`) is refused at compile time, and so is a variable other than the five above.
//!
//! **Errors.** A syntax error is reported with the parser's message (line, column, a caret under the
//! spot) when the node starts. Evaluating can fail — a missing key (`msg.windSpeed` on a message
//! without it: test with `has(msg.windSpeed)` first), a type mismatch, a string that is not a
//! number — and the node then sends the message to `Failure` with the error text.
//!
//! **Why CEL, and the `cel` crate.** CEL is a maintained, specified language (Kubernetes, Envoy,
//! Google Cloud IAM use it) that ThingsBoard users read at a glance, with `has()` for "the key is
//! there", which the wind-zones filter needs. Compared (release, LTO, wasm32-unknown-unknown, all
//! three without imports):
//! - `cel-interpreter` 0.10: module ~1.1 MB. Its parser *panics* on common syntax errors
//!   (`msg.windSpeed >`, `a &&`, `'unterminated`, an empty expression): in a module with
//!   `panic = "abort"` a typo would trap at load instead of reporting where it is. It is also no
//!   longer released: the project (cel-rust) goes on as the crate `cel`.
//! - `cel` 0.15 (this one): module ~1.4 MB; reports every one of those errors with line and column.
//! - `evalexpr` 13: module ~0.26 MB, but AGPL-3.0-only (this project is Apache-2.0), no maps
//!   (`metadata.x` would have to be flattened into variable names) and no `has()`.
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::objects::{Key, Map};
use cel::{Context, Env, Program, Value as Cel};
use serde_json::Value;
use sluice_sdk::{Error, Msg, Result};

/// The variables an expression can use, in the order of [`Uses`].
pub const VARIABLES: [&str; 5] = ["msg", "metadata", "msgType", "originator", "ts"];

/// A compiled expression with the context it evaluates in (built once: the standard functions).
pub struct Expression {
    source: String,
    program: Program,
    env: Arc<Env>,
    /// Which of [`VARIABLES`] the expression uses: only those are bound per message.
    uses: [bool; 5],
    /// For `msg` and `metadata`: the keys, when the expression reads them only as `msg.<key>`
    /// and `metadata.<key>`; `None` when it uses the whole map (`size(msg)`, `msg[k]`, …).
    keys: [Option<Vec<String>>; 2],
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expression").field(&self.source).finish()
    }
}

/// In a config, an expression is its source text, compiled as the config is read: a syntax error
/// is a config error naming the field.
impl<'de> serde::Deserialize<'de> for Expression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Expression::compile(&text).map_err(serde::de::Error::custom)
    }
}

impl sluice_sdk::schemars::JsonSchema for Expression {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Expression".into()
    }

    fn json_schema(_: &mut sluice_sdk::schemars::SchemaGenerator) -> sluice_sdk::schemars::Schema {
        sluice_sdk::schemars::json_schema!({"type": "string", "description": "a CEL expression"})
    }
}

impl Expression {
    /// Parses and checks `source`; the error is the parser's message, or names what is not
    /// supported.
    pub fn compile(source: &str) -> std::result::Result<Expression, String> {
        if source.trim().is_empty() {
            return Err("the expression is empty".into());
        }
        let env = Arc::new(Env::stdlib());
        let program = env.compile(source).map_err(|e| e.to_string())?;
        let mut free = Free::default();
        check(program.expression(), &mut Vec::new(), &mut free)?;
        let keys = [0, 1].map(|i| (!free.whole[i]).then(|| free.keys[i].iter().map(|k| k.to_string()).collect()));
        let mut uses = [false; 5];
        for name in free.names {
            match VARIABLES.iter().position(|v| *v == name) {
                Some(i) => uses[i] = true,
                None => {
                    return Err(format!(
                        "unknown variable `{name}`: an expression can use msg, metadata, msgType, originator and ts"
                    ));
                }
            }
        }
        Ok(Expression { source: source.to_string(), program, env, uses, keys })
    }

    /// The text it was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against `msg`. Only the parts the expression uses are read, and of `msg` and
    /// `metadata` only the keys it names when it names keys only.
    pub fn eval(&self, msg: &Msg) -> Result<Cel> {
        let mut context = Context::with_env(self.env.clone());
        for (i, name) in VARIABLES.iter().enumerate() {
            if !self.uses[i] {
                continue;
            }
            let value = match i {
                0 => {
                    self.keys[0].as_deref().and_then(|keys| data_keys(msg, keys)).unwrap_or_else(|| to_cel(msg.data()))
                }
                1 => match self.keys[1].as_deref() {
                    Some(keys) => string_map(keys.iter().filter_map(|k| Some((k.as_str(), msg.meta(k)?)))),
                    None => string_map(msg.metadata().iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                },
                2 => Cel::String(Arc::new(msg.msg_type().to_string())),
                3 => {
                    let o = msg.originator();
                    let mut fields = vec![("entityType", o.entity_type.as_str()), ("name", o.name.as_str())];
                    if let Some(id) = &o.id {
                        fields.push(("id", id.as_str()));
                    }
                    string_map(fields.into_iter())
                }
                _ => Cel::Int(msg.ts()),
            };
            context.add_variable_from_value(*name, value);
        }
        self.program.execute(&context).map_err(|e| Error::new(format!("expression failed: {e}")))
    }

    /// Evaluates to a bool; any other result is an error.
    pub fn eval_bool(&self, msg: &Msg) -> Result<bool> {
        match self.eval(msg)? {
            Cel::Bool(b) => Ok(b),
            other => Err(Error::new(format!("expression returned {}, not a bool", describe(&other)))),
        }
    }

    /// Evaluates to a JSON value.
    pub fn eval_json(&self, msg: &Msg) -> Result<Value> {
        to_json(&self.eval(msg)?)
    }
}

/// `msg` bound to only the data keys `keys`, read one by one — or `None` when one is missing:
/// then the whole data is bound, so that a missing key, or data that is not an object, behaves
/// exactly as it does on the whole data. (A key that is there proves the data is an object.)
fn data_keys(msg: &Msg, keys: &[String]) -> Option<Cel> {
    let mut map = HashMap::with_capacity(keys.len());
    for k in keys {
        map.insert(Key::String(Arc::new(k.clone())), to_cel(msg.field(k)?));
    }
    Some(Cel::Map(Map { map: Arc::new(map) }))
}

/// The free variables of an expression, and how it reads `msg` and `metadata` (`[0]`, `[1]`).
#[derive(Default)]
struct Free<'e> {
    names: BTreeSet<&'e str>,
    /// The keys selected as `msg.<key>` / `metadata.<key>`.
    keys: [BTreeSet<&'e str>; 2],
    /// Whether the variable is also used otherwise (as a whole).
    whole: [bool; 2],
}

/// Refuses what the interpreter cannot evaluate (it would trap) and collects the free variables.
fn check<'e>(e: &'e IdedExpr, bound: &mut Vec<&'e str>, free: &mut Free<'e>) -> std::result::Result<(), String> {
    match &e.expr {
        Expr::Unspecified => return Err("the expression has an incomplete part".into()),
        Expr::Struct(s) => return Err(format!("message construction (`{}{{…}}`) is not supported", s.type_name)),
        Expr::Ident(name) => {
            if !bound.contains(&name.as_str()) {
                free.names.insert(name);
                if let Some(i) = VARIABLES[..2].iter().position(|v| v == name) {
                    free.whole[i] = true;
                }
            }
        }
        Expr::Literal(_) => {}
        Expr::Select(s) => match &s.operand.expr {
            // `msg.<key>` or `metadata.<key>` (also under `has()`): only that key is read.
            Expr::Ident(name) if !bound.contains(&name.as_str()) && VARIABLES[..2].contains(&name.as_str()) => {
                free.names.insert(name);
                let i = usize::from(name == VARIABLES[1]);
                free.keys[i].insert(&s.field);
            }
            _ => check(&s.operand, bound, free)?,
        },
        Expr::Call(c) => {
            for e in c.target.iter().map(|t| &**t).chain(&c.args) {
                check(e, bound, free)?;
            }
        }
        Expr::List(l) => {
            for e in &l.elements {
                check(e, bound, free)?;
            }
        }
        Expr::Map(m) => {
            for entry in &m.entries {
                match &entry.expr {
                    EntryExpr::MapEntry(me) => {
                        check(&me.key, bound, free)?;
                        check(&me.value, bound, free)?;
                    }
                    EntryExpr::StructField(f) => {
                        return Err(format!("a field (`{}: …`) is not a map entry: quote map keys", f.field));
                    }
                }
            }
        }
        Expr::Comprehension(c) => {
            check(&c.iter_range, bound, free)?;
            check(&c.accu_init, bound, free)?;
            let depth = bound.len();
            bound.push(&c.iter_var);
            bound.extend(c.iter_var2.as_deref());
            bound.push(&c.accu_var);
            for e in [&c.loop_cond, &c.loop_step, &c.result] {
                check(e, bound, free)?;
            }
            bound.truncate(depth);
        }
    }
    Ok(())
}

fn string_map<'a>(entries: impl Iterator<Item = (&'a str, &'a str)>) -> Cel {
    let map: HashMap<Key, Cel> =
        entries.map(|(k, v)| (Key::String(Arc::new(k.to_string())), Cel::String(Arc::new(v.to_string())))).collect();
    Cel::Map(Map { map: Arc::new(map) })
}

/// JSON → CEL: integers become `int` (`uint` above `i64::MAX`), other numbers `double`.
pub fn to_cel(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cel::Int(i),
            (None, Some(u)) => Cel::UInt(u),
            _ => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => Cel::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(fields) => {
            let map: HashMap<Key, Cel> =
                fields.iter().map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v))).collect();
            Cel::Map(Map { map: Arc::new(map) })
        }
    }
}

/// CEL → JSON. Map keys become strings; a non-finite double, bytes or a function has no JSON form.
pub fn to_json(value: &Cel) -> Result<Value> {
    Ok(match value {
        Cel::Null => Value::Null,
        Cel::Bool(b) => Value::Bool(*b),
        Cel::Int(i) => Value::from(*i),
        Cel::UInt(u) => Value::from(*u),
        Cel::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => Value::Number(n),
            None => return Err(Error::new(format!("expression returned {f}, which JSON cannot hold"))),
        },
        Cel::String(s) => Value::String(s.to_string()),
        Cel::List(items) => Value::Array(items.iter().map(to_json).collect::<Result<_>>()?),
        Cel::Map(m) => {
            let mut entries: Vec<(String, Value)> = m
                .map
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Key::String(s) => s.to_string(),
                        Key::Int(i) => i.to_string(),
                        Key::Uint(u) => u.to_string(),
                        Key::Bool(b) => b.to_string(),
                    };
                    Ok((key, to_json(v)?))
                })
                .collect::<Result<_>>()?;
            // A HashMap has no order: sort, so outputs are reproducible.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().collect())
        }
        other => return Err(Error::new(format!("expression returned {}, which JSON cannot hold", describe(other)))),
    })
}

/// A value for an error message: its CEL type and, for scalars, the value.
fn describe(value: &Cel) -> String {
    match value {
        Cel::Null => "null".into(),
        Cel::Bool(b) => format!("bool {b}"),
        Cel::Int(i) => format!("int {i}"),
        Cel::UInt(u) => format!("uint {u}"),
        Cel::Float(f) => format!("double {f}"),
        Cel::String(s) => format!("string {:?}", s.as_str()),
        Cel::List(_) => "a list".into(),
        Cel::Map(_) => "a map".into(),
        Cel::Bytes(_) => "bytes".into(),
        Cel::Function(name, _) => format!("the function {name}"),
        Cel::Opaque(_) | Cel::Struct(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WIND: &str = "metadata.deviceType == 'WeatherStation' && has(metadata.cs_geoZone) && has(msg.windSpeed)";

    fn station(data: Value) -> Msg {
        Msg::telemetry("WS-1", data).with_meta("deviceType", "WeatherStation").with_meta("cs_geoZone", "A")
    }

    fn eval(source: &str, msg: &Msg) -> Result<Cel> {
        Expression::compile(source).map_err(Error::new)?.eval(msg)
    }

    #[test]
    fn wind_zones_seed() -> Result<()> {
        let e = Expression::compile(WIND).map_err(Error::new)?;
        assert!(e.eval_bool(&station(json!({"windSpeed": "33"})))?);
        assert!(!e.eval_bool(&station(json!({"temperature": 3})))?);
        let no_zone = Msg::telemetry("WS-1", json!({"windSpeed": 3})).with_meta("deviceType", "WeatherStation");
        assert!(!e.eval_bool(&no_zone)?);
        // Only the referenced variables are bound.
        assert_eq!(e.uses, [true, true, false, false, false]);
        Ok(())
    }

    #[test]
    fn reads_only_the_keys_it_names() -> Result<()> {
        let e = Expression::compile(WIND).map_err(Error::new)?;
        let keys = |v: &[&str]| Some(v.iter().map(|k| k.to_string()).collect::<Vec<_>>());
        assert_eq!(e.keys, [keys(&["windSpeed"]), keys(&["cs_geoZone", "deviceType"])]);
        for (source, whole) in [
            ("size(msg) > 0 && metadata.k == 'v'", [true, false]),
            ("msg['a'] == 1 && 'k' in metadata", [true, true]),
            ("msg.a.b == 1 && has(metadata.k)", [false, false]),
        ] {
            let e = Expression::compile(source).map_err(Error::new)?;
            assert_eq!(e.keys.each_ref().map(Option::is_none), whole, "{source}");
        }
        // A comprehension's own `msg` is not the message's.
        let e = Expression::compile("[{'a': 1}].exists(msg, msg.a == 1)").map_err(Error::new)?;
        assert_eq!(e.uses, [false; 5]);
        // The same answers as on the whole message: missing keys, nulls, data that is not an object.
        let sources = ["has(msg.a)", "msg.a == 1", "has(msg.a) && msg.b > 0", "has(metadata.k)", "metadata.k == 'v'"];
        for data in [json!({"a": 1, "b": 2}), json!({"a": 1}), json!({}), json!({"a": null}), json!([1]), json!("x")] {
            for meta in [None, Some("v")] {
                let mut msg = Msg::telemetry("D", data.clone());
                if let Some(v) = meta {
                    msg.set_meta("k", v);
                }
                for source in sources {
                    let partial = Expression::compile(source).map_err(Error::new)?;
                    let mut whole = Expression::compile(source).map_err(Error::new)?;
                    whole.keys = [None, None];
                    let answer = |e: &Expression| e.eval(&msg).map_err(|e| e.to_string());
                    assert_eq!(answer(&partial), answer(&whole), "{source} on {data} {meta:?}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn numbers_as_strings_compare_as_numbers_through_double() -> Result<()> {
        for data in [json!({"windSpeed": "33"}), json!({"windSpeed": 33}), json!({"windSpeed": 33.0})] {
            assert_eq!(eval("double(msg.windSpeed) > 20.0", &station(data.clone()))?, Cel::Bool(true), "{data}");
            assert_eq!(eval("double(msg.windSpeed) > 40.0", &station(data.clone()))?, Cel::Bool(false), "{data}");
        }
        // Mixed int/double comparisons work without a conversion.
        assert_eq!(eval("msg.t > 20.5", &station(json!({"t": 21})))?, Cel::Bool(true));
        assert_eq!(eval("msg.t == 21", &station(json!({"t": 21.0})))?, Cel::Bool(true));
        Ok(())
    }

    #[test]
    fn all_variables() -> Result<()> {
        let msg = Msg::attributes("Meter 7", json!({"a": [1, 2, 3]})).with_ts(1_700_000_000_000).with_meta("k", "v");
        let source = "msgType == 'POST_ATTRIBUTES_REQUEST' && originator.name == 'Meter 7' \
                      && originator.entityType == 'DEVICE' && ts == 1700000000000 && metadata.k == 'v' \
                      && size(msg.a) == 3 && msg.a.exists(x, x == 2) && msg.a.all(x, x > 0)";
        assert_eq!(eval(source, &msg)?, Cel::Bool(true));
        Ok(())
    }

    #[test]
    fn evaluation_errors() {
        let msg = station(json!({"windSpeed": "fast"}));
        let err = eval("msg.missing > 1", &msg).unwrap_err().to_string();
        assert!(err.contains("No such key: missing"), "{err}");
        let err = eval("double(msg.windSpeed) > 1.0", &msg).unwrap_err().to_string();
        assert!(err.contains("string parse error"), "{err}");
        let err = Expression::compile("msg.windSpeed").unwrap().eval_bool(&msg).unwrap_err().to_string();
        assert_eq!(err, r#"expression returned string "fast", not a bool"#);
        let err = eval("msg.windSpeed * 2.0", &msg).unwrap_err().to_string();
        assert!(err.starts_with("expression failed: "), "{err}");
        // Neither a comprehension over a string nor has() on one traps.
        assert!(eval("msg.windSpeed.exists(c, true)", &msg).is_err());
        assert!(eval("has(msg.windSpeed.x)", &msg).is_err());
        assert!(eval("msg.windSpeed[3]", &msg).is_err());
        assert!(eval("1 / 0 == 1", &msg).is_err());
        assert!(eval("9223372036854775807 + 1 > 0", &msg).is_err());
    }

    #[test]
    fn compile_errors() {
        let err = Expression::compile("msg.windSpeed >").unwrap_err();
        assert!(err.contains("ERROR: <input>:1:"), "{err}");
        assert_eq!(Expression::compile("  ").unwrap_err(), "the expression is empty");
        let err = Expression::compile("data.windSpeed > 1").unwrap_err();
        assert!(err.starts_with("unknown variable `data`"), "{err}");
        let err = Expression::compile("Foo{x: 1} == msg").unwrap_err();
        assert!(err.contains("not supported"), "{err}");
        // Comprehension variables are bound, not free.
        assert!(Expression::compile("msg.a.exists(v, v > 1)").is_ok());
        let err = Expression::compile("msg.a.exists(v, w > 1)").unwrap_err();
        assert!(err.starts_with("unknown variable `w`"), "{err}");
    }

    #[test]
    fn deserializes_from_config_text() {
        let e: Expression = serde_json::from_str(r#""msg.a > 1""#).unwrap();
        assert_eq!(e.source(), "msg.a > 1");
        let err = serde_json::from_str::<Expression>(r#""msg.a >""#).unwrap_err().to_string();
        assert!(err.contains("Syntax error"), "{err}");
    }

    #[test]
    fn json_round_trip() -> Result<()> {
        let data = json!({"i": -3, "u": u64::MAX, "f": 2.5, "s": "x", "b": true, "n": null, "l": [1, "a"], "m": {"z": 1, "a": 2}});
        assert_eq!(to_json(&to_cel(&data))?, data);
        assert_eq!(eval("double(msg.t) * 9.0 / 5.0 + 32.0", &station(json!({"t": "100"})))?, Cel::Float(212.0));
        let err = Expression::compile("1.0 / 0.0").unwrap().eval_json(&station(json!({}))).unwrap_err();
        assert!(err.to_string().contains("JSON cannot hold"), "{err}");
        Ok(())
    }
}

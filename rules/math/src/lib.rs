//! Math function (ThingsBoard's `TbMathNode`): applies an operation to one or more arguments and
//! puts the result into the message data, its metadata, or an attribute / latest time-series
//! table; the message goes on `Success`, or to `Failure` naming what went wrong.
//!
//! The config is ThingsBoard's own (`TbMathNodeConfiguration`), so an import carries it over
//! as it is:
//! ```json
//! {"operation": "CUSTOM", "customFunction": "(x - 32) / 1.8",
//!  "arguments": [{"name": "x", "type": "MESSAGE_BODY", "key": "temperatureF", "defaultValue": null}],
//!  "result": {"type": "MESSAGE_BODY", "key": "temperatureC", "resultValuePrecision": 1,
//!             "addToBody": false, "addToMetadata": false, "attributeScope": "SERVER_SCOPE"}}
//! ```
//! - `operation`: `ADD`, `SUB`, `MULT`, `DIV`, `SIN`, `SINH`, `COS`, `COSH`, `TAN`, `TANH`,
//!   `ACOS`, `ASIN`, `ATAN`, `ATAN2`, `EXP`, `EXPM1`, `SQRT`, `CBRT`, `GET_EXP`, `HYPOT`, `LOG`,
//!   `LOG10`, `LOG1P`, `CEIL`, `FLOOR`, `FLOOR_DIV`, `FLOOR_MOD`, `ABS`, `MIN`, `MAX`, `POW`,
//!   `SIGNUM`, `RAD`, `DEG`, or `CUSTOM` with `customFunction`, an exp4j expression over the
//!   arguments' names (see [`expr`]; at most 256 characters, 0–16 arguments). The argument
//!   count must fit the operation (`TbRuleNodeMathFunctionType`'s min/max), else a load error.
//! - `arguments[]`: `name` (the variable in `customFunction`), `type` and `key`:
//!   `CONSTANT` (`key` is the number), `MESSAGE_BODY` (a top-level data key: a number, or a
//!   non-blank string that parses as one), `MESSAGE_METADATA`, `ATTRIBUTE` (`attributeScope`,
//!   default `SERVER_SCOPE`: the originator's entry in the `server_attributes` /
//!   `client_attributes` / `shared_attributes` table that imported save-attributes nodes keep)
//!   or `TIME_SERIES` (the `timeseries` table of latest values). A missing, `null` or blank
//!   value takes `defaultValue` when set, else the message fails (`Message body has no 'x'!`).
//! - `result`: `type` `MESSAGE_BODY` or `MESSAGE_METADATA` writes `key` there; `ATTRIBUTE` or
//!   `TIME_SERIES` writes it into the originator's table entry, and also into the data
//!   (`addToBody`) and/or metadata (`addToMetadata`).
//!
//! Result values as `TbMathNode.addToBody` / `addToMeta` / `toDoubleValue` write them: an
//! integer (Java's `(long)` cast: truncated, `NaN` → 0) when `resultValuePrecision` is 0 or the
//! operation is `GET_EXP`, `CEIL` or `FLOOR`; otherwise a double rounded half-up to
//! `resultValuePrecision` decimals from its shortest decimal text (`BigDecimal.valueOf(v)
//! .setScale(p, HALF_UP)`, so 2.675 → 2.68), which fails for `NaN` and infinities. In metadata a
//! double is written as Java's `Double.toString` does (`2.0`, `1.0E7`). The data must be a JSON
//! object when an argument or the result is the message body (`Message body is not a JSON
//! object!`). `FLOOR_DIV`/`FLOOR_MOD` work on the arguments truncated to integers, as Java's
//! `Math.floorDiv(long, long)`; by zero they fail.
//!
//! Not carried over: ThingsBoard's per-originator semaphore (Sluice already handles one
//! originator's messages in order), and the database's timestamp for a saved time-series value.
use serde_json::Map;
use sluice_sdk::prelude::*;

pub mod expr;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub operation: Operation,
    #[serde(default)]
    pub arguments: Vec<Argument>,
    #[serde(default)]
    pub custom_function: Option<String>,
    pub result: ResultSpec,
}

/// `TbRuleNodeMathFunctionType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    Add,
    Sub,
    Mult,
    Div,
    Sin,
    Sinh,
    Cos,
    Cosh,
    Tan,
    Tanh,
    Acos,
    Asin,
    Atan,
    Atan2,
    Exp,
    Expm1,
    Sqrt,
    Cbrt,
    GetExp,
    Hypot,
    Log,
    Log10,
    Log1p,
    Ceil,
    Floor,
    FloorDiv,
    FloorMod,
    Abs,
    Min,
    Max,
    Pow,
    Signum,
    Rad,
    Deg,
    Custom,
}

impl Operation {
    /// `(minArgs, maxArgs, integerResult)` as `TbRuleNodeMathFunctionType` declares them.
    fn shape(self) -> (usize, usize, bool) {
        use Operation::*;
        match self {
            Add | Sub | Mult | Div | Atan2 | Hypot | FloorDiv | FloorMod | Min | Max | Pow => (2, 2, false),
            GetExp | Ceil | Floor => (1, 1, true),
            Custom => (0, 16, false),
            _ => (1, 1, false),
        }
    }
}

/// Where an argument's value comes from (`TbMathArgumentType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Source {
    Constant,
    MessageBody,
    MessageMetadata,
    Attribute,
    TimeSeries,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Argument {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type")]
    pub source: Source,
    pub key: String,
    #[serde(default)]
    pub attribute_scope: Option<String>,
    #[serde(default)]
    pub default_value: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResultSpec {
    #[serde(rename = "type")]
    pub target: Source,
    pub key: String,
    #[serde(default)]
    pub result_value_precision: u32,
    #[serde(default)]
    pub add_to_body: bool,
    #[serde(default)]
    pub add_to_metadata: bool,
    #[serde(default)]
    pub attribute_scope: Option<String>,
}

/// The table an `ATTRIBUTE` scope (empty: `SERVER_SCOPE`, as `getAttributeScope`) or
/// `TIME_SERIES` reads and writes — the tables the importer's save nodes keep.
fn table_of(source: Source, scope: Option<&str>) -> Result<&'static str> {
    match (source, scope.filter(|s| !s.is_empty()).unwrap_or("SERVER_SCOPE")) {
        (Source::TimeSeries, _) => Ok("timeseries"),
        (_, "SERVER_SCOPE") => Ok("server_attributes"),
        (_, "CLIENT_SCOPE") => Ok("client_attributes"),
        (_, "SHARED_SCOPE") => Ok("shared_attributes"),
        (_, other) => bail!("unknown attribute scope {other}"),
    }
}

/// Java's `Math.signum`: 0 stays 0 (Rust's `signum` gives 1 for +0).
pub fn signum(x: f64) -> f64 {
    if x == 0.0 || x.is_nan() { x } else { x.signum() }
}

/// Java's `Double.parseDouble` for what devices send: surrounding blanks allowed.
fn parse_double(text: &str) -> Result<f64> {
    let t = text.trim();
    let parsed = match t {
        "NaN" => Some(f64::NAN),
        "Infinity" | "+Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ if t.chars().any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') => None,
        _ => t.parse::<f64>().ok(),
    };
    match parsed {
        Some(v) => Ok(v),
        None => bail!("Can't convert value '{text}' to double!"),
    }
}

fn default_or(arg: &Argument, error: String) -> Result<f64> {
    match arg.default_value {
        Some(v) => Ok(v),
        None => Err(Error::new(error)),
    }
}

/// `Math.getExponent(double)`: the unbiased exponent (1024 for NaN/infinity, -1023 for 0 and
/// subnormals).
fn get_exponent(x: f64) -> f64 {
    (((x.to_bits() >> 52) & 0x7ff) as i64 - 1023) as f64
}

/// `Math.floorDiv(long, long)`.
fn floor_div(a: i64, b: i64) -> Result<i64> {
    if b == 0 {
        bail!("/ by zero");
    }
    let q = a.wrapping_div(b);
    Ok(if (a % b != 0) && ((a ^ b) < 0) { q - 1 } else { q })
}

/// Java's `(long) d` of a `Double.longValue()`: truncation, saturating, `NaN` → 0 (what Rust's
/// `as` does).
fn long_of(x: f64) -> i64 {
    x as i64
}

/// `Math.min`/`Math.max`: `NaN` wins.
fn java_min_max(a: f64, b: f64, max: bool) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if max {
        a.max(b)
    } else {
        a.min(b)
    }
}

/// [`sluice_sdk::java::round_half_up`] (`BigDecimal.valueOf(v).setScale(scale, HALF_UP)`), an
/// error for a value that is not finite.
pub fn round_half_up(v: f64, scale: u32) -> Result<f64> {
    sluice_sdk::java::round_half_up(v, scale)
        .ok_or_else(|| Error::new(format!("cannot round {v}: not a finite number")))
}

/// Java's `Double.toString(d)`: `2.0`, `0.001`, `1.0E7`, `1.0E-4`
/// ([`sluice_sdk::java::double_text`]).
pub fn java_double_text(d: f64) -> String {
    sluice_sdk::java::double_text(d)
}

pub struct MathNode {
    config: Config,
    custom: Option<expr::Expr>,
    integer_result: bool,
    needs_body: bool,
}

impl MathNode {
    fn argument(&self, arg: &Argument, msg: &Msg, body: Option<&Map<String, Value>>) -> Result<f64> {
        match arg.source {
            Source::Constant => parse_double(&arg.key),
            Source::MessageBody => {
                let Some(body) = body else { return default_or(arg, "Message body is empty!".into()) };
                match body.get(&arg.key) {
                    None => default_or(arg, format!("Message body has no '{}'!", arg.key)),
                    Some(Value::Null) => default_or(arg, format!("Message body has null '{}'!", arg.key)),
                    Some(Value::Number(n)) => {
                        n.as_f64().ok_or_else(|| Error::new(format!("Can't convert value '{n}' to double!")))
                    }
                    Some(Value::String(s)) if s.trim().is_empty() => {
                        default_or(arg, format!("Message value is empty for '{}'!", arg.key))
                    }
                    Some(Value::String(s)) => parse_double(s),
                    Some(other) => bail!("Can't convert value '{other}' to double!"),
                }
            }
            Source::MessageMetadata => match msg.meta(&arg.key).filter(|v| !v.is_empty()) {
                None => default_or(arg, format!("Message metadata has no '{}'!", arg.key)),
                Some(v) => parse_double(v),
            },
            Source::Attribute | Source::TimeSeries => {
                let table = table_of(arg.source, arg.attribute_scope.as_deref())?;
                let entity = msg.originator_name().into_owned();
                let entry = table::get::<Value>(table, &entity)?;
                match entry.as_ref().and_then(|e| e.get(&arg.key)).filter(|v| !v.is_null()) {
                    Some(Value::Number(n)) => {
                        n.as_f64().ok_or_else(|| Error::new(format!("Can't convert value '{n}' to double!")))
                    }
                    Some(Value::String(s)) => parse_double(s),
                    Some(other) => parse_double(&other.to_string()),
                    None if arg.source == Source::TimeSeries => {
                        default_or(arg, format!("Time-series: {} not found for entity: {entity}", arg.key))
                    }
                    None => default_or(
                        arg,
                        format!(
                            "Attribute: {} with scope: {} not found for entity: {entity}",
                            arg.key,
                            arg.attribute_scope.as_deref().filter(|s| !s.is_empty()).unwrap_or("SERVER_SCOPE")
                        ),
                    ),
                }
            }
        }
    }

    fn calculate(&self, a: &[f64]) -> Result<f64> {
        use Operation::*;
        let x = a.first().copied().unwrap_or(f64::NAN);
        let y = a.get(1).copied().unwrap_or(f64::NAN);
        Ok(match self.config.operation {
            Add => x + y,
            Sub => x - y,
            Mult => x * y,
            Div => x / y,
            Sin => x.sin(),
            Sinh => x.sinh(),
            Cos => x.cos(),
            Cosh => x.cosh(),
            Tan => x.tan(),
            Tanh => x.tanh(),
            Acos => x.acos(),
            Asin => x.asin(),
            Atan => x.atan(),
            Atan2 => x.atan2(y),
            Exp => x.exp(),
            Expm1 => x.exp_m1(),
            Sqrt => x.sqrt(),
            Cbrt => x.cbrt(),
            GetExp => get_exponent(x),
            Hypot => x.hypot(y),
            Log => x.ln(),
            Log10 => x.log10(),
            Log1p => x.ln_1p(),
            Ceil => x.ceil(),
            Floor => x.floor(),
            FloorDiv => floor_div(long_of(x), long_of(y))? as f64,
            FloorMod => {
                let (a, b) = (long_of(x), long_of(y));
                a.wrapping_sub(floor_div(a, b)?.wrapping_mul(b)) as f64
            }
            Abs => x.abs(),
            Min => java_min_max(x, y, false),
            Max => java_min_max(x, y, true),
            Pow => x.powf(y),
            Signum => signum(x),
            Rad => x.to_radians(),
            Deg => x.to_degrees(),
            Custom => match &self.custom {
                Some(e) => e.eval(a).map_err(Error::new)?,
                None => bail!("no custom function"),
            },
        })
    }

    /// The result as the JSON value and the metadata text ThingsBoard writes.
    fn result_value(&self, result: f64) -> Result<(Value, String)> {
        if self.integer_result {
            let v = long_of(result);
            return Ok((json!(v), v.to_string()));
        }
        let v = round_half_up(result, self.config.result.result_value_precision)?;
        Ok((json!(v), java_double_text(v)))
    }
}

/// Applies a math operation (ThingsBoard's math function node) and stores the result.
#[node(relations = ["Success"])]
impl Node for MathNode {
    type Config = Config;

    fn init(config: Config) -> Result<Self> {
        let (min, max, integer) = config.operation.shape();
        let count = config.arguments.len();
        if count < min || count > max {
            bail_config!(
                "arguments",
                "{count} argument(s) do not fit operation {:?}, which takes {min}–{max}",
                config.operation
            );
        }
        let custom = match (config.operation, config.custom_function.as_deref()) {
            (Operation::Custom, None) => bail_config!("customFunction", "is required for CUSTOM"),
            (Operation::Custom, Some(f)) if f.trim().is_empty() => bail_config!("customFunction", "is blank"),
            (Operation::Custom, Some(f)) if f.chars().count() > 256 => {
                bail_config!("customFunction", "is too complex (length > 256)")
            }
            (Operation::Custom, Some(f)) => {
                let names: Vec<String> = config.arguments.iter().map(|a| a.name.clone()).collect();
                match expr::parse(f, &names) {
                    Ok(e) => Some(e),
                    Err(why) => bail_config!("customFunction", "{why}"),
                }
            }
            _ => None,
        };
        for (i, arg) in config.arguments.iter().enumerate() {
            if arg.source == Source::Constant && parse_double(&arg.key).is_err() {
                bail_config!(format!("arguments[{i}].key"), "`{}` is not a number", arg.key);
            }
            if arg.source == Source::Attribute && table_of(arg.source, arg.attribute_scope.as_deref()).is_err() {
                bail_config!(
                    format!("arguments[{i}].attributeScope"),
                    "expected CLIENT_SCOPE, SERVER_SCOPE or SHARED_SCOPE"
                );
            }
        }
        let r = &config.result;
        if r.target == Source::Constant {
            bail_config!("result.type", "a result cannot be a CONSTANT");
        }
        if r.target == Source::Attribute && table_of(r.target, r.attribute_scope.as_deref()).is_err() {
            bail_config!("result.attributeScope", "expected CLIENT_SCOPE, SERVER_SCOPE or SHARED_SCOPE");
        }
        if r.key.is_empty() {
            bail_config!("result.key", "must not be empty");
        }
        let needs_body = config.arguments.iter().any(|a| a.source == Source::MessageBody)
            || r.target == Source::MessageBody
            || (matches!(r.target, Source::Attribute | Source::TimeSeries) && r.add_to_body);
        let integer_result = integer || r.result_value_precision == 0;
        Ok(MathNode { config, custom, integer_result, needs_body })
    }

    fn on_msg(&mut self, mut msg: Msg, out: &mut Outputs) -> Result<()> {
        let body = if self.needs_body {
            match msg.data() {
                Value::Object(map) => Some(map.clone()),
                _ => bail!("Message body is not a JSON object!"),
            }
        } else {
            None
        };
        let mut values = Vec::with_capacity(self.config.arguments.len());
        for arg in &self.config.arguments {
            values.push(self.argument(arg, &msg, body.as_ref())?);
        }
        let result = self.calculate(&values)?;
        let (value, text) = self.result_value(result)?;
        let r = &self.config.result;
        let (to_body, to_meta) = match r.target {
            Source::MessageBody => (true, false),
            Source::MessageMetadata => (false, true),
            Source::Attribute | Source::TimeSeries => {
                let table = table_of(r.target, r.attribute_scope.as_deref())?;
                let entity = msg.originator_name().into_owned();
                let mut entry = match table::get::<Value>(table, &entity)? {
                    Some(Value::Object(map)) => map,
                    _ => Map::new(),
                };
                entry.insert(r.key.clone(), value.clone());
                table::put(table, &entity, &Value::Object(entry))?;
                (r.add_to_body, r.add_to_metadata)
            }
            Source::Constant => (false, false),
        };
        if to_body {
            msg.set_field(r.key.clone(), value);
        }
        if to_meta {
            msg.set_meta(r.key.clone(), text);
        }
        out.emit(relation::SUCCESS, msg);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::TestDriver;

    fn node(cfg: Value) -> TestDriver {
        TestDriver::node_from_json::<MathNode>(&cfg.to_string()).unwrap()
    }

    fn body_arg(name: &str, key: &str) -> Value {
        json!({"name": name, "type": "MESSAGE_BODY", "key": key})
    }

    /// `TbMathNode.calculateResult` ADD on two body values, `addToBody` with precision 2
    /// (`toDoubleValue`: BigDecimal HALF_UP).
    #[test]
    fn add_into_body_rounded() -> Result<()> {
        let mut d = node(json!({"operation": "ADD", "arguments": [body_arg("a", "a"), body_arg("b", "b")],
            "result": {"type": "MESSAGE_BODY", "key": "sum", "resultValuePrecision": 2}}));
        let out = d.send(Msg::telemetry("D", json!({"a": 1.333, "b": "1.342"})))?;
        assert_eq!(out.relations(), ["Success"]);
        assert_eq!(out.messages()[0].data(), &json!({"a": 1.333, "b": "1.342", "sum": 2.68}));
        Ok(())
    }

    /// Precision 0 → `toIntValue`, a `(long)` cast; metadata gets `Long.toString`.
    #[test]
    fn integer_results_truncate() -> Result<()> {
        let mut d = node(json!({"operation": "DIV",
            "arguments": [body_arg("a", "a"), {"name": "b", "type": "CONSTANT", "key": "3"}],
            "result": {"type": "MESSAGE_METADATA", "key": "q", "resultValuePrecision": 0}}));
        let out = d.send(Msg::telemetry("D", json!({"a": -10})))?;
        assert_eq!(out.messages()[0].meta("q"), Some("-3"));
        Ok(())
    }

    #[test]
    fn metadata_double_as_java_writes_it() -> Result<()> {
        let mut d = node(json!({"operation": "MULT",
            "arguments": [{"name": "a", "type": "MESSAGE_METADATA", "key": "m"}, {"name": "b", "type": "CONSTANT", "key": "1000"}],
            "result": {"type": "MESSAGE_METADATA", "key": "r", "resultValuePrecision": 1}}));
        let out = d.send(Msg::telemetry("D", json!({})).with_meta("m", "20000"))?;
        assert_eq!(out.messages()[0].meta("r"), Some("2.0E7"));
        let out = d.send(Msg::telemetry("D", json!({})).with_meta("m", "0.002"))?;
        assert_eq!(out.messages()[0].meta("r"), Some("2.0"));
        Ok(())
    }

    #[test]
    fn custom_fahrenheit_to_celsius() -> Result<()> {
        let mut d = node(json!({"operation": "CUSTOM", "customFunction": "(x - 32) / 1.8",
            "arguments": [body_arg("x", "f")],
            "result": {"type": "MESSAGE_BODY", "key": "c", "resultValuePrecision": 1}}));
        let out = d.send(Msg::telemetry("D", json!({"f": 100})))?;
        assert_eq!(out.messages()[0].field("c"), Some(&json!(37.8)));
        Ok(())
    }

    /// `TbMathArgumentValue.fromMessageBody`: missing / null / blank → `defaultValue` or an error.
    #[test]
    fn missing_values_default_or_fail() -> Result<()> {
        let cfg = |default: Value| {
            json!({"operation": "ABS", "arguments": [{"name": "x", "type": "MESSAGE_BODY", "key": "x", "defaultValue": default}],
                   "result": {"type": "MESSAGE_BODY", "key": "r", "resultValuePrecision": 0}})
        };
        let mut d = node(cfg(Value::Null));
        let out = d.send(Msg::telemetry("D", json!({})))?;
        assert_eq!(out.relations(), ["Failure"]);
        assert_eq!(out.messages()[0].meta("error"), Some("Message body has no 'x'!"));
        let out = d.send(Msg::telemetry("D", json!({"x": "abc"})))?;
        assert_eq!(out.messages()[0].meta("error"), Some("Can't convert value 'abc' to double!"));
        let out = d.send(Msg::telemetry("D", json!([1])))?;
        assert_eq!(out.messages()[0].meta("error"), Some("Message body is not a JSON object!"));
        let mut d = node(cfg(json!(-5)));
        for data in [json!({}), json!({"x": null}), json!({"x": " "})] {
            let out = d.send(Msg::telemetry("D", data))?;
            assert_eq!(out.messages()[0].field("r"), Some(&json!(5)));
        }
        Ok(())
    }

    #[test]
    fn attribute_argument_and_time_series_result() -> Result<()> {
        let mut d = node(json!({"operation": "ADD",
            "arguments": [{"name": "t", "type": "TIME_SERIES", "key": "total", "defaultValue": 0},
                          body_arg("d", "delta")],
            "result": {"type": "TIME_SERIES", "key": "total", "resultValuePrecision": 1, "addToMetadata": true}}));
        let out = d.send(Msg::telemetry("M-1", json!({"delta": 1.5})))?;
        assert_eq!(out.messages()[0].meta("total"), Some("1.5"));
        let out = d.send(Msg::telemetry("M-1", json!({"delta": 2})))?;
        assert_eq!(out.messages()[0].meta("total"), Some("3.5"));
        assert_eq!(out.messages()[0].field("total"), None);
        Ok(())
    }

    #[test]
    fn java_functions() -> Result<()> {
        assert_eq!(signum(0.0), 0.0);
        assert_eq!(get_exponent(8.0), 3.0);
        assert_eq!(get_exponent(0.0), -1023.0);
        assert_eq!(floor_div(-7, 2)?, -4);
        assert_eq!(round_half_up(2.675, 2)?, 2.68);
        assert_eq!(round_half_up(-2.5, 0)?, -3.0);
        assert_eq!(round_half_up(0.0004, 2)?, 0.0);
        assert_eq!(round_half_up(9.996, 2)?, 10.0);
        assert_eq!(java_double_text(1e-4), "1.0E-4");
        assert_eq!(java_double_text(123.5), "123.5");
        let mut d = node(json!({"operation": "FLOOR_MOD",
            "arguments": [body_arg("a", "a"), body_arg("b", "b")],
            "result": {"type": "MESSAGE_BODY", "key": "r", "resultValuePrecision": 2}}));
        assert_eq!(
            d.send(Msg::telemetry("D", json!({"a": -7.9, "b": 3})))?.messages()[0].field("r"),
            Some(&json!(2.0))
        );
        assert_eq!(d.send(Msg::telemetry("D", json!({"a": 1, "b": 0})))?.relations(), ["Failure"]);
        Ok(())
    }

    #[test]
    fn bad_configs_name_the_field() {
        // A parse error carries the field; an `init` refusal names it in the message.
        let err = |cfg: Value| TestDriver::node_from_json::<MathNode>(&cfg.to_string()).err().unwrap().to_string();
        let result = json!({"type": "MESSAGE_BODY", "key": "r"});
        let one = [body_arg("a", "a")];
        assert!(err(json!({"operation": "ADD", "arguments": one, "result": result})).contains("`arguments`"));
        let custom = json!({"operation": "CUSTOM", "customFunction": "y + 1", "arguments": one, "result": result});
        assert!(err(custom).contains("`customFunction`: unknown variable or function `y`"));
        let constant = json!({"name": "a", "type": "CONSTANT", "key": "x"});
        assert!(
            err(json!({"operation": "ABS", "arguments": [constant], "result": result})).contains("`arguments[0].key`")
        );
        let parse = TestDriver::node_from_json::<MathNode>(
            r#"{"operation": "NOPE", "result": {"type": "MESSAGE_BODY", "key": "r"}}"#,
        );
        assert_eq!(parse.err().unwrap().field, "operation");
    }
}

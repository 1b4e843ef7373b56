//! Converters for the ThingsBoard classes that became Sluice rules in issue 20: math, calculate
//! delta, create / clear alarm, device profile. Kept apart from [`super::thingsboard`] so that
//! its class table only gains one row per class here.

use serde_json::{Map, Value, json};

use super::draft::{Fragment, Part};
use super::error::ImportError;
use super::thingsboard::{Ctx, Outcome};

/// Copies the keys of `from` that `keys` names (others, such as UI-only fields, are dropped).
fn pick(from: Option<&Value>, keys: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(Value::Object(map)) = from {
        for key in keys {
            if let Some(v) = map.get(*key).filter(|v| !v.is_null()) {
                out.insert((*key).to_string(), v.clone());
            }
        }
    }
    out
}

/// `TbMathNode` → `math`: the configuration is ThingsBoard's own (`TbMathNodeConfiguration`).
pub(crate) fn math(c: &Ctx) -> Result<Outcome, ImportError> {
    let operation = c.cfg.str("operation")?;
    let Some(Value::Array(args)) = c.cfg.get("arguments") else {
        return Err(c.cfg.error("arguments", "expected a list"));
    };
    let arguments: Vec<Value> = args
        .iter()
        .map(|a| Value::Object(pick(Some(a), &["name", "type", "key", "attributeScope", "defaultValue"])))
        .collect();
    let result = pick(
        c.cfg.get("result"),
        &["type", "key", "resultValuePrecision", "addToBody", "addToMetadata", "attributeScope"],
    );
    if result.is_empty() {
        return Err(c.cfg.error("result", "missing"));
    }
    let mut config = json!({"operation": operation, "arguments": arguments, "result": result});
    if let Some(f) = c.cfg.opt_str("customFunction")?.filter(|f| !f.trim().is_empty()) {
        config["customFunction"] = json!(f);
    }
    let mut fragment = Fragment::one(Part::module("math", config));
    let stores = |t: &Value| matches!(t.as_str(), Some("ATTRIBUTE" | "TIME_SERIES"));
    if args.iter().any(|a| a.get("type").is_some_and(stores)) || result.get("type").is_some_and(stores) {
        fragment = fragment.note(
            "attributes and time series are read from and written to the chain's tables (`server_attributes`, \
             `timeseries`, …) that save-attributes / save-timeseries nodes keep",
        );
    }
    Ok(Ok(fragment))
}

/// `CalculateDeltaNode` → `calculate-delta`: ThingsBoard's configuration keys, as they are.
pub(crate) fn calculate_delta(c: &Ctx) -> Result<Outcome, ImportError> {
    let keys = [
        "inputValueKey",
        "outputValueKey",
        "useCache",
        "addPeriodBetweenMsgs",
        "periodValueKey",
        "round",
        "tellFailureIfDeltaIsNegative",
    ];
    let config = Value::Object(pick(Some(c.cfg.value), &keys));
    let mut fragment = Fragment::one(Part::module("calculate-delta", config));
    if c.cfg.opt_bool("useCache")? == Some(false) {
        fragment = fragment.note(
            "useCache false: the previous value is the node's own (host state), not the database's latest saved value",
        );
    }
    Ok(Ok(fragment))
}

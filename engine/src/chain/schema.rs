//! The JSON Schema of chain files with each built-in module's config schema in it, so that an
//! editor completes and checks a node's `config` by its `module` (`sluice schema`,
//! `chains/chain.schema.json`).
//!
//! A module's schema comes from its `sluice_config_schema` export (see
//! [`crate::runtime::manifest`]). Each goes under `$defs` as `<module>.config` (its own `$defs`
//! beside it as `<module>.<Name>`, references rewritten), and `NodeSpec` gets one
//! `if {module: <name>} then {config: <module>.config}` per module: plain draft 2020-12 that
//! editors understand, where schema resources with their own `$id` are not everywhere.

use serde_json::{Map, Value, json};

/// The rules `rules/` builds that a chain names by name: every member of the rule workspace but
/// the test guests and the `expression` library.
pub const BUILT_IN_RULES: &[&str] = &[
    "attribute-filter",
    "calculate-delta",
    "change-originator",
    "check-fields",
    "clear-alarm",
    "create-alarm",
    "deduplicate",
    "delay",
    "device-profile",
    "expression-filter",
    "generator",
    "get-telemetry",
    "group-deviation",
    "json-decoder",
    "kafka-action",
    "log",
    "math",
    "mqtt-action",
    "msg-type-switch",
    "originator-attributes",
    "rename-keys",
    "rest-action",
    "rpc-reply",
    "rpc-request",
    "script",
    "table-writer",
    "threshold",
    "transform",
    "unsupported",
    "uplink-decoder",
    "window-aggregate",
];

/// The chain schema with the config schema of every [`BUILT_IN_RULES`] module, resolved as
/// `loader` resolves a chain's `module` names; the error names the module that is missing.
pub fn with_built_in(loader: &super::Loader) -> Result<Value, super::LoadErrorKind> {
    let mut modules = Vec::new();
    for name in BUILT_IN_RULES {
        let module = loader.module(std::path::Path::new("./-"), name)?;
        if let Some(schema) = &module.info.config_schema {
            modules.push((*name, schema.clone()));
        }
    }
    Ok(with_modules(super::spec::schema(), &modules))
}

/// `base` (the schema of [`super::ChainSpec`]) with the config schema of each `(module, schema)`.
pub fn with_modules(mut base: Value, modules: &[(&str, Value)]) -> Value {
    let mut defs = base.get("$defs").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut cases = Vec::new();
    for (name, schema) in modules {
        let mut schema = schema.clone();
        let own: Map<String, Value> = match schema.as_object_mut() {
            Some(object) => {
                object.remove("$schema");
                object.remove("$defs").and_then(|d| d.as_object().cloned()).unwrap_or_default()
            }
            None => Map::new(),
        };
        for (def, mut value) in own {
            rewrite_refs(&mut value, name);
            defs.insert(format!("{name}.{def}"), value);
        }
        rewrite_refs(&mut schema, name);
        defs.insert(format!("{name}.config"), schema);
        cases.push(json!({
            "if": {"properties": {"module": {"const": name}}, "required": ["module"]},
            "then": {"properties": {"config": {"$ref": format!("#/$defs/{name}.config")}}}
        }));
    }
    if let Some(node) = defs.get_mut("NodeSpec").and_then(Value::as_object_mut)
        && !cases.is_empty()
    {
        node.insert("allOf".into(), Value::Array(cases));
    }
    if let Some(object) = base.as_object_mut() {
        object.insert("$defs".into(), Value::Object(defs));
    }
    base
}

/// `#/$defs/X` → `#/$defs/<module>.X` everywhere in `value`.
fn rewrite_refs(value: &mut Value, module: &str) {
    match value {
        Value::Object(object) => {
            for (key, v) in object.iter_mut() {
                if key == "$ref"
                    && let Some(target) = v.as_str().and_then(|r| r.strip_prefix("#/$defs/"))
                {
                    *v = Value::String(format!("#/$defs/{module}.{target}"));
                } else {
                    rewrite_refs(v, module);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, module)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_schema_is_chosen_by_module_and_keeps_its_refs() {
        let base = json!({"$defs": {"NodeSpec": {"type": "object"}}});
        let threshold = json!({"$schema": "x", "type": "object", "properties": {"op": {"$ref": "#/$defs/Op"}},
            "$defs": {"Op": {"enum": [">"]}}});
        let merged = with_modules(base, &[("threshold", threshold)]);
        let defs = &merged["$defs"];
        assert_eq!(defs["threshold.config"]["properties"]["op"]["$ref"], "#/$defs/threshold.Op");
        assert_eq!(defs["threshold.Op"], json!({"enum": [">"]}));
        assert_eq!(defs["NodeSpec"]["allOf"][0]["if"]["properties"]["module"]["const"], "threshold");
        let validator =
            jsonschema::validator_for(&json!({"$defs": merged["$defs"], "$ref": "#/$defs/NodeSpec"})).unwrap();
        assert!(validator.is_valid(&json!({"module": "threshold", "config": {"op": ">"}})));
        assert!(!validator.is_valid(&json!({"module": "threshold", "config": {"op": "<>"}})));
    }
}

//! What a module says about itself, as the host reads it at load (`ABI.md` §4a).
//!
//! Three sources, each the honest one for what it tells:
//! - the **manifest** (custom section `sluice:manifest`, written by the SDK's attributes from the
//!   rule's code): the description and the relations the node emits;
//! - the **imports**: the host capabilities the module uses (state, windows, tables, series, timers,
//!   actions). They are what the module can actually call, for any guest — WAT included — so
//!   the loader's "uses actions but has no connector" check reads them, not the manifest;
//! - the export **`sluice_config_schema`**: the config's JSON Schema, which `schemars` builds when
//!   code runs and so cannot be a custom section. The host calls it once, on the scratch instance
//!   that reads the ABI version, and compiles it into a validator the loader runs on each node's
//!   config before `init`.
//!
//! A module with none of these (hand-written WAT, another language) loads as before: its
//! connections and config are not checked against anything, its actions still are.

use serde_json::Value;
pub use sluice_sdk::manifest::{Manifest, MoreRelations, SCHEMA_EXPORT, SECTION};

/// A host capability, as the module's imports show it.
pub const CAPABILITIES: &[(&str, &[&str])] = &[
    ("state", &["state_get", "state_put", "state_delete"]),
    ("windows", &["window_define", "window_add", "window_item", "window_fold_get", "window_fold_put", "watermark"]),
    ("tables", &["table_get", "table_put", "table_delete"]),
    ("series", &["series_append", "series_query"]),
    ("timers", &["timer_set", "timer_cancel"]),
    ("actions", &["action_call"]),
];

/// What the host knows about a module beyond its code.
pub struct ModuleInfo {
    /// Its `sluice:manifest` section, if it has one.
    pub manifest: Option<Manifest>,
    /// The capabilities it imports, in [`CAPABILITIES`] order.
    pub capabilities: Vec<&'static str>,
    /// The JSON Schema `sluice_config_schema` returned, if it exports that.
    pub config_schema: Option<Value>,
    validator: Option<jsonschema::Validator>,
}

impl std::fmt::Debug for ModuleInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleInfo")
            .field("manifest", &self.manifest)
            .field("capabilities", &self.capabilities)
            .field("config_schema", &self.config_schema.is_some())
            .finish()
    }
}

/// A config the schema refuses: `field` is a path inside the config (`threshold`, `ops[1].set`),
/// empty for the config as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolation {
    pub field: String,
    pub message: String,
}

impl ModuleInfo {
    /// Builds the info of a module from its manifest section, its import names and its schema.
    pub fn new<'a>(
        manifest: Option<Manifest>,
        imports: impl Iterator<Item = &'a str>,
        config_schema: Option<Value>,
    ) -> Result<Self, String> {
        let imports: Vec<&str> = imports.collect();
        let capabilities = CAPABILITIES
            .iter()
            .filter(|(_, names)| names.iter().any(|n| imports.contains(n)))
            .map(|(cap, _)| *cap)
            .collect();
        let validator = match &config_schema {
            Some(schema) => Some(
                jsonschema::validator_for(schema)
                    .map_err(|e| format!("`{SCHEMA_EXPORT}` returned a schema that does not compile: {e}"))?,
            ),
            None => None,
        };
        Ok(ModuleInfo { manifest, capabilities, config_schema, validator })
    }

    /// Whether the module imports the capability (`"actions"`, …).
    pub fn uses(&self, capability: &str) -> bool {
        self.capabilities.contains(&capability)
    }

    /// Checks a node's config against the module's schema. An absent (`null`) config is read as
    /// `{}` first, then as `null`, as the SDK parses it; the error is `{}`'s.
    pub fn check_config(&self, config: &Value) -> Result<(), SchemaViolation> {
        let Some(validator) = &self.validator else { return Ok(()) };
        if config.is_null() {
            let empty = Value::Object(Default::default());
            return match first_violation(validator, &empty) {
                None => Ok(()),
                Some(_) if validator.is_valid(&Value::Null) => Ok(()),
                Some(violation) => Err(violation),
            };
        }
        // A number no f64 holds (`1001e+400`: numbers keep their text) makes the validator
        // panic; it is refused here, naming its field, before the validator sees it.
        if let Some(field) = unrepresentable(config, String::new()) {
            return Err(SchemaViolation { field, message: "a number too large for a 64-bit float".into() });
        }
        first_violation(validator, config).map_or(Ok(()), Err)
    }
}

/// The path of the first number in `value` that is not a finite f64, if any.
fn unrepresentable(value: &Value, path: String) -> Option<String> {
    let join = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    match value {
        Value::Number(n) => (!n.as_f64().is_some_and(f64::is_finite)).then_some(path),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| unrepresentable(v, format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| unrepresentable(v, join(k))),
        _ => None,
    }
}

/// The first error, named by the field it is about.
fn first_violation(validator: &jsonschema::Validator, config: &Value) -> Option<SchemaViolation> {
    let error = validator.iter_errors(config).next()?;
    Some(violation(config, &error))
}

/// What an error says, about which field. A value none of an `anyOf`/`oneOf`'s alternatives
/// takes (an enum with data, an `Option`) is explained by the alternative that got furthest
/// into it: `{"delete": "ts"}` is a `delete` whose place is wrong (`ops[0].delete`), not "not
/// valid under any of the schemas" of `ops[0]`.
fn violation(config: &Value, error: &jsonschema::ValidationError<'_>) -> SchemaViolation {
    use jsonschema::error::ValidationErrorKind as Kind;
    let depth = |e: &jsonschema::ValidationError<'_>| e.instance_path.as_str().matches('/').count();
    if let Kind::AnyOf { context } | Kind::OneOfNotValid { context } = &error.kind
        && let Some(deepest) = context.iter().flatten().max_by_key(|e| depth(e))
        && depth(deepest) > depth(error)
    {
        return violation(config, deepest);
    }
    let mut field = field_path(config, error.instance_path.as_str());
    let join = |field: &str, key: &str| if field.is_empty() { key.to_string() } else { format!("{field}.{key}") };
    let message = match &error.kind {
        jsonschema::error::ValidationErrorKind::Required { property } => {
            let name = property.as_str().map(str::to_string).unwrap_or_else(|| property.to_string());
            field = join(&field, &name);
            format!("missing field `{name}`")
        }
        jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } if !unexpected.is_empty() => {
            field = join(&field, &unexpected[0]);
            format!("unknown field `{}`", unexpected[0])
        }
        _ => error.to_string(),
    };
    SchemaViolation { field, message }
}

/// A JSON pointer into `value` as a config path: `/ops/1/set` → `ops[1].set`.
fn field_path(value: &Value, pointer: &str) -> String {
    let mut path = String::new();
    let mut at = Some(value);
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match at {
            Some(Value::Array(items)) => {
                path.push_str(&format!("[{segment}]"));
                at = segment.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            other => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&segment);
                at = other.and_then(|v| v.get(&segment));
            }
        }
    }
    path
}

/// The `sluice:manifest` section of a module given as wasm bytes or WAT text; `None` when it
/// has none. More than one such section is refused (one module, one node).
pub fn read_manifest(bytes: &[u8]) -> Result<Option<Manifest>, String> {
    let binary;
    let wasm = if bytes.starts_with(b"\0asm") {
        bytes
    } else {
        binary = wat::parse_bytes(bytes).map_err(|e| e.to_string())?;
        &binary[..]
    };
    let mut found = None;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| e.to_string())?;
        if let wasmparser::Payload::CustomSection(section) = payload
            && section.name() == SECTION
        {
            if found.is_some() {
                return Err(format!("more than one `{SECTION}` section"));
            }
            found = Some(Manifest::parse(section.data())?);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_number_no_float_holds_is_refused_naming_its_field() {
        let m = ModuleInfo::new(None, std::iter::empty(), Some(json!({"type": "object"}))).unwrap();
        let config: Value = serde_json::from_str(r#"{"window": {"sizeMs": 1001e+400}}"#).unwrap();
        let err = m.check_config(&config).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.message.as_str()),
            ("window.sizeMs", "a number too large for a 64-bit float")
        );
    }

    fn info(schema: Value) -> ModuleInfo {
        ModuleInfo::new(None, std::iter::empty(), Some(schema)).unwrap()
    }

    #[test]
    fn violations_name_the_field() {
        let schema = json!({
            "type": "object",
            "properties": {"threshold": {"type": "number"}, "ops": {"type": "array", "items": {"type": "object",
                "properties": {"set": {"type": "string"}}}}},
            "required": ["threshold"],
            "additionalProperties": false
        });
        let m = info(schema);
        let v = m.check_config(&json!({"threshold": "high"})).unwrap_err();
        assert_eq!(v.field, "threshold");
        let v = m.check_config(&json!({})).unwrap_err();
        assert_eq!((v.field.as_str(), v.message.as_str()), ("threshold", "missing field `threshold`"));
        let v = m.check_config(&json!({"threshold": 1, "tresh": 2})).unwrap_err();
        assert_eq!((v.field.as_str(), v.message.as_str()), ("tresh", "unknown field `tresh`"));
        let v = m.check_config(&json!({"threshold": 1, "ops": [{"set": "a"}, {"set": 3}]})).unwrap_err();
        assert_eq!(v.field, "ops[1].set");
        m.check_config(&json!({"threshold": 1})).unwrap();
    }

    #[test]
    fn an_alternative_is_explained_by_the_one_that_got_furthest() {
        // An externally tagged enum, as schemars writes `enum Op { Delete(String), Keep(bool) }`.
        let m = info(json!({"oneOf": [
            {"type": "object", "properties": {"delete": {"type": "string", "pattern": "^data\\."}},
             "required": ["delete"], "additionalProperties": false},
            {"type": "object", "properties": {"keep": {"type": "boolean"}}, "required": ["keep"],
             "additionalProperties": false}
        ]}));
        let v = m.check_config(&json!({"delete": "ts"})).unwrap_err();
        assert_eq!(v.field, "delete", "{v:?}");
        m.check_config(&json!({"delete": "data.a"})).unwrap();
    }

    #[test]
    fn an_absent_config_is_an_empty_object_or_null() {
        info(json!({"type": "object"})).check_config(&Value::Null).unwrap();
        info(json!({"type": ["object", "null"], "required": ["x"]})).check_config(&Value::Null).unwrap();
        let v = info(json!({"type": "object", "required": ["x"]})).check_config(&Value::Null).unwrap_err();
        assert_eq!(v.field, "x");
    }

    #[test]
    fn capabilities_come_from_imports() {
        let m = ModuleInfo::new(None, ["log", "action_call", "state_get"].into_iter(), None).unwrap();
        assert_eq!(m.capabilities, ["state", "actions"]);
        assert!(m.uses("actions"));
    }

    #[test]
    fn the_manifest_section_is_read_from_wat() {
        let wat = r#"(module (@custom "sluice:manifest" "{\"manifest\":1,\"kind\":\"node\",\"relations\":[\"A\"]}"))"#;
        let m = read_manifest(wat.as_bytes()).unwrap().unwrap();
        assert_eq!(m.relations.unwrap(), ["A"]);
        assert_eq!(read_manifest(b"(module)").unwrap(), None);
    }
}

//! Every validation error names the file, the node and the field.

use serde_json::{Value, json};
use sluice::chain::{FileError, LoadError, LoadErrorKind, Loader};

use crate::support::{ChainDir, modules, runtime};

fn valid() -> Value {
    json!({
        "name": "valid",
        "entry": "check",
        "nodes": [
            {"id": "check", "module": "check-fields", "config": {"messageNames": ["t"]}},
            {"id": "rename", "module": "rename-keys", "config": {"renameKeysMapping": {"t": "temperature"}}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "check", "to": "rename", "relation": "True"},
            {"from": "rename", "to": "out", "relation": "Success"}
        ]
    })
}

/// Loads `chain` and expects an error at `node`/`field` whose text contains `needle`.
fn expect_error(chain: Value, node: Option<&str>, field: &str, needle: &str) -> LoadError {
    let dir = ChainDir::new();
    let err = dir.load("bad.json", &chain).expect_err("chain must be refused");
    assert_eq!(err.file, dir.dir.path().join("bad.json"), "{err}");
    assert_eq!(err.node_id(), node, "{err}");
    assert_eq!(err.field.as_deref(), Some(field), "{err}");
    let text = err.to_string();
    assert!(text.contains(needle), "`{text}` lacks `{needle}`");
    assert!(text.starts_with(&dir.dir.path().join("bad.json").display().to_string()), "{text}");
    if let Some(node) = node {
        assert!(text.contains(&format!("node `{node}`")), "{text}");
    }
    assert!(text.contains(&format!("field `{field}`")), "{text}");
    err
}

#[test]
fn the_valid_chain_loads() {
    let chain = ChainDir::new().load("ok.json", &valid()).expect("loads");
    assert_eq!(chain.nodes.len(), 3);
    assert_eq!(chain.nodes[chain.entry].id, "check");
}

#[test]
fn missing_module_file() {
    let mut c = valid();
    c["nodes"][0]["module"] = json!("missing/filter.wasm");
    expect_error(c, Some("check"), "module", "not found");
}

#[test]
fn unknown_builtin_module() {
    let mut c = valid();
    c["nodes"][1]["module"] = json!("no-such-rule");
    expect_error(c, Some("rename"), "module", "no built-in rule `no-such-rule`");
}

#[test]
fn a_file_that_is_not_wasm() {
    let dir = ChainDir::new();
    dir.write("junk.wasm", "this is not wasm");
    let mut c = valid();
    c["nodes"][0]["module"] = json!("junk.wasm");
    let path = dir.write_json("bad.json", &c);
    let err = Loader::new(&runtime(), vec![modules().to_path_buf()]).load(&path).unwrap_err();
    assert_eq!((err.node_id(), err.field.as_deref()), (Some("check"), Some("module")));
    assert!(err.to_string().contains("not a valid WebAssembly module"), "{err}");
}

#[test]
fn unknown_node_in_a_connection() {
    let mut c = valid();
    c["connections"][1]["to"] = json!("sink");
    expect_error(c, Some("rename"), "connections[1].to", "connection to unknown node `sink`");
    let mut c = valid();
    c["connections"][0]["from"] = json!("ghost");
    expect_error(c, Some("ghost"), "connections[0].from", "connection from unknown node `ghost`");
}

#[test]
fn empty_relation() {
    let mut c = valid();
    c["connections"][0]["relation"] = json!(" ");
    expect_error(c, Some("check"), "connections[0].relation", "relation is empty");
}

#[test]
fn missing_entry_node() {
    let mut c = valid();
    c["entry"] = json!("start");
    expect_error(c, None, "entry", "entry node `start` is not among the nodes");
}

#[test]
fn duplicate_node_id() {
    let mut c = valid();
    c["nodes"][1]["id"] = json!("check");
    expect_error(c, Some("check"), "nodes[1].id", "duplicate node id");
}

#[test]
fn node_with_two_kinds() {
    let mut c = valid();
    c["nodes"][2]["module"] = json!("check-fields");
    expect_error(c, Some("out"), "module", "exactly one of `module`, `chain` or `sink`");
}

#[test]
fn unknown_sink() {
    let mut c = valid();
    c["nodes"][2]["sink"] = json!("printer");
    expect_error(c, Some("out"), "sink", "unknown sink `printer`");
}

#[test]
fn a_cycle_without_a_bound() {
    let mut c = valid();
    c["connections"].as_array_mut().unwrap().push(json!({"from": "rename", "to": "check", "relation": "Success"}));
    expect_error(c, Some("check"), "connections", "cycle (check → rename → check)");
}

#[test]
fn a_cycle_with_max_hops_loads() {
    let mut c = valid();
    c["connections"].as_array_mut().unwrap().push(json!({"from": "rename", "to": "check", "relation": "Success"}));
    c["maxHops"] = json!(20);
    let chain = ChainDir::new().load("ok.json", &c).expect("bounded cycle loads");
    assert_eq!(chain.max_hops, 20);
}

#[test]
fn config_with_a_wrong_type_names_the_config_field() {
    let mut c = valid();
    c["nodes"][0]["config"] = json!({"messageNames": ["t"], "checkAllKeys": "yes"});
    // Checked against the module's config schema, before `init` runs.
    expect_error(c, Some("check"), "config.checkAllKeys", "\"yes\" is not of type \"boolean\"");
}

#[test]
fn config_with_a_missing_field() {
    let mut c = valid();
    c["nodes"][1]["config"] = json!({});
    expect_error(c, Some("rename"), "config.renameKeysMapping", "missing field `renameKeysMapping`");
}

#[test]
fn config_with_an_unknown_field() {
    let mut c = valid();
    c["nodes"][0]["config"] = json!({"messageNames": ["t"], "checkAll": true});
    expect_error(c, Some("check"), "config.checkAll", "unknown field `checkAll`");
}

#[test]
fn config_refused_by_the_node_init() {
    let mut c = valid();
    c["nodes"][0] = json!({"id": "check", "module": "counter", "config": {"relation": ""}});
    expect_error(c, Some("check"), "config", "relation must not be empty");
}

#[test]
fn bad_limits() {
    let mut c = valid();
    c["nodes"][0]["limits"] = json!({"memoryMb": 0});
    expect_error(c, Some("check"), "limits.memoryMb", "outside 1..=4096");
    let mut c = valid();
    c["nodes"][0]["limits"] = json!({"deadline": 5});
    expect_error(c, Some("check"), "nodes[0].limits.deadline", "unknown field `deadline`");
}

#[test]
fn unknown_fields_name_the_node() {
    let mut c = valid();
    c["nodes"][1]["modul"] = json!("x");
    expect_error(c, Some("rename"), "nodes[1].modul", "unknown field `modul`");
    let mut c = valid();
    c["conections"] = json!([]);
    expect_error(c, None, "conections", "unknown field `conections`");
}

#[test]
fn missing_required_fields() {
    let mut c = valid();
    c.as_object_mut().unwrap().remove("entry");
    expect_error(c, None, "entry", "missing field `entry`");
    let mut c = valid();
    c["connections"][0].as_object_mut().unwrap().remove("relation");
    expect_error(c, None, "connections[0].relation", "missing field `relation`");
}

#[test]
fn syntax_errors_give_line_and_column() {
    let dir = ChainDir::new();
    let path = dir.write("broken.json", "{\n  \"entry\": \"a\",\n  \"nodes\": [,]\n}");
    let err = Loader::new(&runtime(), vec![]).load(&path).unwrap_err();
    assert!(matches!(err.kind, LoadErrorKind::File(FileError::Syntax { line: 3, .. })), "{err}");
    assert!(err.to_string().contains("invalid JSON at line 3, column 13"), "{err}");
}

#[test]
fn a_missing_chain_file() {
    let err = Loader::new(&runtime(), vec![]).load(std::path::Path::new("/nonexistent/chain.json")).unwrap_err();
    assert!(err.to_string().starts_with("/nonexistent/chain.json: cannot read"), "{err}");
}

#[test]
fn nested_chain_errors_name_the_nested_file() {
    let dir = ChainDir::new();
    let mut inner = valid();
    inner["nodes"][0]["config"] = json!({"messageNames": 7});
    let inner_path = dir.write_json("inner.json", &inner);
    let outer = json!({
        "entry": "sub",
        "nodes": [{"id": "sub", "chain": "inner.json"}]
    });
    let err = dir.load("outer.json", &outer).unwrap_err();
    assert_eq!(err.file, inner_path);
    assert_eq!((err.node_id(), err.field.as_deref()), (Some("check"), Some("config.messageNames")));
}

#[test]
fn nested_chain_missing_or_recursive() {
    let dir = ChainDir::new();
    let outer = json!({"entry": "sub", "nodes": [{"id": "sub", "chain": "nowhere.json"}]});
    let err = dir.load("outer.json", &outer).unwrap_err();
    assert_eq!((err.node_id(), err.field.as_deref()), (Some("sub"), Some("chain")));
    let selfish = json!({"entry": "me", "nodes": [{"id": "me", "chain": "self.json"}]});
    let err = dir.load("self.json", &selfish).unwrap_err();
    assert!(err.to_string().contains("includes itself"), "{err}");
}

/// Bad JSON never panics: every prefix of a valid chain file is either valid or an error.
#[test]
fn truncated_files_are_errors_not_panics() {
    let dir = ChainDir::new();
    let text = serde_json::to_string_pretty(&valid()).unwrap();
    let runtime = runtime();
    let loader = Loader::new(&runtime, vec![modules().to_path_buf()]);
    for cut in (0..text.len()).step_by(7) {
        let path = dir.write("cut.json", &text[..cut]);
        assert!(loader.load(&path).is_err(), "prefix of {cut} bytes loaded");
    }
}

#[test]
fn a_schema_reference_is_allowed() {
    let mut c = valid();
    c["$schema"] = json!("../chains/chain.schema.json");
    ChainDir::new().load("ok.json", &c).expect("loads");
}

/// The committed schema is the one the loader's types and the built-in modules generate.
#[test]
fn the_committed_schema_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../chains/chain.schema.json");
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let runtime = runtime();
    let loader = Loader::new(&runtime, vec![modules().to_path_buf()]);
    let current = sluice::chain::schema::with_built_in(&loader).unwrap();
    assert_eq!(committed, current, "run `sluice schema > chains/chain.schema.json`");
}

/// What an editor checks with the committed schema agrees with the loader: the shipped chains
/// pass it, and a config the module's schema refuses fails it.
#[test]
fn the_shipped_chains_follow_the_committed_schema() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo.join("chains/chain.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for entry in std::fs::read_dir(repo.join("chains")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") && !path.ends_with("chain.schema.json") {
            let chain: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let errors: Vec<String> = validator.iter_errors(&chain).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        }
    }
    let mut bad = valid();
    bad["nodes"][0]["config"] = json!({"messageNames": ["t"], "checkAllKeys": "yes"});
    assert!(!validator.is_valid(&bad));
}

// Node manifests: what a module says it emits, uses and takes is checked at load.

/// A connection on a relation the node's manifest does not list.
#[test]
fn a_relation_the_node_never_emits_is_refused() {
    let c = json!({
        "entry": "f",
        "nodes": [
            {"id": "f", "module": "threshold", "config": {"value": "data.t", "op": ">", "threshold": 100}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "f", "to": "out", "relation": "Anomaly"},
            {"from": "f", "to": "out", "relation": "True"}
        ]
    });
    expect_error(
        c,
        Some("f"),
        "connections[1].relation",
        "node `f` (threshold) emits Anomaly, Normal, Failure; no relation `True`",
    );
    // A filter's relations come from `#[filter]` itself.
    let mut c = valid();
    c["connections"][0]["relation"] = json!("Success");
    expect_error(c, Some("check"), "connections[0].relation", "emits True, False, Failure; no relation `Success`");
}

/// Relations named by a node's config (or by a script) are not checked.
#[test]
fn relations_from_config_are_not_checked() {
    let c = json!({
        "entry": "count",
        "nodes": [{"id": "count", "module": "counter", "config": {"relation": "Counted"}}, {"id": "out", "sink": "output"}],
        "connections": [{"from": "count", "to": "out", "relation": "Counted"}]
    });
    ChainDir::new().load("ok.json", &c).expect("loads");
}

/// A module that imports `action_call` needs a connector granted.
#[test]
fn actions_without_a_granted_connector_are_refused() {
    let c = json!({
        "entry": "post",
        "nodes": [
            {"id": "post", "module": "rest-action", "config": {"url": "http://127.0.0.1:9/x"}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [{"from": "post", "to": "out", "relation": "Success"}]
    });
    expect_error(c, Some("post"), "connector", "node `post` (rest-action) calls actions but is granted no connector");
}

/// The config is checked against the module's schema before `init`, naming the field.
#[test]
fn a_config_against_the_schema_is_refused_before_init() {
    let c = json!({
        "entry": "f",
        "nodes": [
            {"id": "f", "module": "threshold", "config": {"value": "data.t", "op": ">", "threshold": "high"}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [{"from": "f", "to": "out", "relation": "Anomaly"}]
    });
    expect_error(c, Some("f"), "config.threshold", "config rejected: \"high\" is not of type \"number\"");
    // Nested: the path into the config.
    let c = json!({
        "entry": "t",
        "nodes": [{"id": "t", "module": "transform", "config": {"ops": [{"delete": "data.a"}, {"delete": 7}]}},
                  {"id": "out", "sink": "output"}],
        "connections": [{"from": "t", "to": "out", "relation": "Success"}]
    });
    expect_error(c, Some("t"), "config.ops[1].delete", "config rejected: 7 is not of type \"string\"");
}

/// A hand-written module with no manifest and no schema: it loads, its connections and config
/// unchecked (there is nothing to check them against), its imports still are.
#[test]
fn a_wat_module_without_a_manifest_loads() {
    let dir = ChainDir::new();
    let wat = include_str!("../../../rule-sdk/ABI.md").split("```wat\n").nth(1).unwrap().split("```").next().unwrap();
    dir.write("forward.wat", wat);
    let c = json!({
        "entry": "fwd",
        "nodes": [{"id": "fwd", "module": "forward.wat", "config": {"anything": 1}}, {"id": "out", "sink": "output"}],
        "connections": [{"from": "fwd", "to": "out", "relation": "Success"}, {"from": "fwd", "to": "out", "relation": "Whatever"}]
    });
    let chain = dir.load("ok.json", &c).expect("a module without a manifest loads");
    let sluice::chain::NodeKind::Rule(rule) = &chain.nodes[0].kind else { panic!("a rule") };
    assert!(rule.module.info.manifest.is_none() && rule.module.info.config_schema.is_none());
    // The same module calling actions is refused without a connector: that check reads imports.
    let acting = wat.replace(
        "(memory (export",
        "(import \"sluice\" \"action_call\" (func $act (param i32 i32) (result i64)))\n  (memory (export",
    );
    dir.write("forward.wat", &acting);
    let err = dir.load("bad.json", &c).expect_err("actions need a connector");
    assert_eq!((err.node_id(), err.field.as_deref()), (Some("fwd"), Some("connector")), "{err}");
}

/// A WAT module may carry a manifest too: a custom section is all it takes.
#[test]
fn a_wat_module_with_a_manifest_is_checked() {
    let dir = ChainDir::new();
    let wat = include_str!("../../../rule-sdk/ABI.md").split("```wat\n").nth(1).unwrap().split("```").next().unwrap();
    let with_manifest = wat.replace(
        "(memory (export",
        "(@custom \"sluice:manifest\" \"{\\\"manifest\\\":1,\\\"kind\\\":\\\"node\\\",\\\"relations\\\":[\\\"Success\\\",\\\"Failure\\\"]}\")\n  (memory (export",
    );
    dir.write("forward.wat", &with_manifest);
    let c = json!({
        "entry": "fwd",
        "nodes": [{"id": "fwd", "module": "forward.wat"}, {"id": "out", "sink": "output"}],
        "connections": [{"from": "fwd", "to": "out", "relation": "Whatever"}]
    });
    let err = dir.load("bad.json", &c).expect_err("a relation the manifest does not list");
    assert_eq!((err.node_id(), err.field.as_deref()), (Some("fwd"), Some("connections[0].relation")), "{err}");
    assert!(
        err.to_string().contains("node `fwd` (forward.wat) emits Success, Failure; no relation `Whatever`"),
        "{err}"
    );
}

//! Entity relations: `create-relation`, `delete-relation`, `check-relation`, `change-originator`
//! with source RELATED and `originator-attributes` with `related`, built to wasm and run in the
//! engine over the chain's `relations` table; their import, `sluice import --relations`, and
//! relations surviving a SIGKILL. Every expected output is worked out from ThingsBoard's node
//! source (class and method named at each test), not from Sluice.

use std::path::Path;

use serde_json::{Value, json};
use sluice_sdk::TbMsg;

use crate::support::{run_chain, sluice, stderr};

const T0: i64 = 1_700_000_000_000;

fn reading(id: &str, device: &str, data: Value) -> TbMsg {
    TbMsg::telemetry(device, data).with_id(id).with_ts(T0).with_meta("deviceName", device)
}

fn originators(msgs: &[TbMsg]) -> Vec<(String, String, String)> {
    msgs.iter().map(|m| (m.id.clone(), m.originator.entity_type.clone(), m.originator.name.clone())).collect()
}

fn row(id: &str, entity_type: &str, name: &str) -> (String, String, String) {
    (id.to_string(), entity_type.to_string(), name.to_string())
}

/// Runs `chain`, written into `dir` beside the seed files `files` (name → JSON Lines text).
fn run_in(dir: &Path, chain: &Value, files: &[(&str, String)], msgs: &[TbMsg]) -> Vec<TbMsg> {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let path = dir.join("chain.json");
    std::fs::write(&path, chain.to_string()).unwrap();
    sluice_testkit::run_chain_file(&path, msgs, 1).output
}

/// A seed of the relation table in the layout of `sluice_sdk::entity_relations`: site "Site"
/// Contains asset "Building A", which Contains thermostat "T-1", which Uses fan "Fan-1".
fn relation_seed() -> String {
    let link = |t: &str, e: &str, n: &str| json!({"type": t, "entityType": e, "name": n});
    [
        ("ASSET:Site", json!({"out": [link("Contains", "ASSET", "Building A")]})),
        (
            "ASSET:Building A",
            json!({"in": [link("Contains", "ASSET", "Site")], "out": [link("Contains", "DEVICE", "T-1")]}),
        ),
        (
            "DEVICE:T-1",
            json!({"in": [link("Contains", "ASSET", "Building A")], "out": [link("Uses", "DEVICE", "Fan-1")]}),
        ),
        ("DEVICE:Fan-1", json!({"in": [link("Uses", "DEVICE", "T-1")]})),
    ]
    .iter()
    .map(|(k, v)| format!("{}\n", json!({"key": k, "value": v})))
    .collect()
}

/// Relations created from the messages themselves, then followed.
/// `TbAbstractRelationActionNode.processSingleSearchDirection`: direction FROM → from = the
/// entity named by `entityNamePattern` (asset `${building}`), to = the originator;
/// `TbCreateRelationNode.createIfAbsent`: an existing relation is kept, `Success` either way.
/// `TbChangeOriginatorNode.getNewOriginator` (RELATED) → `EntitiesRelatedEntityIdAsyncLoader`:
/// direction TO → the `from` of the first relation of type Contains from an ASSET — the
/// building; none → `Failure` ("Failed to find new originator!"). A missing `${building}` is a
/// `Failure` of the create node.
#[test]
fn relations_created_by_messages_lead_change_originator_related() {
    let chain = json!({
        "entry": "relate",
        "nodes": [
            {"id": "relate", "module": "create-relation", "config": {"direction": "FROM", "entityType": "ASSET",
                "entityNamePattern": "${building}", "relationType": "Contains"}},
            {"id": "up", "module": "change-originator", "config": {"originatorSource": "RELATED",
                "relationsQuery": {"direction": "TO", "maxLevel": 1,
                                   "filters": [{"relationType": "Contains", "entityTypes": ["ASSET"]}]}}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "relate", "to": "up", "relation": "Success"},
            {"from": "relate", "to": "out", "relation": "Failure"},
            {"from": "up", "to": "out", "relation": "Success"},
            {"from": "up", "to": "out", "relation": "Failure"}
        ]
    });
    let msgs = [
        reading("a", "T-1", json!({"temperature": 21})).with_meta("building", "Building A"),
        reading("b", "T-2", json!({"temperature": 22})).with_meta("building", "Building B"),
        reading("c", "T-1", json!({"temperature": 23})).with_meta("building", "Building A"),
        reading("d", "T-3", json!({"temperature": 24})),
    ];
    let out = run_chain(&chain, &msgs);
    assert_eq!(
        originators(&out),
        [
            row("a", "ASSET", "Building A"),
            row("b", "ASSET", "Building B"),
            row("c", "ASSET", "Building A"),
            row("d", "DEVICE", "T-3")
        ]
    );
    assert!(out[3].meta("error").unwrap_or_default().contains("${building}"), "{:?}", out[3]);
    assert_eq!(out[0].data, json!({"temperature": 21}), "the message is otherwise unchanged");
}

/// `TbCheckRelationNode.processSingle`: direction FROM → is there a relation from the configured
/// entity (asset Building A) to the originator of type Contains → `True`/`False`;
/// `processRelationsQuery`: any entity the query finds → `True`. The relations come from the
/// chain's `tables` seed.
#[test]
fn check_relation_is_true_or_false_as_thingsboard() {
    let dir = tempfile::tempdir().unwrap();
    let msgs = [reading("t1", "T-1", json!({})), reading("t2", "T-2", json!({})), reading("fan", "Fan-1", json!({}))];
    let run = |config: Value, relation: &str| -> Vec<String> {
        let chain = json!({
            "entry": "check",
            "tables": {"relations": {"seed": "relations.jsonl"}},
            "nodes": [{"id": "check", "module": "check-relation", "config": config}, {"id": "out", "sink": "output"}],
            "connections": [{"from": "check", "to": "out", "relation": relation}]
        });
        let out = run_in(dir.path(), &chain, &[("relations.jsonl", relation_seed())], &msgs);
        out.into_iter().map(|m| m.id).collect()
    };
    let single = json!({"checkForSingleEntity": true, "direction": "FROM", "entityType": "ASSET",
                        "entityName": "Building A", "relationType": "Contains"});
    assert_eq!(run(single.clone(), "True"), ["t1"]);
    assert_eq!(run(single, "False"), ["t2", "fan"]);
    // TO: from the originator to the entity — T-1 Uses Fan-1.
    let uses = json!({"checkForSingleEntity": true, "direction": "TO", "entityType": "DEVICE",
                      "entityName": "Fan-1", "relationType": "Uses"});
    assert_eq!(run(uses, "True"), ["t1"]);
    let query = json!({"checkForSingleEntity": false, "relationsQuery": {"direction": "TO", "maxLevel": 1,
                       "filters": [{"relationType": "Contains", "entityTypes": ["ASSET"]}]}});
    assert_eq!(run(query, "True"), ["t1"]);
}

/// `TbGetRelatedAttributeNode` (ThingsBoard's RPC tutorial: the thermostat's fan, FROM / Uses /
/// DEVICE, its latest `windDirection`): `TbEntityGetAttrNode.putAttributesAndTell` puts each
/// found value, as text, under its mapped name in metadata; no related entity → `Failure`. The
/// fan's telemetry is saved by the chain's save-timeseries node (`table-writer` into
/// `timeseries`) before the thermostat's message asks. Then `delete-relation`
/// (`TbDeleteRelationNode`, single entity, TO the fan) removes the relation, and the next
/// lookup fails.
#[test]
fn related_attributes_read_what_the_chain_saved_for_the_related_entity() {
    let dir = tempfile::tempdir().unwrap();
    let chain = json!({
        "entry": "save",
        "tables": {"relations": {"seed": "relations.jsonl"}},
        "nodes": [
            {"id": "save", "module": "table-writer", "config": {"table": "timeseries", "merge": true}},
            {"id": "fan", "module": "originator-attributes", "config": {"table": "timeseries",
                "attributes": {"windDirection": "windDirection"},
                "related": {"direction": "FROM", "maxLevel": 1,
                            "filters": [{"relationType": "Uses", "entityTypes": ["DEVICE"]}]}}},
            {"id": "unlink", "module": "delete-relation", "config": {"deleteForSingleEntity": true, "direction": "TO",
                "entityType": "DEVICE", "entityNamePattern": "${unlink}", "relationType": "Uses"}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "save", "to": "fan", "relation": "Success"},
            {"from": "fan", "to": "out", "relation": "Success"},
            {"from": "fan", "to": "out", "relation": "Failure"},
            {"from": "fan", "to": "unlink", "relation": "Success"}
        ]
    });
    let msgs = [
        reading("w", "Fan-1", json!({"windDirection": 270})),
        reading("t", "T-1", json!({"temperature": 25})),
        reading("u", "T-1", json!({"temperature": 26})).with_meta("unlink", "Fan-1"),
        reading("v", "T-1", json!({"temperature": 27})),
    ];
    let out = run_in(dir.path(), &chain, &[("relations.jsonl", relation_seed())], &msgs);
    let summary: Vec<(&str, Option<&str>, Option<&str>)> =
        out.iter().map(|m| (m.id.as_str(), m.meta("windDirection"), m.meta("error"))).collect();
    let not_found =
        "Failed to find related entity to message originator using relation query specified in the configuration!";
    assert_eq!(
        summary,
        [
            ("w", None, Some(not_found)),
            ("t", Some("270"), None),
            ("u", Some("270"), None),
            ("v", None, Some(not_found))
        ]
    );
}

/// A `tables` seed with a malformed line refuses the chain, naming the seed file and the line.
#[test]
fn a_malformed_seed_refuses_the_chain_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relations.jsonl"), "{\"key\": \"a\", \"value\": 1}\n{\"key\": 7, \"value\": 1}\n")
        .unwrap();
    let chain = json!({"entry": "out", "tables": {"relations": {"seed": "relations.jsonl"}},
                       "nodes": [{"id": "out", "sink": "output"}]});
    let path = dir.path().join("chain.json");
    std::fs::write(&path, chain.to_string()).unwrap();
    let result = sluice(&["validate", path.to_str().unwrap()]);
    assert!(!result.status.success());
    let err = stderr(&result);
    assert!(err.contains("relations.jsonl: line 2:") && err.contains("key"), "{err}");
}

/// A ThingsBoard export with the relation nodes of the RPC tutorial and the fire alarm system
/// (`TbChangeOriginatorNode` RELATED, `TbGetRelatedAttributeNode`, `TbCheckRelationNode` by
/// entity id) imports with no placeholder; `--relations` (ThingsBoard `EntityRelation`s, names
/// beside ids, one end by id only) seeds the chain's table and names the checked entity's id.
/// Run: the thermostat's message gets its fan's `windDirection`, passes the check (from the
/// thermostat TO the fan, Uses) and ends with its building as originator.
#[test]
fn imported_relations_reach_the_related_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let id = |kind: &str, id: &str| json!({"entityType": kind, "id": id});
    let relations = json!([
        {"from": {"entityType": "ASSET", "id": id("ASSET", "a-1"), "name": "Building A"},
         "to": {"entityType": "DEVICE", "id": id("DEVICE", "d-1"), "name": "T-1"}, "type": "Contains", "typeGroup": "COMMON"},
        {"from": {"entityType": "DEVICE", "id": id("DEVICE", "d-1")},
         "to": {"entityType": "DEVICE", "id": "d-2", "name": "Fan-1"}, "type": "Uses", "typeGroup": "COMMON"}
    ]);
    let relations_file = dir.path().join("relations.json");
    std::fs::write(&relations_file, relations.to_string()).unwrap();
    let query = |direction: &str, kind: &str, types: &str| json!({"direction": direction, "maxLevel": 1, "filters": [{"relationType": kind, "entityTypes": [types]}]});
    let nodes = [
        ("action.TbMsgTimeseriesNode", json!({"defaultTTL": 0})),
        (
            "metadata.TbGetRelatedAttributeNode",
            json!({"attrMapping": {"windDirection": "windDirection"}, "relationsQuery": query("FROM", "Uses", "DEVICE"),
                   "telemetry": true}),
        ),
        (
            "filter.TbCheckRelationNode",
            json!({"direction": "TO", "entityId": "d-2", "entityType": "DEVICE", "relationType": "Uses"}),
        ),
        (
            "transform.TbChangeOriginatorNode",
            json!({"originatorSource": "RELATED", "relationsQuery": query("TO", "Contains", "ASSET")}),
        ),
    ];
    let node_list: Vec<Value> = nodes
        .iter()
        .enumerate()
        .map(|(i, (class, cfg))| {
            json!({"type": format!("org.thingsboard.rule.engine.{class}"), "name": format!("n{i}"),
                   "debugMode": false, "configuration": cfg})
        })
        .collect();
    let export = json!({"ruleChain": {"name": "relations"}, "metadata": {"firstNodeIndex": 0, "nodes": node_list,
        "connections": [{"fromIndex": 0, "toIndex": 1, "type": "Success"}, {"fromIndex": 1, "toIndex": 2, "type": "Success"},
                        {"fromIndex": 2, "toIndex": 3, "type": "True"}]}});
    let export_file = dir.path().join("export.json");
    std::fs::write(&export_file, export.to_string()).unwrap();
    let out_dir = dir.path().join("chains");
    let result = sluice(&[
        "import",
        "thingsboard",
        export_file.to_str().unwrap(),
        "--relations",
        relations_file.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(result.status.success(), "{}", stderr(&result));
    let report = String::from_utf8_lossy(&result.stdout);
    assert!(report.contains(" 0 placeholders"), "{report}");
    assert!(report.contains("2 relation(s) of 3 entities"), "{report}");
    let path = out_dir.join("relations.json");
    let mut chain: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(chain["tables"], json!({"relations": {"seed": "relations.jsonl"}}));
    let check = chain["nodes"].as_array().unwrap().iter().find(|n| n["module"] == "check-relation").unwrap().clone();
    assert_eq!(check["config"]["entityName"], "Fan-1", "the id named by --relations");
    let last =
        chain["nodes"].as_array().unwrap().iter().find(|n| n["module"] == "change-originator").unwrap()["id"].clone();
    chain["nodes"].as_array_mut().unwrap().push(json!({"id": "end", "sink": "output"}));
    chain["connections"].as_array_mut().unwrap().push(json!({"from": last, "to": "end", "relation": "Success"}));
    std::fs::write(&path, chain.to_string()).unwrap();
    let msgs = [reading("w", "Fan-1", json!({"windDirection": 90})), reading("t", "T-1", json!({"temperature": 25}))];
    let out: Vec<TbMsg> = sluice_testkit::run_chain_file(&path, &msgs, 1)
        .output
        .into_iter()
        .filter(|m| m.originator.entity_type == "ASSET")
        .collect();
    assert_eq!(originators(&out), [row("t", "ASSET", "Building A")]);
    assert_eq!(out[0].meta("windDirection"), Some("90"));

    // An end with only an id nobody names is refused, naming the file and the entry.
    std::fs::write(
        &relations_file,
        json!([{"from": {"entityType": "ASSET", "id": "a-9"}, "to": {"entityType": "DEVICE", "name": "T-1"},
                "type": "Contains"}])
        .to_string(),
    )
    .unwrap();
    let result = sluice(&[
        "import",
        "thingsboard",
        export_file.to_str().unwrap(),
        "--relations",
        relations_file.to_str().unwrap(),
        "--out",
        dir.path().join("other").to_str().unwrap(),
    ]);
    assert!(!result.status.success());
    let err = stderr(&result);
    assert!(err.contains("relations.json: [0]: field `from.name`: ASSET a-9 has only an id"), "{err}");
}

/// Relations created by messages are in the checkpointed `relations` table: `sluice run` as an
/// HTTP service with a state dir relates T-1 to its building, is killed with SIGKILL, and after
/// the restart a message without a building still finds it (change originator RELATED, as in
/// the first test); without the table it would fail with "Failed to find new originator!".
#[test]
fn relations_survive_kill_9() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let port = crate::tansu::free_port();
    crate::kafka::write(dir.path(), "tokens.json", r#"{"TOKEN-1": {"deviceName": "T-1", "deviceType": "Thermostat"}}"#);
    let chain = json!({
        "entry": "has",
        "nodes": [
            {"id": "has", "module": "check-fields", "config": {"messageNames": ["building"]}},
            {"id": "relate", "module": "create-relation", "config": {"direction": "FROM", "entityType": "ASSET",
                "entityNamePattern": "$[building]", "relationType": "Contains"}},
            {"id": "up", "module": "change-originator", "config": {"originatorSource": "RELATED",
                "relationsQuery": {"direction": "TO", "filters": [{"relationType": "Contains"}]}}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "has", "to": "relate", "relation": "True"},
            {"from": "has", "to": "up", "relation": "False"},
            {"from": "relate", "to": "up", "relation": "Success"},
            {"from": "up", "to": "out", "relation": "Success"},
            {"from": "up", "to": "out", "relation": "Failure"}
        ]
    });
    let chain = crate::kafka::write(dir.path(), "chain.json", &chain.to_string());
    let config = |out: &str| crate::support::http_service_config(dir.path(), port, out, "");
    let post = |values: Value| crate::support::post_telemetry(port, &json!({"ts": T0, "values": values}).to_string());
    let lines = |name: &str| crate::seeds::read_jsonl(&dir.path().join(name));
    let first = crate::kafka::Service::start(dir.path(), &chain, &config("before"), "state");
    first.wait_for_log("HTTP device API listening", Duration::from_secs(60));
    post(json!({"building": "Building A", "temperature": 21}));
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines("before.jsonl").is_empty() {
        assert!(Instant::now() < deadline, "{}", first.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Past a checkpoint (every second), then SIGKILL.
    std::thread::sleep(Duration::from_millis(2_500));
    drop(first);
    let before = lines("before.jsonl");
    assert_eq!(before[0]["originator"]["name"], "Building A", "{before:#?}");

    let second = crate::kafka::Service::start(dir.path(), &chain, &config("after"), "state");
    second.wait_for_log("HTTP device API listening", Duration::from_secs(60));
    post(json!({"temperature": 22}));
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines("after.jsonl").is_empty() {
        assert!(Instant::now() < deadline, "{}", second.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = second.stop_ok();
    assert!(log.contains("restored the last checkpoint"), "{log}");
    let after = lines("after.jsonl");
    assert_eq!(
        (after[0]["originator"]["entityType"].as_str(), after[0]["originator"]["name"].as_str()),
        (Some("ASSET"), Some("Building A")),
        "{after:#?}"
    );
    assert_eq!(after[0]["data"]["temperature"], 22);
}

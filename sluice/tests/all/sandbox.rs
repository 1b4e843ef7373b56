//! Hostile guests: each is cut off, its message goes to `Failure` with the reason in
//! `metadata.error`, and the messages after it are processed normally.

use serde_json::{Value, json};
use sluice_sdk::TbMsg;

use crate::support::{ChainDir, run_chain};

/// `guest` → True → out; Failure → out (so failures are visible in the output).
fn chain(guest: &str, limits: Value) -> Value {
    json!({
        "entry": "guest",
        "nodes": [
            {"id": "guest", "module": guest, "limits": limits},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "guest", "to": "out", "relation": "True"},
            {"from": "guest", "to": "out", "relation": "Failure"}
        ]
    })
}

fn msg(id: &str, data: Value) -> TbMsg {
    TbMsg::telemetry("dev", data).with_id(id)
}

fn error_of(m: &TbMsg) -> &str {
    m.meta("error").unwrap_or("")
}

#[test]
fn infinite_loop_is_cut_off_by_the_deadline() {
    let ran = run_chain(
        &chain("looper", json!({"deadlineMs": 50})),
        &[msg("1", json!({})), msg("2", json!({"loop": true})), msg("3", json!({})), msg("4", json!({}))],
        1,
    );
    let ids: Vec<_> = ran.output.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3", "4"]);
    assert!(error_of(&ran.output[1]).contains("deadline of 50ms exceeded"), "{:?}", ran.output[1]);
    assert_eq!(error_of(&ran.output[2]), "");
    let stats = ran.stats.node("guest");
    assert_eq!((stats.crashes, stats.failures), (1, 1));
    assert_eq!(ran.acked, 4);
}

#[test]
fn unbounded_allocation_is_capped() {
    let ran = run_chain(
        &chain("allocator", json!({"memoryMb": 16})),
        &[msg("1", json!({"grow": true})), msg("2", json!({})), msg("3", json!({"grow": true})), msg("4", json!({}))],
        1,
    );
    let ids: Vec<_> = ran.output.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3", "4"]);
    for failed in [&ran.output[0], &ran.output[2]] {
        assert!(error_of(failed).contains("out of memory"), "{failed:?}");
        assert!(error_of(failed).contains("16 MiB"), "{failed:?}");
    }
    assert_eq!(ran.output[1].meta("error"), None);
    assert_eq!(ran.stats.node("guest").crashes, 2);
}

#[test]
fn a_panic_is_a_crash_with_its_message_and_an_err_is_not() {
    let ran = run_chain(
        &chain("panicker", json!({})),
        &[msg("1", json!({"panic": true})), msg("2", json!({})), msg("3", json!({"fail": true})), msg("4", json!({}))],
        1,
    );
    let ids: Vec<_> = ran.output.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3", "4"]);
    let panicked = error_of(&ran.output[0]);
    assert!(panicked.contains("guest panicked") && panicked.contains("asked to panic by dev"), "{panicked}");
    assert_eq!(error_of(&ran.output[2]), "asked to fail by dev");
    let stats = ran.stats.node("guest");
    assert_eq!((stats.crashes, stats.failures), (1, 2));
    assert_eq!(stats.outputs.get("True"), Some(&2));
    assert_eq!(stats.outputs.get("Failure"), Some(&2));
}

#[test]
fn repeated_crashes_disable_the_node() {
    let looping = || msg("loop", json!({"loop": true}));
    let ran = run_chain(
        &chain("looper", json!({"deadlineMs": 10, "disableAfter": 2})),
        &[looping(), looping(), msg("after", json!({}))],
        1,
    );
    assert_eq!(ran.output.len(), 3);
    assert!(error_of(&ran.output[2]).contains("disabled after 2 consecutive crashes"), "{:?}", ran.output[2]);
    let stats = ran.stats.node("guest");
    assert!(stats.disabled);
    assert_eq!(stats.crashes, 2);
}

#[test]
fn a_success_resets_the_crash_count() {
    let looping = || msg("loop", json!({"loop": true}));
    let ran = run_chain(
        &chain("looper", json!({"deadlineMs": 10, "disableAfter": 2})),
        &[looping(), msg("ok", json!({})), looping(), msg("ok2", json!({}))],
        1,
    );
    assert_eq!(ran.output[3].meta("error"), None);
    assert!(!ran.stats.node("guest").disabled);
}

const UNKNOWN_IMPORT: &str = r#"(module
  (import "env" "open_socket" (func (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "sluice_abi_version") (result i32) i32.const 2)
  (func (export "sluice_reserve") (param i32) (result i32) i32.const 0)
  (func (export "sluice_init") (param i32) (result i32) i32.const 0)
  (func (export "sluice_on_msg") (param i32) (result i32) i32.const 0))"#;

const WASI_IMPORT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "sluice_abi_version") (result i32) i32.const 2)
  (func (export "sluice_reserve") (param i32) (result i32) i32.const 0)
  (func (export "sluice_init") (param i32) (result i32) i32.const 0)
  (func (export "sluice_on_msg") (param i32) (result i32) i32.const 0))"#;

const FUTURE_ABI: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "sluice_abi_version") (result i32) i32.const 3)
  (func (export "sluice_reserve") (param i32) (result i32) i32.const 0)
  (func (export "sluice_init") (param i32) (result i32) i32.const 0)
  (func (export "sluice_on_msg") (param i32) (result i32) i32.const 0))"#;

const V1_MODULE: &str = r#"(module
  (import "sluice" "emit" (func (param i32 i32 i32 i32)))
  (import "sluice" "forward" (func (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "sluice_abi_version") (result i32) i32.const 1)
  (func (export "sluice_reserve") (param i32) (result i32) i32.const 0)
  (func (export "sluice_init") (param i32) (result i32) i32.const 0)
  (func (export "sluice_on_msg") (param i32) (result i32) i32.const 0))"#;

const WRONG_SIGNATURE: &str = r#"(module
  (import "sluice" "emit" (func (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "sluice_abi_version") (result i32) i32.const 2)
  (func (export "sluice_reserve") (param i32) (result i32) i32.const 0)
  (func (export "sluice_init") (param i32) (result i32) i32.const 0)
  (func (export "sluice_on_msg") (param i32) (result i32) i32.const 0))"#;

fn load_guest(wat: &str) -> String {
    let dir = ChainDir::new();
    dir.write("guest.wat", wat);
    let err = dir.load("chain.json", &chain("guest.wat", json!({}))).expect_err("module must be refused");
    assert_eq!(err.node_id(), Some("guest"));
    assert_eq!(err.field.as_deref(), Some("module"));
    err.to_string()
}

#[test]
fn a_module_importing_an_unknown_function_is_refused_at_load() {
    let err = load_guest(UNKNOWN_IMPORT);
    assert!(err.contains("imports `env::open_socket`, which the host does not provide"), "{err}");
    assert!(err.contains("chain.json: node `guest`: field `module`"), "{err}");
}

#[test]
fn a_module_importing_wasi_is_refused_at_load() {
    let err = load_guest(WASI_IMPORT);
    assert!(err.contains("`wasi_snapshot_preview1::fd_write`"), "{err}");
}

#[test]
fn a_module_with_another_abi_version_is_refused_at_load() {
    let err = load_guest(FUTURE_ABI);
    assert!(err.contains("ABI version 3; this engine speaks version 2"), "{err}");
    // A module built against ABI v1 imports v1's functions: it is told its version is the
    // problem, not that its imports differ.
    let err = load_guest(V1_MODULE);
    assert!(err.contains("ABI version 1; this engine speaks version 2"), "{err}");
}

#[test]
fn a_host_import_with_the_wrong_signature_is_refused_at_load() {
    let err = load_guest(WRONG_SIGNATURE);
    assert!(
        err.contains("imports `sluice::emit` as (i32, i32) -> (); the host provides (i32, i32, i32) -> ()"),
        "{err}"
    );
}

/// A guest (not built with the SDK) that emits bytes that are not a message, or passes a pointer
/// outside its memory: its message goes to `Failure` saying so, and the engine carries on.
const EMITS_GARBAGE: &str = r#"(module
  (import "sluice" "emit_json" (func $emit (param i32 i32 i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "True")
  (data (i32.const 32) "hello")
  (func (export "sluice_abi_version") (result i32) i32.const 2)
  (func (export "sluice_reserve") (param i32) (result i32) i32.const 1024)
  (func (export "sluice_init") (param i32) (result i32) i32.const 0)
  (func (export "sluice_on_msg") (param i32) (result i32)
    (call $emit (i32.const 16) (i32.const 4) (i32.const 32) (i32.const 5))
    i32.const 0))"#;

const OUT_OF_BOUNDS: &str = r#"(module
  (import "sluice" "emit_json" (func $emit (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "sluice_abi_version") (result i32) i32.const 2)
  (func (export "sluice_reserve") (param i32) (result i32) i32.const 1024)
  (func (export "sluice_init") (param i32) (result i32) i32.const 0)
  (func (export "sluice_on_msg") (param i32) (result i32)
    (call $emit (i32.const 0) (i32.const 4) (i32.const 65530) (i32.const 100))
    i32.const 0))"#;

#[test]
fn a_foreign_guest_emitting_a_non_message_fails_that_message() {
    let dir = ChainDir::new();
    dir.write("guest.wat", EMITS_GARBAGE);
    let path = dir.write_json("chain.json", &chain("guest.wat", json!({})));
    let ran = crate::support::run_chain_file(&path, &[msg("1", json!({})), msg("2", json!({}))], 1);
    assert_eq!(ran.output.len(), 2);
    assert!(error_of(&ran.output[0]).contains("not a message"), "{:?}", ran.output[0]);
}

/// ABI v2 hands a guest a handle to the message; one that reads another handle (a message kept
/// from an earlier call) traps, saying so, and reads nothing.
const STALE_HANDLE: &str = r#"(module
  (import "sluice" "msg_ts" (func $ts (param i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "sluice_abi_version") (result i32) i32.const 2)
  (func (export "sluice_reserve") (param i32) (result i32) i32.const 1024)
  (func (export "sluice_init") (param i32) (result i32) i32.const 0)
  (func (export "sluice_on_msg") (param $h i32) (result i32)
    (drop (call $ts (i32.sub (local.get $h) (i32.const 1))))
    i32.const 0))"#;

#[test]
fn a_stale_message_handle_traps() {
    let dir = ChainDir::new();
    dir.write("guest.wat", STALE_HANDLE);
    let path = dir.write_json("chain.json", &chain("guest.wat", json!({})));
    let ran = crate::support::run_chain_file(&path, &[msg("1", json!({}))], 1);
    let error = error_of(&ran.output[0]);
    assert!(error.contains("is stale") && error.contains("keep a clone"), "{error}");
    assert_eq!(ran.stats.node("guest").crashes, 1);
}

#[test]
fn an_out_of_bounds_pointer_is_reported_as_such() {
    let dir = ChainDir::new();
    dir.write("guest.wat", OUT_OF_BOUNDS);
    let path = dir.write_json("chain.json", &chain("guest.wat", json!({})));
    let ran = crate::support::run_chain_file(&path, &[msg("1", json!({}))], 1);
    let error = error_of(&ran.output[0]);
    assert!(error.contains("guest passed an out-of-bounds slice 65530+100"), "{error}");
    assert_eq!(ran.stats.node("guest").crashes, 1);
}

/// Loops on `action_call` with no connector granted: each call fails at once, and none gives the
/// guest more time (only a node with a connector gets the time it waited back).
const ACTIONS_FOREVER: &str = r#"(module
  (import "sluice" "action_call" (func $act (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{}")
  (func (export "sluice_abi_version") (result i32) i32.const 2)
  (func (export "sluice_reserve") (param i32) (result i32) i32.const 1024)
  (func (export "sluice_init") (param i32) (result i32) i32.const 0)
  (func (export "sluice_on_msg") (param i32) (result i32)
    (loop $forever
      (drop (call $act (i32.const 16) (i32.const 2)))
      (br $forever))
    i32.const 0))"#;

#[test]
fn action_calls_without_a_connector_do_not_extend_the_deadline() {
    let dir = ChainDir::new();
    dir.write("guest.wat", ACTIONS_FOREVER);
    // A chain must grant an acting module a connector to load; a replay withholds it after
    // loading, as done here.
    let mut spec = chain("guest.wat", json!({"deadlineMs": 50}));
    spec["connectors"] = json!({"sink": {"type": "file", "path": "{chainDir}/calls.jsonl"}});
    spec["nodes"][0]["connector"] = json!("sink");
    let path = dir.write_json("chain.json", &spec);
    let mut loaded =
        sluice::chain::Loader::new(&crate::support::runtime(), vec![crate::support::modules().to_path_buf()])
            .load(&path)
            .unwrap();
    for node in &mut loaded.nodes {
        if let sluice::chain::NodeKind::Rule(rule) = &mut node.kind {
            rule.connector = None;
        }
    }
    let ran = crate::support::run_loaded(loaded, &[msg("1", json!({})), msg("2", json!({}))], 1);
    let ids: Vec<_> = ran.output.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["1", "2"]);
    for m in &ran.output {
        assert!(error_of(m).contains("deadline of 50ms exceeded"), "{m:?}");
    }
    assert_eq!(ran.stats.node("guest").crashes, 2);
}

/// The telemetry history's functions answer a point list or a query that does not parse with an
/// error the guest reads (a negative length), not a trap: this guest forwards its message on
/// `True` only when both calls said so.
const SERIES_GARBAGE: &str = r#"(module
  (import "sluice" "series_append" (func $append (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "sluice" "series_query" (func $query (param i32 i32 i32 i32 i32 i32) (result i64)))
  (import "sluice" "forward" (func $fwd (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "True")
  (data (i32.const 32) "garbage")
  (func (export "sluice_abi_version") (result i32) i32.const 2)
  (func (export "sluice_reserve") (param i32) (result i32) i32.const 1024)
  (func (export "sluice_init") (param i32) (result i32) i32.const 0)
  (func (export "sluice_on_msg") (param $h i32) (result i32)
    (if (i32.and
          (i32.lt_s (call $append (i32.const 32) (i32.const 3) (i32.const 32) (i32.const 3) (i32.const 32) (i32.const 7)) (i32.const 0))
          (i64.lt_s (call $query (i32.const 32) (i32.const 3) (i32.const 32) (i32.const 3) (i32.const 32) (i32.const 7)) (i64.const 0)))
      (then (call $fwd (local.get $h) (i32.const 16) (i32.const 4))))
    i32.const 0))"#;

#[test]
fn bad_series_arguments_are_errors_the_guest_reads_not_traps() {
    let dir = ChainDir::new();
    dir.write("guest.wat", SERIES_GARBAGE);
    let path = dir.write_json("chain.json", &chain("guest.wat", json!({})));
    let ran = crate::support::run_chain_file(&path, &[msg("1", json!({}))], 1);
    assert_eq!(ran.output.len(), 1, "{:?}", ran.output);
    assert_eq!(error_of(&ran.output[0]), "", "{:?}", ran.output[0]);
    assert_eq!(ran.stats.node("guest").crashes, 0);
}

//! The same node, natively (sluice-sdk's TestDriver) and as wasm in the engine, gives the same
//! outputs for the same messages — relations, messages and ids, and the same `Failure` text.

use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use sluice::host::Emitted;
use sluice::runtime::{HostEnv, Limits, NodeErrorKind, Runtime};
use sluice_sdk::testing::TestDriver;
use sluice_sdk::{Originator, TbMsg};

use crate::support::{modules, repo};

fn runtime() -> Arc<Runtime> {
    static RT: OnceLock<Arc<Runtime>> = OnceLock::new();
    RT.get_or_init(|| Arc::new(Runtime::new(Some(repo().join("target").join("sluice-module-cache"))).expect("runtime")))
        .clone()
}

/// What the engine's instance of `module` does with each message.
fn in_wasm(module: &str, config: &Value, msgs: &[TbMsg]) -> Vec<Vec<(String, TbMsg)>> {
    let rt = runtime();
    let path = modules().join(sluice::chain::load::module_file_name(module));
    let module = rt.load_module(&path).expect("module loads");
    let config = serde_json::to_vec(config).unwrap();
    let mut instance =
        rt.instantiate_module(&module, &config, Limits::default(), HostEnv::scratch("node")).expect("instantiates");
    msgs.iter()
        .map(|msg| {
            let mut outputs = Vec::new();
            match instance.call(&std::sync::Arc::new(msg.clone().into()), &mut outputs) {
                // As the engine's worker routes them: a new message without an id is named after
                // the incoming one and its position.
                Ok(()) => outputs
                    .into_iter()
                    .enumerate()
                    .map(|(n, (relation, emitted))| (relation.into_owned(), emitted, n))
                    .map(|(relation, emitted, n)| match emitted {
                        Emitted::Forward => (relation, msg.clone()),
                        Emitted::Draft(draft) => (relation, draft),
                        Emitted::Json(bytes) => {
                            let mut out: TbMsg = serde_json::from_slice(&bytes).expect("output parses");
                            if out.id.is_empty() {
                                out.id = sluice_sdk::derived_id(&msg.id, n);
                            }
                            (relation, out)
                        }
                    })
                    .collect(),
                Err(err) => match err.kind {
                    NodeErrorKind::Guest(text) => vec![("Failure".into(), msg.clone().with_meta("error", text))],
                    other => panic!("crash: {other}"),
                },
            }
        })
        .collect()
}

fn natively(mut driver: TestDriver, msgs: &[TbMsg]) -> Vec<Vec<(String, TbMsg)>> {
    msgs.iter()
        .map(|m| {
            let outputs = driver.send(m.clone().into()).expect("send").outputs;
            outputs.into_iter().map(|(relation, msg)| (relation, msg.into_tb())).collect()
        })
        .collect()
}

fn uplink(id: &str, payload: Value) -> TbMsg {
    let text = if payload.is_string() { payload.as_str().unwrap().to_string() } else { payload.to_string() };
    TbMsg::new("UPLINK", Originator::device("gw"), json!({ "payload": text })).with_id(id).with_ts(1000)
}

#[test]
fn json_decoder_agrees() {
    let msgs = [
        uplink("a", json!({"deviceName": "M-1", "deviceType": "Meter", "kwh": 1.5})),
        uplink("b", json!({"deviceName": "M-2", "telemetry": [{"ts": 5, "values": {"a": 1}}, {"b": 2}]})),
        uplink("c", json!({"deviceName": "M-3", "attributes": {"fw": "1.0"}, "telemetry": {"x": true}})),
        uplink("d", json!({"kwh": 1})),
        uplink("e", json!("{broken")),
        uplink("f", json!({"deviceName": 7})),
        TbMsg::telemetry("direct", json!({"deviceName": "D-1", "ts": 99, "v": 3})).with_id("g"),
    ];
    let config = json!({});
    let native =
        TestDriver::node::<json_decoder::JsonDecoder>(serde_json::from_value(config.clone()).unwrap()).unwrap();
    let expected = natively(native, &msgs);
    assert_eq!(in_wasm("json-decoder", &config, &msgs), expected);
    // And the outputs are what they should be, not merely equal.
    assert_eq!(expected[1].len(), 2);
    assert_eq!(expected[1][0].1.id, "b:0");
    assert_eq!(expected[3][0].0, "Failure");
}

#[test]
fn check_fields_agrees() {
    let msgs = [
        TbMsg::telemetry("d", json!({"t": 1})).with_meta("zone", "A").with_id("1"),
        TbMsg::telemetry("d", json!({"t": null})).with_meta("zone", "A").with_id("2"),
        TbMsg::telemetry("d", json!({})).with_meta("zone", "A").with_id("3"),
        TbMsg::telemetry("d", json!([1, 2])).with_id("4"),
    ];
    for config in [
        json!({"messageNames": ["t"], "metadataNames": ["zone"]}),
        json!({"messageNames": ["t"], "metadataNames": ["zone"], "checkAllKeys": false}),
    ] {
        let native = TestDriver::filter(check_fields::check_fields, serde_json::from_value(config.clone()).unwrap());
        assert_eq!(in_wasm("check-fields", &config, &msgs), natively(native, &msgs), "{config}");
    }
}

#[test]
fn rename_keys_agrees() {
    let msgs = [
        TbMsg::telemetry("d", json!({"t": 1, "h": 2})).with_meta("t", "m").with_id("1"),
        TbMsg::telemetry("d", json!({"h": 2})).with_id("2"),
        TbMsg::telemetry("d", json!("not an object")).with_id("3"),
        TbMsg::telemetry("d", json!({"t": null, "a": {"b": 1}, "a.b": 2})).with_meta("h", "x").with_id("4"),
        TbMsg::telemetry("d", json!({"a": {"b": 1}, "h": 5})).with_meta("t", "1").with_meta("h", "2").with_id("5"),
        TbMsg::telemetry("d", json!({"0": {"b": 7}, "a": {"b": 1}, "b": 2, "h": 3})).with_id("6"),
    ];
    // One key (sent back key by key), several, a swap, a chain (a key read after it was set),
    // dotted keys (one after a change); the same in metadata.
    for config in [
        json!({"renameKeysMapping": {"t": "temperature"}}),
        json!({"renameKeysMapping": {"t": "temperature", "h": "humidity"}}),
        json!({"renameKeysMapping": {"t": "h", "h": "t"}}),
        json!({"renameKeysMapping": {"a": "b", "b": "c"}}),
        json!({"renameKeysMapping": {"0": "a", "a.b": "ab"}}),
        json!({"renameKeysMapping": {"a.b": "ab"}}),
        json!({"renameKeysMapping": {"t": "temperature"}, "renameIn": "METADATA"}),
        json!({"renameKeysMapping": {"t": "h", "h": "t"}, "renameIn": "METADATA"}),
    ] {
        let native = TestDriver::transform(rename_keys::rename_keys, serde_json::from_value(config.clone()).unwrap());
        assert_eq!(in_wasm("rename-keys", &config, &msgs), natively(native, &msgs), "{config}");
    }
}

//! Wasm builds of the decoder nodes, run in the engine: `uplink-decoder` in each of its formats,
//! and the user's view, `examples/custom-decoder`, built and run through the CLI. Expected
//! messages are written out by hand; base64 texts were made with coreutils' `base64` from the
//! bytes in the comment next to them.

use serde_json::{Value, json};
use sluice_sdk::{Originator, TbMsg};

use crate::support::{node_config_error, repo, run_node, sluice, stderr};

const T0: i64 = 1_700_000_000_000;

/// A decoded message as the node must emit it: `deviceName`, `deviceType` and `ts` in metadata
/// on top of the incoming metadata.
fn decoded(msg: TbMsg, id: &str, ts: i64, device: &str, device_type: &str) -> TbMsg {
    msg.with_id(id)
        .with_ts(ts)
        .with_meta("deviceName", device)
        .with_meta("deviceType", device_type)
        .with_meta("ts", ts.to_string())
}

#[test]
fn uplink_decoder_json() {
    let config = json!({"format": "json", "deviceNameField": "serial", "tsField": "time", "attributes": ["fw"]});
    let meter_1 = json!({"serial": "M-1", "deviceType": "Meter", "time": T0 + 5, "kwh": "12.5", "fw": "1.2"});
    let input = [
        TbMsg::new("UPLINK", Originator::device("gw-1"), meter_1).with_id("a").with_ts(T0).with_meta("gateway", "gw-1"),
        // {"serial":"M-2","kwh":3} as base64: a binary uplink.
        TbMsg::new("UPLINK", Originator::device("gw-1"), json!("eyJzZXJpYWwiOiJNLTIiLCJrd2giOjN9"))
            .with_id("b")
            .with_ts(T0 + 10)
            .with_meta("payloadEncoding", "base64"),
        TbMsg::new("UPLINK", Originator::device("gw-1"), json!({"kwh": 1})).with_id("c").with_ts(T0 + 20),
    ];
    let out = run_node("uplink-decoder", config, &input, &["Success", "Failure"]);
    let m1 = |msg: TbMsg, id, ts| decoded(msg.with_meta("gateway", "gw-1"), id, ts, "M-1", "Meter");
    assert_eq!(
        out["Success"],
        vec![
            m1(TbMsg::telemetry("M-1", json!({"kwh": "12.5"})), "a:0", T0 + 5),
            m1(TbMsg::attributes("M-1", json!({"fw": "1.2"})), "a:1", T0),
            decoded(TbMsg::telemetry("M-2", json!({"kwh": 3})), "b:0", T0 + 10, "M-2", "default"),
        ]
    );
    assert_eq!(out["Failure"], vec![input[2].clone().with_meta("error", "payload has no `serial`")]);
}

#[test]
fn uplink_decoder_solar_module() {
    // The solar simulator's generator payloads (tbdocs-solar_module_simulator.json), one sent as
    // base64 bytes: {"name":"Module 2","panel":"Panel 1","power":"3"}.
    let module_2 = "eyJuYW1lIjoiTW9kdWxlIDIiLCJwYW5lbCI6IlBhbmVsIDEiLCJwb3dlciI6IjMifQ==";
    let input = [
        TbMsg::telemetry("Module 1 Simulator", json!({"power": 5, "name": "Module 1", "panel": "Panel 1"}))
            .with_id("s1")
            .with_ts(T0),
        TbMsg::telemetry("Module 2 Simulator", json!(module_2))
            .with_id("s2")
            .with_ts(T0 + 1)
            .with_meta("payloadEncoding", "base64"),
        TbMsg::telemetry("Module 3 Simulator", json!({"name": "Module 3", "panel": "Panel 1"})).with_id("s3"),
    ];
    let out = run_node("uplink-decoder", json!({"format": "solar-module"}), &input, &["Success", "Failure"]);
    let module = |msg: TbMsg, id, ts, name| decoded(msg, id, ts, name, "SolarModule");
    assert_eq!(
        out["Success"],
        vec![
            module(TbMsg::telemetry("Module 1", json!({"power": 5, "panel": "Panel 1"})), "s1:0", T0, "Module 1"),
            module(TbMsg::attributes("Module 1", json!({"panel": "Panel 1"})), "s1:1", T0, "Module 1"),
            module(TbMsg::telemetry("Module 2", json!({"power": 3, "panel": "Panel 1"})), "s2:0", T0 + 1, "Module 2"),
            module(TbMsg::attributes("Module 2", json!({"panel": "Panel 1"})), "s2:1", T0 + 1, "Module 2"),
        ]
    );
    assert_eq!(out["Failure"], vec![input[2].clone().with_meta("error", "payload has no `power`")]);
}

/// 2024-03-01T12:00:00Z: 19 783 days after the epoch, plus 12 h.
const NOON: i64 = 19_783 * 86_400_000 + 12 * 3_600_000;

fn ttn_uplink(id: &str, f_port: u8, frm_payload: &str, received_at: &str) -> TbMsg {
    let uplink = json!({
        "end_device_ids": {"device_id": "meter-17", "application_ids": {"application_id": "meters"},
                           "dev_eui": "70B3D57ED005B89A", "join_eui": "0000000000000001", "dev_addr": "260BABCD"},
        "correlation_ids": ["as:up:01HX6YGQ7E0V83YRZ7K4S5J4ZN"],
        "received_at": received_at,
        "uplink_message": {
            "session_key_id": "AWNbm/4zfqx0jZ5q1NlBmw==", "f_port": f_port, "f_cnt": 1834,
            "frm_payload": frm_payload,
            "rx_metadata": [
                {"gateway_ids": {"gateway_id": "gw-a"}, "rssi": -97, "channel_rssi": -97, "snr": 4.5},
                {"gateway_ids": {"gateway_id": "gw-b"}, "rssi": -68, "channel_rssi": -68, "snr": 9.2}
            ],
            "settings": {"data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}}, "frequency": "868100000"},
            "received_at": received_at
        }
    });
    TbMsg::new("UPLINK", Originator::device("ttn"), uplink).with_id(id).with_ts(T0)
}

#[test]
fn uplink_decoder_ttn_lorawan_smart_meter() {
    let input = [
        // 0F 00 | 00 00 03 E8 | 00 00 04 E2: every 15 min, no age, 1000 Wh then 1250 Wh.
        ttn_uplink("t1", 2, "DwAAAAPoAAAE4g==", "2024-03-01T12:00:00Z"),
        // 01 01 | 00 00 00 5A | 00 00 00 07 | 00 00 00 08: every minute, the last reading 90 s
        // before reception (12:00:30.5Z, written with a +01:00 offset), 7 Wh then 8 Wh.
        ttn_uplink("t2", 2, "AQEAAABaAAAABwAAAAg=", "2024-03-01T13:00:30.500+01:00"),
        // A status uplink on another port.
        ttn_uplink("t3", 5, "AQ==", "2024-03-01T12:00:00Z"),
    ];
    let out = run_node("uplink-decoder", json!({"format": "ttn-lorawan"}), &input, &["Success", "Failure"]);
    let meter = |msg: TbMsg, id, ts| decoded(msg, id, ts, "meter-17", "SmartMeter");
    let attributes = json!({"devEui": "70B3D57ED005B89A", "fPort": 2});
    let t2_last = NOON + 30_500 - 90_000;
    assert_eq!(
        out["Success"],
        vec![
            meter(TbMsg::telemetry("meter-17", json!({"energyWh": 1000})), "t1:0", NOON - 900_000),
            meter(TbMsg::telemetry("meter-17", json!({"energyWh": 1250, "rssi": -68, "snr": 9.2})), "t1:1", NOON),
            meter(TbMsg::attributes("meter-17", attributes.clone()), "t1:2", T0),
            meter(TbMsg::telemetry("meter-17", json!({"energyWh": 7})), "t2:0", t2_last - 60_000),
            meter(TbMsg::telemetry("meter-17", json!({"energyWh": 8, "rssi": -68, "snr": 9.2})), "t2:1", t2_last),
            meter(TbMsg::attributes("meter-17", attributes), "t2:2", T0),
        ]
    );
    let error = "`uplink_message.f_port` is 5, not the meter's readings port 2";
    assert_eq!(out["Failure"], vec![input[2].clone().with_meta("error", error)]);
}

#[test]
fn uplink_decoder_bad_configs_name_the_field() {
    let err = node_config_error("uplink-decoder", json!({"format": "json", "telemetry": ["kwh", 1]}));
    assert!(err.contains("node `node`") && err.contains("config.telemetry[1]"), "{err}");
    let err = node_config_error("uplink-decoder", json!({"format": "protobuf"}));
    assert!(err.contains("node `node`") && err.contains("config.format") && err.contains("ttn-lorawan"), "{err}");
    let err = node_config_error("uplink-decoder", json!({"format": "solar-module", "tsField": "time"}));
    assert!(
        err.contains("node `node`")
            && err.contains("field `config.tsField`: config rejected: not an option of format `solar-module`"),
        "{err}"
    );
}

/// The user's example: built with the toolchain as `sluice rules build` does, run through the CLI.
#[test]
fn custom_decoder_example_builds_and_runs() {
    let example = repo().join("examples/custom-decoder");
    let built = sluice::toolchain::build(&example).expect("building examples/custom-decoder");
    assert!(built.join("custom_decoder.wasm").is_file());
    let (chain, input) = (example.join("chain.json"), example.join("input.jsonl"));
    let out = sluice(&[
        "run",
        "--chain",
        chain.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--no-state",
        "--modules",
        built.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("output line is JSON");
            assert!(v["id"].as_str().is_some_and(|id| !id.is_empty()), "{l}");
            v.as_object_mut().unwrap().remove("id");
            v
        })
        .collect();
    lines.sort_by_key(|v| v["ts"].as_i64());
    // input.jsonl, decoded by hand: 0x00EB = 235 → 23.5 °C, 0x3A = 58 %, 0x5F = 95 %;
    // 0xFFC9 = −55 → −5.5 °C, 0x50 = 80 %, 0x64 = 100 %; 0x0102 = 258 → 25.8 °C, 0x2D = 45 %,
    // 0x5E = 94 %; then a 3-byte payload and one that is not hex.
    let msg = |ts: i64, device: &str, error: Option<&str>, data: Value| {
        let mut metadata = json!({"deviceName": device, "deviceType": "EnvSense", "ts": ts.to_string()});
        if let Some(e) = error {
            metadata["error"] = json!(e);
        }
        json!({"ts": ts, "type": "POST_TELEMETRY_REQUEST", "originator": {"entityType": "DEVICE", "name": device},
               "metadata": metadata, "data": data})
    };
    let expected = vec![
        msg(T0, "env-1", None, json!({"temperature": 23.5, "humidity": 58, "battery": 95})),
        msg(T0 + 60_000, "env-2", None, json!({"temperature": -5.5, "humidity": 80, "battery": 100})),
        msg(T0 + 120_000, "env-1", None, json!({"temperature": 25.8, "humidity": 45, "battery": 94})),
        msg(T0 + 180_000, "env-3", Some("payload has 3 bytes; EnvSense sends 4"), json!({"payload": "00EB3A"})),
        msg(T0 + 240_000, "env-2", Some("`payload` is not hex: Odd number of digits"), json!({"payload": "not hex"})),
    ];
    assert_eq!(lines, expected);
}

//! Wasm builds of the filters nodes, run in the engine: `expression-filter` (CEL), `msg-type-switch`,
//! `threshold` and `transform`, alone and chained. Expected messages are written out by hand.

use serde_json::{Value, json};
use sluice_sdk::{Originator, TbMsg};

use crate::support::{node_config_error, run_chain, run_node};

const T0: i64 = 1_700_000_000_000;

const WIND: &str = "metadata.deviceType == 'WeatherStation' && has(metadata.cs_geoZone) && has(msg.windSpeed)";

fn station(id: &str, zone: Option<&str>, data: Value) -> TbMsg {
    let msg = TbMsg::telemetry("WS-1", data).with_id(id).with_ts(T0).with_meta("deviceType", "WeatherStation");
    match zone {
        Some(z) => msg.with_meta("cs_geoZone", z),
        None => msg,
    }
}

fn errors(msgs: &[TbMsg]) -> Vec<&str> {
    msgs.iter().map(|m| m.meta("error").unwrap_or_default()).collect()
}

#[test]
fn expression_filter_wind_zones_seed() {
    let input = [
        station("a", Some("Zone A"), json!({"windSpeed": "33"})),
        station("b", None, json!({"windSpeed": 33})),
        station("c", Some("Zone B"), json!({"temperature": 3})),
        station("d", Some("Zone B"), json!({"windSpeed": 12.5})),
        TbMsg::telemetry("M-1", json!({"windSpeed": 1})).with_id("e").with_meta("deviceType", "Meter"),
    ];
    let out = run_node("expression-filter", json!({ "expression": WIND }), &input, &["True", "False", "Failure"]);
    assert_eq!(out["True"], vec![input[0].clone(), input[3].clone()], "forwarded unchanged");
    assert_eq!(out["False"], vec![input[1].clone(), input[2].clone(), input[4].clone()]);
    assert!(out["Failure"].is_empty());
}

#[test]
fn expression_filter_numbers_sent_as_strings_and_failures() {
    let input = [
        station("a", Some("A"), json!({"windSpeed": "33"})),
        station("b", Some("A"), json!({"windSpeed": 33})),
        station("c", Some("A"), json!({"windSpeed": "7"})),
        station("d", Some("A"), json!({"windSpeed": "fast"})),
        station("e", Some("A"), json!({})),
    ];
    let config = json!({"expression": "double(msg.windSpeed) > 20.0"});
    let out = run_node("expression-filter", config, &input, &["True", "False", "Failure"]);
    assert_eq!(out["True"], vec![input[0].clone(), input[1].clone()]);
    assert_eq!(out["False"], vec![input[2].clone()]);
    let failed: Vec<&str> = out["Failure"].iter().map(|m| m.id.as_str()).collect();
    assert_eq!(failed, ["d", "e"]);
    let errors = errors(&out["Failure"]);
    assert!(errors[0].contains("string parse error"), "{errors:?}");
    assert!(errors[1].contains("No such key: windSpeed"), "{errors:?}");
}

#[test]
fn expression_filter_bad_config() {
    let err = node_config_error("expression-filter", json!({"expression": "msg.windSpeed >"}));
    assert!(err.contains("node") && err.contains("expression") && err.contains("Syntax error"), "{err}");
    let err = node_config_error("expression-filter", json!({"expression": "data.windSpeed > 1"}));
    assert!(err.contains("expression") && err.contains("unknown variable `data`"), "{err}");
    let err = node_config_error("expression-filter", json!({}));
    assert!(err.contains("node") && err.contains("expression"), "{err}");
}

#[test]
fn msg_type_switch_routes_like_thingsboard() {
    let of = |id: &str, t: &str| TbMsg::new(t, Originator::device("D"), json!({"x": 1})).with_id(id).with_ts(T0);
    let input = [
        of("1", "POST_TELEMETRY_REQUEST"),
        of("2", "POST_ATTRIBUTES_REQUEST"),
        of("3", "TO_SERVER_RPC_REQUEST"),
        of("4", "RPC_CALL_FROM_SERVER_TO_DEVICE"),
        of("5", "ACTIVITY_EVENT"),
        of("6", "ALARM"),
        of("7", "MY_TYPE"),
        of("8", "SOMETHING_ELSE"),
    ];
    let relations = [
        "Post telemetry",
        "Post attributes",
        "RPC Request from Device",
        "RPC Request to Device",
        "Activity Event",
        "Other",
        "My relation",
    ];
    let out = run_node("msg-type-switch", json!({"custom": {"MY_TYPE": "My relation"}}), &input, &relations);
    for (i, relation) in relations.iter().take(5).enumerate() {
        assert_eq!(out[*relation], vec![input[i].clone()], "{relation}");
    }
    assert_eq!(out["Other"], vec![input[5].clone(), input[7].clone()]);
    assert_eq!(out["My relation"], vec![input[6].clone()]);
}

#[test]
fn msg_type_switch_bad_config() {
    let err = node_config_error("msg-type-switch", json!({"custom": {"MY_TYPE": 1}}));
    assert!(err.contains("node") && err.contains("custom.MY_TYPE"), "{err}");
    let err = node_config_error("msg-type-switch", json!({"custom": {"MY_TYPE": ""}}));
    assert!(err.contains("node") && err.contains("custom.MY_TYPE"), "{err}");
}

#[test]
fn threshold_seed_4_anomalies() {
    let reading = |id: &str, value: Value| TbMsg::telemetry("S-1", json!({ "value": value })).with_id(id).with_ts(T0);
    let input = [
        reading("a", json!(150)),
        reading("b", json!(100)),
        reading("c", json!("100.5")),
        reading("d", json!("hot")),
        TbMsg::telemetry("S-1", json!({})).with_id("e").with_ts(T0),
    ];
    let config = json!({"value": "data.value", "op": ">", "threshold": 100, "anomalyType": "ANOMALY"});
    let out = run_node("threshold", config, &input, &["Anomaly", "Normal", "Failure"]);
    let anomaly = |m: &TbMsg, value: &str| {
        let mut m =
            m.clone().with_meta("threshold", "100").with_meta("thresholdOp", ">").with_meta("thresholdValue", value);
        m.msg_type = "ANOMALY".into();
        m
    };
    assert_eq!(out["Anomaly"], vec![anomaly(&input[0], "150"), anomaly(&input[2], "100.5")]);
    assert_eq!(out["Normal"], vec![input[1].clone()]);
    assert_eq!(
        errors(&out["Failure"]),
        ["field `data.value` is not a number: \"hot\"", "field `data.value` is missing"]
    );
}

#[test]
fn threshold_bad_config() {
    let err = node_config_error("threshold", json!({"value": "data.v", "op": "=>", "threshold": 1}));
    assert!(err.contains("node") && err.contains("op"), "{err}");
    let err = node_config_error("threshold", json!({"value": "data.v", "op": ">", "threshold": "high"}));
    assert!(err.contains("node") && err.contains("threshold"), "{err}");
    let err = node_config_error("threshold", json!({"value": "temperature", "op": ">", "threshold": 1}));
    assert!(err.contains("node") && err.contains("value"), "{err}");
}

fn transform_config() -> Value {
    json!({"ops": [
        {"rename": {"from": "data.t", "to": "data.temperature"}},
        {"copy": {"from": "metadata.deviceType", "to": "data.deviceType"}},
        {"delete": "metadata.x"},
        {"set": {"to": "data.unit", "value": "C"}},
        {"compute": {"to": "data.tempF", "expression": "double(msg.temperature) * 9.0 / 5.0 + 32.0"}},
        {"compute": {"to": "metadata.hot", "expression": "double(msg.temperature) > 30.0"}},
        {"msgType": "CONVERTED"}
    ]})
}

#[test]
fn transform_applies_ops_in_order() {
    let thermo = |id: &str, data: Value| {
        TbMsg::telemetry("T-1", data).with_id(id).with_ts(T0).with_meta("deviceType", "Thermometer").with_meta("x", "1")
    };
    let input = [thermo("a", json!({"t": "25"})), thermo("b", json!({"t": 100})), thermo("c", json!({"h": 1}))];
    let out = run_node("transform", transform_config(), &input, &["Success", "Failure"]);
    // 25 °C = 77 °F, 100 °C = 212 °F.
    let converted = |id: &str, t: Value, f: f64, hot: &str| {
        TbMsg::new(
            "CONVERTED",
            Originator::device("T-1"),
            json!({"temperature": t, "deviceType": "Thermometer", "unit": "C", "tempF": f}),
        )
        .with_id(id)
        .with_ts(T0)
        .with_meta("deviceType", "Thermometer")
        .with_meta("hot", hot)
    };
    assert_eq!(
        out["Success"],
        vec![converted("a", json!("25"), 77.0, "false"), converted("b", json!(100), 212.0, "true")]
    );
    assert_eq!(out["Failure"], vec![input[2].clone().with_meta("error", "field `data.t` is missing")]);
}

#[test]
fn transform_bad_config() {
    let config = json!({"ops": [{"compute": {"to": "data.f", "expression": "double(msg.t) *"}}]});
    let err = node_config_error("transform", config);
    assert!(err.contains("node") && err.contains("ops[0].compute.expression") && err.contains("Syntax error"), "{err}");
    let err = node_config_error("transform", json!({"ops": [{"delete": "ts"}]}));
    assert!(err.contains("node") && err.contains("ops[0].delete"), "{err}");
}

/// The four together: the switch passes telemetry on, the filter keeps weather stations with a
/// zone, the transform converts the wind speed to a number, the threshold flags gales.
#[test]
fn switch_filter_transform_threshold_chain() {
    let chain = json!({
        "entry": "switch",
        "nodes": [
            {"id": "switch", "module": "msg-type-switch"},
            {"id": "filter", "module": "expression-filter", "config": {"expression": WIND}},
            {"id": "convert", "module": "transform", "config": {"ops": [
                {"compute": {"to": "data.windSpeed", "expression": "double(msg.windSpeed)"}},
                {"copy": {"from": "metadata.cs_geoZone", "to": "data.zone"}}
            ]}},
            {"id": "gale", "module": "threshold",
             "config": {"value": "data.windSpeed", "op": ">=", "threshold": 17.2, "anomalyType": "GALE"}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "switch", "to": "filter", "relation": "Post telemetry"},
            {"from": "filter", "to": "convert", "relation": "True"},
            {"from": "convert", "to": "gale", "relation": "Success"},
            {"from": "gale", "to": "out", "relation": "Anomaly"}
        ]
    });
    let attrs = TbMsg::attributes("WS-1", json!({"windSpeed": "40"}))
        .with_id("attr")
        .with_meta("deviceType", "WeatherStation")
        .with_meta("cs_geoZone", "A");
    let input = [
        station("calm", Some("A"), json!({"windSpeed": "5"})),
        station("gale", Some("A"), json!({"windSpeed": "20"})),
        station("nozone", None, json!({"windSpeed": "30"})),
        attrs,
    ];
    let out = run_chain(&chain, &input);
    // The transform and the threshold keep the incoming id.
    let expected = TbMsg::new("GALE", Originator::device("WS-1"), json!({"windSpeed": 20.0, "zone": "A"}))
        .with_id("gale")
        .with_ts(T0)
        .with_meta("deviceType", "WeatherStation")
        .with_meta("cs_geoZone", "A")
        .with_meta("threshold", "17.2")
        .with_meta("thresholdOp", ">=")
        .with_meta("thresholdValue", "20");
    assert_eq!(out, vec![expected]);
}

/// ThingsBoard's `TbCheckMessageNode.allKeysExist` / `atLeastOneKeyExist` ask `containsKey` of
/// the data parsed into a Gson map (`dataToMap`), which keeps `null` values: `{"windSpeed":
/// null}` has `windSpeed`.
#[test]
fn check_fields_counts_a_null_value_as_present() {
    let msgs = [
        station("null", Some("A"), json!({"windSpeed": null})),
        station("absent", Some("A"), json!({"t": 1})),
        station("no-zone", None, json!({"windSpeed": null})),
    ];
    let config = json!({"messageNames": ["windSpeed"], "metadataNames": ["cs_geoZone"]});
    let out = run_node("check-fields", config, &msgs, &["True", "False"]);
    let ids = |r: &str| out[r].iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids("True"), ["null"]);
    assert_eq!(ids("False"), ["absent", "no-zone"]);
    let any = json!({"messageNames": ["windSpeed"], "checkAllKeys": false});
    let out = run_node("check-fields", any, &msgs, &["True", "False"]);
    assert_eq!(out["True"].iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["null", "no-zone"]);
}

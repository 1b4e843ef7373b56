//! `sluice run --config` with ThingsBoard's HTTP device API as the source: devices post with
//! their access token, the answer comes once the message went through the chain, a message
//! the chain fails on with no `Failure` connection lands in the dead-letter file with its error,
//! and `/metrics` counts every answer by outcome.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::kafka::{Service, write};
use crate::support::metrics;
use crate::tansu::free_port;

/// One HTTP/1.1 POST; the status code of the answer.
fn post(port: u16, path: &str, body: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {answer}"))
}

#[test]
fn device_api_posts_run_through_the_chain_and_failures_become_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), format!("127.0.0.1:{}", free_port()));
    write(dir.path(), "tokens.json", r#"{"TOKEN-1": {"deviceName": "T-1", "deviceType": "Thermometer"}}"#);
    let chain = json!({
        "entry": "threshold",
        "nodes": [
            // A temperature that is not a number fails the node, and nothing takes `Failure`.
            {"id": "threshold", "module": "threshold", "config": {"value": "data.temperature", "op": ">", "threshold": 100}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "threshold", "to": "out", "relation": "Normal"},
            {"from": "threshold", "to": "out", "relation": "Anomaly"}
        ]
    });
    let chain = write(dir.path(), "chain.json", &chain.to_string());
    let config = write(
        dir.path(),
        "sluice.toml",
        &format!(
            "[source]\ntype = \"http\"\nlisten = \"127.0.0.1:{port}\"\ntokens = \"tokens.json\"\n\n\
             [output]\ntype = \"file\"\npath = \"out.jsonl\"\n\n[deadLetter]\ntype = \"file\"\npath = \"dead.jsonl\"\n\n\
             [admin]\nlisten = \"{admin}\"\n"
        ),
    );
    let service = Service::start(dir.path(), &chain, &config, "state");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !service.log().contains("HTTP device API listening") {
        assert!(Instant::now() < deadline, "the HTTP source did not start:\n{}", service.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        post(port, "/api/v1/TOKEN-1/telemetry", r#"{"ts": 1700000000000, "values": {"temperature": 21.5}}"#),
        200
    );
    assert_eq!(
        post(port, "/api/v1/TOKEN-1/telemetry", r#"{"ts": 1700000001000, "values": {"temperature": 150}}"#),
        200
    );
    assert_eq!(
        post(port, "/api/v1/TOKEN-1/telemetry", r#"{"ts": 1700000002000, "values": {"temperature": "hot"}}"#),
        200
    );
    assert_eq!(post(port, "/api/v1/NO-SUCH-TOKEN/telemetry", r#"{"temperature": 1}"#), 401);
    assert_eq!(post(port, "/api/v1/TOKEN-1/telemetry", r#"{"temperature": }"#), 400);

    // Each request was counted before it was answered: the counts are exact already.
    let m = metrics(&admin);
    let requests = |outcome: &str| {
        let name = format!("sluice_http_source_requests_total{{outcome=\"{outcome}\"}}");
        *m.get(&name).unwrap_or_else(|| panic!("no {name} in {m:?}"))
    };
    let counted: Vec<f64> = ["accepted", "unauthorized", "bad_request", "unavailable", "failed"].map(requests).into();
    assert_eq!(counted, [3.0, 1.0, 1.0, 0.0, 0.0], "{m:?}");
    assert_eq!(m["sluice_http_source_messages_total"], 3.0, "{m:?}");
    // A service that dead-lettered says so in its exit code, as a file run does.
    let (status, log) = service.stop_with_log();
    assert_eq!(status.code(), Some(3), "exit code 3 (dead letters): {log}");
    assert!(log.contains("sluice: failures: 1 message(s) dead-lettered"), "{log}");

    let lines = |name: &str| -> Vec<Value> {
        std::fs::read_to_string(dir.path().join(name))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let out = lines("out.jsonl");
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out.iter().all(|m| m["originator"]["name"] == "T-1" && m["metadata"]["deviceType"] == "Thermometer"));
    assert_eq!(out[0]["data"]["temperature"], 21.5);
    assert_eq!(out[1]["data"]["temperature"], 150);
    let dead = lines("dead.jsonl");
    assert_eq!(dead.len(), 1, "{dead:?}\n{log}");
    assert_eq!(dead[0]["data"]["temperature"], "hot");
    assert!(dead[0]["metadata"]["error"].as_str().unwrap().contains("temperature"), "{}", dead[0]);
}

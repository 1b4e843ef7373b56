//! How a run ends: stopped by SIGTERM/SIGINT (file mode and service), with failures (exit code
//! 3, what `--stats`, `/metrics` and `sluice status` show), with a `sluice.toml` that has no
//! `[source]`, and its files (started afresh, `/dev/null`).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::kafka::write;
use crate::support::{modules, repo, sluice, sluice_bin, stderr};
use crate::tansu::free_port;

/// `sluice ARGS` started in `dir` with its stderr to `dir/log`; stdin piped when `stdin`.
fn spawn(dir: &Path, args: &[&str], stdin: bool) -> (Child, PathBuf) {
    let log = dir.join(format!("sluice-{}.log", free_port()));
    let child = Command::new(sluice_bin())
        .args(args)
        .current_dir(dir)
        .env("SLUICE_MODULES", modules())
        .env("SLUICE_CACHE_DIR", repo().join("target").join("sluice-module-cache"))
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start sluice");
    (child, log)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn lines(path: &Path) -> Vec<Value> {
    read(path).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn wait_until(what: &str, log: &Path, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not after {timeout:?}\n{}", read(log));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn telemetry(i: usize) -> String {
    json!({"ts": 1_700_000_000_000i64 + i as i64, "deviceName": format!("T-{}", i % 7), "deviceType": "Thermometer",
           "temperature": i})
    .to_string()
}

/// Every message through one filter node to the output.
fn pass_chain(dir: &Path) -> PathBuf {
    let chain = json!({
        "entry": "has-temperature",
        "nodes": [
            {"id": "has-temperature", "module": "check-fields", "config": {"messageNames": ["temperature"]}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [{"from": "has-temperature", "to": "out", "relation": "True"}]
    });
    write(dir, "chain.json", &chain.to_string())
}

#[test]
fn sigterm_on_an_endless_generator_keeps_every_generated_message_and_the_stats() {
    let dir = tempfile::tempdir().unwrap();
    let chain = json!({
        "entry": "ticks",
        "nodes": [
            {"id": "ticks", "module": "generator", "config": {"periodMs": 20, "count": 0,
             "originator": {"entityType": "DEVICE", "name": "G-1"}, "data": {"n": 1}}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [{"from": "ticks", "to": "out", "relation": "Success"}]
    });
    let chain = write(dir.path(), "chain.json", &chain.to_string());
    let input = write(dir.path(), "empty.jsonl", "");
    let (out, stats) = (dir.path().join("out.jsonl"), dir.path().join("stats.json"));
    let (mut child, log) = spawn(
        dir.path(),
        &["run", "--chain", path(&chain), "--input", path(&input), "--output", path(&out)]
            .into_iter()
            .chain(["--stats", path(&stats), "--no-state", "--workers", "2"])
            .collect::<Vec<_>>(),
        false,
    );
    wait_until("the generator is generating", &log, Duration::from_secs(60), || {
        read(&log).contains("waiting for pending timers")
    });
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let log = read(&log);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("stopped by SIGTERM"), "{log}");
    let written = lines(&out);
    let report: Value = serde_json::from_slice(&std::fs::read(&stats).expect("stats written")).unwrap();
    assert!(written.len() >= 5, "{} generated in 500 ms at 20 ms: {log}", written.len());
    // Everything the generator emitted reached the file, and the stats agree with the file.
    assert_eq!(report["stats"]["nodes"]["ticks"]["outputs"]["Success"].as_u64(), Some(written.len() as u64));
    assert_eq!(report["written"].as_u64(), Some(written.len() as u64), "{report}");
    assert_eq!(report["interrupted"], true);
    let ids: BTreeSet<&str> = written.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), written.len(), "ids unique");
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn sigterm_on_stdin_finishes_every_line_read() {
    let dir = tempfile::tempdir().unwrap();
    let chain = pass_chain(dir.path());
    let (out, stats) = (dir.path().join("out.jsonl"), dir.path().join("stats.json"));
    let args = ["run", "--chain", path(&chain), "--output", path(&out), "--stats", path(&stats), "--no-state"];
    let (mut child, log) = spawn(dir.path(), &args, true);
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..500 {
        writeln!(stdin, "{}", telemetry(i)).unwrap();
    }
    stdin.flush().unwrap();
    // stdin stays open: the run waits for more when the signal comes.
    std::thread::sleep(Duration::from_secs(2));
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let log = read(&log);
    assert_eq!(status.code(), Some(0), "{log}");
    drop(stdin);
    let report: Value = serde_json::from_slice(&std::fs::read(&stats).expect("stats written")).unwrap();
    let written = lines(&out);
    assert_eq!(written.len(), 500, "{log}");
    assert_eq!(
        (report["lines"].as_u64(), report["acked"].as_u64(), report["written"].as_u64()),
        (Some(500), Some(500), Some(500))
    );
}

#[test]
fn sigint_mid_file_then_the_same_command_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let chain = pass_chain(dir.path());
    let n = 300_000;
    let input = dir.path().join("in.jsonl");
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&telemetry(i));
        text.push('\n');
    }
    std::fs::write(&input, text).unwrap();
    let (out, stats) = (dir.path().join("out.jsonl"), dir.path().join("stats.json"));
    let args =
        ["run", "--chain", path(&chain), "--input", path(&input), "--output", path(&out), "--stats", path(&stats)];
    let (mut child, log) = spawn(dir.path(), &args, false);
    // The output is buffered: once anything shows, the run is well under way.
    wait_until("output", &log, Duration::from_secs(120), || std::fs::metadata(&out).is_ok_and(|m| m.len() > 0));
    signal(&child, "INT");
    let status = child.wait().unwrap();
    let first_log = read(&log);
    assert_eq!(status.code(), Some(0), "{first_log}");
    let first: Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(first["interrupted"], true, "the run ended before the signal: make the input longer\n{first_log}");
    let read_lines = first["lines"].as_u64().unwrap();
    assert!(read_lines < n as u64);
    // Every line read was finished and written.
    assert_eq!(first["acked"].as_u64(), Some(read_lines), "{first}");
    assert_eq!(lines(&out).len() as u64, read_lines, "{first_log}");

    let (mut child, log) = spawn(dir.path(), &args, false);
    let status = child.wait().unwrap();
    let log = read(&log);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains(&format!("resumed after line {read_lines}")), "{log}");
    let written = lines(&out);
    let ids: BTreeSet<&str> = written.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!((written.len(), ids.len()), (n, n), "each line once over the two runs");
}

#[test]
fn a_disabled_node_is_visible_and_fails_the_run_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let chain = json!({
        "entry": "crashy",
        "nodes": [
            {"id": "crashy", "module": "panicker", "limits": {"disableAfter": 3}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [{"from": "crashy", "to": "out", "relation": "True"}]
    });
    let chain = write(dir.path(), "chain.json", &chain.to_string());
    let admin = format!("127.0.0.1:{}", free_port());
    let stats = dir.path().join("stats.json");
    let args = ["run", "--chain", path(&chain), "--admin", &admin, "--stats", path(&stats), "--no-state"];
    let (mut child, log) = spawn(dir.path(), &args, true);
    let mut stdin = child.stdin.take().unwrap();
    let mut bytes = 0;
    for i in 0..5 {
        let line = format!("{}\n", json!({"ts": i, "deviceName": "P-1", "panic": true}));
        bytes += line.len();
        stdin.write_all(line.as_bytes()).unwrap();
    }
    stdin.flush().unwrap();
    let status_of = || -> Option<Value> {
        let out = sluice(&["status", "--admin", &admin]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    };
    wait_until("the node disabled", &log, Duration::from_secs(60), || {
        status_of().is_some_and(|s| s["disabledNodes"] == json!(["crashy"]))
    });
    let m = crate::support::metrics(&admin);
    assert_eq!(m.get("sluice_node_disabled{node=\"crashy\"}"), Some(&1.0), "{m:?}");
    // The JSON-lines source's own counts, exact: every line and byte read, each a message.
    let jsonl = |name: &str| m.get(&format!("sluice_jsonl_{name}_total")).copied();
    assert_eq!(
        (jsonl("lines"), jsonl("bytes"), jsonl("messages")),
        (Some(5.0), Some(bytes as f64), Some(5.0)),
        "{m:?}"
    );
    drop(stdin);
    let status = child.wait().unwrap();
    let log = read(&log);
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(log.contains("1 node disabled after repeated crashes (crashy)"), "{log}");
    // The summary names the node, its failures and why it is disabled.
    assert!(log.contains("node `crashy`: 5 of 5 messages failed (3 crashes: trap, deadline or memory), disabled after repeated crashes"), "{log}");
    let report: Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(report["problems"]["disabled_nodes"], json!(["crashy"]), "{report}");
    assert_eq!(report["stats"]["nodes"]["crashy"]["disabled"], true);
    // By kind: the panics trapped until the node was disabled; then it failed as disabled.
    assert_eq!(report["stats"]["nodes"]["crashy"]["failure_kinds"], json!({"trap": 3, "disabled": 2}), "{report}");
    // 5 failures, none taken by a `Failure` connection or a dead-letter sink: lost, and said so.
    assert_eq!(report["problems"]["lost"], 5, "{report}");

    let input = write(dir.path(), "in.jsonl", &format!("{}\n", json!({"ts": 1, "deviceName": "P-1", "panic": true})));
    let out = sluice(&["run", "--chain", path(&chain), "--input", path(&input), "--no-state", "--allow-failures"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 failure(s) lost"), "{}", stderr(&out));
}

#[test]
fn dead_letters_fail_a_file_run() {
    let dir = tempfile::tempdir().unwrap();
    let chain = json!({
        "entry": "crashy",
        "nodes": [{"id": "crashy", "module": "panicker"}, {"id": "out", "sink": "output"}],
        "connections": [{"from": "crashy", "to": "out", "relation": "True"}]
    });
    let chain = write(dir.path(), "chain.json", &chain.to_string());
    let config = write(dir.path(), "sluice.toml", "[deadLetter]\ntype = \"file\"\npath = \"dead.jsonl\"\n");
    let input = write(
        dir.path(),
        "in.jsonl",
        &format!(
            "{}\n{}\n",
            json!({"ts": 1, "deviceName": "P-1"}),
            json!({"ts": 2, "deviceName": "P-1", "fail": true})
        ),
    );
    let args = ["run", "--chain", path(&chain), "--input", path(&input), "--config", path(&config), "--no-state"];
    let out = sluice(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("1 message(s) dead-lettered"), "{err}");
    let dead = lines(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1, "{err}");
    assert!(dead[0]["metadata"]["error"].as_str().unwrap().contains("asked to fail"), "{}", dead[0]);
}

#[test]
fn a_config_without_source_applies_every_section_to_a_file_run() {
    let dir = tempfile::tempdir().unwrap();
    let chain = json!({
        "entry": "crashy",
        "nodes": [
            {"id": "crashy", "module": "panicker"},
            {"id": "has-temperature", "module": "check-fields", "config": {"messageNames": ["temperature"]}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "crashy", "to": "out", "relation": "True"},
            {"from": "has-temperature", "to": "crashy", "relation": "True"}
        ]
    });
    let chain = write(dir.path(), "chain.json", &chain.to_string());
    let admin = format!("127.0.0.1:{}", free_port());
    let deploy = dir.path().join("deploy");
    std::fs::create_dir(&deploy).unwrap();
    let config = write(
        &deploy,
        "sluice.toml",
        &format!(
            "entry = \"has-temperature\"\n\n[output]\ntype = \"file\"\npath = \"results/out.jsonl\"\n\n\
             [deadLetter]\ntype = \"file\"\npath = \"dead.jsonl\"\n\n[state]\ndir = \"state\"\ncheckpointMs = 50\n\n\
             [admin]\nlisten = \"{admin}\"\n\n[reload]\nwatch = false\n"
        ),
    );
    let args = ["run", "--chain", path(&chain), "--config", path(&config)];
    let (mut child, log) = spawn(dir.path(), &args, true);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", json!({"ts": 1, "deviceName": "T-1", "temperature": 20})).unwrap();
    writeln!(stdin, "{}", json!({"ts": 2, "deviceName": "T-1", "humidity": 20})).unwrap();
    writeln!(stdin, "{}", json!({"ts": 3, "deviceName": "T-1", "temperature": 21, "fail": true})).unwrap();
    stdin.flush().unwrap();
    // [admin]: the endpoint is up while the run is.
    wait_until("the admin endpoint", &log, Duration::from_secs(60), || {
        sluice(&["status", "--admin", &admin]).status.success()
    });
    // [reload] watch = false: saving the chain reloads nothing.
    let mut renamed: Value = serde_json::from_str(&read(&chain)).unwrap();
    renamed["name"] = json!("renamed");
    std::fs::write(&chain, renamed.to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let status: Value = serde_json::from_slice(&sluice(&["status", "--admin", &admin]).stdout).unwrap();
    assert_eq!(status["generation"], 0, "{status}");
    drop(stdin);
    let status = child.wait().unwrap();
    let log = read(&log);
    // [deadLetter] took one message: the run says so.
    assert_eq!(status.code(), Some(3), "{log}");
    // `entry`: the check ran first (the humidity line stopped there); [output] relative to
    // the config file.
    let out = lines(&deploy.join("results/out.jsonl"));
    assert_eq!(out.len(), 1, "{log}");
    assert_eq!(out[0]["data"]["temperature"], 20);
    let dead = lines(&deploy.join("dead.jsonl"));
    assert_eq!(dead.len(), 1, "{log}");
    assert_eq!(dead[0]["data"]["temperature"], 21);
    // [state]: the checkpoint is in the config's state dir, not ./data.
    assert!(std::fs::read_dir(deploy.join("state")).unwrap().count() > 0, "{log}");
    assert!(!dir.path().join("data").exists());

    // `--output` and `[output]` together: refused, naming both.
    let out = sluice(&["run", "--chain", path(&chain), "--config", path(&config), "--output", "x.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("[output] in"), "{}", stderr(&out));
}

#[test]
fn output_to_dev_null_works_and_errors_say_their_reason_once() {
    let dir = tempfile::tempdir().unwrap();
    let chain = pass_chain(dir.path());
    let input = write(dir.path(), "in.jsonl", &format!("{}\n{}\n", telemetry(1), telemetry(2)));
    for state in [&["--no-state"][..], &["--state-dir", "st", "--checkpoint-ms", "1"][..]] {
        let mut args = vec!["run", "--chain", path(&chain), "--input", path(&input), "--output", "/dev/null"];
        args.extend(state);
        let out = Command::new(sluice_bin())
            .args(&args)
            .current_dir(dir.path())
            .env("SLUICE_MODULES", modules())
            .env("SLUICE_CACHE_DIR", repo().join("target").join("sluice-module-cache"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stderr(&out).contains("2 written"), "{}", stderr(&out));
    }
    // A path that cannot be an output: the reason once, not once per layer.
    let blocked = write(dir.path(), "file", "");
    let bad = blocked.join("out.jsonl");
    let out = sluice(&["run", "--chain", path(&chain), "--input", path(&input), "--output", path(&bad), "--no-state"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("cannot create {}", blocked.display())), "{err}");
    assert_eq!(err.matches("os error").count(), 1, "{err}");
}

#[test]
fn file_connectors_start_afresh_unless_appending() {
    let dir = tempfile::tempdir().unwrap();
    let chain = |append: bool| {
        json!({
            "entry": "to-file",
            "connectors": {"sink": {"type": "file", "path": "{chainDir}/topic.jsonl", "append": append}},
            "nodes": [{"id": "to-file", "module": "kafka-action", "connector": "sink", "config": {"topic": "t"}}],
            "connections": []
        })
    };
    let input = write(dir.path(), "in.jsonl", &format!("{}\n{}\n", telemetry(1), telemetry(2)));
    let topic = dir.path().join("topic.jsonl");
    for (append, expected) in [(false, [2, 2]), (true, [4, 6])] {
        let chain = write(dir.path(), "chain.json", &chain(append).to_string());
        for n in expected {
            let out = sluice(&["run", "--chain", path(&chain), "--input", path(&input), "--no-state"]);
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(read(&topic).lines().count(), n, "append: {append}");
        }
    }
}

/// The log of the one service started in `dir` (read after it stopped).
fn service_log(dir: &Path) -> String {
    let mut logs = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| {
        p.file_name().unwrap().to_string_lossy().starts_with("sluice-") && p.extension().is_some_and(|e| e == "log")
    });
    read(&logs.next().expect("a service log"))
}

#[test]
fn sigterm_on_an_http_service_keeps_every_accepted_message_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write(dir.path(), "tokens.json", r#"{"TOKEN-1": {"deviceName": "T-1", "deviceType": "Thermometer"}}"#);
    let chain = pass_chain(dir.path());
    let config = write(
        dir.path(),
        "sluice.toml",
        &format!(
            "[source]\ntype = \"http\"\nlisten = \"127.0.0.1:{port}\"\ntokens = \"tokens.json\"\n\n\
             [output]\ntype = \"file\"\npath = \"out.jsonl\"\n"
        ),
    );
    let service = crate::kafka::Service::start(dir.path(), &chain, &config, "state");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !service.log().contains("HTTP device API listening") {
        assert!(Instant::now() < deadline, "the HTTP source did not start:\n{}", service.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // A device posting as fast as it is answered while the service is told to stop.
    let poster = std::thread::spawn(move || {
        let mut accepted = 0u64;
        for i in 0.. {
            let body = json!({"ts": 1_700_000_000_000i64 + i, "values": {"temperature": i}}).to_string();
            match crate::support::http_post(port, "/api/v1/TOKEN-1/telemetry", &body) {
                Some(200) => accepted += 1,
                Some(_) | None => return accepted,
            }
        }
        accepted
    });
    std::thread::sleep(Duration::from_secs(2));
    let stats = dir.path().join("state-stats.json");
    let status = service.stop();
    let accepted = poster.join().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(accepted > 0);
    let out = lines(&dir.path().join("out.jsonl"));
    // Answered 200 = processed: every one of them is in the file, and the stats say so.
    assert_eq!(out.len() as u64, accepted);
    let report: Value = serde_json::from_slice(&std::fs::read(&stats).expect("stats written")).unwrap();
    let log = service_log(dir.path());
    assert!(log.contains(&format!("{accepted} records from http:127.0.0.1:{port}")), "{log}");
    assert!(log.contains("stopped by SIGTERM"), "{log}");
    assert_eq!(report["messages"].as_u64(), Some(accepted), "{report}");
    assert_eq!(report["stats"]["output"].as_u64(), Some(accepted), "{report}");
}

/// `chain` as a service on `mosquitto` (output `out.jsonl`, an admin endpoint), once its MQTT
/// source has subscribed; the service and the admin address.
fn mqtt_service(dir: &Path, chain: &Path, mosquitto: &crate::brokers::Mosquitto) -> (crate::kafka::Service, String) {
    let admin = format!("127.0.0.1:{}", free_port());
    let config = write(
        dir,
        "sluice.toml",
        &format!(
            "[source]\ntype = \"mqtt\"\nurl = \"{}\"\n\n[output]\ntype = \"file\"\npath = \"out.jsonl\"\n\n\
             [admin]\nlisten = \"{admin}\"\n\n[reload]\nwatch = false\n",
            mosquitto.url()
        ),
    );
    let service = crate::kafka::Service::start(dir, chain, &config, "state");
    service.wait_for_log("MQTT source subscribed", Duration::from_secs(60));
    (service, admin)
}

#[test]
fn the_mqtt_service_summary_counts_what_metrics_count() {
    use rumqttc::{Client, MqttOptions, QoS};
    let mosquitto = crate::brokers::Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let chain = pass_chain(dir.path());
    let (service, admin) = mqtt_service(dir.path(), &chain, &mosquitto);
    let mut options = MqttOptions::new("devices", "127.0.0.1", mosquitto.port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut connection) = Client::new(options, 100);
    let pump = std::thread::spawn(move || for _ in connection.iter().take_while(Result::is_ok) {});
    for i in 0..8 {
        let point = json!({"ts": 1_700_000_000_000i64 + i * 1000, "values": {"temperature": 20 + i}});
        client.publish("v1/devices/T-1/telemetry", QoS::AtLeastOnce, false, point.to_string()).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = crate::support::metrics(&admin);
        if m.get("sluice_mqtt_source_acks_total") == Some(&8.0) {
            assert_eq!(m["sluice_mqtt_source_messages_total"], 8.0, "{m:?}");
            break;
        }
        assert!(Instant::now() < deadline, "8 PUBACKs: {m:?}\n{}", service.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The nodes' counters follow while the service runs (published every 200 ms).
    let node = |family: &str, extra: &str| {
        format!("sluice_node_{family}_total{{chain=\"chain\",node=\"has-temperature\"{extra}}}")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let live = loop {
        let m = crate::support::metrics(&admin);
        if m.get(&node("received", "")) == Some(&8.0) {
            break m;
        }
        assert!(Instant::now() < deadline, "per-node counters: {m:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(live[&node("outputs", ",relation=\"True\"")], 8.0, "{live:?}");
    assert_eq!(live["sluice_sink_written_total{sink=\"output\"}"], 8.0, "{live:?}");
    assert_eq!(live["sluice_output_messages_total{chain=\"chain\"}"], 8.0, "{live:?}");
    // Where the stream stands: the greatest event time of the topic, the workers' queues.
    let topic_max = live.iter().find(|(k, _)| k.starts_with("sluice_partition_max_event_time_ms{partition="));
    assert_eq!(topic_max.map(|(_, v)| *v), Some(1_700_000_007_000.0), "{live:?}");
    assert!(live.contains_key("sluice_worker_queue_depth{worker=\"0\"}"), "{live:?}");
    // The flight recorder: each message in, and out on `True`.
    let (status, recorded) = crate::support::admin_json(&admin, "/nodes/has-temperature/events");
    assert_eq!(status, 200, "{recorded}");
    let events = recorded["events"].as_array().unwrap();
    assert_eq!(events.len(), 8, "{recorded}");
    assert!(
        events.iter().all(|e| e["outputs"][0]["relation"] == "True" && e["input"]["data"]["temperature"].is_number())
    );
    let (status, missing) = crate::support::admin_json(&admin, "/nodes/nope/events");
    assert_eq!(status, 404);
    assert!(missing["error"].as_str().unwrap().contains("no node `nope`"), "{missing}");
    client.disconnect().unwrap();
    let _ = pump.join();
    let stats = dir.path().join("state-stats.json");
    service.stop_ok();
    let log = service_log(dir.path());
    assert!(log.contains(&format!("8 records from mqtt:{}, 0 malformed", mosquitto.url())), "{log}");
    let report: Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(report["messages"], 8, "{report}");
    // `/metrics` and `--stats` agree, node by node.
    let checked = &report["stats"]["nodes"]["has-temperature"];
    assert_eq!(checked["received"].as_f64(), Some(live[&node("received", "")]), "{report}");
    assert_eq!(checked["outputs"]["True"].as_f64(), Some(live[&node("outputs", ",relation=\"True\"")]), "{report}");
    assert_eq!(report["stats"]["output"].as_f64(), Some(live["sluice_output_messages_total{chain=\"chain\"}"]));
}

/// The chain of the replay test: a check, then an action (a file connector standing in for
/// Kafka), then the output; `names` are the fields the check wants.
fn replay_chain(names: &[&str]) -> Value {
    json!({
        "entry": "has-temperature",
        "connectors": {"sink": {"type": "file", "path": "{chainDir}/published.jsonl", "append": true}},
        "nodes": [
            {"id": "has-temperature", "module": "check-fields", "config": {"messageNames": names}},
            {"id": "publish", "module": "kafka-action", "connector": "sink", "config": {"topic": "readings"}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [
            {"from": "has-temperature", "to": "publish", "relation": "True"},
            {"from": "publish", "to": "out", "relation": "Success"}
        ]
    })
}

#[test]
fn a_recorded_message_replays_through_an_edited_chain_in_isolation() {
    use rumqttc::{Client, MqttOptions, QoS};
    let mosquitto = crate::brokers::Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let chain = write(dir.path(), "chain.json", &replay_chain(&["temperature"]).to_string());
    let (service, admin) = mqtt_service(dir.path(), &chain, &mosquitto);
    let mut options = MqttOptions::new("replay-device", "127.0.0.1", mosquitto.port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut connection) = Client::new(options, 10);
    let pump = std::thread::spawn(move || for _ in connection.iter().take_while(Result::is_ok) {});
    // The device says `temp`, the chain wants `temperature`: the message goes nowhere.
    client.publish("v1/devices/T-9/telemetry", QoS::AtLeastOnce, false, r#"{"temp": 21.5}"#).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let recorded = loop {
        let (_, recorded) = crate::support::admin_json(&admin, "/nodes/has-temperature/events");
        if recorded["events"].as_array().is_some_and(|e| !e.is_empty()) {
            break recorded;
        }
        assert!(Instant::now() < deadline, "recorded: {recorded}\n{}", service.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(recorded["events"][0]["outputs"][0]["relation"], "False", "{recorded}");

    // The fix, replayed before it is saved: the check passes, the action is not executed.
    let edited = write(dir.path(), "edited.json", &replay_chain(&["temp"]).to_string());
    let replay = |extra: &[&str]| {
        let mut args = vec!["replay", "--admin", &admin, "--node", "has-temperature", "--chain"];
        let edited = edited.to_str().unwrap();
        args.push(edited);
        args.extend_from_slice(extra);
        let out = sluice(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let dry = replay(&[]);
    assert_eq!(dry["outputs"][0][0], "True", "{dry}");
    assert_eq!(dry["outputs"][0][1]["data"]["temp"], 21.5, "{dry}");
    let publish = &dry["downstream"]["publish"];
    assert_eq!(publish[0][0], "Failure", "no connector without --live: {dry}");
    assert!(publish[0][1]["metadata"]["error"].as_str().unwrap().contains("no connector"), "{dry}");
    assert!(!dir.path().join("published.jsonl").exists(), "nothing published");

    // Live: the action runs, and the message reaches the sink — shown, not written.
    let live = replay(&["--live"]);
    assert_eq!(live["downstream"]["publish"][0][0], "Success", "{live}");
    assert_eq!(live["sink"].as_array().map(Vec::len), Some(1), "{live}");
    let published = std::fs::read_to_string(dir.path().join("published.jsonl")).unwrap();
    assert_eq!(published.lines().count(), 1, "{published}");

    // Replays change nothing of the running engine: its output is still empty, its recorder
    // still holds the one real message.
    client.disconnect().unwrap();
    let _ = pump.join();
    let (_, after) = crate::support::admin_json(&admin, "/nodes/has-temperature/events");
    assert_eq!(after["events"].as_array().map(Vec::len), Some(1), "{after}");
    service.stop_ok();
    assert_eq!(std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap_or_default(), "");
}

/// With a token, every admin request needs it — status, metrics, the recorder, reload and
/// replay — and the CLI sends it (`--token` or `SLUICE_ADMIN_TOKEN`); without one, the endpoint
/// refuses to listen anywhere but loopback.
#[test]
fn the_admin_endpoint_needs_its_token_and_stays_on_loopback_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let chain = dir.path().join("chain.json");
    std::fs::write(
        &chain,
        json!({
            "entry": "f",
            "nodes": [
                {"id": "f", "module": "threshold", "config": {"value": "data.t", "op": ">", "threshold": 10}},
                {"id": "out", "sink": "output"}
            ],
            "connections": [{"from": "f", "to": "out", "relation": "Anomaly"}, {"from": "f", "to": "out", "relation": "Normal"}]
        })
        .to_string(),
    )
    .unwrap();
    let chain = chain.to_str().unwrap();

    // Off loopback without a token: refused before anything runs, saying why.
    let out = Command::new(sluice_bin())
        .args(["run", "--chain", chain, "--input", "/dev/null", "--no-state", "--admin", "0.0.0.0:0"])
        .env("SLUICE_MODULES", modules())
        .env_remove("SLUICE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("needs a token"), "{}", stderr(&out));

    // On loopback with a token, reading stdin until it closes.
    let admin = format!("127.0.0.1:{}", free_port());
    let mut run = Command::new(sluice_bin())
        .args(["run", "--chain", chain, "--no-state", "--no-watch", "--admin", &admin, "--admin-token", "s3cret"])
        .env("SLUICE_MODULES", modules())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&admin).is_err() {
        assert!(Instant::now() < deadline, "the admin endpoint did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    writeln!(run.stdin.as_mut().unwrap(), r#"{{"ts": 1, "deviceName": "d", "deviceType": "t", "t": 42}}"#).unwrap();

    for (method, path) in [
        ("GET", "/status"),
        ("GET", "/metrics"),
        ("GET", "/nodes/f/events"),
        ("POST", "/reload"),
        ("POST", "/nodes/f/replay"),
    ] {
        for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret2")] {
            let (status, body) = crate::support::admin_request(&admin, method, path, token);
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
            assert!(body.contains("needs its token"), "{body}");
        }
    }
    let (status, body) = crate::support::admin_request(&admin, "GET", "/status", Some("s3cret"));
    assert_eq!(status, 200, "{body}");
    let (status, body) = crate::support::admin_request(&admin, "GET", "/metrics", Some("s3cret"));
    assert_eq!(status, 200, "{body}");

    // The CLI: refused without the token (exit 1, the reason), through with it, either way.
    let cli = |args: &[&str], env: Option<&str>| {
        let mut command = Command::new(sluice_bin());
        command.args(args).env_remove("SLUICE_ADMIN_TOKEN");
        if let Some(token) = env {
            command.env("SLUICE_ADMIN_TOKEN", token);
        }
        command.output().unwrap()
    };
    let out = cli(&["status", "--admin", &admin], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("needs its token"), "{}", stderr(&out));
    let out = cli(&["status", "--admin", &admin, "--token", "s3cret"], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = cli(&["reload", "--admin", &admin], Some("s3cret"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    let replayed = loop {
        let out = cli(&["replay", "--admin", &admin, "--node", "f"], Some("s3cret"));
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(replayed.status.code(), Some(0), "{}", stderr(&replayed));
    assert!(
        String::from_utf8_lossy(&replayed.stdout).contains("Anomaly"),
        "{}",
        String::from_utf8_lossy(&replayed.stdout)
    );

    // A dry run of a reload: which nodes keep their state, which start empty; nothing reloaded.
    let edited = dir.path().join("edited.json");
    let mut spec: Value = serde_json::from_str(&std::fs::read_to_string(chain).unwrap()).unwrap();
    spec["nodes"].as_array_mut().unwrap().push(json!({"id": "g", "module": "log"}));
    spec["connections"].as_array_mut().unwrap().push(json!({"from": "f", "to": "g", "relation": "Anomaly"}));
    std::fs::write(&edited, spec.to_string()).unwrap();
    let out = cli(&["diff", "--admin", &admin, edited.to_str().unwrap()], Some("s3cret"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "node `f`: kept (no state yet)\nnode `out`: kept (no state yet)\nnode `g`: new: starts empty\n"
    );
    spec["nodes"][0]["config"]["threshold"] = json!("high");
    std::fs::write(&edited, spec.to_string()).unwrap();
    let out = cli(&["diff", "--admin", &admin, edited.to_str().unwrap()], Some("s3cret"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("a reload would be refused") && stderr(&out).contains("threshold"),
        "{}",
        stderr(&out)
    );
    let (_, status) = crate::support::admin_request(&admin, "GET", "/status", Some("s3cret"));
    assert!(status.contains("\"generation\":1"), "only the reload above ran: {status}");

    drop(run.stdin.take());
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"t\":42"), "{}", String::from_utf8_lossy(&out.stdout));
}

//! The sink contract (`sluice_testkit::sinks`) for the JSON-lines sink; the Kafka sink is held to
//! the same contract by the end-to-end tests, against tansu.

use serde_json::Value;
use sluice::sinks::JsonLinesSink;
use sluice_testkit::sinks::holds_to_the_contract;

#[test]
fn the_json_lines_sink_holds_to_the_sink_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out/results.jsonl");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "left over from an earlier run\n").unwrap();
    let read = path.clone();
    holds_to_the_contract(Box::new(JsonLinesSink::file(path)), move || {
        // A fresh start emptied it: every line is one of this run's messages.
        std::fs::read_to_string(&read).unwrap().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).collect()
    });
}

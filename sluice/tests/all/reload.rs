//! The reloader without files being watched: what happens to the state of nodes a reload
//! removes, and what a refused reload leaves behind.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sluice::chain::Loader;
use sluice::flow::{Ack, Envelope, Pipeline, PipelineConfig, Sinks};
use sluice::reload::{Fate, Reloader};
use sluice::sinks::jsonl::SinkItem;
use sluice::state::StateStore;

use crate::support::{ChainDir, modules, runtime};

fn counting(node: &str) -> Value {
    json!({
        "entry": node,
        "nodes": [
            {"id": node, "module": "counter", "config": {"relation": "Success"}},
            {"id": "out", "sink": "output"}
        ],
        "connections": [{"from": node, "to": "out", "relation": "Success"}]
    })
}

/// Sends one message for `dev-1` and returns the count the counter stamped on it.
fn count_one(pipeline: &Pipeline, rx: &std::sync::mpsc::Receiver<SinkItem>) -> String {
    let msg = json!({"id": "m", "ts": 1, "type": "POST_TELEMETRY_REQUEST",
        "originator": {"entityType": "DEVICE", "name": "dev-1"}, "metadata": {}, "data": {}});
    let envelope = Envelope::new(
        std::sync::Arc::new(serde_json::from_value::<sluice_sdk::TbMsg>(msg).unwrap().into()),
        Envelope::key_of("DEVICE", "dev-1"),
        Ack::none(),
    );
    pipeline.send_blocking(envelope).unwrap();
    let msgs = rx.recv_timeout(Duration::from_secs(30)).unwrap().into_msgs();
    assert_eq!(msgs.len(), 1, "one output per message");
    let out: Value = serde_json::to_value(&*msgs[0].0).unwrap();
    out["metadata"]["count"].as_str().unwrap().to_string()
}

#[test]
fn a_removed_node_keeps_its_state_for_the_retention_then_loses_it() {
    let dir = ChainDir::new();
    let file = dir.write_json("chain.json", &counting("a"));
    let runtime = runtime();
    let chain = Arc::new(Loader::new(&runtime, vec![modules().to_path_buf()]).load(&file).unwrap());
    let state = StateStore::default();
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    let config = PipelineConfig { workers: 1, flush_at_end: false, ..PipelineConfig::default() };
    let pipeline = Pipeline::start(
        runtime.clone(),
        chain,
        state.clone(),
        Sinks { output: Some(tx), ..Default::default() },
        config,
    )
    .unwrap();
    let reloader = |retention| {
        Reloader::new(
            runtime.clone(),
            vec![modules().to_path_buf()],
            Default::default(),
            None,
            pipeline.chain_handle(),
            state.clone(),
            retention,
        )
    };
    let keeping = reloader(Duration::from_secs(3600));
    assert_eq!(count_one(&pipeline, &rx), "1");
    assert_eq!(count_one(&pipeline, &rx), "2");

    // The plan of that reload, asked first: nothing happens, each node's fate is named.
    let next = dir.write_json("next.json", &counting("b"));
    let plan = keeping.plan(Some(&next)).unwrap();
    let fates: Vec<(String, Fate, bool)> = plan.nodes.iter().map(|n| (n.node.clone(), n.fate, n.has_state)).collect();
    assert_eq!(
        fates,
        [("b".into(), Fate::Added, false), ("out".into(), Fate::Keeps, false), ("a".into(), Fate::Removed, true)]
    );
    assert_eq!(plan.retention_ms, 3_600_000);
    assert_eq!(keeping.status().generation, 0, "a plan reloads nothing");
    let mut broken = counting("b");
    broken["nodes"][0]["config"]["relation"] = json!("");
    let refused = dir.write_json("broken.json", &broken);
    assert!(keeping.plan(Some(&refused)).unwrap_err().to_string().contains("node `b`"), "refused as a reload would be");

    // `a` removed: its state stays, listed with when it goes.
    dir.write_json("chain.json", &counting("b"));
    assert_eq!(keeping.reload("test").ok(), Some(1));
    assert_eq!(count_one(&pipeline, &rx), "1", "`b` starts its own count");
    let status = keeping.status();
    assert_eq!(status.retained_state.len(), 1);
    assert_eq!(status.retained_state[0].node, "a");
    keeping.expire_removed();
    assert!(state.node_ids().contains(&"a".to_string()), "within its retention");

    // `a` is back before its retention ran out: it goes on counting.
    let back = keeping.plan(Some(&dir.write_json("back.json", &counting("a")))).unwrap();
    assert_eq!(back.nodes[0].fate, Fate::Returns, "{back:?}");
    assert!(back.nodes.iter().any(|n| n.node == "b" && n.fate == Fate::Removed && n.has_state), "{back:?}");
    dir.write_json("chain.json", &counting("a"));
    assert_eq!(keeping.reload("test").ok(), Some(2));
    assert_eq!(count_one(&pipeline, &rx), "3");
    assert!(keeping.status().retained_state.iter().all(|r| r.node != "a"));

    // With no retention, the removed node's state goes at the next sweep.
    let dropping = reloader(Duration::ZERO);
    dir.write_json("chain.json", &counting("b"));
    assert_eq!(dropping.reload("test").ok(), Some(3));
    dropping.expire_removed();
    assert!(!state.node_ids().contains(&"a".to_string()), "dropped: {:?}", state.node_ids());

    // A refused reload changes nothing and is reported with file, node and field.
    let mut broken = counting("b");
    broken["nodes"][0]["config"]["relation"] = json!("");
    dir.write_json("chain.json", &broken);
    let err = dropping.reload("test").unwrap_err().to_string();
    assert!(err.contains("chain.json") && err.contains("node `b`"), "{err}");
    assert_eq!(dropping.status().generation, 3);
    assert!(dropping.status().last_error.unwrap().message.contains("node `b`"));
    assert_eq!(count_one(&pipeline, &rx), "2", "`b` still runs, with its state");
    pipeline.shutdown();
}

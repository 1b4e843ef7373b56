//! The web view (`GET /` on the admin endpoint): the running chain drawn as a graph, with live
//! counters on nodes and connections, a node's config, recent events and failures from the
//! flight recorder, the reload status, and a live chart of a node's numeric outputs.
//!
//! One page, embedded in the binary (`web/index.html`: HTML, CSS and script, no framework, no
//! network access): it works wherever the binary does, offline included. It reads three
//! endpoints of the admin API, the same ones a script would use: `GET /chain` (this module's
//! [`graph`]), `GET /live` (server-sent events, every second) and `GET /nodes/{id}/events`.
//! The layout is computed in the page: layers by distance from the entry node, which is what a
//! rule chain is (a mostly forward graph, a few dozen nodes).

use axum::response::Html;
use serde_json::{Value, json};

use crate::chain::{Chain, NodeKind};

/// The page.
pub async fn index() -> Html<&'static str> {
    Html(include_str!("web/index.html"))
}

/// The running chain as the page draws it: `{name, file, entry, nodes: [{id, name, kind,
/// module, config, record, chain}], edges: [{from, to, relation}]}`. Nodes of a nested chain
/// keep their qualified ids (`enrich/lookup`) and name the chain node they belong to; a chain
/// node has an edge to its nested entry (relation `nested`).
pub fn graph(chain: &Chain) -> Value {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for node in &chain.nodes {
        let (kind, module, config) = match &node.kind {
            NodeKind::Rule(rule) => (
                "rule",
                rule.module.source.file_stem().map(|s| s.to_string_lossy().trim_end_matches(".wasm").to_string()),
                serde_json::from_slice::<Value>(&rule.config).unwrap_or(Value::Null),
            ),
            NodeKind::Chain { entry } => {
                edges.push(json!({"from": node.id, "to": chain.nodes[*entry].id, "relation": "nested"}));
                ("chain", None, Value::Null)
            }
            NodeKind::Sink(_) => ("sink", None, Value::Null),
        };
        let mut routes: Vec<(&String, &Vec<usize>)> = node.routes.iter().collect();
        routes.sort();
        for (relation, targets) in routes {
            for &to in targets {
                edges.push(json!({"from": node.id, "to": chain.nodes[to].id, "relation": relation}));
            }
        }
        nodes.push(json!({
            "id": node.id,
            "name": node.name,
            "kind": kind,
            "module": module,
            "config": config,
            "record": node.record,
            "chain": node.id.rsplit_once('/').map(|(outer, _)| outer),
        }));
    }
    json!({
        "name": chain.name,
        "file": chain.file,
        "entry": chain.nodes[chain.entry].id,
        "nodes": nodes,
        "edges": edges,
    })
}

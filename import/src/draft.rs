//! A Sluice chain being assembled from a foreign one. One source node may become several Sluice
//! nodes (a *fragment*: save timeseries is a table write and the output sink; originator
//! attributes of three scopes are three lookups in a row); the draft gives them ids, joins them,
//! declares the connectors they need once per chain, and remembers where each fragment is
//! entered and left so the source's connections can be drawn between fragments.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use sluice_core::spec::{ChainSpec, ConnectionSpec, ConnectorSpec, NodeSpec};

use super::report::{Finding, FindingKind};

/// A connector a node needs: its base name (`kafka`, `mqtt`, `rest`) and how to build it for a
/// given environment-variable prefix (`KAFKA`, `KAFKA_2`), so a second, different Kafka cluster
/// gets `kafka-2` and `${KAFKA_2_BROKERS:-…}`.
pub(crate) struct Want {
    pub base: &'static str,
    pub build: Box<dyn Fn(&str) -> ConnectorSpec>,
}

/// One Sluice node of a fragment; `suffix` is appended to the source node's id (`""` for the
/// first, which takes the source node's name when `name` is `None`).
pub(crate) struct Part {
    pub suffix: &'static str,
    pub name: Option<String>,
    pub module: Option<&'static str>,
    pub sink: bool,
    pub chain: Option<String>,
    pub config: Value,
    pub connector: Option<Want>,
}

impl Part {
    pub fn module(module: &'static str, config: Value) -> Part {
        Part { suffix: "", name: None, module: Some(module), sink: false, chain: None, config, connector: None }
    }

    pub fn output() -> Part {
        Part { suffix: "out", name: None, module: None, sink: true, chain: None, config: Value::Null, connector: None }
    }

    pub fn chain(file: String) -> Part {
        Part {
            suffix: "",
            name: None,
            module: None,
            sink: false,
            chain: Some(file),
            config: Value::Null,
            connector: None,
        }
    }

    pub fn suffix(mut self, suffix: &'static str) -> Part {
        self.suffix = suffix;
        self
    }

    pub fn named(mut self, name: impl Into<String>) -> Part {
        self.name = Some(name.into());
        self
    }

    pub fn granted(mut self, want: Want) -> Part {
        self.connector = Some(want);
        self
    }
}

/// What one source node became.
pub(crate) struct Fragment {
    pub parts: Vec<Part>,
    /// (from part, to part, relation) inside the fragment.
    pub links: Vec<(usize, usize, &'static str)>,
    /// The part the source node's connections leave from (`Failure` leaves from every part).
    pub exit: usize,
    pub notes: Vec<String>,
    /// Findings other than notes: how a link was resolved, a secret taken out.
    pub findings: Vec<(FindingKind, String)>,
}

impl Fragment {
    pub fn one(part: Part) -> Fragment {
        Fragment { parts: vec![part], links: Vec::new(), exit: 0, notes: Vec::new(), findings: Vec::new() }
    }

    pub fn note(mut self, note: impl Into<String>) -> Fragment {
        self.notes.push(note.into());
        self
    }

    /// `part` after the current exit on `relation`, becoming the exit.
    pub fn then(mut self, relation: &'static str, part: Part) -> Fragment {
        self.parts.push(part);
        let to = self.parts.len() - 1;
        self.links.push((self.exit, to, relation));
        self.exit = to;
        self
    }

    /// `part` hung off the current exit on `relation` (the exit stays).
    pub fn also(mut self, relation: &'static str, part: Part) -> Fragment {
        self.parts.push(part);
        let to = self.parts.len() - 1;
        self.links.push((self.exit, to, relation));
        self
    }
}

/// Where a placed fragment is entered and left, by Sluice node id.
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    pub entry: String,
    pub exit: String,
    /// Every part that can fail (not sinks).
    pub failing: Vec<String>,
}

#[derive(Default)]
pub(crate) struct Draft {
    nodes: Vec<NodeSpec>,
    connections: Vec<ConnectionSpec>,
    connectors: BTreeMap<String, ConnectorSpec>,
    /// Each declared connector built with the prefix `X`, to recognise an equal one.
    canonical: Vec<(String, ConnectorSpec)>,
    ids: BTreeSet<String>,
    pub findings: Vec<Finding>,
}

/// Longest slug: node ids stay readable, and a chain's file name (`<slug>-<n>.json`) stays far
/// below the 255 bytes a file name may have (a chain named with 5,000 letters made the import
/// fail to write).
const SLUG_MAX: usize = 64;

/// A readable id fragment: ASCII letters and digits, the rest as single dashes, at most
/// [`SLUG_MAX`] characters.
pub(crate) fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if out.len() >= SLUG_MAX {
            break;
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() { "node".into() } else { out }
}

impl Draft {
    /// A unique id from `wanted` (`-2`, `-3`… on a clash).
    fn unique(&mut self, wanted: String) -> String {
        let mut id = wanted.clone();
        let mut n = 2;
        while self.ids.contains(&id) {
            id = format!("{wanted}-{n}");
            n += 1;
        }
        self.ids.insert(id.clone());
        id
    }

    /// Adds a fragment for the source node `base` (an id stem) named `name`.
    pub fn add(&mut self, base: &str, name: &str, debug: bool, fragment: Fragment) -> Placed {
        let mut ids = Vec::with_capacity(fragment.parts.len());
        let mut failing = Vec::new();
        for part in fragment.parts {
            let wanted = if part.suffix.is_empty() { base.to_string() } else { format!("{base}-{}", part.suffix) };
            let id = self.unique(wanted);
            let name = match (part.name, part.suffix.is_empty()) {
                (Some(n), _) => Some(n),
                (None, true) => Some(name.to_string()),
                (None, false) => None,
            };
            let connector = part.connector.map(|want| self.connector(want));
            if !part.sink {
                failing.push(id.clone());
            }
            self.nodes.push(NodeSpec {
                id: id.clone(),
                name,
                module: part.module.map(str::to_string),
                chain: part.chain,
                sink: part.sink.then(|| "output".to_string()),
                config: part.config,
                debug,
                record: true,
                connector,
                limits: None,
            });
            ids.push(id);
        }
        for (from, to, relation) in fragment.links {
            self.connect(&ids[from], &ids[to], relation);
        }
        Placed { entry: ids[0].clone(), exit: ids[fragment.exit].clone(), failing }
    }

    /// A placeholder for an unsupported source node: the `unsupported` rule, reported.
    pub fn placeholder(&mut self, base: &str, name: &str, debug: bool, class: &str, reason: &str) -> Placed {
        let part = Part::module("unsupported", json!({"class": class, "reason": reason}));
        self.add(base, name, debug, Fragment::one(part))
    }

    /// The module of the node `id`, if it is a rule node.
    pub fn module_of(&self, id: &str) -> Option<&str> {
        self.nodes.iter().find(|n| n.id == id).and_then(|n| n.module.as_deref())
    }

    pub fn connect(&mut self, from: &str, to: &str, relation: &str) {
        let c = ConnectionSpec { from: from.into(), to: to.into(), relation: relation.into() };
        if !self.connections.contains(&c) {
            self.connections.push(c);
        }
    }

    /// Connects a source connection: `Failure` from every part of `from`, anything else from its exit.
    pub fn connect_placed(&mut self, from: &Placed, to: &Placed, relation: &str) {
        if relation == crate::FAILURE {
            for id in from.failing.clone() {
                self.connect(&id, &to.entry, relation);
            }
        } else {
            self.connect(&from.exit, &to.entry, relation);
        }
    }

    /// The name of a connector equal to `want` (declaring it if new).
    fn connector(&mut self, want: Want) -> String {
        let canonical = (want.build)("X");
        if let Some((name, _)) = self.canonical.iter().find(|(_, c)| *c == canonical) {
            return name.clone();
        }
        let mut name = want.base.to_string();
        let mut n = 2;
        while self.connectors.contains_key(&name) {
            name = format!("{}-{n}", want.base);
            n += 1;
        }
        let prefix = name.to_ascii_uppercase().replace('-', "_");
        self.connectors.insert(name.clone(), (want.build)(&prefix));
        self.canonical.push((name.clone(), canonical));
        name
    }

    pub fn note(&mut self, at: &str, class: &str, name: &str, text: impl Into<String>) {
        self.finding(FindingKind::Note, at, class, name, text);
    }

    pub fn finding(&mut self, kind: FindingKind, at: &str, class: &str, name: &str, text: impl Into<String>) {
        self.findings.push(Finding { kind, at: at.into(), class: class.into(), name: name.into(), text: text.into() });
    }

    pub fn unsupported(&mut self, at: &str, class: &str, name: &str, text: impl Into<String>) {
        self.findings.push(Finding {
            kind: FindingKind::Placeholder,
            at: at.into(),
            class: class.into(),
            name: name.into(),
            text: text.into(),
        });
    }

    /// Whether the connections form a cycle (then `maxHops` must bound it).
    fn has_cycle(&self) -> bool {
        let index: BTreeMap<&str, usize> = self.nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
        let mut next = vec![Vec::new(); self.nodes.len()];
        for c in &self.connections {
            if let (Some(&a), Some(&b)) = (index.get(c.from.as_str()), index.get(c.to.as_str())) {
                next[a].push(b);
            }
        }
        // 0 unvisited, 1 on the path, 2 done; iterative so a long chain cannot overflow the stack.
        let mut mark = vec![0u8; self.nodes.len()];
        for start in 0..self.nodes.len() {
            if mark[start] != 0 {
                continue;
            }
            let mut stack = vec![(start, 0usize)];
            mark[start] = 1;
            while let Some((node, i)) = stack.pop() {
                if let Some(&to) = next[node].get(i) {
                    stack.push((node, i + 1));
                    match mark[to] {
                        1 => return true,
                        0 => {
                            mark[to] = 1;
                            stack.push((to, 0));
                        }
                        _ => {}
                    }
                } else {
                    mark[node] = 2;
                }
            }
        }
        false
    }

    /// The finished chain. A cycle (ThingsBoard allows loops) gets `maxHops`, which Sluice
    /// requires for it: ThingsBoard's default tenant limit of rule node executions per message.
    pub fn finish(mut self, name: &str, entry: String) -> (ChainSpec, Vec<Finding>) {
        let max_hops = if self.has_cycle() {
            self.note(
                "",
                "",
                "",
                format!(
                    "the connections form a cycle: maxHops is set to {MAX_HOPS_FOR_CYCLES}, ThingsBoard's default limit of rule node executions per message"
                ),
            );
            Some(MAX_HOPS_FOR_CYCLES)
        } else {
            None
        };
        let spec = ChainSpec {
            schema: None,
            name: Some(name.to_string()),
            entry,
            max_hops,
            event_time: None,
            input: None,
            connectors: self.connectors,
            record: None,
            tables: Default::default(),
            nodes: self.nodes,
            connections: self.connections,
        };
        (spec, self.findings)
    }
}

/// ThingsBoard's default `maxRuleNodeExecutionsPerMessage` of a tenant profile.
const MAX_HOPS_FOR_CYCLES: u32 = 50;

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::spec::ConnectorKind;

    #[test]
    fn slugs_are_ascii_and_never_empty() {
        assert_eq!(slug("°F to °C"), "f-to-c");
        assert_eq!(slug("Save Timeseries"), "save-timeseries");
        assert_eq!(slug("Is Thermostat?"), "is-thermostat");
        assert_eq!(slug("°°"), "node");
    }

    #[test]
    fn slugs_of_long_names_are_cut() {
        assert_eq!(slug(&"x".repeat(5000)), "x".repeat(SLUG_MAX));
        assert_eq!(slug(&format!("{} tail", "a".repeat(SLUG_MAX - 1))), "a".repeat(SLUG_MAX - 1));
    }

    #[test]
    fn equal_connectors_are_declared_once_and_others_numbered() {
        let kafka = |servers: &'static str| Want {
            base: "kafka",
            build: Box::new(move |p| {
                ConnectorSpec::from(ConnectorKind::File { path: format!("${{{p}_OUT:-{servers}}}"), append: false }) // any spec will do
            }),
        };
        let mut d = Draft::default();
        assert_eq!(d.connector(kafka("a")), "kafka");
        assert_eq!(d.connector(kafka("b")), "kafka-2");
        assert_eq!(d.connector(kafka("a")), "kafka");
        assert_eq!(
            d.connectors["kafka-2"],
            ConnectorKind::File { path: "${KAFKA_2_OUT:-b}".into(), append: false }.into()
        );
    }

    #[test]
    fn cycles_are_found() {
        let mut d = Draft::default();
        for id in ["a", "b", "c"] {
            d.add(id, id, false, Fragment::one(Part::module("log", Value::Null)));
        }
        d.connect("a", "b", "Success");
        d.connect("b", "c", "Success");
        assert!(!d.has_cycle());
        d.connect("c", "a", "Success");
        assert!(d.has_cycle());
    }
}

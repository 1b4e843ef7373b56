//! Loading: chain JSON → validated [`Chain`].
//!
//! Everything that can be checked before the first message is checked here, and each error names
//! the file, the node and the field: the JSON's syntax (line and column), its shape (unknown or
//! missing fields, wrong types), ids and connections, modules (missing, not wasm, breaking the
//! ABI), each node's config (against the schema the module exports, then by running the node's
//! own `init` on it), what the module's manifest and imports say (a connection on a relation the
//! node never emits, actions without a granted connector), nested chains, and cycles that no
//! `maxHops` bounds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::error::{FileError, LoadError, LoadErrorKind};
use super::graph::{Chain, GraphNode, NodeIdx, NodeKind, RuleNode, SinkKind};
use super::seed::TableSeed;
use super::spec::{ChainSpec, NodeSpec};
use crate::runtime::{Limits, Module, NodeErrorKind, Runtime};
use crate::state::time::TimeField;
use sluice_connectors::Granted;

/// Loads chains, resolving built-in module names in `module_dirs`.
pub struct Loader<'r> {
    runtime: &'r Runtime,
    module_dirs: Vec<PathBuf>,
    /// Connectors of the deployment (`sluice.toml`): they replace the chain's of the same name,
    /// so a chain tested against files runs against brokers without being edited.
    overrides: BTreeMap<String, crate::chain::spec::ConnectorSpec>,
    /// The chain files the current `load` has read (the root and its nested chains).
    files_read: std::cell::RefCell<Vec<PathBuf>>,
    /// The table seeds the current `load` has read.
    seeds: std::cell::RefCell<Vec<TableSeed>>,
}

/// The file name cargo gives a rule crate's module: `check-fields` → `check_fields.wasm`.
pub fn module_file_name(name: &str) -> String {
    format!("{}.wasm", name.replace('-', "_"))
}

impl<'r> Loader<'r> {
    pub fn new(runtime: &'r Runtime, module_dirs: Vec<PathBuf>) -> Self {
        Loader {
            runtime,
            module_dirs,
            overrides: BTreeMap::new(),
            files_read: Default::default(),
            seeds: Default::default(),
        }
    }

    /// Connectors that replace the chain's declarations of the same name (from `sluice.toml`).
    pub fn with_connectors(mut self, overrides: BTreeMap<String, crate::chain::spec::ConnectorSpec>) -> Self {
        self.overrides = overrides;
        self
    }

    /// Loads and validates the chain in `file`.
    pub fn load(&self, file: &Path) -> Result<Chain, LoadError> {
        let mut nodes = Vec::new();
        let mut including = Vec::new();
        self.files_read.borrow_mut().clear();
        self.seeds.borrow_mut().clear();
        let (spec, entry) = self.add_chain(file, "", None, &mut including, &mut nodes)?;
        let files = self.files_read.take();
        let seeds = self.seeds.take();
        let cycle = find_cycle(&nodes);
        let max_hops = match (spec.max_hops, cycle) {
            (Some(0), _) => {
                return Err(LoadError::new(file, LoadErrorKind::File(FileError::Invalid("must be at least 1".into())))
                    .field("maxHops"));
            }
            (Some(n), _) => n,
            (None, Some(cycle)) => {
                let path: Vec<_> = cycle.iter().map(|&i| nodes[i].id.as_str()).collect();
                return Err(LoadError::new(
                    file,
                    LoadErrorKind::File(FileError::Invalid(format!(
                        "connections form a cycle ({}) and `maxHops` does not bound it",
                        path.join(" → ")
                    ))),
                )
                .node(path[0])
                .field("connections"));
            }
            (None, None) => nodes.len() as u32 + 1,
        };
        let event_time = spec.event_time.clone().unwrap_or_default();
        let time_field = TimeField::parse(&event_time.from).map_err(|msg| {
            LoadError::new(file, LoadErrorKind::File(FileError::Invalid(msg))).field("eventTime.from")
        })?;
        let input = sluice_core::input::InputForm::new(spec.input.as_ref()).map_err(|msg| {
            LoadError::new(file, LoadErrorKind::File(FileError::Invalid(msg))).field("input.originator")
        })?;
        Ok(Chain {
            file: file.to_path_buf(),
            files,
            name: spec.name.clone().unwrap_or_else(|| file.display().to_string()),
            entry,
            max_hops,
            event_time,
            time_field,
            input,
            record: spec.record.clone().unwrap_or_default(),
            fire_order: Chain::topological_order(&nodes)
                .into_iter()
                .filter(|&i| matches!(nodes[i].kind, NodeKind::Rule(_)))
                .collect(),
            nodes,
            seeds,
        })
    }

    /// Reads the spec of `file` without loading modules (for tools that only inspect chains).
    pub fn read_spec(file: &Path) -> Result<ChainSpec, LoadError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| LoadError::new(file, LoadErrorKind::File(FileError::Io(e.to_string()))))?;
        parse_spec(file, &text)
    }

    /// Adds the nodes of `file` (ids prefixed with `prefix`) to `nodes`; returns the spec and
    /// the index of its entry node.
    fn add_chain(
        &self,
        file: &Path,
        prefix: &str,
        exit: Option<NodeIdx>,
        including: &mut Vec<PathBuf>,
        nodes: &mut Vec<GraphNode>,
    ) -> Result<(ChainSpec, NodeIdx), LoadError> {
        let spec = Self::read_spec(file)?;
        let invalid = |msg: String| LoadError::new(file, LoadErrorKind::File(FileError::Invalid(msg)));
        let base = nodes.len();
        let chain_dir = file.parent().unwrap_or(Path::new("."));
        let mut connectors = HashMap::new();
        for (name, connector) in &spec.connectors {
            let connector = self.overrides.get(name).unwrap_or(connector);
            let opened = sluice_connectors::open(name, connector, chain_dir)
                .map_err(|e| invalid(e.to_string()).field(format!("connectors.{name}")))?;
            connectors.insert(name.clone(), Granted { name: name.as_str().into(), connector: opened });
        }
        let mut index: HashMap<&str, NodeIdx> = HashMap::new();
        for (i, node) in spec.nodes.iter().enumerate() {
            let field = format!("nodes[{i}].id");
            if node.id.trim().is_empty() {
                return Err(invalid("node id is empty".into()).field(field));
            }
            if index.insert(&node.id, base + i).is_some() {
                return Err(invalid("duplicate node id".into()).node(&node.id).field(field));
            }
            let kinds = [&node.module, &node.chain, &node.sink].iter().filter(|k| k.is_some()).count();
            if kinds != 1 {
                return Err(invalid("a node has exactly one of `module`, `chain` or `sink`".into())
                    .node(&node.id)
                    .field("module"));
            }
            nodes.push(GraphNode {
                id: format!("{prefix}{}", node.id),
                name: node.name.clone(),
                kind: NodeKind::Sink(SinkKind::Output), // placeholder until resolved below
                routes: HashMap::new(),
                exit,
                debug: node.debug,
                // Each chain file speaks for its own nodes (a nested file for its).
                record: node.record && spec.record.as_ref().is_none_or(|r| r.enabled),
            });
        }
        let Some(&entry) = index.get(spec.entry.as_str()) else {
            return Err(invalid(format!("entry node `{}` is not among the nodes", spec.entry)).field("entry"));
        };
        for (i, conn) in spec.connections.iter().enumerate() {
            let Some(&from) = index.get(conn.from.as_str()) else {
                return Err(invalid(format!("connection from unknown node `{}`", conn.from))
                    .node(&conn.from)
                    .field(format!("connections[{i}].from")));
            };
            let Some(&to) = index.get(conn.to.as_str()) else {
                return Err(invalid(format!("connection to unknown node `{}`", conn.to))
                    .node(&conn.from)
                    .field(format!("connections[{i}].to")));
            };
            if conn.relation.trim().is_empty() {
                return Err(invalid("relation is empty".into())
                    .node(&conn.from)
                    .field(format!("connections[{i}].relation")));
            }
            if let NodeSpec { sink: Some(_), .. } = &spec.nodes[from - base] {
                return Err(invalid("a sink has no outputs to connect".into())
                    .node(&conn.from)
                    .field(format!("connections[{i}].from")));
            }
            let targets = nodes[from].routes.entry(conn.relation.clone()).or_default();
            if !targets.contains(&to) {
                targets.push(to);
            }
        }
        including.push(canonical(file));
        self.files_read.borrow_mut().push(file.to_path_buf());
        for (table, seed) in &spec.tables {
            let field = format!("tables.{table}.seed");
            if table.trim().is_empty() {
                return Err(invalid("a table name is empty".into()).field("tables"));
            }
            let read = TableSeed::read(file, &field, table, &relative_to(file, &seed.seed))?;
            self.seeds.borrow_mut().push(read);
        }
        for (i, node) in spec.nodes.iter().enumerate() {
            let idx = base + i;
            nodes[idx].kind = self.resolve_kind(file, node, idx, including, nodes)?;
            if let NodeKind::Rule(rule) = &mut nodes[idx].kind {
                rule.connector = Self::grant(file, node, &connectors)?;
                if rule.connector.is_none() && rule.module.info.uses("actions") {
                    return Err(invalid(format!(
                        "node `{}` ({}) calls actions but is granted no connector: add `\"connector\": NAME`, NAME \
                         declared under `connectors`",
                        node.id,
                        node.module.as_deref().unwrap_or_default()
                    ))
                    .node(&node.id)
                    .field("connector"));
                }
            } else if node.connector.is_some() {
                return Err(invalid("only a module node takes a connector".into()).node(&node.id).field("connector"));
            }
        }
        including.pop();
        Self::check_relations(file, &spec, base, nodes)?;
        Ok((spec, entry))
    }

    /// The connector a node is granted, which the chain must declare.
    fn grant(
        file: &Path,
        node: &NodeSpec,
        connectors: &HashMap<String, Granted>,
    ) -> Result<Option<Granted>, LoadError> {
        let Some(name) = &node.connector else { return Ok(None) };
        match connectors.get(name) {
            Some(granted) => Ok(Some(granted.clone())),
            None => {
                let mut declared: Vec<_> = connectors.keys().map(String::as_str).collect();
                declared.sort_unstable();
                let known = if declared.is_empty() { "none".to_string() } else { declared.join(", ") };
                Err(LoadError::new(
                    file,
                    LoadErrorKind::File(FileError::Invalid(format!(
                        "connector `{name}` is not declared under `connectors` (declared: {known})"
                    ))),
                )
                .node(&node.id)
                .field("connector"))
            }
        }
    }

    /// A connection on a relation the node's manifest says it never emits is a mistake (a typo,
    /// a filter's `Success`): refused, naming the connection. Nodes whose manifest lists no
    /// closed set (no manifest, relations named by config or a script) are not checked.
    fn check_relations(file: &Path, spec: &ChainSpec, base: NodeIdx, nodes: &[GraphNode]) -> Result<(), LoadError> {
        let index: HashMap<&str, usize> = spec.nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
        for (i, conn) in spec.connections.iter().enumerate() {
            let Some(&n) = index.get(conn.from.as_str()) else { continue };
            let NodeKind::Rule(rule) = &nodes[base + n].kind else { continue };
            let Some(emits) = rule.module.info.manifest.as_ref().and_then(|m| m.closed_relations()) else { continue };
            if !emits.contains(&conn.relation) {
                return Err(LoadError::new(
                    file,
                    LoadErrorKind::File(FileError::Invalid(format!(
                        "node `{}` ({}) emits {}; no relation `{}`",
                        conn.from,
                        spec.nodes[n].module.as_deref().unwrap_or_default(),
                        emits.join(", "),
                        conn.relation
                    ))),
                )
                .node(&conn.from)
                .field(format!("connections[{i}].relation")));
            }
        }
        Ok(())
    }

    fn resolve_kind(
        &self,
        file: &Path,
        node: &NodeSpec,
        idx: NodeIdx,
        including: &mut Vec<PathBuf>,
        nodes: &mut Vec<GraphNode>,
    ) -> Result<NodeKind, LoadError> {
        let at = |kind| LoadError::new(file, kind).node(&node.id);
        if let Some(sink) = &node.sink {
            return SinkKind::parse(sink).map(NodeKind::Sink).ok_or_else(|| {
                at(LoadErrorKind::File(FileError::Invalid(format!(
                    "unknown sink `{sink}` (known: {})",
                    SinkKind::NAMES.join(", ")
                ))))
                .field("sink")
            });
        }
        if let Some(sub) = &node.chain {
            let path = relative_to(file, sub);
            if including.contains(&canonical(&path)) {
                return Err(at(LoadErrorKind::File(FileError::Invalid(format!(
                    "`{sub}` includes itself (directly or through others)"
                ))))
                .field("chain"));
            }
            if !path.exists() {
                return Err(at(LoadErrorKind::File(FileError::Invalid(format!(
                    "nested chain `{}` not found",
                    path.display()
                ))))
                .field("chain"));
            }
            let prefix = format!("{}/", nodes[idx].id);
            let (_, entry) = self.add_chain(&path, &prefix, Some(idx), including, nodes)?;
            return Ok(NodeKind::Chain { entry });
        }
        let name = node.module.as_deref().unwrap_or_default();
        let limits = Limits::from_spec(node.limits.as_ref())
            .map_err(|(field, msg)| at(LoadErrorKind::File(FileError::Invalid(msg))).field(field))?;
        let module = self.module(file, name).map_err(|kind| at(kind).field("module"))?;
        if let Err(violation) = module.info.check_config(&node.config) {
            let field =
                if violation.field.is_empty() { "config".to_string() } else { format!("config.{}", violation.field) };
            return Err(at(LoadErrorKind::Config(violation.message)).field(field));
        }
        let config = serde_json::to_vec(&node.config).map_err(|e| {
            at(LoadErrorKind::File(FileError::Invalid(format!("cannot be serialized: {e}")))).field("config")
        })?;
        self.check_init(&module, &nodes[idx].id, &config, limits).map_err(|(field, kind)| at(kind).field(field))?;
        Ok(NodeKind::Rule(RuleNode { module, config, limits, connector: None }))
    }

    /// Resolves and loads a module reference: a path (relative to the chain file) or a built-in
    /// name looked up in the module directories.
    pub fn module(&self, file: &Path, name: &str) -> Result<Arc<Module>, LoadErrorKind> {
        let module_err = |message: String| LoadErrorKind::Module { module: name.to_string(), message };
        let path = if name.ends_with(".wasm") || name.ends_with(".wat") || name.contains('/') {
            let path = relative_to(file, name);
            if !path.exists() {
                return Err(module_err(format!("file `{}` not found", path.display())));
            }
            path
        } else {
            let file_name = module_file_name(name);
            match self.module_dirs.iter().map(|d| d.join(&file_name)).find(|p| p.exists()) {
                Some(path) => path,
                None => {
                    let dirs: Vec<_> = self.module_dirs.iter().map(|d| d.display().to_string()).collect();
                    return Err(module_err(format!(
                        "no built-in rule `{name}` ({file_name} is in none of: {}; build the rules with `sluice rules \
                         build`)",
                        if dirs.is_empty() { "no module directories".to_string() } else { dirs.join(", ") }
                    )));
                }
            }
        };
        self.runtime.load_module(&path).map_err(|e| module_err(e.to_string()))
    }

    /// Runs the node's `init` on its config in a scratch instance: a config the node refuses
    /// refuses the chain, naming the field the node named.
    fn check_init(
        &self,
        module: &Module,
        node: &str,
        config: &[u8],
        limits: Limits,
    ) -> Result<(), (String, LoadErrorKind)> {
        // No connector: validating a chain must not deliver anything.
        match self.runtime.check_config(module, node.into(), config, limits) {
            Ok(_) => Ok(()),
            Err(err) => Err(match err.kind {
                NodeErrorKind::Config { field, message } => (
                    if field.is_empty() { "config".into() } else { format!("config.{field}") },
                    LoadErrorKind::Config(message),
                ),
                NodeErrorKind::Init(message) => ("config".into(), LoadErrorKind::Config(message)),
                other => (
                    "module".into(),
                    LoadErrorKind::Module { module: module.source.display().to_string(), message: other.to_string() },
                ),
            }),
        }
    }
}

/// Parses chain JSON: syntax errors with line and column, shape errors with the field's path and,
/// where the path is inside `nodes[i]`, that node's id.
fn parse_spec(file: &Path, text: &str) -> Result<ChainSpec, LoadError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        LoadError::new(file, LoadErrorKind::File(FileError::syntax(&e, strip_position(&e.to_string()))))
    })?;
    serde_path_to_error::deserialize::<_, ChainSpec>(&value).map_err(|err| {
        let path = err.path().to_string();
        let message = strip_position(&err.inner().to_string());
        let mut field = if path == "." { String::new() } else { path };
        if let Some(rest) = message.strip_prefix("missing field `")
            && let Some(end) = rest.find('`')
        {
            field = if field.is_empty() { rest[..end].to_string() } else { format!("{field}.{}", &rest[..end]) };
        }
        let mut error = LoadError::new(file, LoadErrorKind::File(FileError::Invalid(message)));
        if let Some(node) = node_of(&value, &field) {
            error = error.node(node);
        }
        if !field.is_empty() {
            error = error.field(field);
        }
        error
    })
}

/// The id of the node a `nodes[i]…` path points into, if it has one.
fn node_of(value: &Value, path: &str) -> Option<String> {
    let rest = path.strip_prefix("nodes[")?;
    let i: usize = rest[..rest.find(']')?].parse().ok()?;
    value["nodes"][i]["id"].as_str().map(str::to_string)
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

fn relative_to(file: &Path, reference: &str) -> PathBuf {
    let reference = Path::new(reference);
    if reference.is_absolute() {
        return reference.to_path_buf();
    }
    file.parent().unwrap_or(Path::new(".")).join(reference)
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// A cycle in the flattened graph, as node indices, if there is one. Edges: connections, a chain
/// node to its nested entry, and a nested node to whatever its enclosing chain node connects.
fn find_cycle(nodes: &[GraphNode]) -> Option<Vec<NodeIdx>> {
    let successors = |i| Chain::successors(nodes, i);
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; nodes.len()];
    let mut done: HashSet<NodeIdx> = HashSet::new();
    for start in 0..nodes.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, its successors, next successor to visit).
        let mut stack = vec![(start, successors(start), 0usize)];
        mark[start] = Mark::Open;
        while let Some((node, succ, next)) = stack.last_mut() {
            if let Some(&s) = succ.get(*next) {
                *next += 1;
                match mark[s] {
                    Mark::New => {
                        mark[s] = Mark::Open;
                        let succ_s = successors(s);
                        stack.push((s, succ_s, 0));
                    }
                    Mark::Open => {
                        let from = stack.iter().position(|(n, _, _)| *n == s).unwrap_or(0);
                        let mut cycle: Vec<NodeIdx> = stack[from..].iter().map(|(n, _, _)| *n).collect();
                        cycle.push(s);
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                mark[*node] = Mark::Done;
                done.insert(*node);
                stack.pop();
            }
        }
    }
    None
}

//! Sluice's modules depend on each other in layers, never in a circle. Between crates the
//! compiler keeps it so: `sluice-core` (the vocabulary and the specs) at the bottom, then
//! `sluice-connectors` and `sluice-import`, the executor `sluice-engine`, the sources and sinks
//! of `sluice-io`, and this crate (the app, admin, reload, the command line) on top. Inside each
//! crate nothing does: this test does.
//!
//! Read from the source, not from a tool's picture: every `crate::<module>` path in a file of
//! `<crate>/src/<module>` (comments left out) is an arrow from its module to that one. The test
//! fails on a circle, naming the crate, the modules in it and an arrow that closes it.
//!
//! The last circle (`admin`, `config`, `reload`, `run`, `service` and the sources, issue 17) was
//! untied: a spec type lives beside what reads it, the reload control (watcher, SIGHUP, admin
//! endpoint) in `admin`, the outputs in `sinks`, the state check in `flow`. `KNOWN` is where a
//! circle that must be tolerated for a while would be listed; it is empty.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Circles tolerated while being untied: none.
const KNOWN: &[&str] = &[];

/// Top-level module of each source file (`flow/worker.rs` → `flow`, `app.rs` → `app`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component").as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Arrows between top-level modules: (from, to) → a file where it is seen.
fn arrows(src: &Path) -> BTreeMap<(String, String), PathBuf> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut arrows = BTreeMap::new();
    for file in files {
        let from = module_of(src, &file);
        if from == "lib" || from == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read a source file");
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                // `$crate::` in a macro is not a path of this crate's modules.
                if line[..i].ends_with('$') {
                    continue;
                }
                let rest = &line[i + "crate::".len()..];
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && name != from {
                    arrows.entry((from.clone(), name)).or_insert_with(|| file.clone());
                }
            }
        }
    }
    arrows
}

/// Strongly connected components with more than one module (Tarjan's algorithm).
fn circles(arrows: &BTreeMap<(String, String), PathBuf>) -> Vec<BTreeSet<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in arrows.keys() {
        next.entry(from).or_default().push(to);
        next.entry(to).or_default();
    }
    struct Walk<'a> {
        next: &'a BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for &w in &self.next[v] {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.insert(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        next: &next,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for &v in next.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found
}

/// The workspace's library crates, by directory.
const CRATES: &[&str] = &["core", "connectors", "import", "engine", "io", "sluice"];

#[test]
fn modules_depend_in_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace");
    let known: BTreeSet<String> = KNOWN.iter().map(|m| m.to_string()).collect();
    for krate in CRATES {
        let src = root.join(krate).join("src");
        assert!(src.is_dir(), "{krate}: no sources at {}", src.display());
        let arrows = arrows(&src);
        for circle in circles(&arrows) {
            let closing: Vec<String> = arrows
                .iter()
                .filter(|((from, to), _)| circle.contains(from) && circle.contains(to))
                .map(|((from, to), file)| format!("{from} -> {to} ({})", file.display()))
                .collect();
            assert!(
                circle.is_subset(&known),
                "{krate}: modules in a circle: {circle:?} (known and being untied: {known:?}); its arrows:\n{}",
                closing.join("\n")
            );
        }
    }
}

/// The check itself finds a circle and names it.
#[test]
fn a_circle_is_found() {
    let arrows: BTreeMap<(String, String), PathBuf> = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]
        .into_iter()
        .map(|(f, t)| ((f.to_string(), t.to_string()), PathBuf::new()))
        .collect();
    let found = circles(&arrows);
    assert_eq!(found, vec![["a", "b", "c"].into_iter().map(String::from).collect::<BTreeSet<_>>()]);
}

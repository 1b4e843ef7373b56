//! Fuzzing on stable Rust: every target is a plain function from bytes to a verdict, run by a
//! small mutation engine for a time budget, starting from a seed corpus kept in the repository
//! (`fuzz/corpus/<target>/`).
//!
//! Why not `cargo fuzz`: libFuzzer needs nightly's `-Zsanitizer` and instrumenting the whole
//! dependency tree (wasmtime, rdkafka…) for coverage, which would take CI longer than the fuzzing
//! itself. This engine has no coverage feedback; it makes up for it by knowing the inputs are
//! JSON: besides byte-level mutations (flips, inserts, deletes, splices, tokens) it parses an
//! input and rewrites a random node of it — a subtree from another seed, a key or string seen in
//! the corpus, a number with 39 digits or out of `f64`'s range, nesting just past the limit — so
//! most inputs get past the JSON parser and reach the code behind it. Inputs a target accepted
//! join the pool mutated from, so mutations stack on valid inputs.
//!
//! A target fails by panicking or by returning `Err` (a property it checks did not hold: a parsed
//! line that does not re-serialise to an equal message, a load error that does not name its
//! file). Each failing input is written to `fuzz/artifacts/<target>/` and reported; a failure
//! becomes a regression seed in the corpus once fixed.

pub mod targets;

use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What a target made of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Taken: the input is worth mutating further.
    Accepted,
    /// Refused with a proper error.
    Rejected,
}

/// A fuzz target: `Err` is a broken property (a panic is caught and counted the same).
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]) -> Result<Verdict, String>,
}

/// A failing input.
#[derive(Debug, Clone)]
pub struct Finding {
    pub input: Vec<u8>,
    pub reason: String,
}

/// What a run of one target did.
#[derive(Debug, Default)]
pub struct Report {
    pub execs: u64,
    pub accepted: u64,
    pub seeds: usize,
    pub elapsed: Duration,
    /// Distinct failures (by reason), each with the first input that caused it.
    pub findings: Vec<Finding>,
    /// The slowest single execution.
    pub slowest: Duration,
}

/// xorshift64*: small, fast, reproducible from the seed printed at the start of a run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() { None } else { Some(&items[self.below(items.len())]) }
    }
}

/// The seed inputs of `target` (every file in its corpus directory, sorted by name).
pub fn load_corpus(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files.into_iter().filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b))).collect()
}

/// Runs `input` through `target`, turning a panic into `Err` with the panic's message and place.
pub fn run_one(target: &Target, input: &[u8]) -> Result<Verdict, String> {
    PANIC.with(|p| p.borrow_mut().take());
    match panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input))) {
        Ok(result) => result,
        Err(_) => Err(PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "panic".into())),
    }
}

thread_local! {
    static PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Keeps panics quiet (they are findings, reported once each) and remembers the last one's text.
pub fn install_panic_hook() {
    panic::set_hook(Box::new(|info| {
        let text = format!("panic: {info}");
        PANIC.with(|p| *p.borrow_mut() = Some(text));
    }));
}

/// Most inputs kept in the pool besides the seeds.
const POOL: usize = 2000;

/// Fuzzes `target` from the seeds in `corpus` for `budget`.
pub fn fuzz(target: &Target, corpus: &[(PathBuf, Vec<u8>)], budget: Duration, seed: u64) -> Report {
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let mut report = Report { seeds: corpus.len(), ..Report::default() };
    let mut seen_reasons = BTreeSet::new();
    let mut record = |report: &mut Report, input: &[u8], reason: String| {
        // Group by the first line (a panic's message and place; a property's name).
        let key = reason.lines().next().unwrap_or_default().chars().take(160).collect::<String>();
        if seen_reasons.insert(key) && report.findings.len() < 20 {
            report.findings.push(Finding { input: input.to_vec(), reason });
        }
    };
    let seeds: Vec<Vec<u8>> = corpus.iter().map(|(_, b)| b.clone()).collect();
    let dict = Dictionary::from_seeds(&seeds);
    let mut pool: Vec<Vec<u8>> = seeds.clone();
    if pool.is_empty() {
        pool.push(b"{}".to_vec());
    }
    // Every seed first: the corpus itself must pass.
    for input in &seeds {
        let t = Instant::now();
        let result = run_one(target, input);
        report.slowest = report.slowest.max(t.elapsed());
        report.execs += 1;
        match result {
            Ok(Verdict::Accepted) => report.accepted += 1,
            Ok(Verdict::Rejected) => {}
            Err(reason) => record(&mut report, input, reason),
        }
    }
    while started.elapsed() < budget {
        let base = pool[rng.below(pool.len())].clone();
        let other = pool[rng.below(pool.len())].clone();
        let mut input = base;
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut input, &other, &dict);
        }
        let t = Instant::now();
        let result = run_one(target, &input);
        report.slowest = report.slowest.max(t.elapsed());
        report.execs += 1;
        match result {
            Ok(Verdict::Accepted) => {
                report.accepted += 1;
                if pool.len() < seeds.len() + POOL {
                    pool.push(input);
                } else if rng.chance(4) {
                    let i = seeds.len() + rng.below(POOL);
                    pool[i] = input;
                }
            }
            Ok(Verdict::Rejected) => {}
            Err(reason) => record(&mut report, &input, reason),
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// Strings and keys found in the seeds, and values known to find edge cases.
pub struct Dictionary {
    strings: Vec<String>,
    values: Vec<Value>,
}

/// Tokens spliced into inputs byte-wise.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "true",
    "false",
    "-",
    "0",
    "-0",
    "1e400",
    "-1e400",
    "1E-400",
    "0.1",
    "\\u0000",
    "\\ud800",
    "\\\"",
    "\u{10ffff}",
    "\u{0}",
    "123456789012345678901234567890123456789",
    "18446744073709551616",
    "-9223372036854775809",
    "9223372036854775807",
    "1.7976931348623157e308",
    "NaN",
];

impl Dictionary {
    pub fn from_seeds(seeds: &[Vec<u8>]) -> Self {
        let mut strings = BTreeSet::new();
        fn walk(v: &Value, out: &mut BTreeSet<String>) {
            match v {
                Value::String(s) if s.len() <= 64 => {
                    out.insert(s.clone());
                }
                Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
                Value::Object(map) => {
                    for (k, v) in map {
                        out.insert(k.clone());
                        walk(v, out);
                    }
                }
                _ => {}
            }
        }
        for seed in seeds {
            for part in json_parts(seed) {
                walk(&part, &mut strings);
            }
        }
        let big: Value = serde_json::from_str("123456789012345678901234567890123456789").unwrap_or(Value::Null);
        let huge: Value = serde_json::from_str("1e400").unwrap_or(Value::Null);
        let tiny: Value = serde_json::from_str("-1E-400").unwrap_or(Value::Null);
        let precise: Value = serde_json::from_str("0.1000000000000000055511151231257827").unwrap_or(Value::Null);
        let values = vec![
            Value::Null,
            Value::Bool(true),
            Value::from(0),
            Value::from(-1),
            Value::from(i64::MAX),
            Value::from(u64::MAX),
            Value::from(i64::MIN),
            Value::from(1.5),
            Value::from(f64::MAX),
            big,
            huge,
            tiny,
            precise,
            Value::String(String::new()),
            Value::String("\u{0}".into()),
            Value::String("ü€😀\u{202e}".into()),
            Value::String("x".repeat(5000)),
            Value::String("../../etc/passwd".into()),
            Value::String("${metadata}$[data]".into()),
            Value::Array(vec![]),
            Value::Object(Default::default()),
        ];
        Dictionary { strings: strings.into_iter().collect(), values }
    }

    fn value(&self, rng: &mut Rng) -> Value {
        match rng.below(3) {
            0 => rng.pick(&self.strings).map(|s| Value::String(s.clone())).unwrap_or(Value::Null),
            _ => rng.pick(&self.values).cloned().unwrap_or(Value::Null),
        }
    }
}

/// The JSON values of an input: the whole, or each line of a JSON-lines input.
fn json_parts(input: &[u8]) -> Vec<Value> {
    if let Some((_, v)) = json_single(input) {
        return vec![v];
    }
    input.split(|&b| b == b'\n').filter_map(|line| serde_json::from_slice(line).ok()).collect()
}

/// One mutation of `input`, byte-wise or, for JSON, on its tree.
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8], dict: &Dictionary) {
    if rng.below(10) < 6
        && let Some((head, mut value)) = json_single(input)
    {
        mutate_json(rng, &mut value, other, dict);
        let body = if rng.chance(4) { serde_json::to_vec_pretty(&value) } else { serde_json::to_vec(&value) };
        *input = head;
        input.extend(body.unwrap_or_default());
        return;
    }
    mutate_bytes(rng, input, other);
}

/// The input as one JSON value, or as a header line (a topic, a kind) and a JSON value: the
/// header and the value apart.
fn json_single(input: &[u8]) -> Option<(Vec<u8>, Value)> {
    if let Ok(v) = serde_json::from_slice(input) {
        return Some((Vec::new(), v));
    }
    let nl = input.iter().position(|&b| b == b'\n')?;
    let v = serde_json::from_slice(&input[nl + 1..]).ok()?;
    Some((input[..=nl].to_vec(), v))
}

fn mutate_bytes(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    let len = input.len();
    match rng.below(8) {
        0 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            input[i] = rng.next_u64() as u8;
        }
        2 => {
            let i = rng.below(len + 1);
            input.insert(i, rng.next_u64() as u8);
        }
        3 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(16)).min(len);
            input.drain(a..b);
        }
        4 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(32)).min(len);
            let chunk = input[a..b].to_vec();
            let at = rng.below(len + 1);
            input.splice(at..at, chunk);
        }
        5 if !other.is_empty() => {
            // Splice: a head of this input, a tail of the other.
            let a = rng.below(len + 1);
            let b = rng.below(other.len());
            input.truncate(a);
            input.extend_from_slice(&other[b..]);
        }
        6 if len > 0 => {
            // Replace a run of digits with an extreme number.
            let i = rng.below(len);
            if input[i].is_ascii_digit() {
                let mut j = i;
                while j < len && input[j].is_ascii_digit() {
                    j += 1;
                }
                let token = *rng
                    .pick(&["123456789012345678901234567890123456789", "0", "1e400", "99999999999999999999"])
                    .unwrap_or(&"0");
                input.splice(i..j, token.bytes());
            }
        }
        _ => {
            let token = rng.pick(TOKENS).copied().unwrap_or("0");
            let i = rng.below(len + 1);
            input.splice(i..i, token.bytes());
        }
    }
}

static NULL: Value = Value::Null;

/// A random node of `value` (by a walk from the root), mutated.
fn mutate_json(rng: &mut Rng, value: &mut Value, other: &[u8], dict: &Dictionary) {
    // The path first, read-only; then the node it leads to.
    let mut path = Vec::new();
    let mut at: &Value = value;
    for _ in 0..rng.below(8) {
        let len = match at {
            Value::Array(items) => items.len(),
            Value::Object(map) => map.len(),
            _ => 0,
        };
        if len == 0 {
            break;
        }
        let i = rng.below(len);
        path.push(i);
        at = match at {
            Value::Array(items) => &items[i],
            Value::Object(map) => map.values().nth(i).unwrap_or(&NULL),
            _ => break,
        };
    }
    let Some(node) = node_at(value, &path) else { return };
    match rng.below(9) {
        0 => *node = dict.value(rng),
        1 => {
            // A subtree of another input.
            if let Some(part) = json_parts(other).into_iter().next() {
                *node = random_subtree(rng, part);
            }
        }
        2 => {
            if let Value::Object(map) = node
                && !map.is_empty()
            {
                let key = map.keys().nth(rng.below(map.len())).cloned().unwrap_or_default();
                map.remove(&key);
            }
        }
        3 => {
            if let Value::Object(map) = node {
                let key = rng.pick(&dict.strings).cloned().unwrap_or_default();
                map.insert(key, dict.value(rng));
            }
        }
        4 => {
            // Nest deeper: around the limit of 128, or a little.
            let levels = if rng.chance(2) { 120 + rng.below(12) } else { 1 + rng.below(3) };
            let mut v = std::mem::take(node);
            for _ in 0..levels {
                v = if rng.chance(2) {
                    Value::Array(vec![v])
                } else {
                    Value::Object([("k".to_string(), v)].into_iter().collect())
                };
            }
            *node = v;
        }
        5 => {
            // Change the type: a string with the text of the value, or the reverse.
            *node = match std::mem::take(node) {
                Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                other => Value::String(other.to_string()),
            };
        }
        6 => {
            if let Value::Array(items) = node
                && !items.is_empty()
            {
                let i = rng.below(items.len());
                let copy = items[i].clone();
                items.insert(rng.below(items.len() + 1), copy);
            }
        }
        7 => {
            if let Value::Object(map) = node
                && !map.is_empty()
            {
                // Rename a key to another seen one.
                let key = map.keys().nth(rng.below(map.len())).cloned().unwrap_or_default();
                if let (Some(v), Some(new)) = (map.remove(&key), rng.pick(&dict.strings)) {
                    map.insert(new.clone(), v);
                }
            }
        }
        _ => {
            if let Value::String(s) = node {
                let token = rng.pick(TOKENS).copied().unwrap_or("");
                let at = rng.below(s.chars().count() + 1);
                let at = s.char_indices().nth(at).map(|(i, _)| i).unwrap_or(s.len());
                s.insert_str(at, token);
            } else {
                *node = dict.value(rng);
            }
        }
    }
}

fn node_at<'a>(value: &'a mut Value, path: &[usize]) -> Option<&'a mut Value> {
    let Some((&i, rest)) = path.split_first() else { return Some(value) };
    match value {
        Value::Array(items) => node_at(items.get_mut(i)?, rest),
        Value::Object(map) => node_at(map.values_mut().nth(i)?, rest),
        _ => None,
    }
}

fn random_subtree(rng: &mut Rng, mut value: Value) -> Value {
    for _ in 0..rng.below(5) {
        value = match value {
            Value::Array(mut items) if !items.is_empty() => {
                let i = rng.below(items.len());
                items.swap_remove(i)
            }
            Value::Object(map) if !map.is_empty() => {
                let i = rng.below(map.len());
                map.into_iter().nth(i).map(|(_, v)| v).unwrap_or(Value::Null)
            }
            other => return other,
        };
    }
    value
}

/// The repository root (this crate's parent).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `fuzz/corpus/<target>`.
pub fn corpus_dir(target: &str) -> PathBuf {
    repo_root().join("fuzz").join("corpus").join(target)
}

//! Chains in tests: the guest modules built once, one runtime, scratch chain files, and a chain
//! run in-process.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use sluice::chain::{Chain, LoadError, Loader};
use sluice::flow::{Ack, AckCounter, Envelope, Pipeline, PipelineConfig, RunStats, Sinks};
use sluice::runtime::Runtime;
use sluice::sinks::jsonl::SinkItem;
use sluice::state::StateStore;
use sluice_sdk::TbMsg;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repo root")
}

/// The directory of the built guest modules (built on first use, with the toolchain present).
pub fn modules() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        sluice::toolchain::build(&repo().join("rules"))
            .unwrap_or_else(|e| panic!("building the guest modules failed: {e}"))
    })
}

/// One runtime for the whole test binary (as in production: one engine, many modules).
pub fn runtime() -> Arc<Runtime> {
    static RT: OnceLock<Arc<Runtime>> = OnceLock::new();
    // Compiled modules are cached under target/, so a rerun skips Cranelift.
    let cache = repo().join("target").join("sluice-module-cache");
    RT.get_or_init(|| Arc::new(Runtime::new(Some(cache)).expect("runtime"))).clone()
}

/// A scratch directory holding chain files.
pub struct ChainDir {
    pub dir: tempfile::TempDir,
}

impl Default for ChainDir {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainDir {
    pub fn new() -> Self {
        ChainDir { dir: tempfile::tempdir().expect("tempdir") }
    }

    /// Writes `name` with `text` and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    pub fn write_bytes(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    pub fn write_json(&self, name: &str, value: &Value) -> PathBuf {
        self.write(name, &serde_json::to_string_pretty(value).expect("json"))
    }

    pub fn load(&self, name: &str, value: &Value) -> Result<Chain, LoadError> {
        let path = self.write_json(name, value);
        Loader::new(&runtime(), vec![modules().to_path_buf()]).load(&path)
    }

    /// A chain of one node, the output sink (it needs no rule module).
    pub fn sink_only(&self) -> Arc<Chain> {
        let path = self
            .write_json("chain.json", &serde_json::json!({"entry": "out", "nodes": [{"id": "out", "sink": "output"}]}));
        Arc::new(Loader::new(&runtime(), vec![]).load(&path).expect("chain loads"))
    }
}

/// Starts `chain` with fresh state, its output sink writing into a channel: what the chain
/// writes arrives on the receiver.
pub fn start_to_channel(chain: &Arc<Chain>, config: PipelineConfig) -> (Pipeline, std::sync::mpsc::Receiver<SinkItem>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    let sinks = Sinks { output: Some(tx), ..Default::default() };
    let pipeline = Pipeline::start(runtime(), chain.clone(), StateStore::default(), sinks, config).expect("pipeline");
    (pipeline, rx)
}

/// What a chain produced.
pub struct Ran {
    pub output: Vec<TbMsg>,
    pub stats: RunStats,
    pub acked: u64,
}

/// Runs `msgs` through `chain` (JSON) with `workers` workers; returns the output sink's messages
/// in the order they were written.
pub fn run_chain(chain: &Value, msgs: &[TbMsg], workers: usize) -> Ran {
    let dir = ChainDir::new();
    let path = dir.write_json("chain.json", chain);
    run_chain_file(&path, msgs, workers)
}

/// [`run_chain`] for a chain file.
pub fn run_chain_file(path: &Path, msgs: &[TbMsg], workers: usize) -> Ran {
    let loaded = Loader::new(&runtime(), vec![modules().to_path_buf()]).load(path);
    run_loaded(loaded.unwrap_or_else(|e| panic!("chain does not load: {e}")), msgs, workers)
}

/// Runs a chain already loaded (and perhaps changed, as a replay withholds connectors).
pub fn run_loaded(chain: Chain, msgs: &[TbMsg], workers: usize) -> Ran {
    let chain = Arc::new(chain);
    let (pipeline, rx) = start_to_channel(&chain, PipelineConfig { workers, queue: 4, ..PipelineConfig::default() });
    let acks = Arc::new(AckCounter::default());
    let collector = std::thread::spawn(move || {
        let mut out = Vec::new();
        for (bytes, _ack) in rx.into_iter().flat_map(SinkItem::into_msgs) {
            out.push(bytes.to_tb());
        }
        out
    });
    let mut watermark = i64::MIN;
    for (i, msg) in msgs.iter().enumerate() {
        watermark = watermark.max(msg.ts);
        let key = Envelope::key_of(&msg.originator.entity_type, &msg.originator.name);
        let bytes = std::sync::Arc::new(msg.clone().into());
        pipeline
            .send_blocking(Envelope::new(bytes, key, Ack::new(acks.clone(), i as u64)).with_watermark(watermark))
            .expect("send");
    }
    let stats = pipeline.shutdown();
    let output = collector.join().expect("collector");
    Ran { output, stats, acked: acks.count() }
}

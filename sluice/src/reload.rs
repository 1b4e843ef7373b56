//! Hot reload: a running chain picks up edits to its chain files and modules without losing or
//! duplicating a message.
//!
//! ```text
//! editor saves ──▶ notify (debounced) ─┐
//! SIGHUP ──────────────────────────────┼─▶ Reloader::reload ──▶ load + validate (off the hot path)
//! POST /reload (admin) ────────────────┘         │ ok                         │ error
//!                                                ▼                            ▼
//!                              Pipeline's ChainVersion swapped     old version keeps running,
//!                              (workers adopt it between messages) error logged and kept in
//!                                                                  the status (GET /status)
//! ```
//!
//! **Why nothing is lost or doubled.** Loading, compiling and validating the new version (each
//! node's `init` runs on its config) happens on the reloader's thread while the workers go on
//! with the old one. The swap is one pointer store; each worker checks the version before it
//! takes the next message, so a message runs entirely on one version and every message runs
//! once. State belongs to node ids: a node whose id is unchanged keeps its windows and keyed
//! state. A node that disappears keeps its state for the retention period (it may come back
//! in the next edit, a typo fixed), then it is dropped — and the log says so.
//!
//! **Why debounce.** Editors save by writing a temporary file and renaming it over the original,
//! and `cargo build` rewrites a module in several writes: one save is several events. Events are
//! gathered until the files have been quiet for the debounce period, then one reload runs.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use serde::Serialize;

use crate::chain::{Chain, Loader, NodeKind};
use crate::connectors::ConnectorSpec;
use crate::flow::ChainHandle;
use crate::runtime::Runtime;
use crate::state::StateStore;

/// How reloads happen, from the command line or `sluice.toml`.
#[derive(Debug, Clone)]
pub struct ReloadOptions {
    /// Watch the chain and module files.
    pub watch: bool,
    /// Quiet time after the last file event before reloading.
    pub debounce: Duration,
    /// How long the state of a node removed by a reload is kept.
    pub retention: Duration,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        ReloadOptions { watch: true, debounce: Duration::from_millis(200), retention: Duration::from_secs(3600) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot watch {path}: {message}")]
    Watch { path: PathBuf, message: String },
}

impl From<&crate::config::ReloadSpec> for ReloadOptions {
    /// The `[reload]` table of a service config.
    fn from(spec: &crate::config::ReloadSpec) -> Self {
        ReloadOptions {
            watch: spec.watch,
            debounce: Duration::from_millis(spec.debounce_ms),
            retention: Duration::from_millis(spec.removed_state_retention_ms),
        }
    }
}

/// What `GET /status` and `sluice reload` show.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadStatus {
    pub chain: PathBuf,
    /// Versions swapped in since start (0: the one loaded at start).
    pub generation: u64,
    pub reloads: u64,
    pub failed_reloads: u64,
    /// When the running version was loaded (ms since the epoch).
    pub loaded_at_ms: i64,
    /// The last reload that failed, if no reload succeeded since.
    pub last_error: Option<ReloadFailure>,
    /// Nodes removed by a reload whose state is still kept, with when it is dropped.
    pub retained_state: Vec<RetainedState>,
    /// Nodes of the running version disabled for repeated crashes: every message reaching
    /// them goes to their `Failure` until a reload (or restart) starts them again.
    pub disabled_nodes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadFailure {
    pub at_ms: i64,
    /// Why it was attempted: a file event, SIGHUP, the admin endpoint.
    pub trigger: String,
    /// The load error: file, node and field.
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetainedState {
    pub node: String,
    pub drop_at_ms: i64,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayFailed {
    #[error(transparent)]
    Load(#[from] crate::chain::LoadError),
    #[error(transparent)]
    Replay(#[from] crate::flow::replay::ReplayError),
}

/// Why a reload plan could not be made: the new version would be refused, or the state could
/// not be copied to check it against.
#[derive(Debug, thiserror::Error)]
pub enum PlanFailed {
    #[error(transparent)]
    Refused(#[from] ReloadRefused),
    #[error(transparent)]
    Copy(#[from] crate::flow::replay::ReplayError),
}

/// What a reload of a chain file would do to each node's state (`sluice diff --admin`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadPlan {
    pub chain: PathBuf,
    /// How long a removed node's state is kept (`[reload] removedStateRetentionMs`).
    pub retention_ms: u64,
    /// Nodes of the new version in its order, then the removed ones.
    pub nodes: Vec<NodePlan>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePlan {
    pub node: String,
    pub fate: Fate,
    /// Whether the node holds state now (windows, keyed values, timers, table rows).
    pub has_state: bool,
}

/// What happens to a node on the reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Fate {
    /// Same id, same module: it runs on with its state.
    Keeps,
    /// Same id, another module (or build): it keeps its state, which the new module's `init`
    /// accepted in the plan's check.
    KeepsWithNewModule,
    /// A new id: it starts empty.
    Added,
    /// An id a reload removed, back within the retention period: it gets its state back.
    Returns,
    /// Gone from the new version: its state is kept for the retention period, then dropped.
    Removed,
}

/// Why a reload was refused (the running version stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadRefused {
    /// The new file does not load (its error names file, node and field).
    #[error(transparent)]
    Load(#[from] crate::chain::LoadError),
    /// `sluice.toml` names an entry node the new version does not have.
    #[error("{}: the configured `entry` node `{entry}` is gone", file.display())]
    EntryGone { file: PathBuf, entry: String },
    /// A node of the new version refused the state it would run with.
    #[error(transparent)]
    State(#[from] crate::flow::StateCheckError),
}

/// Loads new versions of a running chain and swaps them in.
pub struct Reloader {
    runtime: Arc<Runtime>,
    module_dirs: Vec<PathBuf>,
    connectors: std::collections::BTreeMap<String, ConnectorSpec>,
    /// The node messages enter, when the deployment overrides the chain's (`sluice.toml`).
    entry: Option<String>,
    handle: ChainHandle,
    state: StateStore,
    retention: Duration,
    status: Mutex<ReloadStatus>,
    /// Node → when its state is dropped (removed by a reload, not back yet).
    removed: Mutex<HashMap<String, Instant>>,
    /// One reload at a time: a file event and a SIGHUP arriving together load once each, in turn.
    loading: Mutex<()>,
}

impl Reloader {
    pub fn new(
        runtime: Arc<Runtime>,
        module_dirs: Vec<PathBuf>,
        connectors: std::collections::BTreeMap<String, ConnectorSpec>,
        entry: Option<String>,
        handle: ChainHandle,
        state: StateStore,
        retention: Duration,
    ) -> Self {
        let chain = handle.current().file.clone();
        Reloader {
            runtime,
            module_dirs,
            connectors,
            entry,
            handle,
            state,
            retention,
            status: Mutex::new(ReloadStatus { chain, loaded_at_ms: now_ms(), ..Default::default() }),
            removed: Mutex::new(HashMap::new()),
            loading: Mutex::new(()),
        }
    }

    /// The chain running now.
    pub fn chain(&self) -> Arc<crate::chain::Chain> {
        self.handle.current()
    }

    pub fn status(&self) -> ReloadStatus {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let now = (Instant::now(), now_ms());
        let removed = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        status.retained_state = removed
            .iter()
            .map(|(node, at)| RetainedState {
                node: node.clone(),
                drop_at_ms: now.1 + at.saturating_duration_since(now.0).as_millis() as i64,
            })
            .collect();
        status.retained_state.sort_by(|a, b| a.node.cmp(&b.node));
        status.disabled_nodes = self.handle.disabled_nodes();
        status
    }

    /// Loads and validates the chain file again and, if it is valid, swaps it in. Returns the
    /// new generation, or the load error (the running version is untouched).
    pub fn reload(&self, trigger: &str) -> Result<u64, ReloadRefused> {
        let _one_at_a_time = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let old = self.handle.current();
        match self.load(&old.file) {
            Ok(chain) => {
                let old_ids: BTreeSet<&str> = old.nodes.iter().map(|n| n.id.as_str()).collect();
                let new_ids: BTreeSet<String> = chain.nodes.iter().map(|n| n.id.clone()).collect();
                // A seed added or grown since adds the rows the tables lack (never replaces one).
                crate::chain::seed::apply_all(&chain.seeds, self.state.tables());
                self.handle.reload(Arc::new(chain));
                let generation = self.handle.generation();
                {
                    let mut removed = self.removed.lock().unwrap_or_else(|p| p.into_inner());
                    removed.retain(|node, _| !new_ids.contains(node));
                    let with_state = self.state.node_ids();
                    for gone in old_ids.iter().filter(|id| !new_ids.contains(**id)) {
                        if with_state.iter().any(|id| id == gone) && !removed.contains_key(*gone) {
                            tracing::warn!(
                                node = gone,
                                retention_s = self.retention.as_secs(),
                                "reload: node removed; its state is kept for the retention period in case it comes back"
                            );
                            removed.insert(gone.to_string(), Instant::now() + self.retention);
                        }
                    }
                }
                let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
                status.generation = generation;
                status.reloads += 1;
                status.loaded_at_ms = now_ms();
                status.last_error = None;
                tracing::info!(
                    chain = %old.file.display(),
                    generation,
                    trigger,
                    took_ms = started.elapsed().as_millis() as u64,
                    "reload: new version live"
                );
                Ok(generation)
            }
            Err(error) => {
                let message = error.to_string();
                tracing::error!(trigger, "reload refused, the running version stays: {message}");
                let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
                status.failed_reloads += 1;
                status.last_error = Some(ReloadFailure { at_ms: now_ms(), trigger: trigger.into(), message });
                Err(error)
            }
        }
    }

    /// Replays `input` through `node` (see [`crate::flow::replay`]): of the chain file `edited`,
    /// or of the running chain's file read again; against a copy of the running state.
    pub fn replay(
        &self,
        node: &str,
        input: sluice_sdk::TbMsg,
        edited: Option<&Path>,
        live: bool,
    ) -> Result<crate::flow::replay::Replayed, ReplayFailed> {
        let file = edited.map_or_else(|| self.handle.current().file.clone(), Path::to_path_buf);
        let chain = Loader::new(&self.runtime, self.module_dirs.clone())
            .with_connectors(self.connectors.clone())
            .load(&file)?;
        Ok(crate::flow::replay::replay(self.runtime.clone(), chain, &self.state, node, input, live)?)
    }

    /// What reloading `file` (default: the running chain's file) would do, without doing it:
    /// the new version is loaded and checked against a copy of the running state, exactly as a
    /// reload checks it, and each node's fate is named. A version a reload would refuse is an
    /// error, the same one.
    pub fn plan(&self, file: Option<&Path>) -> Result<ReloadPlan, PlanFailed> {
        let old = self.handle.current();
        let file = file.map_or_else(|| old.file.clone(), Path::to_path_buf);
        let copy = crate::flow::replay::copy_state(&self.state)?;
        let new = self.load_against(&file, &copy)?;
        let removed = self.removed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let module = |chain: &Chain, id: &str| match chain.find(id).map(|i| &chain.nodes[i].kind) {
            Some(crate::chain::NodeKind::Rule(rule)) => Some(rule.module.hash.clone()),
            _ => None,
        };
        let mut nodes = Vec::new();
        for node in &new.nodes {
            let fate = if old.find(&node.id).is_some() {
                if module(&old, &node.id) == module(&new, &node.id) { Fate::Keeps } else { Fate::KeepsWithNewModule }
            } else if removed.contains_key(&node.id) {
                Fate::Returns
            } else {
                Fate::Added
            };
            nodes.push(NodePlan { node: node.id.clone(), fate, has_state: self.state.holds(&node.id) });
        }
        for node in old.nodes.iter().filter(|n| new.find(&n.id).is_none()) {
            nodes.push(NodePlan { node: node.id.clone(), fate: Fate::Removed, has_state: self.state.holds(&node.id) });
        }
        Ok(ReloadPlan { chain: file, retention_ms: self.retention.as_millis() as u64, nodes })
    }

    fn load(&self, file: &Path) -> Result<Chain, ReloadRefused> {
        self.load_against(file, &self.state)
    }

    /// Loads `file` as a reload would, its nodes started against `state`.
    fn load_against(&self, file: &Path, state: &StateStore) -> Result<Chain, ReloadRefused> {
        let loader = Loader::new(&self.runtime, self.module_dirs.clone()).with_connectors(self.connectors.clone());
        let mut chain = loader.load(file)?;
        if let Some(entry) = &self.entry {
            chain.entry = chain
                .find(entry)
                .ok_or_else(|| ReloadRefused::EntryGone { file: file.to_path_buf(), entry: entry.clone() })?;
        }
        crate::flow::check_state(&self.runtime, &chain, state)?;
        Ok(chain)
    }

    /// Drops the state of removed nodes whose retention is over.
    pub fn expire_removed(&self) {
        let now = Instant::now();
        let mut removed = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        removed.retain(|node, at| {
            if *at > now {
                return true;
            }
            self.state.remove_node(node);
            tracing::info!(node, "reload: retention over, the removed node's state is dropped");
            false
        });
    }

    /// The files the running version was built from: chain files (nested ones included) and
    /// module files, and the module directories (a rebuilt built-in rule lands there).
    pub fn watched(&self) -> (BTreeSet<PathBuf>, BTreeSet<PathBuf>) {
        let chain = self.handle.current();
        let mut files: BTreeSet<PathBuf> = chain.files.iter().map(|f| absolute(f)).collect();
        for node in &chain.nodes {
            if let NodeKind::Rule(rule) = &node.kind {
                files.insert(absolute(&rule.module.source));
            }
        }
        let dirs = self.module_dirs.iter().filter(|d| d.is_dir()).map(|d| absolute(d)).collect();
        (files, dirs)
    }
}

fn absolute(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// Watches the files of the running version; reloads after each quiet period that followed a
/// change. Dropping it stops the watching.
pub struct Watcher {
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Wakes the thread at once on drop (it otherwise waits up to a second for events, which
    /// rounded every short run up to a whole second).
    wake: std::sync::mpsc::Sender<DebounceEventResult>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // No events: the thread wakes, finds `stop` set and ends.
        let _ = self.wake.send(Ok(Vec::new()));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts watching for `reloader` (and expiring removed nodes' state once a second).
pub fn watch(reloader: Arc<Reloader>, options: &ReloadOptions) -> Result<Watcher, ReloadError> {
    let (tx, rx) = std::sync::mpsc::channel::<DebounceEventResult>();
    let wake = tx.clone();
    let mut debouncer = new_debouncer(options.debounce, None, tx)
        .map_err(|e| ReloadError::Watch { path: PathBuf::from("."), message: e.to_string() })?;
    let mut watching = BTreeSet::new();
    let mut files = watch_dirs(&mut debouncer, &mut watching, &reloader);
    let module_dirs: BTreeSet<PathBuf> = reloader.watched().1;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::Builder::new()
        .name("sluice-reload".into())
        .spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(Ok(events)) => {
                        // Changes only: reading the files (which every reload does) raises
                        // access events, and reacting to those would reload for ever.
                        let relevant = events
                            .iter()
                            .filter(|e| !matches!(e.kind, EventKind::Access(_)))
                            .flat_map(|e| e.paths.iter())
                            .find(|p| {
                                let path = absolute(p);
                                files.contains(&path)
                                    || (path.extension().is_some_and(|x| x == "wasm")
                                        && path.parent().is_some_and(|d| module_dirs.contains(d)))
                            });
                        if let Some(path) = relevant {
                            let trigger = format!("{} changed", path.display());
                            if reloader.reload(&trigger).is_ok() {
                                // The new version may use other files (a new module, a nested chain).
                                files = watch_dirs(&mut debouncer, &mut watching, &reloader);
                            }
                        }
                    }
                    Ok(Err(errors)) => {
                        for e in errors {
                            tracing::warn!("reload: watch error: {e}");
                        }
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
                reloader.expire_removed();
            }
        })
        .map_err(|e| ReloadError::Watch { path: PathBuf::from("."), message: e.to_string() })?;
    Ok(Watcher { stop, wake, thread: Some(thread) })
}

/// Watches the directories of `reloader`'s files (not yet watched); returns the files.
///
/// Directories, not files: an editor's rename-over-the-original replaces the file's inode, and a
/// watch on the old inode would go quiet after the first save.
fn watch_dirs(
    debouncer: &mut Debouncer<RecommendedWatcher, RecommendedCache>,
    watching: &mut BTreeSet<PathBuf>,
    reloader: &Reloader,
) -> BTreeSet<PathBuf> {
    let (files, dirs) = reloader.watched();
    for dir in files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).chain(dirs) {
        if watching.insert(dir.clone())
            && let Err(e) = debouncer.watch(&dir, RecursiveMode::NonRecursive)
        {
            tracing::warn!(dir = %dir.display(), "reload: cannot watch: {e}");
        }
    }
    files
}

/// Reloads on every SIGHUP until the runtime stops.
pub fn reload_on_sighup(reloader: Arc<Reloader>) {
    tokio::spawn(async move {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hup) => hup,
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP: {e}");
                return;
            }
        };
        while hup.recv().await.is_some() {
            let reloader = reloader.clone();
            let _ = tokio::task::spawn_blocking(move || reloader.reload("SIGHUP")).await;
        }
    });
}

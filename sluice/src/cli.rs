//! The command line: clap definitions and what each command does. `anyhow` lives here and in
//! `main.rs` only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use sluice::app::AppOptions;
use sluice::chain::Loader;
use sluice::config::OutputSpec;
use sluice::flow::PipelineConfig;
use sluice::runtime::Runtime;
use sluice::sources::jsonl::{JsonLinesError, JsonLinesSource, JsonLinesStats, Stream};
use sluice::sources::{Source, SourceError};
use sluice::toolchain;

/// Sluice: a rule engine for IoT telemetry whose rule nodes are sandboxed WebAssembly modules.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines on stderr are written: `text` for people, `json` (one object a line,
    /// with the event's fields) for log shippers. The level: `SLUICE_LOG` (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a chain over JSON lines: full TbMsg or `{"ts", "deviceName", "deviceType", <values>}`.
    Run(RunArgs),
    /// Load and validate chain files (modules, configs, connections) without running them.
    Validate {
        #[arg(required = true)]
        chains: Vec<PathBuf>,
        #[command(flatten)]
        modules: ModuleArgs,
    },
    /// Run chain test files (`*.test.json`, `*.test.yaml`): messages in, the virtual clock
    /// moved on, expectations on nodes' relations, sinks, connectors and state. Exit code 1 when
    /// a test fails.
    Test {
        /// Test files, or directories to search for them (default: the current directory).
        paths: Vec<PathBuf>,
        /// Only the tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Also write the results as a JUnit XML report (for CI).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        #[command(flatten)]
        modules: ModuleArgs,
    },
    /// Build or scaffold rule crates.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Print the JSON Schema of chain files, with every built-in module's config schema (the
    /// modules are read from the module directories: build the rules first).
    Schema {
        /// The schema of chain test files (`*.test.json`, `sluice test`) instead.
        #[arg(long)]
        tests: bool,
        #[command(flatten)]
        modules: ModuleArgs,
    },
    /// Rewrite chain files in their canonical form (fields in a fixed order, defaults left out,
    /// connections grouped by node and relation), so that they diff and merge cleanly.
    Fmt {
        #[arg(required = true)]
        chains: Vec<PathBuf>,
        /// Change nothing; exit 1 naming each file that is not canonical (for CI).
        #[arg(long)]
        check: bool,
    },
    /// What changed between two chain files, in chain terms: chain fields, nodes added, removed
    /// or changed (field by field), connections added or removed. Exit code 1 when they differ.
    /// With `--admin ADDR NEW`: what reloading NEW into the running engine would do to each
    /// node's state (kept, new, removed), checked as a reload checks it, without reloading.
    Diff {
        /// OLD NEW, or NEW with `--admin`.
        #[arg(required = true, num_args = 1..=2)]
        files: Vec<PathBuf>,
        /// The running engine's admin endpoint (`host:port`).
        #[arg(long)]
        admin: Option<String>,
        /// Its bearer token, when it has one.
        #[arg(long, value_name = "TOKEN", env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Ask a running `sluice run --admin ADDR` to reload its chain now; prints the new version
    /// or the error that kept the old one running (exit code 1).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show a running engine's chain version and last reload error.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Convert other engines' rule chains into Sluice chain files.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Run a message the flight recorder kept through a node of a running engine again — of
    /// its chain, or of an edited chain file — in isolation: on a copy of its state, with no
    /// action executed (unless `--live`), nothing written. Prints what the node and the nodes
    /// after it output.
    Replay {
        #[command(flatten)]
        admin: AdminArgs,
        /// The node (its id, as in the chain file).
        #[arg(long)]
        node: String,
        /// Which recorded event: 0 is the newest (`GET /nodes/ID/events`).
        #[arg(long, default_value_t = 0, conflicts_with = "failure")]
        event: usize,
        /// Replay a recorded failure instead: 0 is the newest.
        #[arg(long)]
        failure: Option<usize>,
        /// An edited chain file to run it in (default: the running chain's file).
        #[arg(long)]
        chain: Option<PathBuf>,
        /// Execute actions (HTTP calls, Kafka and MQTT publishes) for real.
        #[arg(long)]
        live: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// ThingsBoard rule chain exports (2.x–4.x: single, bulk, metadata only) and 1.x rule and
    /// plugin descriptors. Prints a report; unsupported nodes become placeholders.
    Thingsboard {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Where to write the chain files (created if needed).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// Fail (exit code 1, nothing written) if any node would become a placeholder.
        #[arg(long)]
        strict: bool,
        /// Links into the rule chain UUID go to the (first) chain of FILE (imported too if not
        /// given): for chains exported without their id whose calling node is not named after
        /// them. Repeatable.
        #[arg(long = "link", value_name = "UUID=FILE")]
        links: Vec<sluice::import::Link>,
        /// ThingsBoard device profile exports (one, a list, or a `/api/deviceProfiles` page):
        /// the device profile nodes evaluate their alarm rules, picked by each message's
        /// `deviceType`. Repeatable.
        #[arg(long = "profiles", value_name = "FILE")]
        profiles: Vec<PathBuf>,
        /// ThingsBoard entity relations (a JSON array of `EntityRelation`, each end with its
        /// `name` beside or instead of its `id`): written as `relations.jsonl`, the seed of every
        /// imported chain's `relations` table, which the relation nodes read.
        #[arg(long, value_name = "FILE")]
        relations: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Compile a rule workspace or crate to wasm32 with whichever toolchain is present.
    Build {
        /// The workspace or crate (default: ./rules).
        dir: Option<PathBuf>,
    },
    /// Show what a module says about itself: description, the relations it emits, the host
    /// capabilities it imports and its config's JSON Schema.
    Describe {
        /// A built-in rule's name (resolved as a chain's `module` is) or a path to a `.wasm`/`.wat`.
        module: String,
        /// Print it as one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        modules: ModuleArgs,
    },
    /// Scaffold a rule crate that builds and tests out of the box.
    New {
        name: String,
        /// Where to create it (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ModuleArgs {
    /// Directory of built-in modules (repeatable; also $SLUICE_MODULES, colon-separated).
    #[arg(long = "modules", value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The chain file.
    #[arg(long)]
    pub chain: PathBuf,
    /// Input JSON lines: a file or `-` for stdin (the default).
    #[arg(long)]
    pub input: Option<String>,
    /// Output JSON lines: a file or `-` for stdout (default: `[output]` of `--config`, else
    /// stdout).
    #[arg(long)]
    pub output: Option<String>,
    /// Stop at the first malformed input line (exit code 1).
    #[arg(long)]
    pub strict: bool,
    /// Worker threads (default: the number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Write the run's counts (per node and relation) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,
    /// Where state is checkpointed; a run killed mid-way resumes from there (default:
    /// `[state] dir` of `--config`, else `data`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Keep state in memory only (no checkpoints, no resume).
    #[arg(long)]
    pub no_state: bool,
    /// Ignore any checkpoint and start from the first line.
    #[arg(long)]
    pub fresh: bool,
    /// Milliseconds between checkpoints (default: `[state] checkpointMs` of `--config`, else
    /// 1000).
    #[arg(long, value_name = "MS")]
    pub checkpoint_ms: Option<u64>,
    /// Exit 0 even when nodes were disabled, messages dead-lettered or failures lost (the
    /// summary still lists them); without it such a run exits 3.
    #[arg(long)]
    pub allow_failures: bool,
    /// A `sluice.toml`: a source (Kafka, MQTT, HTTP) to run as a service until SIGTERM, the
    /// output and dead-letter destinations, connectors replacing the chain's of the same name,
    /// state, admin and reload settings. Without a `[source]`, the input is still `--input` and
    /// every other section applies as well.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve `GET /status`, `POST /reload`, `GET /metrics` and the flight recorder on this
    /// address. Anything but loopback needs `--admin-token`.
    #[arg(long, value_name = "HOST:PORT")]
    pub admin: Option<std::net::SocketAddr>,
    /// The bearer token every admin request must carry (`Authorization: Bearer TOKEN`): the
    /// endpoint shows message contents, reloads the chain and replays messages.
    #[arg(long, value_name = "TOKEN", env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Do not watch the chain and module files (SIGHUP and `sluice reload` still reload).
    #[arg(long)]
    pub no_watch: bool,
    #[command(flatten)]
    pub modules: ModuleArgs,
}

impl ModuleArgs {
    /// The flags, then $SLUICE_MODULES, then the repository's built rules next to the chain,
    /// the working directory and the binary.
    fn resolve(&self, chain: Option<&Path>) -> Vec<PathBuf> {
        let mut dirs = self.dirs.clone();
        if let Some(env) = std::env::var_os("SLUICE_MODULES") {
            dirs.extend(std::env::split_paths(&env));
        }
        let built = |root: &Path| toolchain::module_dir(&root.join("rules"));
        if let Some(parent) = chain.and_then(Path::parent) {
            dirs.push(built(&parent.join("..")));
        }
        dirs.push(built(Path::new(".")));
        if let Ok(exe) = std::env::current_exe()
            && let Some(root) = exe.parent().and_then(Path::parent).and_then(Path::parent)
        {
            dirs.push(built(root));
        }
        dirs
    }
}

pub fn main(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(args) => run(args),
        Command::Validate { chains, modules } => validate(&chains, &modules),
        Command::Test { paths, filter, junit, modules } => test(paths, filter, junit.as_deref(), &modules),
        Command::Rules(RulesCommand::Build { dir }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("rules"));
            let out = toolchain::build(&dir)?;
            eprintln!("modules in {}", out.display());
            Ok(0)
        }
        Command::Rules(RulesCommand::New { name, dir }) => {
            let created = toolchain::scaffold(&dir, &name)?;
            eprintln!(
                "created {0}\n  cd {0} && cargo test && sluice rules build . && sluice run --chain chain.json --input input.jsonl --no-state\n  sluice test chain.test.json   (the chain's own tests)",
                created.display()
            );
            Ok(0)
        }
        Command::Import(ImportCommand::Thingsboard { files, out, strict, links, profiles, relations }) => {
            let options = sluice::import::ImportOptions { links, profiles, relations };
            import_thingsboard(&files, &options, &out, strict)
        }
        Command::Fmt { chains, check } => fmt_chains(&chains, check),
        Command::Diff { files, admin: Some(admin), token } => {
            let [new] = files.as_slice() else { bail!("with --admin, give only the new chain file") };
            reload_plan(&AdminArgs { admin, token }.client(), new)
        }
        Command::Diff { files, admin: None, .. } => {
            let [old, new] = files.as_slice() else {
                bail!("give the old and the new chain file (or --admin ADDR NEW)")
            };
            let (old, new) = (Loader::read_spec(old)?, Loader::read_spec(new)?);
            let changes = sluice::core::spec::canonical::diff(&old, &new);
            for change in &changes {
                println!("{change}");
            }
            Ok(if changes.is_empty() { 0 } else { 1 })
        }
        Command::Schema { tests: true, .. } => {
            let schema = schemars::schema_for!(sluice::chaintest::TestFile);
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(0)
        }
        Command::Schema { modules, .. } => {
            let runtime = Runtime::with_default_cache()?;
            let loader = Loader::new(&runtime, modules.resolve(None));
            let schema = sluice::chain::schema::with_built_in(&loader)
                .context("the schema includes every built-in module's config schema (`sluice rules build rules`)")?;
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(0)
        }
        Command::Rules(RulesCommand::Describe { module, json, modules }) => describe(&module, json, &modules),
        Command::Reload { admin } => admin_call(&admin.client(), "POST", "/reload"),
        Command::Status { admin } => admin_call(&admin.client(), "GET", "/status"),
        Command::Replay { admin, node, event, failure, chain, live } => {
            replay(&admin.client(), &node, failure.map_or(("events", event), |n| ("failures", n)), chain, live)
        }
    }
}

/// `sluice rules describe MODULE [--json]`.
fn describe(name: &str, json: bool, modules: &ModuleArgs) -> anyhow::Result<i32> {
    let runtime = Runtime::with_default_cache()?;
    let loader = Loader::new(&runtime, modules.resolve(None));
    let module = loader.module(Path::new("./-"), name)?;
    let info = &module.info;
    if json {
        let out = serde_json::json!({
            "module": name,
            "path": module.source,
            "manifest": info.manifest,
            "capabilities": info.capabilities,
            "configSchema": info.config_schema,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    println!("{name} ({})", module.source.display());
    let manifest = info.manifest.as_ref();
    match manifest.map(|m| m.description.as_str()).filter(|d| !d.is_empty()) {
        Some(description) => println!("  {description}"),
        None => println!("  (no description)"),
    }
    if let Some(m) = manifest {
        println!("  kind:          {}", m.kind);
    }
    let relations = match manifest {
        None => "not declared (no manifest: connections are not checked)".to_string(),
        Some(m) => {
            let mut text = m.relations.as_ref().map_or_else(|| "not declared".into(), |r| r.join(", "));
            match m.more_relations {
                Some(sluice::runtime::manifest::MoreRelations::Config) => text.push_str(", and those its config names"),
                Some(sluice::runtime::manifest::MoreRelations::Any) => text.push_str(", and any other name (decided by code in its config, or a placeholder keeping the wiring of the node it stands in for)"),
                None => {}
            }
            text
        }
    };
    println!("  relations:     {relations}");
    let capabilities = if info.capabilities.is_empty() { "none".to_string() } else { info.capabilities.join(", ") };
    println!("  capabilities:  {capabilities}");
    match &info.config_schema {
        Some(schema) => println!("  config schema:\n{}", serde_json::to_string_pretty(schema)?),
        None => println!("  config schema: none (the config is checked by the node's init only)"),
    }
    Ok(0)
}

/// `sluice replay`: the recorded input from `GET /nodes/ID/events`, run by `POST
/// /nodes/ID/replay`; the answer on stdout.
fn replay(
    admin: &AdminClient,
    node: &str,
    (list, n): (&str, usize),
    chain: Option<PathBuf>,
    live: bool,
) -> anyhow::Result<i32> {
    // A node id may hold `/` (a nested chain's node): one path segment, encoded.
    let segment: String = node
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let (ok, recorded) = admin.call("GET", &format!("/nodes/{segment}/events"), None)?;
    if !ok {
        eprintln!("error: {}", recorded["error"].as_str().unwrap_or(&recorded.to_string()));
        return Ok(1);
    }
    let Some(event) = recorded[list].get(n) else {
        let held = recorded[list].as_array().map_or(0, Vec::len);
        eprintln!("error: node `{node}` has {held} recorded {list}; there is no number {n} (0 is the newest)");
        return Ok(1);
    };
    let input = &event["input"];
    if input.is_null() {
        eprintln!("error: {list} {n} of `{node}` was a window or a timer, not a message: there is no input to replay");
        return Ok(1);
    }
    if input.get("truncated").is_some() {
        eprintln!(
            "error: the recorded input was cut at the chain's `record.maxBodyBytes` ({} bytes in all): raise it to replay this message",
            input["bytes"]
        );
        return Ok(1);
    }
    let chain = chain.map(|c| c.canonicalize().unwrap_or(c));
    let body = serde_json::json!({"input": input, "chain": chain, "live": live});
    let (ok, answer) = admin.call("POST", &format!("/nodes/{segment}/replay"), Some(body))?;
    if !ok {
        eprintln!("error: {}", answer["error"].as_str().unwrap_or(&answer.to_string()));
        return Ok(1);
    }
    println!("{}", serde_json::to_string_pretty(&answer)?);
    if !live {
        eprintln!("sluice: replayed in isolation: a copy of the state, no action executed (--live executes them)");
    }
    Ok(0)
}

/// `sluice diff --admin ADDR NEW`: the running engine's plan for reloading NEW.
fn reload_plan(admin: &AdminClient, new: &Path) -> anyhow::Result<i32> {
    let chain = new.canonicalize().with_context(|| format!("cannot read {}", new.display()))?;
    let (ok, plan) = admin.call("POST", "/reload/plan", Some(serde_json::json!({"chain": chain})))?;
    if !ok {
        eprintln!("error: a reload would be refused: {}", plan["error"].as_str().unwrap_or(&plan.to_string()));
        return Ok(1);
    }
    let retention_s = plan["retentionMs"].as_u64().unwrap_or(0) / 1000;
    for node in plan["nodes"].as_array().into_iter().flatten() {
        let (id, has_state) = (node["node"].as_str().unwrap_or("?"), node["hasState"] == true);
        let fate = match (node["fate"].as_str().unwrap_or(""), has_state) {
            ("keeps", true) => "keeps its state".to_string(),
            ("keeps", false) => "kept (no state yet)".to_string(),
            ("keepsWithNewModule", true) => {
                "keeps its state, under its new module (whose init accepted it)".to_string()
            }
            ("keepsWithNewModule", false) => "kept, with a new module (no state yet)".to_string(),
            ("added", _) => "new: starts empty".to_string(),
            ("returns", _) => "back: gets the state it had when removed".to_string(),
            ("removed", true) => format!("removed: loses its state after {retention_s} s unless it comes back"),
            ("removed", false) => "removed (no state)".to_string(),
            (other, _) => other.to_string(),
        };
        println!("node `{id}`: {fate}");
    }
    Ok(0)
}

/// `sluice fmt`: each chain in its canonical form; with `check`, only whether it is.
fn fmt_chains(chains: &[PathBuf], check: bool) -> anyhow::Result<i32> {
    let mut off = 0;
    for path in chains {
        // Checked as a chain first, with the loader's errors (file, field, line).
        Loader::read_spec(path)?;
        let current = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let text = sluice::core::spec::canonical::canonical_text(&serde_json::from_str(&current)?);
        if current == text {
            continue;
        }
        off += 1;
        if check {
            println!("not canonical: {} (sluice fmt rewrites it)", path.display());
        } else {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
            println!("formatted {}", path.display());
        }
    }
    Ok(if check && off > 0 { 1 } else { 0 })
}

/// Where a running engine's admin endpoint is, for `sluice reload`, `status` and `replay`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The admin endpoint (`host:port`).
    #[arg(long)]
    admin: String,
    /// The endpoint's bearer token, when it has one.
    #[arg(long, value_name = "TOKEN", env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl AdminArgs {
    fn client(self) -> AdminClient {
        AdminClient {
            base: format!("http://{}", self.admin),
            token: self.token,
            http: reqwest::blocking::Client::new(),
        }
    }
}

/// Requests to a running engine's admin endpoint, with its token.
struct AdminClient {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

impl AdminClient {
    /// Sends one request (a JSON `body` for a POST): whether it succeeded, and its JSON answer.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(bool, serde_json::Value)> {
        let url = format!("{}{path}", self.base);
        let mut request = if method == "POST" { self.http.post(&url) } else { self.http.get(&url) };
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string());
        }
        let response = request.send().with_context(|| format!("cannot reach the admin endpoint {url}"))?;
        let ok = response.status().is_success();
        let text = response.text().with_context(|| format!("{url}: no answer"))?;
        let body = serde_json::from_str(&text).with_context(|| format!("{url}: not a JSON answer: {text}"))?;
        Ok((ok, body))
    }
}

/// One request to a running engine's admin endpoint; its JSON answer on stdout.
fn admin_call(admin: &AdminClient, method: &str, path: &str) -> anyhow::Result<i32> {
    let (ok, body) = admin.call(method, path, None)?;
    if ok {
        println!("{}", serde_json::to_string_pretty(&body)?);
        Ok(0)
    } else {
        eprintln!("error: {}", body["error"].as_str().unwrap_or(&body.to_string()));
        Ok(1)
    }
}

/// `sluice import thingsboard`: the report on stdout; with `--strict`, placeholders are an error
/// and nothing is written.
fn import_thingsboard(
    files: &[PathBuf],
    options: &sluice::import::ImportOptions,
    out: &Path,
    strict: bool,
) -> anyhow::Result<i32> {
    let imported = sluice::import::import_thingsboard_with(files, options)?;
    print!("{}", imported.report);
    if strict && let Err(err) = imported.check_strict() {
        eprintln!("error: {err}");
        return Ok(1);
    }
    let written = imported.write(out)?;
    let chains = written.len() - usize::from(imported.relations.is_some());
    eprintln!("wrote {chains} chain file(s) to {}", out.display());
    Ok(0)
}

fn runtime() -> anyhow::Result<Arc<Runtime>> {
    Ok(Arc::new(Runtime::with_default_cache().context("cannot start the WebAssembly runtime")?))
}

fn validate(chains: &[PathBuf], modules: &ModuleArgs) -> anyhow::Result<i32> {
    let runtime = runtime()?;
    let mut failed = 0;
    for chain in chains {
        if is_json_schema(chain) {
            println!("skipped: {} (a JSON Schema, not a chain)", chain.display());
            continue;
        }
        let loader = Loader::new(&runtime, modules.resolve(Some(chain)));
        match loader.load(chain) {
            Ok(c) => println!("ok: {} ({} nodes)", chain.display(), c.nodes.len()),
            Err(err) => {
                failed += 1;
                eprintln!("error: {err}");
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

fn test(
    paths: Vec<PathBuf>,
    filter: Option<String>,
    junit: Option<&Path>,
    modules: &ModuleArgs,
) -> anyhow::Result<i32> {
    use sluice::chaintest;
    let paths = if paths.is_empty() { vec![PathBuf::from(".")] } else { paths };
    let files = chaintest::discover(&paths)?;
    if files.is_empty() {
        let searched: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
        anyhow::bail!("no test files (*.test.json, *.test.yaml) in {}", searched.join(", "));
    }
    let runtime = runtime()?;
    let options = chaintest::Options { filter };
    let started = std::time::Instant::now();
    let mut outcomes = Vec::new();
    for file in &files {
        let dirs = modules.resolve(Some(file));
        outcomes.extend(chaintest::run_file(&runtime, &dirs, file, &options, |o| println!("{}", chaintest::render(o))));
    }
    let failed = outcomes.iter().filter(|o| matches!(o.result, Ok(Some(_)))).count();
    let errors = outcomes.iter().filter(|o| o.result.is_err()).count();
    let passed = outcomes.len() - failed - errors;
    println!(
        "\n{passed} passed, {failed} failed, {errors} could not run ({} files, {:.2} s)",
        files.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = junit {
        let xml = chaintest::junit(&outcomes).context("cannot write the JUnit report")?;
        std::fs::write(path, xml).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if failed + errors == 0 { 0 } else { 1 })
}

/// A JSON Schema document (its `$schema` names a json-schema.org meta-schema), such as
/// `chains/chain.schema.json`, which a `chains/*.json` glob picks up. A chain's own `$schema`
/// points at that file instead.
fn is_json_schema(path: &Path) -> bool {
    let Ok(text) = std::fs::read(path) else { return false };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&text) else { return false };
    value.get("$schema").and_then(|s| s.as_str()).is_some_and(|s| s.contains("json-schema.org/"))
}

/// Exit codes of `sluice run` (the README's table).
pub mod exit {
    /// Done: the input read to its end, or stopped by SIGTERM/SIGINT after finishing what was
    /// in flight; for a service, stopped by a signal.
    pub const OK: i32 = 0;
    /// `--strict` stopped at a malformed line.
    pub const MALFORMED: i32 = 1;
    /// A finite run finished, but a node was disabled, messages were dead-lettered or failures
    /// lost (without `--allow-failures`).
    pub const FAILURES: i32 = 3;
}

/// How a run is told to stop: SIGINT or SIGTERM turns `stop` true — the run stops reading,
/// finishes what is in flight, flushes, writes stats, checkpoints and exits 0. A second signal
/// while that is under way exits at once, 130 (SIGINT) or 143 (SIGTERM), as a shell would.
struct Stop {
    stop: tokio::sync::watch::Receiver<bool>,
    by: Arc<std::sync::OnceLock<&'static str>>,
}

impl Stop {
    fn listen(tokio: &tokio::runtime::Runtime) -> anyhow::Result<Stop> {
        use tokio::signal::unix::{SignalKind, signal};
        let _in_runtime = tokio.enter();
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let (tx, stop) = tokio::sync::watch::channel(false);
        let by = Arc::new(std::sync::OnceLock::new());
        let first = by.clone();
        tokio.spawn(async move {
            loop {
                let (name, code) = tokio::select! {
                    _ = int.recv() => ("SIGINT", 130),
                    _ = term.recv() => ("SIGTERM", 143),
                };
                if first.set(name).is_err() {
                    eprintln!("sluice: {name} again: exiting now, without finishing or checkpointing");
                    std::process::exit(code);
                }
                tracing::info!(
                    "{name}: stopping: no more input; finishing what is in flight, flushing outputs, checkpointing \
                     (again to exit at once)"
                );
                let _ = tx.send(true);
            }
        });
        Ok(Stop { stop, by })
    }

    fn signal(&self) -> Option<&'static str> {
        self.by.get().copied()
    }
}

/// `--output`, or the config's `[output]`; both is an error (one would be ignored).
fn check_output_flag(args: &RunArgs, config: Option<&(sluice::config::Config, PathBuf)>) -> anyhow::Result<()> {
    if let (Some(flag), Some((config, path))) = (&args.output, config)
        && config.output.is_some()
    {
        bail!("--output {flag} and [output] in {} both say where the output goes: keep one", path.display());
    }
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<i32> {
    let mut pipeline = PipelineConfig::default();
    if let Some(n) = args.workers {
        if n == 0 {
            bail!("--workers must be at least 1");
        }
        pipeline.workers = n;
    }
    let config = match &args.config {
        Some(path) => Some((sluice::config::Config::load(path)?, path.clone())),
        None => None,
    };
    check_output_flag(&args, config.as_ref())?;
    if let (Some(input), Some((config, path))) = (&args.input, &config)
        && config.source.is_some()
    {
        bail!("--input {input} and [source] in {} both say where messages come from: keep one", path.display());
    }
    // Every section of the config applies; a flag given on the command line wins.
    let (config, config_dir) = match config {
        Some((config, path)) => (config, path.parent().map(Path::to_path_buf).unwrap_or_default()),
        None => Default::default(),
    };
    let mut progress = None;
    let source: Box<dyn Source> = match &config.source {
        Some(spec) => sluice::sources::from_spec(spec.clone(), &config_dir),
        None => {
            let stream = Stream::parse(args.input.as_deref().unwrap_or("-"));
            let size = match &stream {
                Stream::File(path) => std::fs::metadata(path).ok().map(|m| m.len()),
                Stream::Std => None,
            };
            let source = JsonLinesSource::new(stream, args.strict);
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                progress = Some(Progress::start(source.stats(), size));
            }
            Box::new(source)
        }
    };
    let finite = source.finite();
    let state_dir = match (&args.state_dir, &config.state.dir) {
        (Some(flag), _) => flag.clone(),
        (None, Some(dir)) => config_dir.join(dir),
        (None, None) => PathBuf::from("data"),
    };
    let output = match (args.output.as_deref(), config.output) {
        (Some("-"), _) => OutputSpec::stdout(),
        // Relative to where the command runs, not to `sluice.toml`.
        (Some(path), _) => OutputSpec::File { path: std::env::current_dir()?.join(path).display().to_string() },
        (None, Some(spec)) => spec,
        (None, None) => OutputSpec::stdout(),
    };
    let mut reload = sluice::reload::ReloadOptions::from(&config.reload);
    reload.watch &= !args.no_watch;
    let options = AppOptions {
        connectors: config.connectors,
        module_dirs: args.modules.resolve(Some(&args.chain)),
        chain: args.chain.clone(),
        entry: config.entry,
        pipeline,
        state_dir: (!args.no_state).then_some(state_dir),
        checkpoint_every: std::time::Duration::from_millis(
            args.checkpoint_ms.unwrap_or(config.state.checkpoint_ms).max(1),
        ),
        series_limits: config.state.series_limits()?,
        fresh: args.fresh,
        output,
        dead_letter: config.dead_letter,
        dir: config_dir,
        reload,
        admin: args.admin.or(config.admin.listen),
        admin_token: args.admin_token.or(config.admin.token),
    };
    let runtime = runtime()?;
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let stop = Stop::listen(&tokio)?;
    let result = tokio.block_on(sluice::app::run(runtime, options, source, stop.stop.clone()));
    drop(progress);
    // A stdin read may still be blocked on its thread: do not wait for it.
    tokio.shutdown_background();
    let (report, ended) = result?;
    if finite {
        if report.resumed_after > 0 {
            eprintln!("sluice: resumed after line {} (covered by the last checkpoint)", report.resumed_after);
        }
        eprintln!(
            "sluice: {} lines, {} messages, {} malformed, {} acked, {} written, {} checkpoints",
            report.lines, report.messages, report.malformed, report.acked, report.written, report.checkpoints
        );
    } else {
        let mut line = format!("{} records from {}, {} malformed", report.messages, report.source, report.malformed);
        if report.source.starts_with("kafka:") {
            line.push_str(&format!(", {} commits, {} rebalances", report.checkpoints, report.rebalances));
        }
        eprintln!("sluice: {line}");
    }
    if let Some(by) = stop.signal() {
        match (finite, args.no_state) {
            (false, _) => {
                eprintln!("sluice: stopped by {by}: in-flight messages finished, outputs flushed, state checkpointed")
            }
            (true, true) => eprintln!(
                "sluice: stopped by {by} after line {}; state not kept (--no-state): open windows and pending timers are dropped",
                report.lines
            ),
            (true, false) => eprintln!(
                "sluice: stopped by {by} after line {}; open windows and timers are checkpointed: the same command resumes there",
                report.lines
            ),
        }
    }
    if let Some(path) = &args.stats {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write stats to {}", path.display()))?;
    }
    match ended {
        Ok(()) => {}
        Err(SourceError::Lines(JsonLinesError::Strict(err))) => {
            eprintln!("error: stopped at the first malformed line (--strict): {err}");
            return Ok(exit::MALFORMED);
        }
        Err(e) => return Err(e.into()),
    }
    for (id, node) in &report.stats.nodes {
        if node.failures > 0 || node.window_failures > 0 || node.disabled {
            let mut line = format!("sluice: node `{id}`: {} of {} messages failed", node.failures, node.received);
            if node.crashes > 0 {
                line.push_str(&format!(" ({} crashes: trap, deadline or memory)", node.crashes));
            }
            if node.window_failures > 0 {
                line.push_str(&format!(", {} window/timer calls failed", node.window_failures));
            }
            if node.disabled {
                line.push_str(", disabled after repeated crashes");
            }
            eprintln!("{line}");
        }
    }
    if !report.problems.is_empty() {
        eprintln!("sluice: failures: {}", report.problems);
        if !args.allow_failures {
            eprintln!(
                "error: the run did not deliver everything (exit code {}; --allow-failures accepts this)",
                exit::FAILURES
            );
            return Ok(exit::FAILURES);
        }
    }
    Ok(exit::OK)
}

/// A file run's progress on a terminal (stderr): bytes of the file read, lines, messages per
/// second, and the time left at that pace. Nothing is drawn when stderr is not a terminal.
struct Progress {
    done: Arc<AtomicBool>,
    drawing: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(stats: Arc<JsonLinesStats>, size: Option<u64>) -> Progress {
        let bar = match size {
            Some(size) => indicatif::ProgressBar::new(size).with_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg} (ETA {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            ),
            None => indicatif::ProgressBar::new_spinner().with_style(
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bytes} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            ),
        };
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let drawing = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let messages = stats.messages.load(Ordering::Relaxed);
                let rate = messages as f64 / started.elapsed().as_secs_f64().max(1e-3);
                bar.set_position(stats.bytes.load(Ordering::Relaxed));
                bar.set_message(format!(
                    "{} lines, {messages} messages, {rate:.0} msgs/s",
                    stats.lines.load(Ordering::Relaxed)
                ));
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            bar.finish_and_clear();
        });
        Progress { done, drawing: Some(drawing) }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(drawing) = self.drawing.take() {
            let _ = drawing.join();
        }
    }
}

//! The command line: clap definitions and what each command does. `anyhow` lives here and in
//! `main.rs` only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use sluice::chain::Loader;
use sluice::flow::PipelineConfig;
use sluice::run::{RunOptions, Stream};
use sluice::runtime::Runtime;
use sluice::toolchain;

/// Sluice: a rule engine for IoT telemetry whose rule nodes are sandboxed WebAssembly modules.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
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
    /// Build or scaffold rule crates.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Print the JSON Schema of chain files.
    Schema,
    /// Ask a running `sluice run --admin ADDR` to reload its chain now; prints the new version
    /// or the error that kept the old one running (exit code 1).
    Reload {
        /// The admin endpoint (`host:port`).
        #[arg(long)]
        admin: String,
    },
    /// Show a running engine's chain version and last reload error.
    Status {
        /// The admin endpoint (`host:port`).
        #[arg(long)]
        admin: String,
    },
    /// Convert other engines' rule chains into Sluice chain files.
    #[command(subcommand)]
    Import(ImportCommand),
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
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Compile a rule workspace or crate to wasm32 with whichever toolchain is present.
    Build {
        /// The workspace or crate (default: ./rules).
        dir: Option<PathBuf>,
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
    /// Input JSON lines: a file or `-` for stdin.
    #[arg(long, default_value = "-")]
    pub input: String,
    /// Output JSON lines: a file or `-` for stdout.
    #[arg(long, default_value = "-")]
    pub output: String,
    /// Stop at the first malformed input line (exit code 1).
    #[arg(long)]
    pub strict: bool,
    /// Worker threads (default: the number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Write the run's counts (per node and relation) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,
    /// Where state is checkpointed; a run killed mid-way resumes from there.
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub state_dir: PathBuf,
    /// Keep state in memory only (no checkpoints, no resume).
    #[arg(long)]
    pub no_state: bool,
    /// Ignore any checkpoint and start from the first line.
    #[arg(long)]
    pub fresh: bool,
    /// Milliseconds between checkpoints.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub checkpoint_ms: u64,
    /// A `sluice.toml`: a source (Kafka, MQTT, HTTP) to run as a service until SIGTERM, the
    /// output and dead-letter destinations, and connectors replacing the chain's of the same
    /// name. Without a `[source]`, the input is still `--input`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve `GET /status`, `POST /reload` and `GET /metrics` on this address.
    #[arg(long, value_name = "HOST:PORT")]
    pub admin: Option<std::net::SocketAddr>,
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
        Command::Rules(RulesCommand::Build { dir }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("rules"));
            let out = toolchain::build(&dir)?;
            eprintln!("modules in {}", out.display());
            Ok(0)
        }
        Command::Rules(RulesCommand::New { name, dir }) => {
            let created = toolchain::scaffold(&dir, &name)?;
            eprintln!(
                "created {0}\n  cd {0} && cargo test && sluice rules build . && sluice run --chain chain.json --input input.jsonl --no-state",
                created.display()
            );
            Ok(0)
        }
        Command::Import(ImportCommand::Thingsboard { files, out, strict }) => import_thingsboard(&files, &out, strict),
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&sluice::chain::spec::schema())?);
            Ok(0)
        }
        Command::Reload { admin } => admin_call(&admin, "POST", "/reload"),
        Command::Status { admin } => admin_call(&admin, "GET", "/status"),
    }
}

/// One request to a running engine's admin endpoint; its JSON answer on stdout.
fn admin_call(admin: &str, method: &str, path: &str) -> anyhow::Result<i32> {
    let url = format!("http://{admin}{path}");
    let client = reqwest::blocking::Client::new();
    let request = if method == "POST" { client.post(&url) } else { client.get(&url) };
    let response = request.send().with_context(|| format!("cannot reach the admin endpoint {url}"))?;
    let ok = response.status().is_success();
    let text = response.text().with_context(|| format!("{url}: no answer"))?;
    let body: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{url}: not a JSON answer: {text}"))?;
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
fn import_thingsboard(files: &[PathBuf], out: &Path, strict: bool) -> anyhow::Result<i32> {
    let imported = sluice::import::import_thingsboard(files)?;
    print!("{}", imported.report);
    if strict && let Err(err) = imported.check_strict() {
        eprintln!("error: {err}");
        return Ok(1);
    }
    let written = imported.write(out)?;
    eprintln!("wrote {} chain file(s) to {}", written.len(), out.display());
    Ok(0)
}

fn runtime() -> anyhow::Result<Arc<Runtime>> {
    Ok(Arc::new(Runtime::with_default_cache().context("cannot start the WebAssembly runtime")?))
}

fn validate(chains: &[PathBuf], modules: &ModuleArgs) -> anyhow::Result<i32> {
    let runtime = runtime()?;
    let mut failed = 0;
    for chain in chains {
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

fn run(args: RunArgs) -> anyhow::Result<i32> {
    let mut pipeline = PipelineConfig::default();
    if let Some(n) = args.workers {
        if n == 0 {
            bail!("--workers must be at least 1");
        }
        pipeline.workers = n;
    }
    let config = match &args.config {
        Some(path) => Some(sluice::config::Config::load(path)?),
        None => None,
    };
    if let Some(config) = config.clone().filter(|c| c.source.is_some()) {
        return serve(args, config, pipeline);
    }
    let options = RunOptions {
        connectors: config.map(|c| c.connectors).unwrap_or_default(),
        module_dirs: args.modules.resolve(Some(&args.chain)),
        chain: args.chain,
        input: Stream::parse(&args.input),
        output: Stream::parse(&args.output),
        pipeline,
        strict: args.strict,
        state_dir: (!args.no_state).then_some(args.state_dir),
        checkpoint_every: std::time::Duration::from_millis(args.checkpoint_ms.max(1)),
        fresh: args.fresh,
        reload: sluice::reload::ReloadOptions { watch: !args.no_watch, ..Default::default() },
        admin: args.admin,
    };
    let runtime = runtime()?;
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (report, stopped_at) = tokio.block_on(sluice::run::run(runtime, options))?;
    if report.resumed_after > 0 {
        eprintln!("sluice: resumed after line {} (covered by the last checkpoint)", report.resumed_after);
    }
    eprintln!(
        "sluice: {} lines, {} messages, {} malformed, {} acked, {} written, {} checkpoints",
        report.lines, report.messages, report.malformed, report.acked, report.written, report.checkpoints
    );
    if let Some(path) = &args.stats {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write stats to {}", path.display()))?;
    }
    if let Some(err) = stopped_at {
        eprintln!("error: stopped at the first malformed line (--strict): {err}");
        return Ok(1);
    }
    Ok(0)
}

/// `sluice run --config` with a `[source]`: a service until SIGTERM or Ctrl-C.
fn serve(args: RunArgs, config: sluice::config::Config, pipeline: PipelineConfig) -> anyhow::Result<i32> {
    let config_dir =
        args.config.as_deref().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let mut reload = config.reload.options();
    reload.watch &= !args.no_watch;
    let admin = config.admin.listen.or(args.admin);
    let options = sluice::service::ServeOptions {
        reload,
        admin,
        module_dirs: args.modules.resolve(Some(&args.chain)),
        chain: args.chain.clone(),
        config,
        config_dir,
        pipeline,
        state_dir: (!args.no_state).then_some(args.state_dir.clone()),
        fresh: args.fresh,
    };
    let runtime = runtime()?;
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let report = tokio.block_on(async move {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::error!("cannot listen for SIGTERM: {e}");
                    return;
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("stopping: finishing what is in flight, checkpointing");
            let _ = stop.send(true);
        });
        sluice::service::serve(runtime, options, shutdown).await
    })?;
    eprintln!(
        "sluice: {} records from {}, {} malformed, {} commits, {} rebalances",
        report.records, report.source, report.malformed, report.commits, report.rebalances
    );
    if let Some(path) = &args.stats {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write stats to {}", path.display()))?;
    }
    Ok(0)
}

//! The `sluice` binary: logging, then the command line ([`cli`]).

mod cli;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Messages are allocated on the source's thread and freed on the workers' (see `Cargo.toml`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = cli::Cli::parse();
    // Rust ignores SIGPIPE, so `sluice schema | head` would panic on the closed pipe ("failed
    // printing to stdout"). The commands that print a result end quietly instead, as Unix tools
    // do; `run` keeps it ignored: its sinks see the write error and account for the loss.
    #[cfg(unix)]
    if !matches!(cli.command, cli::Command::Run(_)) {
        // SAFETY: restoring the default disposition of one signal before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // A chain test provokes failures on purpose: its report says what happened, the engine's
    // warnings about them would only bury it (SLUICE_LOG=warn shows them).
    let default = if matches!(cli.command, cli::Command::Test { .. }) { "error" } else { "info" };
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    match cli.log_format {
        cli::LogFormat::Text => logs.init(),
        cli::LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let code = match cli::main(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            2
        }
    };
    std::process::exit(code);
}

//! Building rule crates to wasm, and scaffolding new ones.
//!
//! Two ways to compile for `wasm32-unknown-unknown`, chosen automatically:
//! 1. rustup's own target (`rustup target add wasm32-unknown-unknown`), on a normal machine;
//! 2. Debian's `rustc-web` + `rust-web-src` + `lld-19`, building std from source
//!    (`-Zbuild-std`), where rustup cannot download targets.
//!
//! `scripts/setup.sh` installs whichever is possible; this module only detects and runs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target every rule is compiled for.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Where cargo puts a workspace's modules.
pub fn module_dir(workspace: &Path) -> PathBuf {
    workspace.join("target").join(WASM_TARGET).join("release")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmToolchain {
    Rustup,
    DebianBuildStd,
}

#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    #[error(
        "no wasm32 toolchain found: run scripts/setup.sh (it tries `rustup target add {WASM_TARGET}`, then Debian's \
         rustc-web, rust-web-src and lld-19)"
    )]
    Missing,
    #[error("cannot run cargo: {0}")]
    Spawn(std::io::Error),
    #[error("cargo build failed in {0} (its errors are above)")]
    Build(PathBuf),
    #[error("{0}")]
    Scaffold(String),
    #[error("rule directory {0}: {1}")]
    Dir(PathBuf, String),
}

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_STD_SRC: &str = "/usr/lib/rustlib/src/rust/library";
const DEBIAN_LINKER: &str = "wasm-ld-19";

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// The toolchain this machine has, preferring rustup's. `SLUICE_WASM_TOOLCHAIN=rustup|debian`
/// forces one (to exercise the fallback on a machine that has both).
pub fn detect() -> Option<WasmToolchain> {
    let forced = std::env::var("SLUICE_WASM_TOOLCHAIN").unwrap_or_default();
    let debian_ready =
        || Path::new(DEBIAN_RUSTC).is_file() && Path::new(DEBIAN_STD_SRC).is_dir() && on_path(DEBIAN_LINKER);
    if forced == "debian" {
        return debian_ready().then_some(WasmToolchain::DebianBuildStd);
    }
    let rustup_has_target = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == WASM_TARGET));
    if rustup_has_target {
        return Some(WasmToolchain::Rustup);
    }
    if forced != "rustup" && debian_ready() {
        return Some(WasmToolchain::DebianBuildStd);
    }
    None
}

/// A `cargo build` of the workspace or crate at `dir` for wasm32, release.
pub fn build_command(dir: &Path, toolchain: WasmToolchain) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir).args(["build", "--release", "--target", WASM_TARGET]);
    cmd.arg("--target-dir").arg(dir.join("target"));
    // Variables of an enclosing cargo invocation (tests, build scripts) must not leak in.
    for var in
        ["RUSTC", "RUSTC_WRAPPER", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET"]
    {
        cmd.env_remove(var);
    }
    if dir.join("Cargo.toml").is_file() && is_workspace(dir) {
        cmd.arg("--workspace");
    }
    if toolchain == WasmToolchain::DebianBuildStd {
        cmd.arg("-Zbuild-std=std,panic_abort")
            .env("RUSTC", DEBIAN_RUSTC)
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", DEBIAN_LINKER);
    }
    cmd
}

fn is_workspace(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
}

/// Builds the rule workspace or crate at `dir`; returns the directory holding the `.wasm` files.
pub fn build(dir: &Path) -> Result<PathBuf, ToolchainError> {
    // Absolute: cargo runs *in* `dir`, so a relative `--target-dir` would nest inside it.
    let dir = &dir.canonicalize().map_err(|e| ToolchainError::Dir(dir.to_path_buf(), e.to_string()))?;
    let toolchain = detect().ok_or(ToolchainError::Missing)?;
    tracing::info!(dir = %dir.display(), ?toolchain, "building rules for {WASM_TARGET}");
    let status = build_command(dir, toolchain).status().map_err(ToolchainError::Spawn)?;
    if !status.success() {
        return Err(ToolchainError::Build(dir.to_path_buf()));
    }
    Ok(module_dir(dir))
}

/// The environment variable naming the `rule-sdk` directory scaffolded crates depend on.
pub const SDK_PATH_ENV: &str = "SLUICE_SDK_PATH";

/// The `rule-sdk` directory scaffolded crates depend on (by path: the SDK is not published):
/// `$SLUICE_SDK_PATH`; else the checkout the binary sits in (`target/{debug,release}/sluice` →
/// `rule-sdk/`), or an installed layout (`PREFIX/bin/sluice` → `PREFIX/share/sluice/rule-sdk`).
/// Never the directory the binary was *built* in, which a copied or installed binary may no longer
/// have: without either, the error says to set the variable.
pub fn sdk_path() -> Result<PathBuf, ToolchainError> {
    let is_sdk = |dir: &Path| {
        std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|toml| toml.contains("name = \"sluice-sdk\""))
    };
    if let Some(dir) = std::env::var_os(SDK_PATH_ENV) {
        let dir = PathBuf::from(dir);
        return match dir.canonicalize() {
            Ok(dir) if is_sdk(&dir) => Ok(dir),
            _ => Err(ToolchainError::Scaffold(format!(
                "${SDK_PATH_ENV} is {}, which is not a sluice-sdk crate (a `rule-sdk` directory of a Sluice checkout)",
                dir.display()
            ))),
        };
    }
    let exe = std::env::current_exe().and_then(|e| e.canonicalize()).ok();
    let candidates = exe
        .iter()
        .flat_map(|exe| exe.ancestors().skip(1))
        .flat_map(|dir| [dir.join("rule-sdk"), dir.join("share").join("sluice").join("rule-sdk")]);
    for dir in candidates {
        if is_sdk(&dir) {
            return Ok(dir.canonicalize().unwrap_or(dir));
        }
    }
    Err(ToolchainError::Scaffold(format!(
        "cannot find sluice-sdk for the new crate to depend on: set ${SDK_PATH_ENV} to the `rule-sdk` \
         directory of a Sluice checkout (none beside {})",
        exe.map(|e| e.display().to_string()).unwrap_or_else(|| "this binary".into())
    )))
}

/// Scaffolds a rule crate `name` in `parent/name`: a filter with a native test, a chain that
/// runs it, and sample input. It builds with `sluice rules build` and tests with `cargo test`.
pub fn scaffold(parent: &Path, name: &str) -> Result<PathBuf, ToolchainError> {
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_lowercase());
    if !valid {
        return Err(ToolchainError::Scaffold(format!(
            "`{name}` is not a crate name: use lowercase letters, digits, `-` and `_`, starting with a letter"
        )));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(ToolchainError::Scaffold(format!("{} already exists", dir.display())));
    }
    let sdk = sdk_path()?;
    let lib = name.replace('-', "_");
    // TOML basic string: a Windows path's backslashes (and any quote) escaped.
    let sdk = sdk.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
    let files: [(&str, String); 7] = [
        ("Cargo.toml", format!(include_str!("scaffold/Cargo.toml.in"), name = name, sdk = sdk)),
        (".gitignore", include_str!("scaffold/gitignore.in").to_string()),
        ("src/lib.rs", include_str!("scaffold/lib.rs.in").to_string()),
        ("chain.json", format!(include_str!("scaffold/chain.json.in"), lib = lib)),
        ("input.jsonl", include_str!("scaffold/input.jsonl.in").to_string()),
        ("chain.test.json", include_str!("scaffold/chain.test.json.in").to_string()),
        ("README.md", format!(include_str!("scaffold/README.md.in"), name = name)),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().unwrap_or(&dir))?;
            std::fs::write(&path, text)
        };
        write().map_err(|e| ToolchainError::Scaffold(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(dir)
}

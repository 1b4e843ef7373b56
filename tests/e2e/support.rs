//! Locating (and building, once) the `sluice` binary and the guest modules.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repo root")
}

/// The guest modules, built from `rules/` on first use.
pub fn modules() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| sluice::toolchain::build(&repo().join("rules")).expect("building the rules"))
}

/// The `sluice` binary of this workspace, built on first use.
pub fn sluice_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(repo())
            .args(["build", "--quiet", "-p", "sluice-engine", "--bin", "sluice"])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building sluice failed");
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("target"));
        target.join("debug").join("sluice")
    })
}

/// Runs `sluice ARGS` with the built modules on the module path.
pub fn sluice(args: &[&str]) -> Output {
    Command::new(sluice_bin())
        .args(args)
        .env("SLUICE_MODULES", modules())
        .env("SLUICE_CACHE_DIR", repo().join("target").join("sluice-module-cache"))
        .output()
        .expect("run sluice")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

# Sourced, not run: chooses how to compile for wasm32-unknown-unknown and exports WASM_CARGO_ARGS
# (and, on the Debian fallback, RUSTC and friends).
#
# 1. rustup's own target, where `rustup target add wasm32-unknown-unknown` works (a normal machine);
# 2. else Debian's rustc-web + rust-web-src + lld-19, which build std for wasm32 from source
#    (-Zbuild-std), for machines whose rustup cannot download targets.
# `scripts/setup.sh` installs whichever is possible; this file only picks.

sluice_wasm_env() {
    if command -v rustup >/dev/null 2>&1 \
        && rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
        export SLUICE_WASM_TOOLCHAIN=rustup
        WASM_CARGO_ARGS=(--target wasm32-unknown-unknown --release)
        return 0
    fi
    if [ -x /usr/bin/rustc ] && command -v wasm-ld-19 >/dev/null 2>&1 \
        && [ -d /usr/lib/rustlib/src/rust/library ]; then
        export SLUICE_WASM_TOOLCHAIN=debian-build-std
        export RUSTC=/usr/bin/rustc
        export RUSTC_BOOTSTRAP=1
        export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-19
        WASM_CARGO_ARGS=(-Zbuild-std=std,panic_abort --target wasm32-unknown-unknown --release)
        return 0
    fi
    echo "no wasm32 toolchain: run scripts/setup.sh first" >&2
    return 1
}

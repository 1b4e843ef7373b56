#!/usr/bin/env bash
# Builds every rule crate in a guest workspace (default: rules/) to wasm32-unknown-unknown.
# The modules land in <workspace>/target/wasm32-unknown-unknown/release/<crate_name>.wasm.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here/../rules}
. "$here/wasm-env.sh"
sluice_wasm_env
cd "$dir"
echo "building rules in $dir with the $SLUICE_WASM_TOOLCHAIN wasm toolchain" >&2
cargo build --workspace "${WASM_CARGO_ARGS[@]}"

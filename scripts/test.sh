#!/usr/bin/env bash
# Runs every test: sets up the toolchain, builds the rules to wasm, then the rule crates' native
# tests, the engine's and the end-to-end tests, formatting and lints.
set -euo pipefail
cd "$(dirname "$0")/.."
# One build, never edited in place: incremental caches would only cost disk (gigabytes).
export CARGO_INCREMENTAL=0
scripts/setup.sh --test-brokers
cargo build --quiet -p sluice --bin sluice
./target/debug/sluice rules build rules
(cd rules && cargo test --workspace --quiet)
cargo test --workspace
# Fuzzing: every target in fuzz/ for 28 s from its corpus (under 3 minutes in all); exits 1 on a
# finding, whose input it writes to fuzz/artifacts/.
cargo run --quiet -p sluice-fuzz -- --secs 28
cargo fmt --all -- --check
# The shipped chain files are in their canonical form (`sluice fmt`).
./target/debug/sluice fmt --check $(ls chains/*.json | grep -v chain.schema.json) examples/custom-decoder/chain.json
# Every shipped chain's tests (chains/tests/*.test.json): the chains do what they are for.
./target/debug/sluice test chains/
(cd rules && cargo fmt --all -- --check)
(cd rules && cargo clippy --workspace --all-targets --quiet -- -D warnings)
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The README's first command still works (and finds the modules the build above produced).
scripts/demo.sh > /dev/null

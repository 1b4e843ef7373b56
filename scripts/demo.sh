#!/usr/bin/env bash
# Sets up, builds the rules, and runs the uplink-to-telemetry chain on its example data:
# JSON lines in (examples/uplink-to-telemetry/input.jsonl), JSON lines out (stdout).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The dev profile optimizes dependencies (see Cargo.toml), so it is quick enough for a demo and
# shares its build with the tests.
cargo build --quiet -p sluice --bin sluice
./target/debug/sluice rules build rules
exec ./target/debug/sluice run \
    --chain chains/uplink-to-telemetry.json \
    --input examples/uplink-to-telemetry/input.jsonl \
    --output - "$@"

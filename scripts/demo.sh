#!/usr/bin/env bash
# Sets up, builds the rules, and runs the uplink-to-telemetry chain on its example data:
# JSON lines in (examples/uplink-to-telemetry/input.jsonl), JSON lines out (stdout).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --quiet --release -p sluice-engine --bin sluice
./target/release/sluice rules build rules
exec ./target/release/sluice run \
    --chain chains/uplink-to-telemetry.json \
    --input examples/uplink-to-telemetry/input.jsonl \
    --output - "$@"

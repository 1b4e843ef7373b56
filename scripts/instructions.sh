#!/usr/bin/env bash
# Instructions per message, per thread, of one `sluice run` — a measure that does not move with
# the machine's load. Wall and CPU time of the same run vary by ±20 % on a shared 2-core VM, so a
# change of a few per cent only shows in counts (see docs/design/message-path-v2.md, sixth round).
#
#   scripts/instructions.sh CHAIN INPUT [LINES] [WORKERS]
#
# Runs the first LINES lines (default 20000) of INPUT through CHAIN under callgrind, once to fill
# the module cache for valgrind's CPU, then measured. Prints each busy thread's count, per
# message, and leaves the profiles in target/instructions/ for `callgrind_annotate`
# (`--inclusive=yes`, `--tree=calling`). Counts are not time: read them with a `perf` profile.
# Needs valgrind (`apt-get install valgrind`) and a release build (`cargo build --release -p
# sluice --bin sluice`); modules from `rules/` (`sluice rules build rules`), or `SLUICE_MODULES`.
set -euo pipefail
cd "$(dirname "$0")/.."

chain=${1:?usage: scripts/instructions.sh CHAIN INPUT [LINES] [WORKERS]}
input=${2:?usage: scripts/instructions.sh CHAIN INPUT [LINES] [WORKERS]}
lines=${3:-20000}
workers=${4:-1}
bin=target/release/sluice
modules=${SLUICE_MODULES:-rules/target/wasm32-unknown-unknown/release}
out=target/instructions

command -v valgrind > /dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
[ -x "$bin" ] || { echo "$bin is missing: cargo build --release -p sluice --bin sluice" >&2; exit 2; }
[ -d "$modules" ] || { echo "$modules is missing: sluice rules build rules (or set SLUICE_MODULES)" >&2; exit 2; }

mkdir -p "$out"
head -n "$lines" "$input" > "$out/input.jsonl"
messages=$(wc -l < "$out/input.jsonl")
run() {
    rm -f "$out"/callgrind.out*
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/callgrind.out" \
        "$bin" run --chain "$chain" --input "$out/input.jsonl" --output /dev/null --no-state --no-watch \
        --workers "$workers" --modules "$modules" > /dev/null 2> "$out/valgrind.log" \
        || { tail -5 "$out/valgrind.log" >&2; exit 1; }
}
run
run
echo "$messages messages, $workers worker(s): instructions per thread (thread 1 also loads the chain)"
total=0
for f in "$out"/callgrind.out-*; do
    n=$(grep -m1 '^summary' "$f" | cut -d' ' -f2)
    total=$((total + n))
    if [ "$n" -gt 1000000 ]; then
        printf '  thread %s  %14d  %8d per message\n' "${f##*-}" "$n" $((n / messages))
    fi
done
printf '  all          %14d  %8d per message\n' "$total" $((total / messages))

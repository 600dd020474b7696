#!/usr/bin/env bash
# Intake benchmark: builds of wardhook (or one build under different settings) measured side by
# side, rounds interleaved so every variant sees the same background load (each round starting
# one variant later, so none is always first); prints each run, then the medians and each
# variant's ratio to the first (docs/BENCHMARKS.md §9), p99/p50 included: with closed-loop
# connections p99 follows throughput, p99/p50 is the shape of the tail (§12).
#
#   benches/intake.sh build OUT            release builds: OUT/stub (--features bench-stub), OUT/real
#   benches/intake.sh ratio OUT            stub vs real, default config (the issue-17 table)
#   benches/intake.sh logging OUT          real build: default logging vs WARDHOOK_LOG=off
#   benches/intake.sh run LABEL=BINDIR[,VAR=VALUE...] ...   any variants; the first is the base
#   benches/intake.sh profile OUT [DIR]  one real run under `perf record` (needs linux-perf); prints
#                                       the CPU profile of the writer, HTTP worker and checkpointer
#                                       threads, top symbols each; keeps DIR/perf.data
#                                       (benches/callees.py: where one function's time goes)
#
# Each run: a fresh `serve --dev` setup in an empty directory (one NextPhone source `demo`, audit
# mirror on, INFO logging unless a variant sets WARDHOOK_LOG), listening on $PORT, then
# `wardhook-loadgen http` with unique signed bodies over $CONNECTIONS keep-alive TLS connections
# for $SECONDS s, reporting server CPU per delivery by thread group. The load generator is the
# same binary for every variant ($LOADGEN, default OUT/real's or the first variant's).
#
# Settings (environment): ROUNDS=3 CONNECTIONS=64 RUN_SECONDS=10 PORT=18443 REQUESTS=10000000
# PERF_DATA=FILE (record the server with `perf record -g` during the load; `profile` sets it).
# Measure on a quiet machine: on a shared host, hold the cargo lock for the whole run so no
# build runs beside it:  flock /tmp/wardhook-cargo.lock bash benches/intake.sh ratio OUT
# (this script never takes that lock itself; `build` expects to be run under it too).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
SECONDS_PER_RUN=${RUN_SECONDS:-10}
PORT=${PORT:-18443}
REQUESTS=${REQUESTS:-10000000}
HERE=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/common.sh
source "$HERE/benches/common.sh"

usage() { sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

build() {
  local out=$1
  mkdir -p "$out/stub" "$out/real"
  (cd "$HERE" && cargo build --release --features bench-stub --bin wardhook)
  cp "${CARGO_TARGET_DIR:-$HERE/target}/release/wardhook" "$out/stub/"
  (cd "$HERE" && cargo build --release --bin wardhook --bin wardhook-loadgen)
  cp "${CARGO_TARGET_DIR:-$HERE/target}/release/wardhook" \
     "${CARGO_TARGET_DIR:-$HERE/target}/release/wardhook-loadgen" "$out/real/"
  echo "built: $out/stub/wardhook (bench-stub), $out/real/wardhook, $out/real/wardhook-loadgen"
}

# One run of one variant: prints "LABEL ROUND summary ..." and the thread table.
one_run() {
  local label=$1 spec=$2 round=$3
  local bindir=${spec%%,*} envs=()
  [[ $spec == *,* ]] && IFS=',' read -r -a envs <<< "${spec#*,}"
  local dir; dir=$(mktemp -d)
  (
    cd "$dir"
    BINDIR=$bindir bench_config "$PORT" || exit 1
    env -u WARDHOOK_LOG "${envs[@]}" "$bindir/wardhook" serve --config bench.toml \
      > server.log 2>&1 & spid=$!
    wait_port "$PORT" || { cat server.log >&2; exit 1; }
    load=$(cut -d' ' -f1 /proc/loadavg)
    if [ -n "${PERF_DATA:-}" ]; then
      perf record -q -F 499 --call-graph dwarf,16384 -p "$spid" -o "$PERF_DATA" >/dev/null 2>&1 & ppid=$!
    fi
    "$LOADGEN" http --url "https://127.0.0.1:$PORT/hooks/demo" \
      --secret-file data/dev/demo.secret --ca data/dev/certs/dev-ca.crt \
      --connections "$CONNECTIONS" --requests "$REQUESTS" --seconds "$SECONDS_PER_RUN" \
      --server-pid "$spid" --threads > load.txt 2>&1 || { cat load.txt >&2; kill "$spid"; exit 1; }
    if [ -n "${PERF_DATA:-}" ]; then kill -INT "$ppid"; wait "$ppid" 2>/dev/null || true; fi
    kill -TERM "$spid"; wait "$spid" 2>/dev/null || true
    echo "=== $label round $round (load average before: $load; server log: $(wc -l < server.log) lines)"
    grep -v '^summary' load.txt
    echo "RESULT $label $round $(grep '^summary' load.txt | cut -d' ' -f2-)" \
      "p50_ms=$(sed -n 's/.*ack latency p50 \([0-9.]*\) ms.*/\1/p' load.txt)"
  )
  rm -rf "$dir"
}

run() {
  [ $# -ge 1 ] || usage
  local labels=() specs=()
  for v in "$@"; do labels+=("${v%%=*}"); specs+=("${v#*=}"); done
  LOADGEN=${LOADGEN:-${specs[0]%%,*}/wardhook-loadgen}
  [ -x "$LOADGEN" ] || { echo "no load generator at $LOADGEN; set LOADGEN" >&2; exit 1; }
  echo "# $(date -u +%FT%TZ) $(nproc) cores, $ROUNDS rounds x ${SECONDS_PER_RUN}s, $CONNECTIONS connections"
  echo "# uptime: $(uptime)"
  local results; results=$(mktemp)
  local n=${#labels[@]}
  for round in $(seq 1 "$ROUNDS"); do
    # Each round starts one variant later, so no variant always runs first or last.
    for k in $(seq 0 $((n - 1))); do
      local i=$(( (k + round - 1) % n ))
      one_run "${labels[$i]}" "${specs[$i]}" "$round" | tee -a "$results"
    done
  done
  echo "# uptime: $(uptime)"
  python3 - "$results" "${labels[@]}" <<'PY'
import statistics, sys
path, labels = sys.argv[1], sys.argv[2:]
rows = {}
for line in open(path):
    if not line.startswith("RESULT "):
        continue
    _, label, _round, *kv = line.split()
    d = dict(x.split("=", 1) for x in kv)
    rows.setdefault(label, []).append(d)
def num(v):
    try: return float(v)
    except ValueError: return None
def med(label, key):
    vals = [num(d[key]) for d in rows.get(label, []) if num(d.get(key, "-")) is not None]
    return (statistics.median(vals) if vals else None), vals
def fmt(x, digits=0):
    return "-" if x is None else f"{x:,.{digits}f}".replace(",", " ")
for ds in rows.values():
    for d in ds:
        if num(d.get("p99_ms", "-")) and num(d.get("p50_ms", "-")):
            # The tail's shape: with closed-loop connections p99 follows throughput, p99/p50 less so.
            d["p99_over_p50"] = str(float(d["p99_ms"]) / float(d["p50_ms"]))
keys = [("accepted_per_s", "accepted/s", 0), ("p99_ms", "p99 ack ms", 2), ("p99_over_p50", "p99/p50", 2),
        ("server_cpu_us", "server CPU µs/delivery", 1), ("writer_cpu_us", "writer CPU µs/delivery", 1)]
print()
print("| variant | " + " | ".join(f"{h} (rounds) | median" for _, h, _ in keys) + " | failed |")
print("|---" * (2 * len(keys) + 2) + "|")
for label in labels:
    cells = []
    for key, _, digits in keys:
        m, vals = med(label, key)
        cells += [", ".join(fmt(v, digits) for v in vals), fmt(m, digits)]
    failed = sum(int(d.get("failed", "0")) for d in rows.get(label, []))
    print(f"| {label} | " + " | ".join(cells) + f" | {failed} |")
base = labels[0]
print()
print(f"| variant | throughput / {base} | p99 / {base} | p99/p50 / {base} | server CPU / {base} | writer CPU / {base} |")
print("|---|---:|---:|---:|---:|---:|")
for label in labels:
    cells = []
    for key, _, _ in keys:
        a, b = med(label, key)[0], med(base, key)[0]
        cells.append("-" if a is None or not b else f"{a / b:.3f}")
    print(f"| {label} | " + " | ".join(cells) + " |")
PY
  rm -f "$results"
}

cmd=${1:-}; shift || true
case "$cmd" in
  build) [ $# -eq 1 ] || usage; build "$1" ;;
  ratio) [ $# -eq 1 ] || usage; out=$(cd "$1" && pwd)
         LOADGEN=${LOADGEN:-$out/real/wardhook-loadgen} run "stub=$out/stub" "real=$out/real" ;;
  logging) [ $# -eq 1 ] || usage; out=$(cd "$1" && pwd)
         run "log-off=$out/real,WARDHOOK_LOG=off" "log-default=$out/real" ;;
  run) run "$@" ;;
  profile) [ $# -ge 1 ] || usage; out=$(cd "$1" && pwd); keep=${2:-$(mktemp -d)}; mkdir -p "$keep"
         PERF_DATA=$keep/perf.data LOADGEN=${LOADGEN:-$out/real/wardhook-loadgen} \
           one_run real "$out/real" 1
         # Self time by thread and symbol, then the same with callers folded in per thread.
         perf report -i "$keep/perf.data" --no-children --sort comm,sym --stdio 2>/dev/null \
           | grep -v '^$' | grep -E '^ +[0-9]' | head -80
         for t in wardhook-store- 'actix-server wo' wardhook-ckpt; do
           echo "### children, thread '$t'"
           perf report -i "$keep/perf.data" --children --comm "$t" --sort sym --stdio \
             -g none --percent-limit 2 2>/dev/null | grep -E '^ +[0-9]' | head -45
         done ;;
  *) usage ;;
esac

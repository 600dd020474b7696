#!/usr/bin/env bash
# How long a server killed under load takes to serve again: SQLite reads the whole WAL back at
# open after a crash, so this is the cost of the WAL's size (docs/STORAGE.md, "The WAL").
#
#   benches/restart-after-kill.sh BINDIR [ROUNDS]
#
# BINDIR holds `wardhook` and `wardhook-loadgen` (benches/intake.sh build OUT → OUT/real). Each
# round: a fresh `serve --dev` setup in an empty directory, 8 s of load (64 connections, unique
# signed bodies), SIGKILL, then the time from starting the server again until `/readyz` answers
# 200 (it writes a probe through the store). Loopback only; stops by itself.
set -euo pipefail
BINDIR=$(cd "${1:?usage: $0 BINDIR [ROUNDS]}" && pwd)
ROUNDS=${2:-3}
PORT=${PORT:-18443}
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
for round in $(seq 1 "$ROUNDS"); do
  dir=$(mktemp -d)
  (
    cd "$dir"
    bench_config "$PORT" || exit 1
    "$BINDIR/wardhook" serve --config bench.toml > server.log 2>&1 & spid=$!
    wait_port "$PORT" || { cat server.log >&2; exit 1; }
    "$BINDIR/wardhook-loadgen" http --url "https://127.0.0.1:$PORT/hooks/demo" \
      --secret-file data/dev/demo.secret --ca data/dev/certs/dev-ca.crt \
      --connections 64 --requests 10000000 --seconds 10 > load.txt 2>&1 & lp=$!
    sleep 8
    kill -KILL "$spid"; wait "$spid" 2>/dev/null || true
    wait "$lp" 2>/dev/null || true
    wal=$(stat -c %s data/dev/wardhook.db-wal)
    t0=$(date +%s%N)
    "$BINDIR/wardhook" serve --config bench.toml > server2.log 2>&1 & spid=$!
    ready=no
    for _ in $(seq 1 3000); do
      if curl -sf -o /dev/null --cacert data/dev/certs/dev-ca.crt "https://127.0.0.1:$PORT/readyz"; then
        ready=yes; break
      fi
      sleep 0.01
    done
    t1=$(date +%s%N)
    kill -TERM "$spid"; wait "$spid" 2>/dev/null || true
    [ "$ready" = yes ] || { echo "round $round: not ready after 30 s" >&2; exit 1; }
    echo "round $round: WAL at kill $((wal / 1048576)) MiB, ready again after $(( (t1 - t0) / 1000000 )) ms"
  )
  rm -rf "$dir"
done

#!/usr/bin/env bash
# One benchmark run: NODES wardhook servers (ports 8443..) on BACKEND (sqlite | postgres, a
# fresh database each run), one loadgen per node with C connections, N requests each, at most
# S seconds. Prints each loadgen's summary line (add the nodes' accepted/s for the total).
# usage: benches/postgres-nodes.sh BINDIR BACKEND NODES C N S   (docs/BENCHMARKS.md §6)
# PostgreSQL: the test server of deploy/ci/start-test-postgres.sh (PGADMIN below).
set -euo pipefail
BIN=$1; BACKEND=$2; NODES=$3; C=$4; N=$5; S=$6
PGADMIN=${PGADMIN:-postgres://wardhook_test:wardhook_test@127.0.0.1:5432/postgres}
W=$(mktemp -d); cd "$W"
# `serve --dev` writes data/dev (dev CA, certificates, master key, demo secret, config).
WARDHOOK_LOG=error "$BIN/wardhook" serve --dev >/dev/null 2>&1 & P=$!
for _ in $(seq 1 50); do [ -f data/dev/wardhook.toml ] && sleep 0.5 && break; sleep 0.2; done
kill $P; wait $P 2>/dev/null || true
DB="bench_$$_$(date +%s)"
if [ "$BACKEND" = postgres ]; then
  psql -q "$PGADMIN" -c "CREATE DATABASE $DB"
  echo "${PGADMIN%/postgres}/$DB" > data/dev/pg.url
fi
PIDS=()
for i in $(seq 1 "$NODES"); do
  port=$((8442 + i))
  {
    sed -e "s/127.0.0.1:8443/127.0.0.1:$port/" data/dev/wardhook.toml
    printf '\n[admin]\nenabled = false\n'
  } > node$i.toml
  if [ "$BACKEND" = postgres ]; then
    python3 - node$i.toml $i <<'PY'
import sys
p, i = sys.argv[1], sys.argv[2]
s = open(p).read()
s = s.replace('[storage]\n', '[storage]\nbackend = "postgres"\n', 1)
s += '\n[storage.postgres]\nurl = "file:data/dev/pg.url"\ntls = "disable"\nnode_id = "node-%s"\n' % i
open(p, 'w').write(s)
PY
  fi
  WARDHOOK_LOG=warn "$BIN/wardhook" serve --config node$i.toml > node$i.log 2>&1 &
  PIDS+=($!)
done
for i in $(seq 1 "$NODES"); do
  port=$((8442 + i))
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
# Server CPU per delivery only for one node (each loadgen divides by its own count).
PIDARGS=(); [ "$NODES" = 1 ] && PIDARGS=(--server-pid "${PIDS[0]}")
LPIDS=()
for i in $(seq 1 "$NODES"); do
  port=$((8442 + i))
  "$BIN/wardhook-loadgen" http --url "https://127.0.0.1:$port/hooks/demo" \
    --secret-file data/dev/demo.secret --ca data/dev/certs/dev-ca.crt \
    --connections "$C" --requests "$N" --seconds "$S" "${PIDARGS[@]}" > load$i.txt 2>&1 &
  LPIDS+=($!)
done
for p in "${LPIDS[@]}"; do wait "$p"; done
for p in "${PIDS[@]}"; do kill "$p"; done
for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
for i in $(seq 1 "$NODES"); do echo "node$i: $(tr '\n' ' ' < load$i.txt)"; done
if [ "$BACKEND" = postgres ]; then
  psql -q "$PGADMIN" -c "DROP DATABASE $DB WITH (FORCE)"
fi
echo "dir: $W"

#!/usr/bin/env bash
# Relay benchmark: direct intake (one `serve` node) against a DMZ relay + inside node on the same
# machine, rounds interleaved so both variants see the same background load; prints each run and
# the medians (docs/BENCHMARKS.md §10).
#
#   benches/relay.sh BINDIR        BINDIR holds release builds of wardhook and wardhook-loadgen
#                                  (cargo build --release --bins)
#
# Set-up (once, in a temporary folder): a CA, a server certificate for localhost and a client
# certificate (CN inside-node) made with openssl; master keys with `wardhook keygen`; the inside
# key pair with `wardhook relay keygen`. Every config is the `serve --dev` one (one NextPhone
# source `demo`, audit mirror on, default INFO logging), admin listener off; the relay adds
# `[relay_server]` (pull listener with client certificates from the CA), the inside node adds
# `[relay]` with the defaults (batch 100, long poll 25 s).
#
# Each run starts from empty databases. The load is `wardhook-loadgen http` with unique signed
# bodies over $CONNECTIONS keep-alive TLS connections for $RUN_SECONDS s, at the direct node or
# at the relay; accepted/s and p99 are what the sender saw (for the relay: its 200 after the
# sealed record is committed). After the load the script waits until the inside node has drained
# the relay (at most $DRAIN_SECONDS s) and reports the CPU time of the server processes from the
# start of the load to the end of the drain (utime + stime from /proc) per delivery stored
# inside — relay and inside separately and together. It also counts the deliveries stored
# inside and says on stderr when that differs from what the sender saw accepted.
#
# Settings (environment): ROUNDS=3 CONNECTIONS=64 RUN_SECONDS=15 DRAIN_SECONDS=120 PORT=18443
# (uses PORT..PORT+3). Measure on a quiet machine; on a shared host hold the cargo lock for the
# whole run so no build runs beside it:
#   flock /tmp/wardhook-cargo.lock bash benches/relay.sh "$CARGO_TARGET_DIR/release"
set -euo pipefail

ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
RUN_SECONDS=${RUN_SECONDS:-15}
DRAIN_SECONDS=${DRAIN_SECONDS:-120}
PORT=${PORT:-18443}
REQUESTS=${REQUESTS:-10000000}
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"

[ $# -eq 1 ] || { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
BIN=$(cd "$1" && pwd)
W=$BIN/wardhook
LOADGEN=$BIN/wardhook-loadgen
[ -x "$W" ] && [ -x "$LOADGEN" ] || { echo "no wardhook / wardhook-loadgen in $BIN" >&2; exit 1; }
TICK=$(getconf CLK_TCK)

BASE=$(mktemp -d)
trap 'rm -rf "$BASE"' EXIT

setup() {
  cd "$BASE"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench-ca -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout server.key -out server.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > s.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile s.ext -out server.crt 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=inside-node \
    -keyout client.key -out client.csr 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > c.ext
  openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile c.ext -out client.crt 2>/dev/null
  head -c 32 /dev/urandom | base64 > demo.secret
  chmod 600 ./*.key demo.secret
  for n in direct relay inside; do
    mkdir -p "$n"
    "$W" keygen --out "$n/master.key" >/dev/null
  done
  local pk; pk=$("$W" relay keygen --out inside/relay.key 2>/dev/null | grep -o 'whrelay-pk1:[A-Za-z0-9+/=]*' | head -1)
  common() { # name listen
    cat <<EOF
[server]
listen = "127.0.0.1:$2"
tls = { cert = "$BASE/server.crt", key = "$BASE/server.key" }

[storage]
path = "$BASE/$1/data/wardhook.db"

[keys]
master_key_file = "$BASE/$1/master.key"

[audit]
dir = "$BASE/$1/data/audit"

[admin]
enabled = false

[[sources]]
name = "demo"
preset = "nextphone"
secrets = ["file:$BASE/demo.secret"]
EOF
  }
  common direct "$PORT" > direct/wardhook.toml
  { common relay $((PORT + 1))
    printf '\n[relay_server]\npublic_key = "%s"\npull_listen = "127.0.0.1:%s"\n' "$pk" $((PORT + 2))
    printf 'pull_tls = { cert = "%s/server.crt", key = "%s/server.key", client_ca = "%s/ca.crt" }\n' \
      "$BASE" "$BASE" "$BASE"; } > relay/wardhook.toml
  { common inside $((PORT + 3))
    printf '\n[relay]\nurl = "https://localhost:%s"\nca = "%s/ca.crt"\n' $((PORT + 2)) "$BASE"
    printf 'client_cert = "%s/client.crt"\nclient_key = "%s/client.key"\n' "$BASE" "$BASE"
    printf 'private_keys = ["file:%s/inside/relay.key"]\n' "$BASE"; } > inside/wardhook.toml
  cd - >/dev/null
}

ticks() { # pid -> utime + stime
  awk '{print $14 + $15}' "/proc/$1/stat"
}

rows() { # db table
  python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from ' + sys.argv[2]).fetchone()[0])" "$1" "$2"
}

load() { # port pid... -> load.txt
  local port=$1; shift
  local pids=(); for p in "$@"; do pids+=(--server-pid "$p"); done
  "$LOADGEN" http --url "https://127.0.0.1:$port/hooks/demo" --secret-file "$BASE/demo.secret" \
    --ca "$BASE/ca.crt" --connections "$CONNECTIONS" --requests "$REQUESTS" \
    --seconds "$RUN_SECONDS" "${pids[@]}" > "$BASE/load.txt" 2>&1 \
    || { cat "$BASE/load.txt" >&2; return 1; }
}

summary() { grep '^summary' "$BASE/load.txt" | cut -d' ' -f2-; }
accepted() { grep -o 'accepted [0-9]*' "$BASE/load.txt" | head -1 | cut -d' ' -f2; }
check_stored() { # label round stored: every accepted delivery is stored once, none lost
  local a; a=$(accepted)
  [ "$a" = "$3" ] || echo "$1 round $2: $a accepted but $3 stored" >&2
}

direct_run() {
  local round=$1
  rm -rf "$BASE/direct/data"
  "$W" serve --config "$BASE/direct/wardhook.toml" > "$BASE/direct.log" 2>&1 & local d=$!
  wait_port "$PORT"
  local t0; t0=$(ticks "$d")
  load "$PORT" "$d"
  local t1; t1=$(ticks "$d")
  kill -TERM "$d"; wait "$d" 2>/dev/null || true
  local n; n=$(rows "$BASE/direct/data/wardhook.db" deliveries)
  check_stored direct "$round" "$n"
  echo "RESULT direct $round $(summary) accepted=$(accepted) stored=$n drain_s=0" \
    "cpu_us=$(( (t1 - t0) * 1000000 / TICK / n ))" "relay_cpu_us=-" "inside_cpu_us=-"
}

relay_run() {
  local round=$1
  rm -rf "$BASE/relay/data" "$BASE/inside/data"
  "$W" relay --config "$BASE/relay/wardhook.toml" > "$BASE/relay.log" 2>&1 & local r=$!
  "$W" serve --config "$BASE/inside/wardhook.toml" > "$BASE/inside.log" 2>&1 & local i=$!
  wait_port $((PORT + 1)); wait_port $((PORT + 3))
  local r0 i0; r0=$(ticks "$r"); i0=$(ticks "$i")
  load $((PORT + 1)) "$r" "$i"
  local end=$((SECONDS + DRAIN_SECONDS)) start=$SECONDS backlog
  while :; do
    backlog=$(rows "$BASE/relay/data/wardhook.db" relay_sealed)
    [ "$backlog" = 0 ] || [ $SECONDS -ge $end ] && break
    sleep 0.2
  done
  local drain=$((SECONDS - start))
  local r1 i1; r1=$(ticks "$r"); i1=$(ticks "$i")
  kill -TERM "$r" "$i"; wait "$r" "$i" 2>/dev/null || true
  local n; n=$(rows "$BASE/inside/data/wardhook.db" deliveries)
  [ "$backlog" = 0 ] || echo "relay round $round: $backlog records not drained after ${DRAIN_SECONDS}s" >&2
  check_stored relay "$round" "$n"
  echo "RESULT relay $round $(summary) accepted=$(accepted) stored=$n drain_s=$drain" \
    "cpu_us=$(( (r1 - r0 + i1 - i0) * 1000000 / TICK / n ))" \
    "relay_cpu_us=$(( (r1 - r0) * 1000000 / TICK / n ))" \
    "inside_cpu_us=$(( (i1 - i0) * 1000000 / TICK / n ))"
}

setup
echo "# $(date -u +%FT%TZ) $(nproc) cores, $ROUNDS rounds x ${RUN_SECONDS}s, $CONNECTIONS connections"
echo "# uptime: $(uptime)"
results=$BASE/results
for round in $(seq 1 "$ROUNDS"); do
  direct_run "$round" | tee -a "$results"
  relay_run "$round" | tee -a "$results"
done
echo "# uptime: $(uptime)"
python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    _, label, _round, *kv = line.split()
    rows.setdefault(label, []).append(dict(x.split("=", 1) for x in kv))
def vals(label, key):
    out = []
    for d in rows.get(label, []):
        try: out.append(float(d[key]))
        except (KeyError, ValueError): pass
    return out
def cell(label, key, digits):
    v = vals(label, key)
    if not v: return "-", "-"
    f = lambda x: f"{x:,.{digits}f}".replace(",", " ")
    return ", ".join(f(x) for x in v), f(statistics.median(v))
keys = [("accepted_per_s", "deliveries/s", 0), ("p99_ms", "p99 ack ms", 2),
        ("cpu_us", "server CPU µs/delivery", 0), ("relay_cpu_us", "relay CPU", 0),
        ("inside_cpu_us", "inside CPU", 0), ("drain_s", "drain s", 0)]
print()
print("| variant | " + " | ".join(f"{h} (rounds) | median" for _, h, _ in keys) + " | failed |")
print("|---" * (2 * len(keys) + 2) + "|")
for label in ("direct", "relay"):
    cells = []
    for key, _, digits in keys:
        cells += cell(label, key, digits)
    failed = sum(int(d.get("failed", "0")) for d in rows.get(label, []))
    print(f"| {label} | " + " | ".join(cells) + f" | {failed} |")
PY

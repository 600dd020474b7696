# Shared by the benchmark scripts (sourced): the dev setup every run starts from.

# In the current directory: `serve --dev` writes data/dev (CA, certificate, master key, demo
# secret, config); keep them, drop its database, and write bench.toml with the listener on
# $1 and the admin console on $1 + 1, so a developer's dev server does not collide. Needs
# BINDIR (the folder holding `wardhook`). Fails if the port is taken.
bench_config() {
  local port=$1
  WARDHOOK_LOG=error "$BINDIR/wardhook" serve --dev >/dev/null 2>&1 & local p=$!
  for _ in $(seq 1 100); do [ -f data/dev/wardhook.toml ] && sleep 0.3 && break; sleep 0.1; done
  kill "$p"; wait "$p" 2>/dev/null || true
  rm -f data/dev/*.db data/dev/*.db-wal data/dev/*.db-shm
  { sed -e "s/127.0.0.1:8443/127.0.0.1:$port/" data/dev/wardhook.toml
    printf '\n[admin]\nlisten = "127.0.0.1:%s"\n' $((port + 1)); } > bench.toml
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is taken; set PORT" >&2; return 1
  fi
}

# Wait (up to 10 s) until something listens on loopback port $1.
wait_port() {
  for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "nothing listens on $1" >&2; return 1
}

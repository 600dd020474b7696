#!/usr/bin/env bash
# Install the Debian package on this machine and walk deploy/INSTALL.md's first steps with it:
# maintainer scripts, users, folder modes, the conffile, a served and deduplicated delivery from
# the installed paths, then remove and purge (the data must stay). For throwaway machines (CI):
# it runs as root, creates the wardhook user and removes everything it made at the end.
#
# The package is built from the test build's binary (`--profile dev`, stripped) so CI needs no
# release build; the layout and scripts are the release package's.
#
# usage: deploy/ci/check-deb.sh            (from the source tree, after `cargo build`)
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
  echo "check-deb: must run as root (it installs a package)" >&2
  exit 2
fi
if dpkg -s wardhook >/dev/null 2>&1 || getent passwd wardhook >/dev/null; then
  echo "check-deb: wardhook is already installed or its user exists; refusing to touch it" >&2
  exit 2
fi

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  set +e
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  dpkg -P wardhook >/dev/null 2>&1
  rm -rf /var/lib/wardhook /var/log/wardhook /etc/wardhook /run/credentials/wardhook.service
  getent passwd wardhook >/dev/null && deluser --quiet --system wardhook >/dev/null 2>&1
  getent group wardhook >/dev/null && delgroup --quiet --system wardhook >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "check-deb: FAIL: $*" >&2; exit 1; }
expect_mode() { # path, "mode owner:group"
  local got
  got=$(stat -c '%a %U:%G' "$1")
  [ "$got" = "$2" ] || fail "$1 is $got, expected $2"
  echo "  ok  $1 $got"
}

if ! command -v cargo-deb >/dev/null; then
  echo "== installing cargo-deb"
  cargo install --quiet --locked cargo-deb --version 3.8.0
fi
[ -x target/debug/wardhook ] || cargo build --quiet --bin wardhook

echo "== building the package"
cargo deb --quiet --no-build --profile dev --strip -o "$WORK/wardhook.deb"

echo "== installing it"
apt-get install -y -qq "$WORK/wardhook.deb" >"$WORK/install.log" 2>&1 \
  || { cat "$WORK/install.log"; fail "apt-get install"; }
grep -q "wardhook is installed but not configured" "$WORK/install.log" \
  || fail "postinst did not print the next steps"
getent passwd wardhook | grep -q ":/var/lib/wardhook:/usr/sbin/nologin$" \
  || fail "system user wardhook (home /var/lib/wardhook, no shell)"
expect_mode /var/lib/wardhook "700 wardhook:wardhook"
expect_mode /var/log/wardhook "750 wardhook:adm"
expect_mode /etc/wardhook/credentials "700 root:root"
expect_mode /etc/wardhook/tls "750 root:wardhook"
expect_mode /etc/wardhook/wardhook.toml "640 root:wardhook"
[ -f /usr/lib/systemd/system/wardhook.service ] || fail "systemd unit missing"

echo "== INSTALL.md's first steps: key, sender secret, certificate, credentials"
wardhook keygen --out /etc/wardhook/credentials/master.key >/dev/null
expect_mode /etc/wardhook/credentials/master.key "600 root:root"
head -c 32 /dev/urandom | base64 | install -m 0600 /dev/stdin /etc/wardhook/credentials/nextphone.secret
(
  cd "$WORK"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
    -out ca.crt -days 2 -subj "/CN=check-deb CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key \
    -out server.csr -subj "/CN=localhost" 2>/dev/null
  printf "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n" >ext.cnf
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
    -days 2 -extfile ext.cnf 2>/dev/null
)
# The CA is public: the service user's `send-test` reads it.
chmod 0755 "$WORK" && chmod 0644 "$WORK/ca.crt"
install -m 0644 -o root -g wardhook "$WORK/server.crt" /etc/wardhook/tls/server.crt
install -m 0600 -o wardhook -g wardhook "$WORK/server.key" /etc/wardhook/tls/server.key
# What the unit's LoadCredential= lines do when systemd starts the service.
install -d -m 0700 -o wardhook -g wardhook /run/credentials/wardhook.service
for c in master.key nextphone.secret; do
  install -m 0400 -o wardhook -g wardhook "/etc/wardhook/credentials/$c" \
    "/run/credentials/wardhook.service/$c"
done

W=(runuser -u wardhook -- wardhook)
CFG=(--config /etc/wardhook/wardhook.toml)
cd /var/lib/wardhook
"${W[@]}" check-config "${CFG[@]}" || fail "check-config of the packaged config"

echo "== serving from the installed paths (as the unit would: user wardhook, umask 0077)"
runuser -u wardhook -- bash -c 'umask 0077; exec wardhook serve --config /etc/wardhook/wardhook.toml' \
  >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -sf --cacert "$WORK/ca.crt" https://localhost:8443/readyz >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.log"; fail "server exited"; }
  sleep 0.1
done
curl -sf --cacert "$WORK/ca.crt" https://localhost:8443/readyz | grep -q '"ready"' \
  || fail "readyz"
first=$("${W[@]}" send-test "${CFG[@]}" --source nextphone --ca "$WORK/ca.crt") \
  || fail "send-test: $first"
echo "$first" | grep -q '"accepted"' || fail "first delivery not accepted: $first"
again=$("${W[@]}" send-test "${CFG[@]}" --source nextphone --ca "$WORK/ca.crt") \
  || fail "send-test (retry): $again"
echo "$again" | grep -q '"duplicate"' || fail "retry not answered duplicate: $again"
"${W[@]}" deliveries list "${CFG[@]}" | grep -q "^1 deliveries" || fail "deliveries list"
"${W[@]}" doctor "${CFG[@]}" >"$WORK/doctor.log" 2>&1 || { cat "$WORK/doctor.log"; fail "doctor"; }
kill "$SERVER_PID"
wait "$SERVER_PID" || true
SERVER_PID=
grep -q "wardhook stopped" "$WORK/serve.log" || fail "no clean stop on SIGTERM"
"${W[@]}" audit verify "${CFG[@]}" >/dev/null || fail "audit verify"
# Written under the unit's umask: nothing in the data or log folders is readable by others.
others=$(find /var/lib/wardhook /var/log/wardhook -perm /o=rwx | head -5)
[ -z "$others" ] || fail "readable by others: $others"
echo "  ok  served, deduplicated, audited; no file readable by others"

echo "== remove, then purge: the binary goes, the data and keys stay"
dpkg -r wardhook >/dev/null
[ ! -e /usr/bin/wardhook ] || fail "binary left after remove"
[ -f /etc/wardhook/wardhook.toml ] || fail "conffile removed by remove"
dpkg -P wardhook >"$WORK/purge.log" 2>&1
grep -q "were left in place" "$WORK/purge.log" || fail "purge did not say what it kept"
[ -f /var/lib/wardhook/wardhook.db ] || fail "database removed by purge"
[ -f /etc/wardhook/credentials/master.key ] || fail "master key removed by purge"
echo "check-deb: ok"

#!/usr/bin/env bash
# Start Debian's PostgreSQL on loopback for the PostgreSQL backend's tests, and create the
# role they use (allowed to create a database per test). Idempotent: safe to run again.
# Needs root (it runs psql as the postgres user). Local use, same as CI:
#   sudo bash deploy/ci/start-test-postgres.sh
#   export WARDHOOK_TEST_POSTGRES_URL=postgres://wardhook_test:wardhook_test@127.0.0.1:5432/postgres
#   export WARDHOOK_TEST_POSTGRES_CA=/etc/postgresql/15/main/wardhook-test-tls/ca.crt
set -euo pipefail

cluster=$(pg_lsclusters -h | awk 'NR == 1 { print $1 " " $2 }')
if [ -z "$cluster" ]; then
  version=$(ls /usr/lib/postgresql | sort -V | tail -1)
  pg_createcluster "$version" main >/dev/null
  cluster="$version main"
fi
set -- $cluster
# Debian's default is listen_addresses = 'localhost'; say so explicitly for the test server.
pg_conftool "$1" "$2" set listen_addresses localhost
if ! pg_lsclusters -h | awk -v v="$1" -v n="$2" '$1 == v && $2 == n { print $4 }' | grep -q online; then
  pg_ctlcluster "$1" "$2" start
fi
for _ in $(seq 1 30); do
  pg_isready -h 127.0.0.1 -q && break
  sleep 1
done
# TLS with a throwaway CA, so the tests can check that wardhook verifies the server's
# certificate (and refuses one from another CA). WARDHOOK_TEST_POSTGRES_CA names the CA file.
tls_dir=/etc/postgresql/$1/$2/wardhook-test-tls
if [ ! -f "$tls_dir/server.crt" ]; then
  mkdir -p "$tls_dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=wardhook test CA" -keyout "$tls_dir/ca.key" -out "$tls_dir/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$tls_dir/server.key" -out "$tls_dir/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' > "$tls_dir/ext.cnf"
  openssl x509 -req -in "$tls_dir/server.csr" -CA "$tls_dir/ca.crt" -CAkey "$tls_dir/ca.key" \
    -CAcreateserial -days 3650 -extfile "$tls_dir/ext.cnf" -out "$tls_dir/server.crt" 2>/dev/null
  chown -R postgres:postgres "$tls_dir"
  chmod 600 "$tls_dir/server.key" "$tls_dir/ca.key"
  chmod 644 "$tls_dir/ca.crt"
fi
pg_conftool "$1" "$2" set ssl on
pg_conftool "$1" "$2" set ssl_cert_file "$tls_dir/server.crt"
pg_conftool "$1" "$2" set ssl_key_file "$tls_dir/server.key"
pg_ctlcluster "$1" "$2" reload
su postgres -c "psql -q -v ON_ERROR_STOP=1" <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'wardhook_test') THEN
    CREATE ROLE wardhook_test LOGIN CREATEDB PASSWORD 'wardhook_test';
  END IF;
END $$;
SQL
echo "PostgreSQL $1/$2 ready on 127.0.0.1:5432 (role wardhook_test, TLS CA $tls_dir/ca.crt)"

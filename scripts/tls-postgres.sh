#!/usr/bin/env bash
# Starts a throwaway PostgreSQL that accepts only TLS connections, with a
# certificate authority and server certificate made here, for the ledger's
# TLS test. Prints the variables to export (AGENTRUN_TEST_TLS_DATABASE_URL,
# AGENTRUN_TEST_TLS_CA, AGENTRUN_TEST_TLS_DIR, AGENTRUN_TEST_TLS_PG_CTL);
# stop it with `$AGENTRUN_TEST_TLS_PG_CTL -D "$AGENTRUN_TEST_TLS_DIR/data" stop`. Prints nothing and exits 1
# when initdb or openssl is missing.
set -euo pipefail
initdb=$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -n 1 || true)
command -v openssl >/dev/null && [ -n "$initdb" ] || exit 1
bin=$(dirname "$initdb")
dir=$(mktemp -d)
cd "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=agentrun test CA" \
  -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > san.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
  -extfile san.ext -out server.crt 2>/dev/null
chmod 600 server.key
# PostgreSQL refuses to run as root.
as_owner=()
if [ "$(id -u)" -eq 0 ]; then
  chown -R postgres "$dir"
  as_owner=(runuser -u postgres --)
fi
"${as_owner[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust >/dev/null
printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n' > "$dir/data/pg_hba.conf"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -o \
  "-p $port -k $dir -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key" \
  start >/dev/null
echo "export AGENTRUN_TEST_TLS_DATABASE_URL=postgres://postgres@localhost:$port/postgres"
echo "export AGENTRUN_TEST_TLS_CA=$dir/ca.crt"
echo "export AGENTRUN_TEST_TLS_DIR=$dir"
echo "export AGENTRUN_TEST_TLS_PG_CTL=$bin/pg_ctl"

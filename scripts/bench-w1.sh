#!/usr/bin/env bash
# W1 side by side: agentrun's durable step throughput, then the physical
# reference (pgbench, one single-row INSERT per transaction, same client
# count) on the same PostgreSQL. Repeats both RUNS times (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."

server="${BENCH_SERVER_URL:-$(scripts/ensure-postgres.sh)}"
url="$server/agentrun_bench"
runs="${RUNS:-3}"
clients="${CLIENTS:-64}"
seconds="${SECONDS_PER_RUN:-10}"

cargo build --release --bin agentrun >&2
psql "$server/postgres" -qc "CREATE DATABASE agentrun_bench" 2>/dev/null || true
psql "$url" -qc "CREATE TABLE IF NOT EXISTS pgbench_reference (id bigserial PRIMARY KEY, v int NOT NULL)"
script=$(mktemp)
echo "INSERT INTO pgbench_reference (v) VALUES (1);" > "$script"

for i in $(seq "$runs"); do
  echo "== run $i =="
  BENCH_DATABASE_URL="$url" ./target/release/agentrun bench w1 --concurrency "$clients" --seconds "$seconds"
  echo "-- pgbench reference"
  pgbench -n -c "$clients" -j 2 -T "$seconds" -f "$script" "$url" 2>/dev/null | grep -E "^tps|latency average"
done
rm -f "$script"

#!/usr/bin/env bash
# A/B of two tern builds on the test Cassandra (scripts/cassandra/run.sh start): deliveries (one per connection) and
# POP3 logins, alternating A, B, A, B; each build on its own keyspace.
set -euo pipefail
A=$1; B=$2
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
# shellcheck source=bench/lib-tern.sh
source "$(dirname "$0")/lib-tern.sh"
for side in a b; do
  bin=$A; port=20100
  [ $side = b ] && bin=$B && port=20200
  start_tern $side "$bin" $port "" "[store]
backend = \"cassandra\"
[cassandra]
keyspace = \"ab_${side}_$(date +%s)\""
  "$bin" bench setup --admin-url "http://127.0.0.1:$((port + 80))" --users 50 >/dev/null
done
j() { python3 -c "import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(f\"{r['ops_per_sec']:.0f}/s p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms\")"; }
for round in 1 2; do
  for x in a b; do
    port=$([ $x = a ] && echo 201 || echo 202)
    d1=$("$B" bench deliver --server 127.0.0.1:${port}25 --messages 1500 --users 50 --concurrency 1 | j)
    d16=$("$B" bench deliver --server 127.0.0.1:${port}25 --messages 3000 --users 50 --concurrency 16 | j)
    p1=$("$B" bench pop3 --server 127.0.0.1:${port}10 --mode stat --users 50 --concurrency 1 --duration 5 | j)
    p16=$("$B" bench pop3 --server 127.0.0.1:${port}10 --mode stat --users 50 --concurrency 16 --duration 5 | j)
    echo "round $round $x: deliver c1 $d1 | deliver c16 $d16 | login c1 $p1 | login c16 $p16"
  done
done

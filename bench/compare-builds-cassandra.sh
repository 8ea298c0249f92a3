#!/usr/bin/env bash
# A/B of two tern builds on the test Cassandra (scripts/cassandra/run.sh start): deliveries (one per connection) and
# POP3 logins, alternating A, B, A, B; each build on its own keyspace.
set -euo pipefail
A=$1; B=$2
work=$(mktemp -d)
start() { # BIN NAME PORTPREFIX
  cat > "$work/$2.toml" <<TOML
[server]
data_dir = "$work/$2"
[smtp]
listen = "127.0.0.1:${3}25"
[pop3]
listen = "127.0.0.1:${3}10"
[admin]
listen = "127.0.0.1:${3}80"
[log]
level = "warn"
[store]
backend = "cassandra"
[cassandra]
keyspace = "ab_$2_$(date +%s)"
TOML
  "$1" serve --config "$work/$2.toml" 2> "$work/$2.log" &
  echo $! > "$work/$2.pid"
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:${3}80/healthcheck" >/dev/null && break; sleep 0.2; done
  "$1" bench setup --admin-url "http://127.0.0.1:${3}80" --users 50 >/dev/null
}
start "$A" a 201
start "$B" b 202
trap 'kill $(cat $work/a.pid) $(cat $work/b.pid) 2>/dev/null; rm -rf $work' EXIT
j() { python3 -c "import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(f\"{r['ops_per_sec']:.0f}/s p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms\")"; }
cpu() { awk '{print $14 + $15}' /proc/$(cat $work/$1.pid)/stat; }
for round in 1 2; do
  for x in a b; do
    port=$([ $x = a ] && echo 201 || echo 202)
    c0=$(cpu $x)
    d1=$("$B" bench deliver --server 127.0.0.1:${port}25 --messages 1500 --users 50 --concurrency 1 | j)
    d16=$("$B" bench deliver --server 127.0.0.1:${port}25 --messages 3000 --users 50 --concurrency 16 | j)
    p1=$("$B" bench pop3 --server 127.0.0.1:${port}10 --mode stat --users 50 --concurrency 1 --duration 5 | j)
    p16=$("$B" bench pop3 --server 127.0.0.1:${port}10 --mode stat --users 50 --concurrency 16 --duration 5 | j)
    echo "round $round $x: deliver c1 $d1 | deliver c16 $d16 | login c1 $p1 | login c16 $p16"
  done
done

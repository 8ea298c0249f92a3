#!/usr/bin/env bash
# Two datacenters on one machine: a Cassandra node per datacenter (dc1 on 127.0.0.1, dc2 on
# 127.0.0.2, replication dc1:1 dc2:1) and a Tern node in each, each talking only to its own
# datacenter at LOCAL_QUORUM. Mail delivered in dc1 is read in dc2; then dc2's Cassandra is
# stopped and dc1 goes on delivering and serving POP3 as if nothing happened.
#
#   bench/two-datacenters.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q --manifest-path "$root/Cargo.toml"
T="$root/target/release/tern"
C="$root/scripts/cassandra/run.sh"
home="${TERN_CASSANDRA_HOME:-$HOME/.cache/tern-cassandra}"
export TERN_CASSANDRA_HEAP=1G
dc1=(env TERN_CASSANDRA_RUN="$home/dc1" TERN_CASSANDRA_DC=dc1 TERN_CASSANDRA_ADDRESS=127.0.0.1 TERN_CASSANDRA_TOKEN=0 TERN_CASSANDRA_JMX_PORT=7199)
dc2=(env TERN_CASSANDRA_RUN="$home/dc2" TERN_CASSANDRA_DC=dc2 TERN_CASSANDRA_ADDRESS=127.0.0.2 TERN_CASSANDRA_TOKEN=4611686018427387904 TERN_CASSANDRA_JMX_PORT=7299)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "${dc2[@]}" "$C" stop >/dev/null 2>&1 || true
  "${dc1[@]}" "$C" stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"${dc1[@]}" "$C" start
"${dc2[@]}" "$C" start
ks="twodc_$(date +%s)"

node() { # NAME DC ADDRESS PORT-PREFIX
  cat > "$work/$1.toml" <<TOML
[server]
data_dir = "$work/$1"
hostname = "$1"
[smtp]
listen = "127.0.0.1:${4}25"
[pop3]
listen = "127.0.0.1:${4}10"
[admin]
listen = "127.0.0.1:${4}80"
[log]
level = "warn"
[store]
backend = "cassandra"
[cassandra]
contact_points = ["$3:9042"]
local_datacenter = "$2"
keyspace = "$ks"
replication_strategy = "network-topology"
datacenter_replication = { dc1 = 1, dc2 = 1 }
request_timeout_ms = 2000
TOML
  "$T" serve --config "$work/$1.toml" 2> "$work/$1.log" &
  pids+=($!)
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:${4}80/healthcheck" >/dev/null && return; sleep 0.2; done
  cat "$work/$1.log"; exit 1
}
node tern-a dc1 127.0.0.1 131
node tern-b dc2 127.0.0.2 132
"$T" bench setup --admin-url http://127.0.0.1:13180 --users 10 >/dev/null

stat() { # PORT USER
  python3 - "$1" "$2" <<'PY'
import poplib, sys
try:
    p = poplib.POP3("127.0.0.1", int(sys.argv[1]), timeout=10)
    p.user(sys.argv[2]); p.pass_("bench-password")
    print(p.stat()[0]); p.quit()
except Exception as e:
    print(f"error: {e}")
PY
}

echo "== both datacenters up"
"$T" bench deliver --server 127.0.0.1:13125 --messages 200 --users 10 --concurrency 8 --reuse | head -1
for _ in $(seq 1 50); do [ "$(stat 13210 bench0@bench.test)" = 20 ] && break; sleep 0.2; done
echo "bench0 in dc1: $(stat 13110 bench0@bench.test) messages; in dc2: $(stat 13210 bench0@bench.test) messages"

echo "== dc2's Cassandra stopped"
"${dc2[@]}" "$C" stop
"$T" bench deliver --server 127.0.0.1:13125 --messages 200 --users 10 --concurrency 8 --reuse | head -1
"$T" bench pop3 --server 127.0.0.1:13110 --mode retr-all --users 10 --concurrency 4 --duration 3 | head -1
echo "bench0 in dc1: $(stat 13110 bench0@bench.test) messages; in dc2: $(stat 13210 bench0@bench.test)"

#!/usr/bin/env bash
# message-id vs classic UID listing on the local Cassandra: deliveries/s, POP3 session latency at
# concurrency 16, and the lightweight transactions per delivery as Cassandra itself counts them
# (JMX, per-table Paxos prepare counts of the keyspace; scripts/cassandra/run.sh cas-count).
#
#   bench/compare-listing.sh          (starts the test Cassandra if needed)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q --manifest-path "$root/Cargo.toml"
T="$root/target/release/tern"
C="$root/scripts/cassandra/run.sh"
"$C" status || "$C" start
deliveries=3000

lwt() { "$C" cas-count "$1" | awk '/^keyspace/ {print $3}'; }
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }

for mode in message-id uid; do
  work=$(mktemp -d)
  ks="listing_${mode/-/_}_$(date +%s)"
  cat > "$work/tern.toml" <<TOML
[server]
data_dir = "$work/data"
[smtp]
listen = "127.0.0.1:12525"
[pop3]
listen = "127.0.0.1:11110"
listing = "$mode"
[admin]
listen = "127.0.0.1:18000"
[log]
level = "warn"
[store]
backend = "cassandra"
[cassandra]
keyspace = "$ks"
TOML
  "$T" serve --config "$work/tern.toml" 2> "$work/tern.log" &
  pid=$!
  for _ in $(seq 1 300); do curl -sf http://127.0.0.1:18000/healthcheck >/dev/null && break; sleep 0.2; done
  "$T" bench setup --admin-url http://127.0.0.1:18000 --users 100 >/dev/null
  before=$(lwt "$ks")
  d=$("$T" bench deliver --server 127.0.0.1:12525 --messages $deliveries --concurrency 16 --reuse)
  after=$(lwt "$ks")
  rate=$(echo "$d" | field messages_per_sec)
  s=$("$T" bench pop3 --server 127.0.0.1:11110 --mode stat --concurrency 16 --duration 10)
  after_pop=$(lwt "$ks")
  python3 - "$mode" "$rate" "$before" "$after" "$after_pop" "$deliveries" "$(echo "$s" | field p50_ms)" "$(echo "$s" | field p99_ms)" "$(echo "$s" | field ops_per_sec)" <<'PY'
import sys
mode, rate, b, a, ap, n, p50, p99, sps = sys.argv[1:]
print(f"{mode:<11} deliveries/s {float(rate):7.0f}   LWT per delivery {(int(a)-int(b))/int(n):5.2f}   "
      f"POP3 login+STAT+QUIT c16: {float(sps):6.0f}/s p50 {float(p50):6.2f} ms p99 {float(p99):6.2f} ms   "
      f"LWT during POP3 {int(ap)-int(a)}")
PY
  kill $pid; wait $pid 2>/dev/null || true
  rm -rf "$work"
done

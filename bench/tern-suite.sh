#!/usr/bin/env bash
# Runs Tern's benchmark suite against a fresh Tern node (release build) on one backend and
# prints one line per workload, with the server's CPU time per operation read from /proc.
#
#   bench/tern-suite.sh embedded
#   bench/tern-suite.sh cassandra      (starts the test Cassandra if it is not running)
#
# Figures are recorded in docs/benchmarks.md. On a shared 2-core machine, compare ratios taken in
# one run rather than absolute numbers across runs.
set -euo pipefail
backend="${1:-embedded}"
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q --manifest-path "$root/Cargo.toml"
T="$root/target/release/tern"
work=$(mktemp -d)
smtp=127.0.0.1:12525 pop3=127.0.0.1:11110 admin=127.0.0.1:18000

cat > "$work/tern.toml" <<TOML
[server]
data_dir = "$work/data"
max_connections = 20000
[smtp]
listen = "$smtp"
[pop3]
listen = "$pop3"
[admin]
listen = "$admin"
[log]
level = "warn"
TOML
if [ "$backend" = cassandra ]; then
  "$root/scripts/cassandra/run.sh" status || "$root/scripts/cassandra/run.sh" start
  printf '[store]\nbackend = "cassandra"\n[cassandra]\nkeyspace = "bench_%s"\n' "$(date +%s)" >> "$work/tern.toml"
fi

"$T" serve --config "$work/tern.toml" 2> "$work/tern.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 300); do
  curl -sf "http://$admin/healthcheck" >/dev/null && break
  sleep 0.2
done
curl -sf "http://$admin/healthcheck" >/dev/null || { cat "$work/tern.log"; exit 1; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }

# Runs a `tern bench` workload; prints its summary and the server's CPU per operation.
measure() {
  local label="$1"; shift
  local before after out ops
  before=$(cpu_ticks)
  out=$("$T" bench "$@")
  after=$(cpu_ticks)
  ops=$(echo "$out" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["operations"])')
  echo "== $label"
  echo "$out" | head -1
  python3 -c "print(f'server CPU: {($after - $before) * 10000 / max($ops, 1):.0f} µs/op')"
  echo "$out" | tail -1
}

"$T" bench setup --admin-url "http://$admin" --users 100 > /dev/null
"$T" bench setup --admin-url "http://$admin" --users 1 --prefix big > /dev/null
"$T" bench setup --admin-url "http://$admin" --users 1 --prefix huge > /dev/null

measure "deliver 4 KiB, one connection per message, concurrency 16" \
  deliver --server "$smtp" --messages 10000 --size 4096 --concurrency 16
measure "deliver 4 KiB, connections reused and pipelined, concurrency 16" \
  deliver --server "$smtp" --messages 10000 --size 4096 --concurrency 16 --reuse --pipeline
measure "POP3 login+STAT+QUIT, concurrency 16" \
  pop3 --server "$pop3" --mode stat --concurrency 16 --duration 10
measure "POP3 RETR of every message (200 per mailbox), concurrency 4" \
  pop3 --server "$pop3" --mode retr-all --concurrency 4 --duration 10
"$T" bench deliver --server "$smtp" --messages 10000 --size 4096 --concurrency 16 --reuse --pipeline \
  --users 1 --prefix big > /dev/null
measure "POP3 STAT+LIST+UIDL of a 10,000-message mailbox, one client" \
  pop3 --server "$pop3" --mode listing --concurrency 1 --duration 5 --users 1 --prefix big
"$T" bench deliver --server "$smtp" --messages 1 --size 20971520 --concurrency 1 --users 1 --prefix huge > /dev/null
measure "POP3 RETR of one 20 MiB message, one client" \
  pop3 --server "$pop3" --mode retr-all --concurrency 1 --duration 5 --users 1 --prefix huge

echo "== idle connections"
rss0=$(rss_kib)
"$T" bench idle --server "$pop3" --connections 10000 --hold 4 > "$work/idle.log" &
idle=$!
for _ in $(seq 1 100); do grep -q holding "$work/idle.log" 2>/dev/null && break; sleep 0.2; done
sleep 1
rss1=$(rss_kib)
wait $idle || true
cat "$work/idle.log"
python3 -c "print(f'server RSS {${rss0}/1024:.1f} MiB -> {${rss1}/1024:.1f} MiB: {(${rss1}-${rss0})/10000:.1f} KiB per idle connection')"

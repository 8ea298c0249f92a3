#!/usr/bin/env bash
# Compares two Tern builds in one run, on the embedded store: both servers are started side by
# side with the same data, and each workload runs on A, then B, then A, then B, so that the
# noise of a shared machine falls on both alike. Prints each run and the server CPU per op.
#
#   bench/compare-builds.sh OLD_TERN_BINARY NEW_TERN_BINARY
#
# The load generator is the second binary's `tern bench`.
set -euo pipefail
A="$1" B="$2"
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT

# shellcheck source=bench/lib-tern.sh
source "$(dirname "$0")/lib-tern.sh"
start_tern a "$A" 21000 "max_connections = 20000"
start_tern b "$B" 22000 "max_connections = 20000"

setup() { # base-port
  local p=$1
  "$B" bench setup --admin-url "http://127.0.0.1:$((p + 80))" --users 100 > /dev/null
  "$B" bench setup --admin-url "http://127.0.0.1:$((p + 80))" --users 1 --prefix big > /dev/null
  "$B" bench deliver --server "127.0.0.1:$((p + 25))" --messages 20000 --size 4096 --concurrency 16 --reuse --pipeline > /dev/null
  "$B" bench deliver --server "127.0.0.1:$((p + 25))" --messages 10000 --size 4096 --concurrency 16 --reuse --pipeline --users 1 --prefix big > /dev/null
}
setup 21000
setup 22000

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # name pid base-port label args...
  local name=$1 pid=$2 p=$3 label=$4; shift 4
  local before after out ops
  before=$(cpu "$pid")
  out=$("$B" bench "$@" --server "127.0.0.1:$p")
  after=$(cpu "$pid")
  ops=$(echo "$out" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["operations"])')
  printf '%s %-8s %s | server CPU %s µs/op\n' "$name" "$label" "$(echo "$out" | head -1 | cut -d: -f2- | cut -c1-60)" \
    "$(python3 -c "print(f'{($after - $before) * 10000 / max($ops, 1):.0f}')")"
}
for round in 1 2; do
  run A "$pid_a" 21010 listing pop3 --mode listing --concurrency 1 --duration 5 --users 1 --prefix big
  run B "$pid_b" 22010 listing pop3 --mode listing --concurrency 1 --duration 5 --users 1 --prefix big
  run A "$pid_a" 21010 retrall pop3 --mode retr-all --concurrency 4 --duration 5
  run B "$pid_b" 22010 retrall pop3 --mode retr-all --concurrency 4 --duration 5
  run A "$pid_a" 21010 stat pop3 --mode stat --concurrency 16 --duration 5
  run B "$pid_b" 22010 stat pop3 --mode stat --concurrency 16 --duration 5
  run A "$pid_a" 21025 deliver deliver --messages 5000 --size 4096 --concurrency 16
  run B "$pid_b" 22025 deliver deliver --messages 5000 --size 4096 --concurrency 16
done

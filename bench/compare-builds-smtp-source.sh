#!/usr/bin/env bash
# Two Tern builds side by side on the embedded store, loaded by Postfix's `smtp-source` (16
# sessions, 4 KiB, one message per connection) in turns A, B, A, B...: the server CPU per
# message of each run (from /proc/PID/stat) and its rate. The figure item 1 of the performance
# work is about; compare the two builds' ratios within one run, not across runs.
#
#   bench/compare-builds-smtp-source.sh OLD_TERN_BINARY NEW_TERN_BINARY    (needs smtp-source)
#   MESSAGES=20000 ROUNDS=3 bench/compare-builds-smtp-source.sh ...
set -euo pipefail
A="$1" B="$2"
messages="${MESSAGES:-10000}"
rounds="${ROUNDS:-3}"
export PATH="$PATH:/usr/sbin"
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT

# shellcheck source=bench/lib-tern.sh
source "$(dirname "$0")/lib-tern.sh"
start_tern a "$A" 21000
start_tern b "$B" 22000
for port in 21000 22000; do
  "$B" bench setup --admin-url "http://127.0.0.1:$((port + 80))" --users 1 > /dev/null
  # Warm-up: the first deliveries grow the database file.
  smtp-source -s 16 -l 4096 -m 2000 -f s@remote.test -t bench0@bench.test "127.0.0.1:$((port + 25))"
done

hz=$(getconf CLK_TCK)
run() { # name pid smtp-port
  local c0 c1 t0 t1
  c0=$(awk '{print $14 + $15}' "/proc/$2/stat")
  t0=$(date +%s.%N)
  smtp-source -s 16 -l 4096 -m "$messages" -f s@remote.test -t bench0@bench.test "127.0.0.1:$3"
  t1=$(date +%s.%N)
  c1=$(awk '{print $14 + $15}' "/proc/$2/stat")
  python3 -c "print(f'$1  {$messages / ($t1 - $t0):7.0f} msg/s   server CPU {($c1 - $c0) / $hz / $messages * 1e6:4.0f} µs/msg')" | tee -a "$work/results"
}
echo "smtp-source -s 16 -l 4096 -m $messages, one message per connection"
for _ in $(seq 1 "$rounds"); do
  run A "$pid_a" 21025
  run B "$pid_b" 22025
done
for side in a b; do
  eval "p=\$pid_$side"
  echo "resident memory of $side after the runs: $(awk '/VmRSS/ {printf "%.0f MiB", $2 / 1024}' "/proc/$p/status")"
done
python3 - "$work/results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for side in "AB":
    rate = statistics.median(float(r[1]) for r in rows if r[0] == side)
    cpu = statistics.median(float(r[5]) for r in rows if r[0] == side)
    print(f"median {side}  {rate:7.0f} msg/s   server CPU {cpu:4.0f} µs/msg")
PY

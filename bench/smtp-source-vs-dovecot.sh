#!/usr/bin/env bash
# The headline delivery figure, with a load generator that is neither Tern's nor Dovecot's:
# Postfix's `smtp-source` sends MESSAGES messages of 4 KiB over 16 parallel sessions, one
# message per connection, to Dovecot's LMTP (`-L`) and to Tern's SMTP, alternately, ROUNDS
# times. Each side's count of stored messages is checked against what was sent; Tern's server
# CPU per message comes from /proc/PID/stat. Each round also runs Postfix's `smtp-sink`, a
# server that answers every command and stores nothing: the most any server could reach with
# this client on this machine. Prints each round and the median ratios.
#
#   bench/smtp-source-vs-dovecot.sh              (root; installs postfix's tools and Dovecot if missing)
#   MESSAGES=10000 ROUNDS=5 bench/smtp-source-vs-dovecot.sh
#
# Both servers make each message durable before answering (Dovecot fsyncs the Maildir file,
# Tern commits redb with fsync, grouped across sessions).
set -euo pipefail
messages="${MESSAGES:-5000}"
rounds="${ROUNDS:-3}"
if ! command -v smtp-source >/dev/null && [ ! -x /usr/sbin/smtp-source ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi
export PATH="$PATH:/usr/sbin"
users=1
# shellcheck source=bench/lib-dovecot-and-tern.sh
source "$(dirname "$0")/lib-dovecot-and-tern.sh"

smtp-sink -u nobody -c 127.0.0.1:23525 1000 > /dev/null &
sink_pid=$!
trap 'kill $sink_pid 2>/dev/null || true; cleanup' EXIT
rcpt=bench0@bench.test
dovecot_count() {
  # The Maildir appears with the first delivery.
  { find "$work/mail/bench.test/bench0" -type f \( -path '*/new/*' -o -path '*/cur/*' \) 2>/dev/null || true; } | wc -l
}
tern_count() {
  curl -sf http://127.0.0.1:18000/users/$rcpt/mailboxes |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["messageCount"])'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
now() { date +%s.%N; }

# run LABEL PORT FLAGS...: prints the wall time of one smtp-source run.
run() {
  local port="$1"; shift
  local t0 t1
  t0=$(now)
  smtp-source "$@" -s 16 -l 4096 -m "$messages" -f sender@remote.test -t "$rcpt" "127.0.0.1:$port" >&2
  t1=$(now)
  python3 -c "print($t1 - $t0)"
}

hz=$(getconf CLK_TCK)
results=()
ceilings=()
echo "smtp-source -s 16 -l 4096 -m $messages, one message per connection; $rounds rounds"
for round in $(seq 1 "$rounds"); do
  d_before=$(dovecot_count)
  d_secs=$(run 22424 -L)
  d_stored=$(( $(dovecot_count) - d_before ))
  t_before=$(tern_count)
  c0=$(cpu_ticks "$tern_pid")
  t_secs=$(run 12525)
  c1=$(cpu_ticks "$tern_pid")
  t_stored=$(( $(tern_count) - t_before ))
  s_secs=$(run 23525)
  line=$(python3 - "$messages" "$d_secs" "$d_stored" "$t_secs" "$t_stored" "$((c1 - c0))" "$hz" "$round" "$s_secs" <<'PY'
import sys
n, ds, dn, ts, tn, ticks, hz, r, ss = sys.argv[1:]
n, ds, dn, ts, tn, ticks, hz, ss = int(n), float(ds), int(dn), float(ts), int(tn), int(ticks), int(hz), float(ss)
if dn != n or tn != n:
    sys.exit(f"round {r}: sent {n}, Dovecot stored {dn}, Tern stored {tn}")
d, t, s = n / ds, n / ts, n / ss
cpu_us = ticks / hz / n * 1e6
print(f"round {r}: Dovecot LMTP {d:6.0f}/s   Tern SMTP {t:6.0f}/s ({cpu_us:3.0f} us CPU/msg)   "
      f"smtp-sink {s:6.0f}/s   Tern/Dovecot {t / d:4.1f}x   sink/Dovecot {s / d:4.1f}x")
print(f"RATIO {t / d} {s / d}")
PY
)
  echo "$line" | grep -v '^RATIO'
  results+=("$(echo "$line" | awk '/^RATIO/ {print $2}')")
  ceilings+=("$(echo "$line" | awk '/^RATIO/ {print $3}')")
done
python3 -c "import statistics,sys; print(f'median ratio Tern/Dovecot: {statistics.median(map(float, sys.argv[1:])):.1f}x')" "${results[@]}"
python3 -c "import statistics,sys; print(f'median ratio smtp-sink/Dovecot (a server that stores nothing): {statistics.median(map(float, sys.argv[1:])):.1f}x')" "${ceilings[@]}"

#!/usr/bin/env bash
# A flame graph of Tern's server CPU while Postfix's `smtp-source` delivers (16 sessions, 4 KiB,
# one message per connection, embedded store): `perf record` with DWARF call graphs on the
# release build (which keeps its debug info), folded and drawn by inferno.
#
#   bench/profile-deliveries.sh OUT.svg [MESSAGES]     (root; needs perf and inferno:
#                                                       cargo install inferno)
#   FOLDED=/tmp/f bench/profile-deliveries.sh ...       also keep the folded stacks
# Also prints Tern's server CPU per message over the profiled run (perf's overhead included,
# so compare it only with other profiled runs).
set -euo pipefail
out="${1:?usage: $0 OUT.svg [MESSAGES]}"
messages="${2:-20000}"
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH:/usr/sbin"
cargo build --release -q --manifest-path "$root/Cargo.toml"
T="$root/target/release/tern"
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
# shellcheck source=bench/lib-tern.sh
source "$root/bench/lib-tern.sh"
start_tern server "$T" 22100
pid=$pid_server
"$T" bench setup --admin-url http://127.0.0.1:22180 --users 1 >/dev/null
# Warm-up (first deliveries grow the database file), not profiled.
smtp-source -s 16 -l 4096 -m 2000 -f s@remote.test -t bench0@bench.test 127.0.0.1:22125
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
c0=$(ticks)
perf record -q -F 499 --call-graph dwarf,16384 -p "$pid" -o "$work/perf.data" &
perf_pid=$!
sleep 1
smtp-source -s 16 -l 4096 -m "$messages" -f s@remote.test -t bench0@bench.test 127.0.0.1:22125
kill -INT "$perf_pid"
wait "$perf_pid" || true
c1=$(ticks)
echo "server CPU per message (profiled): $(( (c1 - c0) * 1000000 / $(getconf CLK_TCK) / messages )) us"
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf > "$work/folded"
inferno-flamegraph --title "tern: smtp-source -s 16 -l 4096, one message per connection" \
  --minwidth 0.2 < "$work/folded" > "$out"
[ -n "${FOLDED:-}" ] && cp "$work/folded" "$FOLDED"
# The heaviest frames by own time, for the notes.
awk '{n = $NF; $NF = ""; split($0, f, ";"); leaf = f[length(f)]; self[leaf] += n; total += n}
     END {for (k in self) printf "%5.1f%% %s\n", 100 * self[k] / total, k}' "$work/folded" |
  sort -rn | head -25

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
cat > "$work/tern.toml" <<TOML
[server]
data_dir = "$work/data"
[smtp]
listen = "127.0.0.1:22525"
[pop3]
listen = "127.0.0.1:22110"
[admin]
listen = "127.0.0.1:22180"
[log]
level = "warn"
TOML
"$T" serve --config "$work/tern.toml" 2> "$work/tern.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:22180/healthcheck >/dev/null && break; sleep 0.1; done
"$T" bench setup --admin-url http://127.0.0.1:22180 --users 1 >/dev/null
# Warm-up (first deliveries grow the database file), not profiled.
smtp-source -s 16 -l 4096 -m 2000 -f s@remote.test -t bench0@bench.test 127.0.0.1:22525
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
c0=$(ticks)
perf record -q -F 499 --call-graph dwarf,16384 -p "$pid" -o "$work/perf.data" &
perf_pid=$!
sleep 1
smtp-source -s 16 -l 4096 -m "$messages" -f s@remote.test -t bench0@bench.test 127.0.0.1:22525
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

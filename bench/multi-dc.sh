#!/usr/bin/env bash
# The multi-datacenter claims, measured on one machine (docs/cassandra.md, "Failures and
# datacenters, measured"). Each scenario starts its cluster with scripts/cassandra/cluster.sh,
# one or two release Tern nodes on it, drives them with `tern bench`, and prints a table.
#
#   bench/multi-dc.sh replica-lost   3 nodes, RF 3, LOCAL_QUORUM: a node killed during deliveries
#                                    and POP3 deletions; errors seen; checked at ALL on its return
#   bench/multi-dc.sh slow-wan       2 datacenters, their traffic through delay proxies (0 and
#                                    $TERN_WAN_DELAY_MS ms each way): delivery and POP3 latency in
#                                    message-id mode and in UID mode (SERIAL, LOCAL_SERIAL); then
#                                    UID mode with LOCAL_SERIAL delivering in both datacenters
#   bench/multi-dc.sh dc-lost        2 datacenters: dc2 killed while dc1 works, and its return
#
# The CI version of dc-lost is crates/tern/tests/e2e_datacenter_loss.rs (scripts/test).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q --manifest-path "$root/Cargo.toml"
T="$root/target/release/tern"
CL="$root/scripts/cassandra/cluster.sh"
work=$(mktemp -d)
pids=()
topology=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$topology" ] && "$CL" stop "$topology" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# tern_node NAME PORT-PREFIX CONTACT DC KEYSPACE REPLICATION [EXTRA-TOML]
# Starts a Tern node (SMTP PREFIX25, POP3 PREFIX10, admin PREFIX80) and waits for it.
tern_node() {
  cat > "$work/$1.toml" <<TOML
[server]
data_dir = "$work/$1"
hostname = "$1"
[smtp]
listen = "127.0.0.1:${2}25"
[pop3]
listen = "127.0.0.1:${2}10"
${7:-}
[admin]
listen = "127.0.0.1:${2}80"
[log]
level = "warn"
[store]
backend = "cassandra"
[cassandra]
contact_points = ["$3"]
local_datacenter = "$4"
keyspace = "$5"
replication_strategy = "network-topology"
datacenter_replication = $6
request_timeout_ms = 5000
${8:-}
TOML
  "$T" serve --config "$work/$1.toml" 2> "$work/$1.log" &
  pids+=($!)
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:${2}80/healthcheck" >/dev/null && return; sleep 0.2; done
  cat "$work/$1.log"; exit 1
}

stop_terns() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}

# row LABEL JSON-LINE: one table row from a `tern bench` report.
row() {
  python3 - "$1" "$2" <<'PY'
import json, sys
label, r = sys.argv[1], json.loads(sys.argv[2])
errors = str(r['errors']) + (f" ({r['first_error']})" if r['errors'] else "")
print(f"| {label} | {r['operations']} | {errors} | {r['ops_per_sec']:.0f}/s | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms |")
PY
}
header() {
  echo "| $1 | operations | errors | rate | p50 | p99 |"
  echo "| --- | --- | --- | --- | --- | --- |"
}
last_json() { tail -1; }

# uidls PORT USERS: every user's UIDL list, one line per user (the comparison key).
uidls() {
  python3 - "$1" "$2" <<'PY'
import poplib, sys
port, users = int(sys.argv[1]), int(sys.argv[2])
for i in range(users):
    try:
        p = poplib.POP3("127.0.0.1", port, timeout=10)
        p.user(f"bench{i}@bench.test"); p.pass_("bench-password")
        print(f"bench{i}", " ".join(sorted(l.decode().split()[1] for l in p.uidl()[1])))
        p.quit()
    except Exception as e:
        print(f"bench{i} error: {e}")
PY
}

# kill_during_deliveries PORT-PREFIX USERS MESSAGES NODE LABEL: deliveries with NODE killed
# (-9) 3 s into them, as a table row.
kill_during_deliveries() {
  "$T" bench deliver --server "127.0.0.1:${1}25" --messages "$3" --users "$2" --concurrency 8 > "$work/during" &
  local bench=$!
  sleep 3
  "$CL" kill "$topology" "$4"
  wait "$bench"
  row "$5" "$(last_json < "$work/during")"
}

# converge EXPECTED POP3-PORT USERS NODE KEYSPACE: polls the Tern node on POP3-PORT until it lists what
# EXPECTED holds (60 s), else repairs NODE and looks once more. Prints "hints" or "repair";
# fails if still different.
converge() {
  local how="hints"
  for _ in $(seq 1 60); do
    uidls "$2" "$3" > "$work/seen"
    cmp -s "$1" "$work/seen" && { echo "$how"; return; }
    sleep 1
  done
  how="repair"
  "$CL" nodetool "$topology" "$4" repair --full "$5" >/dev/null
  uidls "$2" "$3" > "$work/seen"
  cmp -s "$1" "$work/seen" && { echo "$how"; return; }
  echo "MISMATCH after repair:" >&2; diff "$1" "$work/seen" | head >&2
  return 1
}

replica_lost() {
  topology=three-nodes
  "$CL" start "$topology"
  local ks="replica_$(date +%s)" users=20
  tern_node tern-a 141 127.0.0.11:9042 dc1 "$ks" "{ dc1 = 3 }"
  "$T" bench setup --admin-url http://127.0.0.1:14180 --users "$users" >/dev/null
  echo "Three nodes, RF 3, LOCAL_QUORUM; n3 killed (-9) 3 s into the deliveries."
  echo
  header "phase"
  row "deliveries, all up" "$("$T" bench deliver --server 127.0.0.1:14125 --messages 2000 --users "$users" --concurrency 8 | last_json)"
  kill_during_deliveries 141 "$users" 4000 n3 "deliveries, n3 killed during them"
  row "POP3 sessions emptying mailboxes (RETR+DELE), n3 down" "$("$T" bench pop3 --server 127.0.0.1:14110 --mode drain --users "$users" --concurrency 1 --duration 10 | last_json)"
  row "deliveries, n3 down" "$("$T" bench deliver --server 127.0.0.1:14125 --messages 2000 --users "$users" --concurrency 8 | last_json)"
  uidls 14110 "$users" > "$work/quorum"
  echo
  local returned=$SECONDS
  "$CL" resume "$topology" n3
  # A node that reads at ALL: every replica must answer, n3 included.
  tern_node tern-all 142 127.0.0.11:9042 dc1 "$ks" "{ dc1 = 3 }" "" 'read_consistency = "all"'
  local how listed
  how=$(converge "$work/quorum" 14210 "$users" n3 "$ks")
  listed=$(awk '{n += NF - 1} END {print n}' "$work/quorum")
  echo "Read at ALL after n3's return ($how, $((SECONDS - returned)) s): the same $listed messages as at LOCAL_QUORUM, none of the deleted ones."
}

dc_lost() {
  topology=two-dc
  "$CL" start "$topology"
  local ks="dclost_$(date +%s)" users=20
  tern_node tern-dc1 171 127.0.0.3:9042 dc1 "$ks" "{ dc1 = 1, dc2 = 1 }"
  tern_node tern-dc2 172 127.0.0.4:9042 dc2 "$ks" "{ dc1 = 1, dc2 = 1 }"
  "$T" bench setup --admin-url http://127.0.0.1:17180 --users "$users" >/dev/null
  echo "Two datacenters (one node each, RF dc1:1 dc2:1), Tern in each at LOCAL_QUORUM; dc2's"
  echo "Cassandra killed (-9) while dc1 works, then brought back."
  echo
  header "dc1, phase"
  row "deliveries, both up" "$("$T" bench deliver --server 127.0.0.1:17125 --messages 3000 --users "$users" --concurrency 8 | last_json)"
  row "POP3 sessions, both up" "$("$T" bench pop3 --server 127.0.0.1:17110 --mode stat --users "$users" --concurrency 8 --duration 5 | last_json)"
  kill_during_deliveries 171 "$users" 6000 n2 "deliveries, dc2 killed 3 s in"
  row "POP3 sessions emptying mailboxes (RETR+DELE), dc2 down" "$("$T" bench pop3 --server 127.0.0.1:17110 --mode drain --users "$users" --concurrency 1 --duration 10 | last_json)"
  row "deliveries, dc2 down" "$("$T" bench deliver --server 127.0.0.1:17125 --messages 3000 --users "$users" --concurrency 8 | last_json)"
  uidls 17110 "$users" > "$work/dc1"
  echo
  local returned=$SECONDS how
  "$CL" resume "$topology" n2
  how=$(converge "$work/dc1" 17210 "$users" n2 "$ks")
  echo "dc2 after its return ($how, $((SECONDS - returned)) s): lists exactly what dc1 lists."
}

case "${1:-}" in
  replica-lost) replica_lost ;;
  slow-wan) slow_wan ;;
  dc-lost) dc_lost ;;
  *) echo "usage: $0 replica-lost|slow-wan|dc-lost" >&2; exit 2 ;;
esac

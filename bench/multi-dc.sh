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
  "$T" bench deliver --server 127.0.0.1:14125 --messages 4000 --users "$users" --concurrency 8 > "$work/d1" &
  local bench=$!
  sleep 3
  "$CL" kill "$topology" n3
  wait "$bench"
  row "deliveries, n3 killed during them" "$(last_json < "$work/d1")"
  row "POP3 sessions emptying mailboxes (RETR+DELE), n3 down" "$("$T" bench pop3 --server 127.0.0.1:14110 --mode drain --users "$users" --concurrency 1 --duration 10 | last_json)"
  row "deliveries, n3 down" "$("$T" bench deliver --server 127.0.0.1:14125 --messages 2000 --users "$users" --concurrency 8 | last_json)"
  uidls 14110 "$users" > "$work/quorum"
  echo
  local returned=$SECONDS
  "$CL" resume "$topology" n3
  # A node that reads at ALL: every replica must answer, n3 included.
  tern_node tern-all 142 127.0.0.11:9042 dc1 "$ks" "{ dc1 = 3 }" "" 'read_consistency = "all"'
  local how="hints"
  for _ in $(seq 1 60); do
    uidls 14210 "$users" > "$work/all"
    cmp -s "$work/quorum" "$work/all" && break
    sleep 1
  done
  if ! cmp -s "$work/quorum" "$work/all"; then
    how="repair"
    "$CL" nodetool "$topology" n3 repair --full "$ks" >/dev/null
    uidls 14210 "$users" > "$work/all"
  fi
  local listed
  listed=$(awk '{n += NF - 1} END {print n}' "$work/quorum")
  if cmp -s "$work/quorum" "$work/all"; then
    echo "Read at ALL after n3's return ($how, $((SECONDS - returned)) s): the same $listed messages as at LOCAL_QUORUM, none of the deleted ones."
  else
    echo "MISMATCH at ALL after repair:"; diff "$work/quorum" "$work/all" | head; exit 1
  fi
}

# One WAN delay: message-id and UID modes, delivery and POP3 latency from dc1.
wan_round() {
  local delay=$1
  topology=two-dc-wan
  TERN_WAN_DELAY_MS=$delay "$CL" start "$topology"
  local users=10 port=150 mode
  # Warm-up, not reported: a fresh JVM is slower for its first thousands of requests, which
  # would count against whichever mode runs first.
  tern_node tern-warmup "$port" 127.0.0.3:9042 dc1 "warmup_$(date +%s)" "{ dc1 = 1, dc2 = 1 }"
  "$T" bench setup --admin-url "http://127.0.0.1:${port}80" --users "$users" >/dev/null
  "$T" bench deliver --server "127.0.0.1:${port}25" --messages 1500 --users "$users" --concurrency 4 >/dev/null
  "$T" bench pop3 --server "127.0.0.1:${port}10" --mode stat --users "$users" --concurrency 4 --duration 5 >/dev/null
  stop_terns
  for mode in message-id uid-serial uid-local-serial; do
    local ks="wan_${mode//-/_}_$(date +%s)" listing=message-id serial=local_serial
    case $mode in
      uid-serial) listing=uid; serial=serial ;;
      uid-local-serial) listing=uid ;;
    esac
    port=$((port + 1))
    tern_node "tern-$mode" "$port" 127.0.0.3:9042 dc1 "$ks" "{ dc1 = 1, dc2 = 1 }" \
      "listing = \"$listing\"" "serial_consistency = \"$serial\""
    "$T" bench setup --admin-url "http://127.0.0.1:${port}80" --users "$users" >/dev/null
    row "$mode, ${delay} ms: delivery" "$("$T" bench deliver --server "127.0.0.1:${port}25" --messages 400 --users "$users" --concurrency 4 | last_json)"
    row "$mode, ${delay} ms: POP3 login+STAT+QUIT" "$("$T" bench pop3 --server "127.0.0.1:${port}10" --mode stat --users "$users" --concurrency 4 --duration 5 | last_json)"
    stop_terns
  done
  "$CL" stop "$topology" >/dev/null
}

slow_wan() {
  local delay="${TERN_WAN_DELAY_MS:-25}"
  echo "Two datacenters (one node each, RF dc1:1 dc2:1), inter-node traffic through delay proxies;"
  echo "Tern in dc1 at LOCAL_QUORUM; 400 deliveries and 5 s of POP3 sessions at concurrency 4."
  echo
  header "mode, added delay each way: workload"
  wan_round 0
  wan_round "$delay"
  echo
  # Two datacenters handing out UIDs for one mailbox at once.
  TERN_WAN_DELAY_MS=$delay "$CL" start "$topology"
  local ks="wan_dup_$(date +%s)"
  tern_node tern-dc1 161 127.0.0.3:9042 dc1 "$ks" "{ dc1 = 1, dc2 = 1 }" 'listing = "uid"' 'serial_consistency = "local_serial"'
  tern_node tern-dc2 162 127.0.0.4:9042 dc2 "$ks" "{ dc1 = 1, dc2 = 1 }" 'listing = "uid"' 'serial_consistency = "local_serial"'
  "$T" bench setup --admin-url http://127.0.0.1:16180 --users 1 >/dev/null
  "$T" bench deliver --server 127.0.0.1:16125 --messages 300 --users 1 --concurrency 4 > "$work/dup1" &
  local b1=$!
  "$T" bench deliver --server 127.0.0.1:16225 --messages 300 --users 1 --concurrency 4 > "$work/dup2" &
  wait "$b1" "$!"
  sleep 5 # let replication settle before counting
  local listed
  listed=$(uidls 16110 1 | awk '{print NF - 1}')
  echo "UID mode, LOCAL_SERIAL, ${delay} ms: 600 messages accepted for one mailbox (300 in each"
  echo "datacenter, at once); its UID listing shows $listed: each datacenter's Paxos round saw only its"
  echo "own replica, so both handed out the same UIDs, and a message whose UID the other"
  echo "datacenter's message also got is no longer listed."
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
  "$T" bench deliver --server 127.0.0.1:17125 --messages 6000 --users "$users" --concurrency 8 > "$work/during" &
  local bench=$!
  sleep 3
  "$CL" kill "$topology" n2
  wait "$bench"
  row "deliveries, dc2 killed 3 s in" "$(last_json < "$work/during")"
  row "POP3 sessions emptying mailboxes (RETR+DELE), dc2 down" "$("$T" bench pop3 --server 127.0.0.1:17110 --mode drain --users "$users" --concurrency 1 --duration 10 | last_json)"
  row "deliveries, dc2 down" "$("$T" bench deliver --server 127.0.0.1:17125 --messages 3000 --users "$users" --concurrency 8 | last_json)"
  uidls 17110 "$users" > "$work/dc1"
  echo
  local returned=$SECONDS how="hints"
  "$CL" resume "$topology" n2
  for _ in $(seq 1 60); do
    uidls 17210 "$users" > "$work/dc2"
    cmp -s "$work/dc1" "$work/dc2" && break
    sleep 1
  done
  if ! cmp -s "$work/dc1" "$work/dc2"; then
    how="repair"
    "$CL" nodetool "$topology" n2 repair --full "$ks" >/dev/null
    uidls 17210 "$users" > "$work/dc2"
  fi
  if cmp -s "$work/dc1" "$work/dc2"; then
    echo "dc2 after its return ($how, $((SECONDS - returned)) s): lists exactly what dc1 lists."
  else
    echo "MISMATCH between the datacenters after repair:"; diff "$work/dc1" "$work/dc2" | head; exit 1
  fi
}

case "${1:-}" in
  replica-lost) replica_lost ;;
  slow-wan) slow_wan ;;
  dc-lost) dc_lost ;;
  *) echo "usage: $0 replica-lost|slow-wan|dc-lost" >&2; exit 2 ;;
esac

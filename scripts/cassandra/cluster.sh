#!/usr/bin/env bash
# Small multi-node Cassandra clusters on one machine, for the multi-datacenter tests and
# benchmarks (issue: prove the multi-DC claims). Each node is scripts/cassandra/run.sh with its
# own loopback address, run directory, JMX port, datacenter and token; small heaps.
#
#   scripts/cassandra/cluster.sh start TOPOLOGY     start every node (in parallel), wait for CQL
#   scripts/cassandra/cluster.sh stop TOPOLOGY      stop every node (and the delay proxies)
#   scripts/cassandra/cluster.sh kill|stop-node|resume|nodetool TOPOLOGY NODE [ARGS...]
#   scripts/cassandra/cluster.sh contact TOPOLOGY NODE   prints the node's CQL address:port
#
# Topologies (nodes are named n1, n2, ...):
#   two-dc       n1 in dc1 (127.0.0.3), n2 in dc2 (127.0.0.4)
#   two-dc-wan   the same, the traffic between them through delay proxies adding
#                $TERN_WAN_DELAY_MS (default 25) each way: the nodes broadcast 127.0.1.3 and
#                127.0.1.4, where `tern bench delay-proxy` listens (needs target/release/tern)
#   three-nodes  n1..n3 in dc1 (127.0.0.11..13), for RF 3
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
home="${TERN_CASSANDRA_HOME:-$HOME/.cache/tern-cassandra}"
heap="${TERN_CLUSTER_HEAP:-768M}"
delay_ms="${TERN_WAN_DELAY_MS:-25}"

# nodes TOPOLOGY: one line per node: name dc address broadcast token jmx-port
nodes() {
  case "$1" in
    two-dc)
      echo "n1 dc1 127.0.0.3 127.0.0.3 0 7301"
      echo "n2 dc2 127.0.0.4 127.0.0.4 4611686018427387904 7302" ;;
    two-dc-wan)
      echo "n1 dc1 127.0.0.3 127.0.1.3 0 7301"
      echo "n2 dc2 127.0.0.4 127.0.1.4 4611686018427387904 7302" ;;
    three-nodes)
      echo "n1 dc1 127.0.0.11 127.0.0.11 -9223372036854775808 7311"
      echo "n2 dc1 127.0.0.12 127.0.0.12 -3074457345618258603 7312"
      echo "n3 dc1 127.0.0.13 127.0.0.13 3074457345618258602 7313" ;;
    *) echo "cluster: unknown topology '$1' (two-dc, two-dc-wan, three-nodes)" >&2; exit 2 ;;
  esac
}

# node_env TOPOLOGY NAME: the environment run.sh needs for that node.
node_env() {
  local line seed
  seed=$(nodes "$1" | head -1 | awk '{print $4}')
  line=$(nodes "$1" | awk -v n="$2" '$1 == n')
  [ -n "$line" ] || { echo "cluster: no node $2 in $1" >&2; exit 2; }
  # shellcheck disable=SC2086
  set -- $1 $line
  echo "TERN_CASSANDRA_RUN=$home/cluster-$1/$2 TERN_CASSANDRA_DC=$3 TERN_CASSANDRA_ADDRESS=$4" \
    "TERN_CASSANDRA_BROADCAST=$5 TERN_CASSANDRA_TOKEN=$6 TERN_CASSANDRA_JMX_PORT=$7" \
    "TERN_CASSANDRA_SEED=$seed TERN_CASSANDRA_CLUSTER=tern-$1 TERN_CASSANDRA_HEAP=$heap"
}

on_node() { # TOPOLOGY NAME ACTION [ARGS...]
  local topology="$1" name="$2"; shift 2
  # shellcheck disable=SC2046
  env $(node_env "$topology" "$name") "$here/run.sh" "$@"
}

proxies_start() {
  local bin="$root/target/release/tern" dir="$home/cluster-$1"
  mkdir -p "$dir"
  nodes "$1" | while read -r _ _ address broadcast _ _; do
    [ "$address" = "$broadcast" ] && continue
    [ -x "$bin" ] || { echo "cluster: $bin missing (cargo build --release)" >&2; exit 1; }
    nohup "$bin" bench delay-proxy --listen "$broadcast:7000" --to "$address:7000" \
      --delay-ms "$delay_ms" > "$dir/proxy-$broadcast.log" 2>&1 &
    echo $! > "$dir/proxy-$broadcast.pid"
  done
}

proxies_stop() {
  local f
  for f in "$home/cluster-$1"/proxy-*.pid; do
    [ -f "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

action="${1:-}"
topology="${2:-}"
[ -n "$topology" ] || { echo "usage: $0 start|stop|kill|stop-node|resume|nodetool|contact TOPOLOGY [NODE]" >&2; exit 2; }
case "$action" in
  start)
    proxies_start "$topology"
    # The first node alone (it resolves the jars if they are not cached yet), then the others
    # together.
    names=($(nodes "$topology" | awk '{print $1}'))
    on_node "$topology" "${names[0]}" start
    pids=()
    for name in "${names[@]:1}"; do
      on_node "$topology" "$name" start &
      pids+=($!)
    done
    status=0
    for p in "${pids[@]}"; do wait "$p" || status=1; done
    exit $status ;;
  stop)
    for name in $(nodes "$topology" | awk '{print $1}'); do on_node "$topology" "$name" stop || true; done
    proxies_stop "$topology" ;;
  kill) on_node "$topology" "$3" kill ;;
  stop-node) on_node "$topology" "$3" stop ;;
  resume) on_node "$topology" "$3" resume ;;
  nodetool) name="$3"; shift 3; on_node "$topology" "$name" nodetool "$@" ;;
  contact) nodes "$topology" | awk -v n="$3" '$1 == n {print $3 ":9042"}' ;;
  *) echo "usage: $0 start|stop|kill|stop-node|resume|nodetool|contact TOPOLOGY [NODE]" >&2; exit 2 ;;
esac

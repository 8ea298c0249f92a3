#!/usr/bin/env bash
# A single-node Apache Cassandra for Tern's tests, obtained from Maven Central.
#
#   scripts/cassandra/run.sh start    resolve (first time), configure, start, wait for CQL
#   scripts/cassandra/run.sh stop     stop it (by PID)
#   scripts/cassandra/run.sh kill     kill -9 it (a lost machine)
#   scripts/cassandra/run.sh resume   start it again on its data (after stop or kill)
#   scripts/cassandra/run.sh status   exit 0 if CQL answers
#   scripts/cassandra/run.sh nodetool ARGS...
#   scripts/cassandra/run.sh cas-count [KEYSPACE]   LWT counts from Cassandra's JMX metrics
#
# Everything lives under $TERN_CASSANDRA_HOME (default ~/.cache/tern-cassandra): lib/ holds the
# jars Maven resolved (kept between runs), run/ the node's data, logs and PID (wiped at start).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
home="${TERN_CASSANDRA_HOME:-$HOME/.cache/tern-cassandra}"
lib="$home/lib"
run="${TERN_CASSANDRA_RUN:-$home/run}"
cql_port="${TERN_CASSANDRA_PORT:-9042}"
jmx_port="${TERN_CASSANDRA_JMX_PORT:-7199}"
# For a multi-node cluster on one machine (scripts/cassandra/cluster.sh): each node on its own
# loopback address, with its datacenter name, token and the first node as seed.
address="${TERN_CASSANDRA_ADDRESS:-127.0.0.1}"
datacenter="${TERN_CASSANDRA_DC:-}"
token="${TERN_CASSANDRA_TOKEN:-0}"
seed="${TERN_CASSANDRA_SEED:-127.0.0.1}"
# The address other nodes connect to (a delay proxy in front of this node, for a slow WAN);
# this node's own address by default.
broadcast="${TERN_CASSANDRA_BROADCAST:-$address}"
cluster="${TERN_CASSANDRA_CLUSTER:-tern-test}"
heap="${TERN_CASSANDRA_HEAP:-2G}"
wait_secs="${TERN_CASSANDRA_WAIT:-180}"

# Module access Cassandra 5.0 needs on Java 17 (its jvm17-server.options), the server and
# nodetool alike.
module_opts=(
  --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
  --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
  --add-exports java.sql/java.sql=ALL-UNNAMED
  --add-exports java.base/java.lang.ref=ALL-UNNAMED
  --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
  --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
  --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
  --add-opens java.base/java.lang.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
  --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
  --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
  --add-opens java.base/jdk.internal.math=ALL-UNNAMED
  --add-opens java.base/jdk.internal.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
  --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
  --add-opens java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens java.base/java.io=ALL-UNNAMED
  --add-opens java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
  --add-opens java.base/java.lang=ALL-UNNAMED
  --add-opens java.base/java.util=ALL-UNNAMED
)
# The server's: those, plus a small G1 heap.
jvm_opts=(
  "${module_opts[@]}"
  -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1
  -Xss512k -XX:+AlwaysPreTouch -XX:+ExitOnOutOfMemoryError
  -Djdk.attach.allowAttachSelf=true
  -Dio.netty.tryReflectionSetAccessible=true
)

resolve() {
  if [ -f "$lib/.complete" ]; then return; fi
  echo "cassandra: resolving Apache Cassandra from Maven Central into $lib" >&2
  mkdir -p "$lib"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$lib" -DincludeScope=runtime >&2
  touch "$lib/.complete"
}

configure() {
  rm -rf "$run"
  mkdir -p "$run"/{data,commitlog,saved_caches,hints,cdc_raw,logs,tls}
  # CQL over TLS (the port accepts TLS and plaintext): a throw-away CA and a node certificate it
  # signs. Tests that connect with TLS trust $run/tls/ca.pem; the driver checks the node's IP
  # address against the certificate's SAN.
  local tls="$run/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=tern-test-ca" \
    -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=tern-test-cassandra" \
    -keyout "$tls/key.pem" -out "$tls/node.csr" 2>/dev/null
  printf 'subjectAltName=IP:'"$address"',DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$tls/ext.cnf"
  openssl x509 -req -in "$tls/node.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 30 -extfile "$tls/ext.cnf" -out "$tls/cert.pem" 2>/dev/null
  cat "$tls/key.pem" "$tls/cert.pem" "$tls/ca.pem" > "$tls/keystore.pem"
  cat > "$run/cassandra.yaml" <<YAML
cluster_name: $cluster
num_tokens: 1
initial_token: $token
auto_bootstrap: false
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
data_file_directories: [$run/data]
commitlog_directory: $run/commitlog
saved_caches_directory: $run/saved_caches
hints_directory: $run/hints
cdc_raw_directory: $run/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$seed:7000"
listen_address: $address
broadcast_address: $broadcast
rpc_address: $address
broadcast_rpc_address: $address
storage_port: 7000
native_transport_port: $cql_port
start_native_transport: true
endpoint_snitch: $( [ -n "$datacenter" ] && echo GossipingPropertyFileSnitch || echo SimpleSnitch )
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
auto_snapshot: false
snapshot_on_duplicate_row_detection: false
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 8
# Tests create a keyspace per test: unslabbed memtables cost no 1 MiB slab per table.
memtable_allocation_type: unslabbed_heap_buffers
memtable_heap_space: 128MiB
memtable_offheap_space: 128MiB
key_cache_size: 16MiB
user_defined_functions_enabled: false
client_encryption_options:
  enabled: true
  optional: true
  require_client_auth: false
  ssl_context_factory:
    class_name: org.apache.cassandra.security.PEMBasedSslContextFactory
  keystore: $run/tls/keystore.pem
materialized_views_enabled: false
YAML
  if [ -n "$datacenter" ]; then
    printf 'dc=%s\nrack=rack1\n' "$datacenter" > "$run/cassandra-rackdc.properties"
  fi
  cat > "$run/logback.xml" <<XML
<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$run/logs/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
XML
}

cql_up() {
  # The native protocol port accepting connections and the log saying so.
  (exec 3<>"/dev/tcp/$address/$cql_port") 2>/dev/null &&
    grep -q "Startup complete" "$run/logs/system.log" 2>/dev/null
}

start() {
  if [ -f "$run/cassandra.pid" ] && kill -0 "$(cat "$run/cassandra.pid")" 2>/dev/null; then
    echo "cassandra: already running (pid $(cat "$run/cassandra.pid"))" >&2
    return 0
  fi
  command -v java >/dev/null || { echo "cassandra: java not found (Java 17 needed)" >&2; exit 1; }
  resolve
  if [ "${1:-}" = resume ] && [ -f "$run/cassandra.yaml" ]; then
    # The same node back with its data (hints and repair then bring it up to date).
    [ -f "$run/logs/system.log" ] && mv "$run/logs/system.log" "$run/logs/system.log.before"
  else
    configure
  fi
  local started=$SECONDS
  nohup java "${jvm_opts[@]}" \
    -Dcassandra.config="file://$run/cassandra.yaml" \
    -Dcassandra.storagedir="$run" \
    -Dcassandra.logdir="$run/logs" \
    -Dlogback.configurationFile="$run/logback.xml" \
    -Dcassandra-foreground=yes \
    -Dcassandra.jmx.local.port="$jmx_port" \
    -Dcassandra-rackdc.properties="file://$run/cassandra-rackdc.properties" \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.ring_delay_ms=0 \
    -Dcassandra.superuser_setup_delay_ms=0 \
    -cp "$lib/*" org.apache.cassandra.service.CassandraDaemon \
    > "$run/logs/stdout.log" 2>&1 &
  echo $! > "$run/cassandra.pid"
  local pid
  pid=$(cat "$run/cassandra.pid")
  while ! cql_up; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "cassandra: the process exited during start-up; last log lines:" >&2
      tail -n 40 "$run/logs/system.log" "$run/logs/stdout.log" >&2 || true
      exit 1
    fi
    if (( SECONDS - started > wait_secs )); then
      echo "cassandra: CQL not up after ${wait_secs}s; last log lines:" >&2
      tail -n 40 "$run/logs/system.log" "$run/logs/stdout.log" >&2 || true
      stop
      exit 1
    fi
    sleep 1
  done
  echo "cassandra: CQL up on $address:$cql_port after $((SECONDS - started))s (pid $pid)" >&2
}

stop() {
  [ -f "$run/cassandra.pid" ] || return 0
  local pid
  pid=$(cat "$run/cassandra.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$run/cassandra.pid"
  echo "cassandra: stopped" >&2
}

case "${1:-}" in
  start) start ;;
  resume) start resume ;;
  stop) stop ;;
  kill) # as a machine or a datacenter lost: no clean shutdown, no flush
    [ -f "$run/cassandra.pid" ] && kill -9 "$(cat "$run/cassandra.pid")" 2>/dev/null || true
    rm -f "$run/cassandra.pid" ;;
  status) cql_up ;;
  nodetool) shift; exec java "${module_opts[@]}" -cp "$lib/*" -Dcassandra.storagedir="$run" \
      org.apache.cassandra.tools.NodeTool -h 127.0.0.1 -p "$jmx_port" "$@" ;;
  cas-count) shift; exec java "$here/CasCount.java" "$jmx_port" "$@" ;;
  *) echo "usage: $0 start|resume|stop|kill|status|nodetool ARGS|cas-count [KEYSPACE]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# An S3-compatible server for Tern's tests: S3Proxy (https://github.com/gaul/s3proxy), a real
# implementation of the S3 REST API (AWS signatures v2/v4, multipart uploads, listings) over a
# local directory, obtained from Maven Central like the test Cassandra.
#
#   scripts/s3/run.sh start     resolve (first time), start, wait for the port, create the bucket
#   scripts/s3/run.sh stop      stop it (by PID)
#   scripts/s3/run.sh status    exit 0 if it answers
#
# Endpoint http://127.0.0.1:$TERN_S3_PORT (default 9390), bucket `tern-test`, access key
# `tern`, secret `tern-secret`. Everything lives under $TERN_S3_HOME (default
# ~/.cache/tern-s3): lib/ holds the jar (kept between runs), run/ the objects, log and PID
# (wiped at start).
set -euo pipefail

version=2.6.0
home="${TERN_S3_HOME:-$HOME/.cache/tern-s3}"
lib="$home/lib"
run="$home/run"
port="${TERN_S3_PORT:-9390}"
jar="$lib/s3proxy-$version-jar-with-dependencies.jar"
wait_secs=60

resolve() {
  [ -f "$jar" ] && return
  echo "s3: resolving S3Proxy $version from Maven Central into $lib" >&2
  mkdir -p "$lib"
  mvn -q -B dependency:copy -Dartifact="org.gaul:s3proxy:$version:jar:jar-with-dependencies" \
    -DoutputDirectory="$lib" -Dtransitive=false >&2
}

up() {
  # Any HTTP answer (403 to an unsigned request) means it serves.
  curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null
}

start() {
  if [ -f "$run/s3proxy.pid" ] && kill -0 "$(cat "$run/s3proxy.pid")" 2>/dev/null; then
    echo "s3: already running (pid $(cat "$run/s3proxy.pid"))" >&2
    return 0
  fi
  command -v java >/dev/null || { echo "s3: java not found (Java 17 needed)" >&2; exit 1; }
  resolve
  rm -rf "$run"
  # A bucket of the filesystem backend is a directory.
  mkdir -p "$run/data/tern-test"
  cat > "$run/s3proxy.conf" <<CONF
s3proxy.endpoint=http://127.0.0.1:$port
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity=tern
s3proxy.credential=tern-secret
jclouds.provider=filesystem
jclouds.filesystem.basedir=$run/data
CONF
  local started=$SECONDS
  nohup java -Xmx512m -jar "$jar" --properties "$run/s3proxy.conf" > "$run/s3proxy.log" 2>&1 &
  echo $! > "$run/s3proxy.pid"
  local pid
  pid=$(cat "$run/s3proxy.pid")
  while ! up; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "s3: the process exited during start-up; last log lines:" >&2
      tail -n 40 "$run/s3proxy.log" >&2 || true
      exit 1
    fi
    if (( SECONDS - started > wait_secs )); then
      echo "s3: not up after ${wait_secs}s; last log lines:" >&2
      tail -n 40 "$run/s3proxy.log" >&2 || true
      stop
      exit 1
    fi
    sleep 0.5
  done
  echo "s3: S3Proxy up on 127.0.0.1:$port after $((SECONDS - started))s (pid $pid)" >&2
}

stop() {
  [ -f "$run/s3proxy.pid" ] || return 0
  local pid
  pid=$(cat "$run/s3proxy.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$run/s3proxy.pid"
  echo "s3: stopped" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) up ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

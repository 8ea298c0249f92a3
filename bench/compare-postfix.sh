#!/usr/bin/env bash
# Relay side by side: Postfix 3 (Debian's package, a private instance) and Tern (embedded store),
# each accepting mail over SMTP from a trusted network and relaying it to the same sink (run by
# `tern bench relay`), alternately, on loopback. Prints messages/s accepted and relayed (until
# the sink has every message) and the Tern/Postfix ratio. Both make each message durable before
# answering 250 (Postfix fsyncs its queue file; Tern commits its queue entry).
#
#   bench/compare-postfix.sh [messages] [concurrency]     (installs Postfix if missing; root)
#
# Postfix runs as its own instance (config and queue under a temporary directory, port 12526);
# the system's Postfix configuration only gains that directory in alternate_config_directories.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
messages=${1:-10000}
concurrency=${2:-16}

if ! command -v postfix >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi
cargo build --release -q --manifest-path "$root/Cargo.toml"
T="$root/target/release/tern"

work=$(mktemp -d)
chmod 755 "$work"
pf="$work/postfix"
mkdir -p "$pf" "$work/pfq" "$work/pfdata"
cp /etc/postfix/master.cf "$pf/"
: > "$pf/main.cf"
postconf -c "$pf" -e \
  "queue_directory = $work/pfq" \
  "data_directory = $work/pfdata" \
  "myhostname = postfix.bench.local" \
  "mydestination =" \
  "inet_interfaces = 127.0.0.1" \
  "inet_protocols = ipv4" \
  "mynetworks = 127.0.0.0/8" \
  "smtpd_relay_restrictions = permit_mynetworks, reject" \
  "transport_maps = inline:{ sink.test=smtp:[127.0.0.1]:12626 }" \
  "smtp_tls_security_level = none" \
  "smtpd_tls_security_level = none" \
  "compatibility_level = 3.6" \
  "maillog_file = $work/postfix.log" \
  "maillog_file_prefixes = $work" \
  "default_destination_concurrency_limit = 20"
# The smtpd listener on a private port instead of 25.
sed -i 's/^smtp      inet  n       -       y       -       -       smtpd/127.0.0.1:12526 inet n - n - - smtpd/' "$pf/master.cf"
grep -q '^127.0.0.1:12526 inet' "$pf/master.cf"
postconf -e "alternate_config_directories = $pf"
postfix -c "$pf" set-permissions >/dev/null
postfix -c "$pf" check
postfix -c "$pf" start

cat > "$work/tern.toml" <<TOML
[server]
data_dir = "$work/tern"
hostname = "tern.bench.local"
[smtp]
listen = "127.0.0.1:12525"
relay_networks = ["127.0.0.0/8"]
[pop3]
listen = "127.0.0.1:11110"
[admin]
listen = "127.0.0.1:18000"
[log]
level = "warn"
[outbound.transport]
"sink.test" = "127.0.0.1:12626"
TOML
"$T" serve --config "$work/tern.toml" 2>"$work/tern.log" &
tern_pid=$!
cleanup() {
  kill "$tern_pid" 2>/dev/null || true
  postfix -c "$pf" stop >/dev/null 2>&1 || true
  postconf -X alternate_config_directories || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do
  curl -fs http://127.0.0.1:18000/healthcheck >/dev/null && break
  sleep 0.1
done

run() { # name port
  "$T" bench relay --server "127.0.0.1:$2" --sink 127.0.0.1:12626 --domain sink.test \
    --messages "$messages" --concurrency "$concurrency" --reuse --pipeline | tail -1
}
figure() { python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['$2']))" "$1"; }

echo "relay: $messages messages of 4 KiB, $concurrency submitting connections (reused, pipelined)"
for round in 1 2; do
  p=$(run postfix 12526); t=$(run tern 12525)
  for f in accepted_per_sec relayed_per_sec; do
    pv=$(figure "$p" $f); tv=$(figure "$t" $f)
    echo "round $round $f: postfix $pv, tern $tv, tern/postfix $(python3 -c "print(round($tv/$pv, 2))")"
  done
done

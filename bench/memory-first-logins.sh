#!/usr/bin/env bash
# Resident memory of a Tern build (embedded store) after creating 16 users and 16 concurrent first
# POP3 logins (argon2id at its default 19 MiB each), and 3 s later.
#
#   bench/memory-first-logins.sh TERN_BINARY
set -euo pipefail
B=$1; work=$(mktemp -d)
cat > $work/t.toml <<TOML
[server]
data_dir = "$work/d"
[smtp]
listen = "127.0.0.1:23525"
[pop3]
listen = "127.0.0.1:23510"
[admin]
listen = "127.0.0.1:23580"
[log]
level = "warn"
TOML
$B serve --config $work/t.toml 2>$work/log & pid=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:23580/healthcheck >/dev/null && break; sleep 0.1; done
$B bench setup --admin-url http://127.0.0.1:23580 --users 16 >/dev/null
rss() { awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/$pid/status; }
echo "after setup: $(rss)"
python3 - <<'PY'
import poplib, threading
def go(i):
    p=poplib.POP3('127.0.0.1',23510); p.user(f'bench{i}@bench.test'); p.pass_('bench-password'); p.quit()
ts=[threading.Thread(target=go,args=(i,)) for i in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
PY
echo "after 16 concurrent first logins: $(rss)"
sleep 3
echo "3 s later: $(rss)"
kill $pid; rm -rf $work

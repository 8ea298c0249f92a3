#!/usr/bin/env bash
# Side-by-side: stock Dovecot 2.3 (Debian's dovecot-pop3d + dovecot-lmtpd, Maildir, default
# fsync) and Tern (embedded store), driven by the same `tern bench` workloads, alternately, on
# loopback. Prints each figure and the Tern/Dovecot ratio. Ratios from one run are the figures
# that count on a noisy machine.
#
#   bench/compare-dovecot.sh            (installs Dovecot from Debian packages if missing; root)
#
# Dovecot runs privately (its own base_dir, ports 21110/22424, a passwd-file); nothing of the
# system's Dovecot configuration is used or changed. Its passwords are {PLAIN}, the cheapest
# scheme, so the login figures favour Dovecot; Tern hashes with argon2id and remembers verified
# logins for 5 minutes (auth.cache_ttl_secs).
set -euo pipefail
users=100
# shellcheck source=bench/lib-dovecot-and-tern.sh
source "$(dirname "$0")/lib-dovecot-and-tern.sh"

json_field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }

# compare LABEL FIELD -- DOVECOT_ARGS -- TERN_ARGS
compare() {
  local label="$1" field="$2"; shift 2
  local dargs=() targs=()
  shift # --
  while [ "$1" != "--" ]; do dargs+=("$1"); shift; done
  shift
  targs=("$@")
  local d t
  d=$("$T" bench "${dargs[@]}" | json_field "$field")
  t=$("$T" bench "${targs[@]}" | json_field "$field")
  python3 - "$label" "$field" "$d" "$t" <<'PY'
import sys
label, field, d, t = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
if field.endswith("_ms"):
    print(f"{label:<62} Dovecot {d:>9.2f} ms  Tern {t:>9.2f} ms  Tern {d / max(t, 1e-9):5.1f}x faster")
else:
    print(f"{label:<62} Dovecot {d:>9.1f}     Tern {t:>9.1f}     Tern/Dovecot {t / max(d, 1e-9):5.1f}x")
PY
}

compare "deliveries/s, 4 KiB, 1 per connection, c16 (LMTP vs SMTP)" messages_per_sec \
  -- deliver --server 127.0.0.1:22424 --lmtp --messages 3000 --concurrency 16 \
  -- deliver --server 127.0.0.1:12525 --messages 3000 --concurrency 16
compare "deliveries/s, 4 KiB, connections reused, c16 (LMTP vs SMTP)" messages_per_sec \
  -- deliver --server 127.0.0.1:22424 --lmtp --messages 5000 --concurrency 16 --reuse \
  -- deliver --server 127.0.0.1:12525 --messages 5000 --concurrency 16 --reuse
compare "POP3 login+STAT+QUIT sessions/s, concurrency 16" ops_per_sec \
  -- pop3 --server 127.0.0.1:21110 --mode stat --concurrency 16 --duration 10 \
  -- pop3 --server 127.0.0.1:11110 --mode stat --concurrency 16 --duration 10
compare "messages retrieved/s, concurrency 4" messages_per_sec \
  -- pop3 --server 127.0.0.1:21110 --mode retr-all --concurrency 4 --duration 10 \
  -- pop3 --server 127.0.0.1:11110 --mode retr-all --concurrency 4 --duration 10
"$T" bench deliver --server 127.0.0.1:22424 --lmtp --messages 10000 --concurrency 16 --reuse --users 1 >/dev/null
"$T" bench deliver --server 127.0.0.1:12525 --messages 10000 --concurrency 16 --reuse --users 1 >/dev/null
compare "STAT+LIST+UIDL session on a 10,000-message mailbox, p50" p50_ms \
  -- pop3 --server 127.0.0.1:21110 --mode listing --concurrency 1 --duration 5 --users 1 \
  -- pop3 --server 127.0.0.1:11110 --mode listing --concurrency 1 --duration 5 --users 1

echo "huge0@bench.test:{PLAIN}bench-password::::::" >> "$work/dovecot/passwd"
"$T" bench setup --admin-url http://127.0.0.1:18000 --users 1 --prefix huge >/dev/null
"$T" bench deliver --server 127.0.0.1:22424 --lmtp --messages 1 --size 20971520 --concurrency 1 --users 1 --prefix huge | grep "first error" || true
"$T" bench deliver --server 127.0.0.1:12525 --messages 1 --size 20971520 --concurrency 1 --users 1 --prefix huge >/dev/null
compare "one 20 MiB RETR, MB/s" mb_per_sec \
  -- pop3 --server 127.0.0.1:21110 --mode retr-all --concurrency 1 --duration 5 --users 1 --prefix huge \
  -- pop3 --server 127.0.0.1:11110 --mode retr-all --concurrency 1 --duration 5 --users 1 --prefix huge

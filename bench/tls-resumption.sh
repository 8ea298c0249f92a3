#!/usr/bin/env bash
# Server CPU of a POP3S login (TLS handshake, USER/PASS, STAT, QUIT) with a full TLS handshake
# and with a resumed one, measured from /proc/PID/stat of a release Tern (embedded store) over
# SESSIONS sessions each, alternating ROUNDS times. The client is Python's ssl module (OpenSSL),
# one connection at a time; its own CPU is not counted.
#
#   bench/tls-resumption.sh            SESSIONS=2000 ROUNDS=3 by default
#   KEY=rsa bench/tls-resumption.sh    an RSA-2048 certificate (openssl) instead of ECDSA P-256
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
sessions="${SESSIONS:-2000}"
rounds="${ROUNDS:-3}"
cargo build --release -q --manifest-path "$root/Cargo.toml"
T="$root/target/release/tern"
work=$(mktemp -d)
if [ "${KEY:-ecdsa}" = rsa ]; then
  mkdir -p "$work/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost" \
    -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" 2>/dev/null
else
  "$T" cert self-signed --domain localhost --out "$work/tls" >/dev/null
fi
cat > "$work/tern.toml" <<TOML
[server]
data_dir = "$work/data"
[smtp]
listen = "127.0.0.1:19525"
[pop3]
listen = "127.0.0.1:19510"
tls_listen = "127.0.0.1:19595"
[admin]
listen = "127.0.0.1:19580"
[tls]
cert_file = "$work/tls/cert.pem"
key_file = "$work/tls/key.pem"
[log]
level = "warn"
TOML
"$T" serve --config "$work/tern.toml" 2> "$work/tern.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:19580/healthcheck >/dev/null && break; sleep 0.1; done
"$T" bench setup --admin-url http://127.0.0.1:19580 --users 1 >/dev/null

python3 - "$pid" "$sessions" "$rounds" "$work/tls/cert.pem" <<'PY'
import os, socket, ssl, sys, time
pid, n, rounds, ca = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
hz = os.sysconf("SC_CLK_TCK")
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / hz
def session(ctx, saved):
    raw = socket.create_connection(("127.0.0.1", 19595))
    s = ctx.wrap_socket(raw, server_hostname="localhost", session=saved)
    f = s.makefile("rwb")
    def cmd(line):
        if line:
            f.write(line.encode() + b"\r\n"); f.flush()
        reply = f.readline()
        assert reply.startswith(b"+OK"), reply
    cmd(None); cmd("USER bench0@bench.test"); cmd("PASS bench-password"); cmd("STAT"); cmd("QUIT")
    out = (s.session, s.session_reused, s.version())
    f.close(); s.close()
    return out
ctx = ssl.create_default_context(cafile=ca)
def run(resume):
    saved = session(ctx, None)[0] if resume else None
    reused = 0
    c0, t0 = cpu(), time.time()
    for _ in range(n):
        sess, was_reused, version = session(ctx, saved if resume else None)
        reused += was_reused
        if resume:
            saved = sess
    c1, t1 = cpu(), time.time()
    return (c1 - c0) / n * 1e6, n / (t1 - t0), reused, version
ratios = []
for r in range(1, rounds + 1):
    full = run(False)
    resumed = run(True)
    ratios.append(full[0] / resumed[0])
    print(f"round {r}: full handshake {full[0]:5.0f} us server CPU/session ({full[1]:5.0f}/s, {full[3]}); "
          f"resumed {resumed[0]:5.0f} us ({resumed[1]:5.0f}/s, {resumed[2]}/{n} resumed); full/resumed {full[0] / resumed[0]:.1f}x")
ratios.sort()
print(f"median full/resumed server CPU: {ratios[len(ratios) // 2]:.1f}x")
PY

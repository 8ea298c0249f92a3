# Shared by the Tern-vs-Dovecot benchmarks (sourced, not run): installs Dovecot from Debian if
# missing, starts it privately on loopback (its own base_dir, POP3 on 21110, LMTP on 22424, a
# passwd-file with {PLAIN} passwords, Maildir under $work/mail), builds and starts a release Tern
# on the embedded store (SMTP 12525, POP3 11110, admin 18000) with $users bench users, and stops
# both on exit. Needs root (Dovecot delivers as the `mail` user). Sets T (the tern binary),
# work (the scratch directory) and tern_pid.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
users="${users:-100}"

if ! command -v dovecot >/dev/null || [ ! -e /usr/lib/dovecot/lmtp ] || [ ! -e /usr/lib/dovecot/pop3 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-pop3d dovecot-lmtpd >/dev/null
fi
cargo build --release -q --manifest-path "$root/Cargo.toml"
T="$root/target/release/tern"

work=$(mktemp -d)
chmod 755 "$work"
mkdir -p "$work/dovecot/run" "$work/mail"
chown mail:mail "$work/mail"
for i in $(seq 0 $((users - 1))); do
  echo "bench$i@bench.test:{PLAIN}bench-password::::::"
done > "$work/dovecot/passwd"
cat > "$work/dovecot/dovecot.conf" <<CONF
protocols = pop3 lmtp
listen = 127.0.0.1
base_dir = $work/dovecot/run
state_dir = $work/dovecot/state
log_path = $work/dovecot/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:$work/mail/%d/%n
passdb {
  driver = passwd-file
  args = username_format=%u $work/dovecot/passwd
}
userdb {
  driver = static
  args = uid=mail gid=mail home=$work/mail/%d/%n
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = 21110
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = 22424
  }
}
protocol lmtp {
  postmaster_address = postmaster@bench.test
}
CONF
dovecot -c "$work/dovecot/dovecot.conf"

cat > "$work/tern.toml" <<TOML
[server]
data_dir = "$work/tern"
[smtp]
listen = "127.0.0.1:12525"
[pop3]
listen = "127.0.0.1:11110"
[admin]
listen = "127.0.0.1:18000"
[log]
level = "warn"
TOML
"$T" serve --config "$work/tern.toml" 2> "$work/tern.log" &
tern_pid=$!
cleanup() {
  kill "$tern_pid" 2>/dev/null || true
  doveadm -c "$work/dovecot/dovecot.conf" stop 2>/dev/null || true
  wait "$tern_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18000/healthcheck >/dev/null && break; sleep 0.1; done
"$T" bench setup --admin-url http://127.0.0.1:18000 --users "$users" >/dev/null
sleep 1

# Shared by the A/B bench scripts (sourced, not run).
#
#   start_tern NAME BINARY BASE_PORT [SERVER_LINES] [MORE_TOML]
#
# Starts `BINARY serve` with its configuration and data under $work/NAME: SMTP on BASE_PORT+25,
# POP3 on BASE_PORT+10, admin on BASE_PORT+80, logs at warn to $work/NAME/log. SERVER_LINES go
# into its [server] table, MORE_TOML after everything (other tables). Records the pid in the
# caller's `pids` array and in pid_NAME, then waits for the health check; if it never answers,
# prints the log and exits.
start_tern() {
  local name=$1 bin=$2 port=$3 server_lines=${4:-} more=${5:-}
  mkdir -p "$work/$name"
  cat > "$work/$name/tern.toml" <<TOML
[server]
data_dir = "$work/$name/data"
$server_lines
[smtp]
listen = "127.0.0.1:$((port + 25))"
[pop3]
listen = "127.0.0.1:$((port + 10))"
[admin]
listen = "127.0.0.1:$((port + 80))"
[log]
level = "warn"
$more
TOML
  "$bin" serve --config "$work/$name/tern.toml" 2> "$work/$name/log" &
  pids+=($!)
  eval "pid_$name=$!"
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$((port + 80))/healthcheck" >/dev/null && return
    sleep 0.2
  done
  cat "$work/$name/log"
  exit 1
}

#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), one after the other, and stops at the
# first crash. Needs cargo-fuzz (`cargo install cargo-fuzz`); on a stable toolchain,
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its sanitizer flags. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
export RUSTC_BOOTSTRAP=1
for target in pop3_session smtp_session smtp_client dot_codec command_parsers message_header; do
  mkdir -p "corpus/$target"
  echo "== $target for ${seconds}s"
  cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=5 2>&1 | tail -n 4
done

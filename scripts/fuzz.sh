#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time (default 60 s each) on its kept corpus
# (fuzz/corpus/<target>), after installing what fuzzing needs: a nightly toolchain and
# cargo-fuzz. A crash fails the run and leaves its input in fuzz/artifacts/<target>/.
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 600        # longer
# To keep what a long run found: cd fuzz && cargo +nightly fuzz cmin -s none -O <target>
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
secs="${1:-60}"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
cd fuzz
# Sanitizer "none": the targets are safe Rust, so panics and overflow checks (on in fuzz builds)
# are what can fail; AddressSanitizer would double the build for no extra finding.
cargo +nightly fuzz build -s none -O
log="$(mktemp)"
for target in $(cargo +nightly fuzz list); do
  mkdir -p "corpus/$target"
  echo "fuzzing $target for ${secs}s"
  if ! cargo +nightly fuzz run -s none -O "$target" "corpus/$target" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $target failed; its input is kept in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
done
rm -f "$log"

#!/usr/bin/env bash
# Archiving: throughput and compression ratio of `tailrace serve`'s archiver on CI-like output,
# beside `zstd -1` and `zstd -3` (single-threaded) on the same bytes in the same run; then the
# latency of 64 KiB ranged reads from the middle of the archived log and the bytes they fetch.
#
# Usage: load-tests/archive-bench.sh [SIZE_MB] [LEVEL]     (defaults: 1024, 3)
# Needs a release build (cargo build --release), curl and the zstd CLI. ARCHIVE_BENCH_CONFIG adds
# lines to the server's configuration, e.g. the Redis live tier:
#   ARCHIVE_BENCH_CONFIG=$'live_url = "redis://127.0.0.1:16379/"\nlive_hold_max_mib = 0'
set -euo pipefail
SIZE_MB=${1:-1024}
LEVEL=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${TAILRACE_BIN:-$ROOT/target/release/tailrace}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
WORK=$(mktemp -d /tmp/tailrace-archive.XXXXXX)
trap 'kill $SERVER_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
HTTP_PORT=${HTTP_PORT:-18630}; QUIC_PORT=${QUIC_PORT:-18631}

# shellcheck source=load-tests/corpus.sh
. "$ROOT/load-tests/corpus.sh"
make_corpus "$WORK/corpus"
for _ in $(seq $(( (SIZE_MB + 63) / 64 ))); do cat "$WORK/corpus"; done > "$WORK/log"
BYTES=$(stat -c %s "$WORK/log")

for l in 1 3; do
  /usr/bin/env time -f "%e %U %S" -o "$WORK/z.time" zstd -q -T1 -$l -c "$WORK/log" > "$WORK/log.zst"
  read -r E U S < "$WORK/z.time"
  awk -v b="$BYTES" -v c="$(stat -c %s "$WORK/log.zst")" -v e="$E" -v u="$U" -v s="$S" -v l="$l" \
    'BEGIN { printf "zstd -%d -T1: ratio=%.2f MB/s=%.0f cpu_s_per_GB=%.2f\n", l, b / c, b / 1e6 / e, (u + s) / (b / 1e9) }'
done

# One whole step archived at its end (no incremental archiving while it streams), so the span
# from END to "archived" is the archiver's whole cost.
cat > "$WORK/cfg.toml" <<CFG
archive_level = $LEVEL
archive_live_mib = 1048576
${ARCHIVE_BENCH_CONFIG:-}
CFG
TAILRACE_LOG=warn "$BIN" serve --config "$WORK/cfg.toml" --data-dir "$WORK/data" \
  --http-addr 127.0.0.1:$HTTP_PORT --quic-addr 127.0.0.1:$QUIC_PORT 2>"$WORK/serve.log" &
SERVER_PID=$!
until curl -sf http://127.0.0.1:$HTTP_PORT/healthz >/dev/null; do sleep 0.1; done
export TAILRACE_SERVER=http://127.0.0.1:$HTTP_PORT
ADMIN=$(cat "$WORK/data/admin-token")
eval "$("$BIN" job create --token "$ADMIN" --project bench/archive/run)"
"$BIN" run -q --transport http2 --job "$TAILRACE_JOB" --step big -- cat "$WORK/log"

ticks() { awk '{ print $14 + $15 }' /proc/$SERVER_PID/stat; }
HZ=$(getconf CLK_TCK)
C0=$(ticks); T0=$(date +%s.%N)
STEPS="$TAILRACE_SERVER/api/v1/jobs/$TAILRACE_JOB/steps"
until curl -sf -H "Authorization: Bearer $ADMIN" "$STEPS" | grep -q '"archived_at_ms":[0-9]'; do sleep 0.05; done
T1=$(date +%s.%N); C1=$(ticks)
STORED=$(find "$WORK/data/objects" -name '*.zst' -printf '%s\n' | awk '{ s += $1 } END { print s }')
awk -v b="$BYTES" -v c="$STORED" -v t0="$T0" -v t1="$T1" -v c0="$C0" -v c1="$C1" -v hz="$HZ" -v l="$LEVEL" \
  'BEGIN { printf "tailrace archiver level %d: ratio=%.2f MB/s=%.0f (wall, from END to archived) cpu_s_per_GB=%.2f\n", l, b / c, b / 1e6 / (t1 - t0), (c1 - c0) / hz / (b / 1e9) }'

fetched() { curl -s "$TAILRACE_SERVER/metrics" | awk '/^tailrace_archive_fetched_bytes_total/ { print $2 }'; }
MID=$(( BYTES / 2 ))
F0=$(fetched)
for i in $(seq 20); do
  START=$(( MID + i * 1000003 ))
  curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $ADMIN" -H "Range: bytes=$START-$(( START + 65535 ))" \
    "$TAILRACE_SERVER/api/v1/jobs/$TAILRACE_JOB/steps/big/output"
done | sort -n | awk '{ a[NR] = $1 } END { printf "64 KiB ranged read from the middle: median=%.1f ms p90=%.1f ms max=%.1f ms\n", a[int(NR/2)+1]*1000, a[int(NR*0.9)]*1000, a[NR]*1000 }'
F1=$(fetched)
echo "bytes fetched from the object store per 64 KiB read: $(( (F1 - F0) / 20 ))"

#!/usr/bin/env bash
# End-to-end throughput of one step: `tailrace run` (agent) → `tailrace serve` on this machine.
# Reports MB/s of raw output delivered and verified, and server CPU-seconds per GB ingested.
#
# Usage: load-tests/e2e-throughput.sh [SIZE_MB] [TRANSPORT] [DURABILITY]
#   SIZE_MB     output to stream (default 1024)
#   TRANSPORT   quic | http2 (default quic)
#   DURABILITY  fsync | os (default fsync)
# Needs a release build: cargo build --release
set -euo pipefail
SIZE_MB=${1:-1024}
TRANSPORT=${2:-quic}
DURABILITY=${3:-fsync}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${TAILRACE_BIN:-$ROOT/target/release/tailrace}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
WORK=$(mktemp -d /tmp/tailrace-e2e.XXXXXX)
trap 'kill $SERVER_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
HTTP_PORT=${HTTP_PORT:-18620}; QUIC_PORT=${QUIC_PORT:-18621}

# shellcheck source=load-tests/corpus.sh
. "$ROOT/load-tests/corpus.sh"
make_corpus "$WORK/corpus"
REPEAT=$(( (SIZE_MB + 63) / 64 ))
FILES=$(for _ in $(seq "$REPEAT"); do printf '%s ' "$WORK/corpus"; done)
BYTES=$(( $(stat -c %s "$WORK/corpus") * REPEAT ))

TAILRACE_DURABILITY=$DURABILITY TAILRACE_LOG=warn "$BIN" serve --data-dir "$WORK/data" \
  --http-addr 127.0.0.1:$HTTP_PORT --quic-addr 127.0.0.1:$QUIC_PORT 2>"$WORK/serve.log" &
SERVER_PID=$!
until curl -sf http://127.0.0.1:$HTTP_PORT/healthz >/dev/null; do sleep 0.1; done
export TAILRACE_SERVER=http://127.0.0.1:$HTTP_PORT
eval "$("$BIN" job create --token "$(cat "$WORK/data/admin-token")" --project bench/e2e/run)"

ticks() { awk '{ print $14 + $15 }' /proc/$1/stat; }
HZ=$(getconf CLK_TCK)
S0=$(ticks $SERVER_PID)
T0=$(date +%s.%N)
/usr/bin/env time -f "%U %S" -o "$WORK/agent.time" \
  "$BIN" run -q --transport "$TRANSPORT" --job "$TAILRACE_JOB" --step e2e -- sh -c "cat $FILES"
T1=$(date +%s.%N)
S1=$(ticks $SERVER_PID)
read -r AU AS < "$WORK/agent.time"
awk -v b="$BYTES" -v t0="$T0" -v t1="$T1" -v s0="$S0" -v s1="$S1" -v hz="$HZ" -v au="$AU" -v as="$AS" \
    -v tr="$TRANSPORT" -v du="$DURABILITY" 'BEGIN {
  secs = t1 - t0; gb = b / 1e9; scpu = (s1 - s0) / hz;
  printf "transport=%s durability=%s bytes=%d seconds=%.2f MB/s=%.0f server_cpu_s=%.2f server_cpu_s_per_GB=%.2f agent_cpu_s_per_GB=%.2f\n",
    tr, du, b, secs, b / 1e6 / secs, scpu, scpu / gb, (au + as) / gb }'

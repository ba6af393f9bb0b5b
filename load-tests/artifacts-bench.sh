#!/usr/bin/env bash
# Artifact throughput beside a plain static file server on this machine.
#
# Tailrace: `tailrace store-artifacts` uploads (SHA-256 on both sides, parts in the local
# object store, metadata in SQLite) and curl downloads. Reference: nginx serving a folder
# (GET with sendfile; PUT through its DAV module) with curl as the client both ways. The same
# files, the same client for every download, four transfers at once for the small files.
#
# Usage: load-tests/artifacts-bench.sh [BIG_MB] [SMALL_FILES]
#   BIG_MB       size of the one large file, random bytes (default 1024)
#   SMALL_FILES  number of small files, 1–8 KiB each (default 10000)
# BENCH_DIR=/dev/shm runs both servers on tmpfs (the software alone, without the disk).
# Needs a release build (cargo build --release), curl and nginx (apt-get install nginx-light).
set -euo pipefail
BIG_MB=${1:-1024}
SMALL=${2:-10000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${TAILRACE_BIN:-$ROOT/target/release/tailrace}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "needs nginx: apt-get install -y nginx-light" >&2; exit 1; }
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/tailrace-artifacts.XXXXXX")
trap 'kill $SERVER_PID 2>/dev/null || true; [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; rm -rf "$WORK"' EXIT
HTTP_PORT=${HTTP_PORT:-18630}; QUIC_PORT=${QUIC_PORT:-18631}; NGINX_PORT=${NGINX_PORT:-18632}

echo "making ${BIG_MB} MiB of random bytes and $SMALL small files..." >&2
mkdir -p "$WORK/in/small"
head -c $((BIG_MB * 1048576)) /dev/urandom > "$WORK/in/big.bin"
python3 - "$WORK/in/small" "$SMALL" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
for i in range(n):
    d = os.path.join(root, f"d{i % 100:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}.txt"), "wb") as f:
        f.write(rng.randbytes(rng.randint(1024, 8192)))
EOF
SMALL_BYTES=$(du -sb --apparent-size "$WORK/in/small" | cut -f1)
BIG_BYTES=$((BIG_MB * 1048576))
(cd "$WORK/in/small" && find . -type f | sed 's|^\./||' | sort) > "$WORK/small.list"
sync

now() { date +%s.%N; }
rate() { awk -v b="$1" -v t0="$2" -v t1="$3" 'BEGIN { printf "%.1f", b / 1e6 / (t1 - t0) }'; }
declare -A R

# --- Tailrace ---------------------------------------------------------------------------------
TAILRACE_LOG=warn "$BIN" serve --data-dir "$WORK/data" --http-addr 127.0.0.1:$HTTP_PORT --quic-addr 127.0.0.1:$QUIC_PORT 2>"$WORK/serve.log" &
SERVER_PID=$!
until curl -sf http://127.0.0.1:$HTTP_PORT/healthz >/dev/null; do sleep 0.1; done
export TAILRACE_SERVER=http://127.0.0.1:$HTTP_PORT
eval "$("$BIN" job create --token "$(cat "$WORK/data/admin-token")" --project bench/artifacts/run)"
BASE="http://127.0.0.1:$HTTP_PORT/api/v1/jobs/$TAILRACE_JOB/artifacts"

t0=$(now); "$BIN" store-artifacts "$WORK/in/big.bin" --destination big.bin >/dev/null; t1=$(now)
R[tr_up_big]=$(rate $BIG_BYTES "$t0" "$t1")
t0=$(now); "$BIN" store-artifacts "$WORK/in/small" --destination small --parallel 4 >/dev/null 2>&1; t1=$(now)
R[tr_up_small]=$(rate "$SMALL_BYTES" "$t0" "$t1"); R[tr_up_small_fps]=$(awk -v n="$SMALL" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", n/(b-a)}')
t0=$(now); curl -sf -H "Authorization: Bearer $TAILRACE_TOKEN" -o /dev/null "$BASE/big.bin"; t1=$(now)
R[tr_down_big]=$(rate $BIG_BYTES "$t0" "$t1")
sed "s|.*|url = \"$BASE/small/&\"\noutput = \"/dev/null\"|" "$WORK/small.list" > "$WORK/tr-get.cfg"
t0=$(now); curl -sf -Z --parallel-max 4 -H "Authorization: Bearer $TAILRACE_TOKEN" -K "$WORK/tr-get.cfg" 2>/dev/null; t1=$(now)
R[tr_down_small]=$(rate "$SMALL_BYTES" "$t0" "$t1"); R[tr_down_small_fps]=$(awk -v n="$SMALL" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", n/(b-a)}')
PEAK=$(awk '/VmHWM/ { print int($2 / 1024) }' /proc/$SERVER_PID/status)
# Check one download byte for byte.
[ "$(curl -sf -H "Authorization: Bearer $TAILRACE_TOKEN" "$BASE/big.bin" | sha256sum | cut -d' ' -f1)" = "$(sha256sum < "$WORK/in/big.bin" | cut -d' ' -f1)" ] || { echo "big.bin differs" >&2; exit 1; }
kill $SERVER_PID; wait $SERVER_PID 2>/dev/null || true

# --- nginx ------------------------------------------------------------------------------------
mkdir -p "$WORK/www" "$WORK/nginx-tmp"
# nginx workers run as an unprivileged user when started as root: let them in.
chmod 755 "$WORK"; chmod 777 "$WORK/www" "$WORK/nginx-tmp"
cat > "$WORK/nginx.conf" <<EOF
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  client_max_body_size 0;
  client_body_temp_path $WORK/nginx-tmp;
  proxy_temp_path $WORK/nginx-tmp; fastcgi_temp_path $WORK/nginx-tmp; uwsgi_temp_path $WORK/nginx-tmp; scgi_temp_path $WORK/nginx-tmp;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $WORK/www;
    dav_methods PUT;
    create_full_put_path on;
  }
}
EOF
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK"
until curl -s -o /dev/null http://127.0.0.1:$NGINX_PORT/; do sleep 0.1; done
NBASE="http://127.0.0.1:$NGINX_PORT"
t0=$(now); curl -sf -T "$WORK/in/big.bin" "$NBASE/big.bin"; t1=$(now)
R[ng_up_big]=$(rate $BIG_BYTES "$t0" "$t1")
sed "s|.*|upload-file = \"$WORK/in/small/&\"\nurl = \"$NBASE/small/&\"|" "$WORK/small.list" > "$WORK/ng-put.cfg"
t0=$(now); curl -sf -Z --parallel-max 4 -K "$WORK/ng-put.cfg" >/dev/null 2>/dev/null; t1=$(now)
R[ng_up_small]=$(rate "$SMALL_BYTES" "$t0" "$t1"); R[ng_up_small_fps]=$(awk -v n="$SMALL" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", n/(b-a)}')
t0=$(now); curl -sf -o /dev/null "$NBASE/big.bin"; t1=$(now)
R[ng_down_big]=$(rate $BIG_BYTES "$t0" "$t1")
sed "s|.*|url = \"$NBASE/small/&\"\noutput = \"/dev/null\"|" "$WORK/small.list" > "$WORK/ng-get.cfg"
t0=$(now); curl -sf -Z --parallel-max 4 -K "$WORK/ng-get.cfg" 2>/dev/null; t1=$(now)
R[ng_down_small]=$(rate "$SMALL_BYTES" "$t0" "$t1"); R[ng_down_small_fps]=$(awk -v n="$SMALL" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", n/(b-a)}')

pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f%%", 100 * a / b }'; }
printf '%-34s %12s %12s %8s\n' "MB/s (files/s)" tailrace nginx+curl ratio
printf '%-34s %12s %12s %8s\n' "upload ${BIG_MB} MiB file" "${R[tr_up_big]}" "${R[ng_up_big]}" "$(pct "${R[tr_up_big]}" "${R[ng_up_big]}")"
printf '%-34s %12s %12s %8s\n' "upload $SMALL small files" "${R[tr_up_small]} (${R[tr_up_small_fps]})" "${R[ng_up_small]} (${R[ng_up_small_fps]})" "$(pct "${R[tr_up_small]}" "${R[ng_up_small]}")"
printf '%-34s %12s %12s %8s\n' "download ${BIG_MB} MiB file" "${R[tr_down_big]}" "${R[ng_down_big]}" "$(pct "${R[tr_down_big]}" "${R[ng_down_big]}")"
printf '%-34s %12s %12s %8s\n' "download $SMALL small files" "${R[tr_down_small]} (${R[tr_down_small_fps]})" "${R[ng_down_small]} (${R[ng_down_small_fps]})" "$(pct "${R[tr_down_small]}" "${R[ng_down_small]}")"
echo "tailrace serve peak RSS: ${PEAK} MiB"

#!/usr/bin/env bash
# Tailrace beside the physical limits of this machine and the C log pipelines people would use
# instead, on the same corpus (`tailrace-load corpus --seed 1`), in one run.
#
#   limits:   zstd -1 / -3 (one thread) compressing the corpus; loopback TCP (iperf3);
#             Redis XADD with pipelining (redis-benchmark), 4 KiB entries
#   peers:    rsyslog (imtcp -> omfile, zipLevel=1) and syslog-ng (network -> file), each
#             receiving the corpus over one TCP connection, made to keep bytes and order:
#             octet-counted framing off, one main-queue worker, control-character escaping off
#   tailrace: one step of the same corpus through `tailrace-load` (agent -> QUIC or HTTP/2 ->
#             staging file with fsync -> archive at zstd level 1), read back and verified
#
# Every peer's output is compared with its input byte for byte. Syslog cannot carry blank lines
# (both drop them), NUL bytes (rsyslog writes `#000` and drops control characters after it,
# syslog-ng ends the message there) or a CR before the LF (syslog-ng strips it), so the peers get
# the corpus without those lines (about 1% of it); Tailrace gets all of it. The fan-out peers (NATS, Redis pub/sub) are `tailrace-load fanout`, see
# docs/PERFORMANCE.md.
#
# Usage: load-tests/peers.sh [SIZE_MB]          (default 1024)
# Needs a release build (cargo build --release) and: apt-get install -y zstd iperf3 redis-server
# redis-tools python3. rsyslog and syslog-ng-core conflict as Debian packages, so the script
# `apt-get download`s both and unpacks each into its own folder under target/peers (their
# libraries: apt-get install -y libestr0 libfastjson4 liblognorm5 libivykis0 libnet1 libwrap0).
set -euo pipefail
SIZE_MB=${1:-1024}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOAD=${TAILRACE_LOAD_BIN:-$ROOT/target/release/tailrace-load}
[ -x "$LOAD" ] || { echo "build first: cargo build --release" >&2; exit 1; }
PEERS=${PEERS_DIR:-$ROOT/target/peers}
WORK=$(mktemp -d /tmp/tailrace-peers.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
RESULTS=$WORK/results.tsv
HZ=$(getconf CLK_TCK)

# --- the peers' binaries, unpacked side by side ------------------------------------------------
if [ ! -x "$PEERS/rsyslog/usr/sbin/rsyslogd" ] || [ ! -x "$PEERS/syslog-ng/usr/sbin/syslog-ng" ]; then
  mkdir -p "$PEERS" && (cd "$PEERS" && apt-get download rsyslog syslog-ng-core >/dev/null 2>&1)
  dpkg -x "$PEERS"/rsyslog_*.deb "$PEERS/rsyslog"
  dpkg -x "$PEERS"/syslog-ng-core_*.deb "$PEERS/syslog-ng"
fi

# --- the corpus ---------------------------------------------------------------------------------
"$LOAD" corpus --seed 1 --size 64MiB -o "$WORK/corpus"
REPEAT=$(( (SIZE_MB + 63) / 64 ))
for _ in $(seq "$REPEAT"); do cat "$WORK/corpus"; done > "$WORK/input"
# What syslog can carry: no blank lines, no NUL, no line ending in CR.
python3 - "$WORK/corpus" "$WORK/corpus.syslog" <<'EOF'
import sys
lines = open(sys.argv[1], 'rb').read().split(b'\n')
if lines and lines[-1] == b'':
    lines.pop()
kept = [l for l in lines if l and b'\0' not in l and not l.endswith(b'\r')]
open(sys.argv[2], 'wb').write(b''.join(l + b'\n' for l in kept))
EOF
for _ in $(seq "$REPEAT"); do cat "$WORK/corpus.syslog"; done > "$WORK/input.syslog"
BYTES=$(stat -c %s "$WORK/input")
SBYTES=$(stat -c %s "$WORK/input.syslog")
echo "corpus: $BYTES bytes for Tailrace, $SBYTES bytes for the syslog peers" >&2

# name, bytes, seconds, cpu seconds, note
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$RESULTS"; }
now() { date +%s.%N; }
calc() { awk "BEGIN { print $* }"; }
idle_since() {  # prints when process $1 last used CPU, once it has been idle for 0.5 s
  local last; last=$(ticks "$1"); local t; t=$(now); local still=0
  while [ $still -lt 25 ]; do
    sleep 0.02
    local c; c=$(ticks "$1")
    if [ "$c" != "$last" ]; then last=$c; t=$(now); still=0; else still=$((still + 1)); fi
  done
  echo "$t"
}
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
send() { python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",int(sys.argv[2]))); s.sendfile(open(sys.argv[1],"rb")); s.close()' "$1" "$2"; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; return 1; }
same() {  # same EXPECTED ACTUAL NAME
  if cmp -s "$1" "$2"; then echo "$3: output identical to its input" >&2
  else echo "$3: OUTPUT DIFFERS from its input: $(cmp "$1" "$2" 2>&1 | head -1)" >&2; record "$3 (OUTPUT DIFFERS)" 0 1 0 "failed"; fi
}

# --- limits -------------------------------------------------------------------------------------
for l in 1 3; do
  /usr/bin/env time -f "%e %U %S" -o "$WORK/t" zstd -q -T1 -$l -c "$WORK/input" > "$WORK/z.zst"
  read -r E U S < "$WORK/t"
  record "zstd -$l (one thread)" "$BYTES" "$E" "$(calc "$U + $S")" "ratio $(calc "$BYTES / $(stat -c %s "$WORK/z.zst")")"
done
rm -f "$WORK/z.zst"

if command -v iperf3 >/dev/null; then
  iperf3 -s -p 18710 >/dev/null 2>&1 & PIDS+=($!)   # stopped by the trap; a one-off server would count the port probe as its client
  wait_port 18710
  BPS=$(iperf3 -c 127.0.0.1 -p 18710 -t 5 -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
  record "loopback TCP (iperf3, 5 s)" "$(python3 -c "print(int($BPS / 8 * 5))")" 5 0 "one stream"
fi

if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
  redis-server --port 18711 --save '' --appendonly no >/dev/null & PIDS+=($!)
  RPID=$!
  wait_port 18711
  VALUE=$(head -c 4096 "$WORK/corpus.syslog" | tr -c 'a-zA-Z0-9 ' '.')
  N=200000
  C0=$(ticks $RPID); T0=$(now)
  redis-benchmark -p 18711 -P 64 -n $N -q XADD bench MAXLEN '~' 100000 '*' d "$VALUE" >/dev/null
  T1=$(now); C1=$(ticks $RPID)
  record "Redis XADD, 4 KiB, pipelined 64" $((N * 4096)) "$(calc "$T1 - $T0")" "$(calc "($C1 - $C0) / $HZ")" "redis-server CPU only"
fi

# --- rsyslog: imtcp -> omfile with zipLevel=1 ----------------------------------------------------
RS=$PEERS/rsyslog
mkdir -p "$WORK/rs"
cat > "$WORK/rs/rsyslog.conf" <<EOF
global(workDirectory="$WORK/rs" maxMessageSize="1m"
       parser.escapeControlCharactersOnReceive="off" parser.escapeControlCharacterTab="off")
main_queue(queue.workerThreads="1" queue.timeoutShutdown="600000")
module(load="imtcp")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="ci") { action(type="omfile" file="$WORK/rs/out.gz" template="raw" zipLevel="1" ioBufferSize="256k") }
input(type="imtcp" port="18712" ruleset="ci" supportOctetCountedFraming="off")
EOF
/usr/bin/env time -f "%U %S" -o "$WORK/rs/time" \
  "$RS/usr/sbin/rsyslogd" -n -f "$WORK/rs/rsyslog.conf" -i "$WORK/rs/pid" -M "$RS/usr/lib/x86_64-linux-gnu/rsyslog" 2>"$WORK/rs/log" & PIDS+=($!)
TPID=$!
wait_port 18712
T0=$(now)
send "$WORK/input.syslog" 18712
# The sender is done when the kernel has the bytes, not rsyslog: it is done when its CPU time
# stops growing (0.5 s still); then TERM makes it close the file.
T1=$(idle_since "$(cat "$WORK/rs/pid")")
kill -TERM "$(cat "$WORK/rs/pid")"; wait $TPID || true
read -r U S < "$WORK/rs/time"
record "rsyslog imtcp -> omfile zipLevel=1" "$SBYTES" "$(calc "$T1 - $T0")" "$(calc "$U + $S")" "ratio $(calc "$SBYTES / $(stat -c %s "$WORK/rs/out.gz")"); no fsync"
zcat "$WORK/rs/out.gz" > "$WORK/rs/out"
same "$WORK/input.syslog" "$WORK/rs/out" rsyslog
rm -f "$WORK/rs/out" "$WORK/rs/out.gz"

# --- syslog-ng: network -> file (it has no compressing file destination) -----------------------
SNG=$PEERS/syslog-ng
mkdir -p "$WORK/sng"
cat > "$WORK/sng/syslog-ng.conf" <<EOF
@version: 3.38
options { log-msg-size(1048576); keep-hostname(no); chain-hostnames(no); stats-freq(0); };
source s_net { network(ip(127.0.0.1) port(18713) transport(tcp) flags(no-parse) log-msg-size(1048576)); };
destination d_file { file("$WORK/sng/out" template("\${MSG}\n") template-escape(no)); };
log { source(s_net); destination(d_file); };
EOF
LD_LIBRARY_PATH=$SNG/usr/lib/syslog-ng /usr/bin/env time -f "%U %S" -o "$WORK/sng/time" "$SNG/usr/sbin/syslog-ng" -F -f "$WORK/sng/syslog-ng.conf" \
  --module-path="$SNG/usr/lib/syslog-ng/3.38" -R "$WORK/sng/persist" -c "$WORK/sng/ctl" -p "$WORK/sng/pid" 2>"$WORK/sng/log" & PIDS+=($!)
TPID=$!
wait_port 18713
T0=$(now)
send "$WORK/input.syslog" 18713
# syslog-ng has no drain-on-exit guarantee: wait until the file holds every byte.
until [ "$(stat -c %s "$WORK/sng/out" 2>/dev/null || echo 0)" -ge "$SBYTES" ]; do sleep 0.02; done
T1=$(now)
kill -TERM "$(cat "$WORK/sng/pid")"; wait $TPID || true
read -r U S < "$WORK/sng/time"
record "syslog-ng network -> file" "$SBYTES" "$(calc "$T1 - $T0")" "$(calc "$U + $S")" "uncompressed; no fsync"
same "$WORK/input.syslog" "$WORK/sng/out" syslog-ng
rm -f "$WORK/sng/out"

# --- Tailrace: one step of the same corpus, archived at zstd level 1 ----------------------------
cat > "$WORK/step.toml" <<EOF
purpose = "peers.sh: one step of the corpus, archived and read back"
agents = 1
step_bytes = $BYTES
write_bytes = "64KiB"
spool_mem = "8MiB"
EOF
printf 'archive_level = 1\n' > "$WORK/serve.toml"
for t in http2 quic; do
  "$LOAD" run -q --transport "$t" --server-config "$WORK/serve.toml" --json "$WORK/tr-$t.json" "$WORK/step.toml" >&2
  python3 - "$WORK/tr-$t.json" "$t" >> "$RESULTS" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
secs = r["ingest_seconds"] + (r["archive_wait_seconds"] or 0)
print(f"Tailrace over {sys.argv[2]}: ingest, fsync, archive zstd -1\t{r['bytes']}\t{secs}\t{r['server']['cpu_seconds_total']}\tverified at END and read back from the archive; agent {r['generator_cpu_seconds']:.2f} CPU-s")
EOF
done

# --- the table ----------------------------------------------------------------------------------
python3 - "$RESULTS" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
def mbps(r): return int(r[1]) / 1e6 / float(r[2])
def cpugb(r): return float(r[3]) / (int(r[1]) / 1e9)
zstd1 = next((r for r in rows if r[0].startswith("zstd -1")), None)
rs = next((r for r in rows if r[0].startswith("rsyslog")), None)
sng = next((r for r in rows if r[0].startswith("syslog-ng")), None)
print("| what | MB/s | CPU-s per GB | notes |")
print("|---|---|---|---|")
for r in rows:
    note = r[4]
    if r[0].startswith("Tailrace"):
        extra = []
        if rs: extra.append(f"{mbps(r) / mbps(rs):.1f}x rsyslog")
        if sng: extra.append(f"{mbps(r) / mbps(sng):.1f}x syslog-ng")
        if zstd1: extra.append(f"CPU {cpugb(r) / cpugb(zstd1):.1f}x zstd -1")
        note += "; " + ", ".join(extra)
    cpu = f"{cpugb(r):.2f}" if float(r[3]) > 0 else "—"
    print(f"| {r[0]} | {mbps(r):.0f} | {cpu} | {note} |")
EOF

#!/usr/bin/env python3
"""What Redis's one thread spends per MiB appended: through a script's arguments, or not.

Why the Redis live tier sends appends over 64 KiB without Lua (storage/src/redis_live/watched.rs):
Redis copies every argument of a script call into a Lua string before the script runs.

    python3 -m venv /tmp/pyr && /tmp/pyr/bin/pip install -q redis
    redis-server --port 16379 --save '' --appendonly yes --appendfsync everysec --daemonize yes
    /tmp/pyr/bin/python load-tests/redis-lua-cost.py [calls]

For each way, the wall time per 1 MiB call and Redis's own `usec_per_call` (INFO commandstats).
"""
import sys
import time

import redis

r = redis.Redis(port=int(sys.argv[2]) if len(sys.argv) > 2 else 16379)
line = b"2026-11-29T12:00:00Z INFO compiling crate foo v1.2.3 (/src/foo) elapsed=12ms\n"
data = (line * (2 * 1024 * 1024 // len(line)))[: 1 << 20]
pieces = [data[i : i + 262144] for i in range(0, len(data), 262144)]
calls = int(sys.argv[1]) if len(sys.argv) > 1 else 200
xadd_all = r.script_load("for i = 1, #ARGV do redis.call('XADD', KEYS[1], '*', 'd', ARGV[i]) end return 1")
noop = r.script_load("return 1")
watched = ("cmdstat_exec", "cmdstat_xadd", "cmdstat_hset", "cmdstat_evalsha")


def run(way, key):
    if way == "XADD x4, pipelined":
        p = r.pipeline(transaction=False)
        for piece in pieces:
            p.xadd(key, {"d": piece})
        p.execute()
    elif way == "MULTI, XADD x4, HSET, EXEC":
        p = r.pipeline(transaction=True)
        for piece in pieces:
            p.xadd(key, {"d": piece})
        p.hset(key + ":m", "hwm", 1)
        p.execute()
    elif way == "EVALSHA: script XADDs its 4 arguments":
        r.evalsha(xadd_all, 1, key, *pieces)
    else:
        r.evalsha(noop, 1, key, *pieces)


for way in ("XADD x4, pipelined", "MULTI, XADD x4, HSET, EXEC", "EVALSHA: script XADDs its 4 arguments", "EVALSHA: script does nothing"):
    r.config_resetstat()
    start = time.time()
    for i in range(calls):
        key = "lua-cost:%d" % i
        run(way, key)
        r.delete(key, key + ":m")
    ms = (time.time() - start) / calls * 1000
    stats = {k[8:]: v["usec_per_call"] for k, v in r.info("commandstats").items() if k in watched}
    print("%-40s %6.2f ms per MiB call; Redis usec per call: %s" % (way, ms, stats))

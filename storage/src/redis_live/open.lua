-- Opens (or finds) a step. KEYS: meta hash.  ARGV: ttl seconds.  Returns {hwm, end or ''}.
local m = KEYS[1]
redis.call('HSETNX', m, 'hwm', '0')
redis.call('EXPIRE', m, tonumber(ARGV[1]))
local v = redis.call('HMGET', m, 'hwm', 'end')
return {tonumber(v[1]), v[2] or ''}

-- Appends a chunk under the offset rule, atomically per step.
-- KEYS: meta hash, stream, time index.  ARGV: offset, timestamp µs, bytes, masked (0/1),
-- ttl seconds, notify channel, index every bytes, index gap µs.
-- Returns {outcome, hwm}: outcome is written, gap or ended.
local m, s, t = KEYS[1], KEYS[2], KEYS[3]
local hwm = tonumber(redis.call('HGET', m, 'hwm') or '0')
if redis.call('HEXISTS', m, 'end') == 1 then return {'ended', hwm} end
local off = tonumber(ARGV[1])
local data = ARGV[3]
local len = string.len(data)
if off > hwm then return {'gap', hwm} end
if off + len <= hwm then return {'written', hwm} end
local skip = hwm - off
if skip > 0 then data = string.sub(data, skip + 1) end
local at = hwm
-- Entry ids are <first offset>-1: strictly increasing, and XREVRANGE finds an offset's entry.
redis.call('XADD', s, string.format('%d-1', at), 'd', data)
hwm = at + string.len(data)
redis.call('HSET', m, 'hwm', string.format('%d', hwm))
if ARGV[4] == '1' then redis.call('HSET', m, 'masked', '1') end
local last = redis.call('HMGET', m, 'ti_off', 'ti_ts')
local ts = tonumber(ARGV[2])
local due = last[1] == false or at >= tonumber(last[1]) + tonumber(ARGV[7]) or ts >= tonumber(last[2]) + tonumber(ARGV[8])
if due and (last[2] == false or ts >= tonumber(last[2])) then
  redis.call('RPUSH', t, string.format('%d', at) .. ':' .. ARGV[2])
  redis.call('HSET', m, 'ti_off', string.format('%d', at), 'ti_ts', ARGV[2])
end
local ttl = tonumber(ARGV[5])
redis.call('EXPIRE', m, ttl)
redis.call('EXPIRE', s, ttl)
redis.call('EXPIRE', t, ttl)
redis.call('PUBLISH', ARGV[6], 'h' .. string.format('%d', hwm))
return {'written', hwm}

-- Appends a chunk under the offset rule, atomically per step.
-- KEYS: meta hash, stream, time index.  ARGV: offset, timestamp µs, bytes, masked (0/1),
-- ttl seconds, notify channel, index every bytes, index gap µs.
-- Returns {outcome, hwm}: outcome is written, gap or ended.
local m, s, t = KEYS[1], KEYS[2], KEYS[3]
local v = redis.call('HMGET', m, 'hwm', 'end', 'ti_off', 'ti_ts')
local hwm = tonumber(v[1] or '0')
if v[2] then return {'ended', hwm} end
local off = tonumber(ARGV[1])
local data = ARGV[3]
local len = string.len(data)
if off > hwm then return {'gap', hwm} end
if off + len <= hwm then return {'written', hwm} end
local skip = hwm - off
if skip > 0 then data = string.sub(data, skip + 1) end
local at = hwm
-- Entry ids are <first offset>-1: strictly increasing, and XREVRANGE finds an offset's entry.
-- Entries hold at most 256 KiB, so a read touches little more than it returns.
local ENTRY = 262144
local n = string.len(data)
local pos = 0
while pos < n do
  local piece = n - pos <= ENTRY and (pos == 0 and data or string.sub(data, pos + 1)) or string.sub(data, pos + 1, pos + ENTRY)
  redis.call('XADD', s, string.format('%d-1', at + pos), 'd', piece)
  pos = pos + string.len(piece)
end
hwm = at + n
local fields = {'hwm', string.format('%d', hwm)}
if ARGV[4] == '1' then
  fields[#fields + 1] = 'masked'
  fields[#fields + 1] = '1'
end
-- A time-index point at the first byte, every ARGV[7] bytes, and after ARGV[8] µs of silence;
-- the keys' expiry is renewed with it (so at least that often while output flows).
local ts = tonumber(ARGV[2])
local due = v[3] == false or at >= tonumber(v[3]) + tonumber(ARGV[7]) or ts >= tonumber(v[4]) + tonumber(ARGV[8])
if due and (v[4] == false or ts >= tonumber(v[4])) then
  redis.call('RPUSH', t, string.format('%d', at) .. ':' .. ARGV[2])
  fields[#fields + 1] = 'ti_off'
  fields[#fields + 1] = string.format('%d', at)
  fields[#fields + 1] = 'ti_ts'
  fields[#fields + 1] = ARGV[2]
  local ttl = tonumber(ARGV[5])
  redis.call('EXPIRE', m, ttl)
  redis.call('EXPIRE', s, ttl)
  redis.call('EXPIRE', t, ttl)
end
redis.call('HSET', m, unpack(fields))
redis.call('PUBLISH', ARGV[6], 'h' .. string.format('%d', hwm))
return {'written', hwm}

-- Appends a chunk under the offset rule, atomically per step.
-- KEYS: meta hash, stream, time index.  ARGV: offset, timestamp µs, chunk length, masked (0/1),
-- ttl seconds, notify channel, index every bytes, index gap µs, most bytes pushed, then the
-- chunk's bytes as pieces of at most 256 KiB (one stream entry each, so the bytes are not
-- copied in Lua unless a resent prefix must be cut off).
-- Publishes on the notify channel 'd<start>:<bytes>' when at most ARGV[9] bytes were added to a
-- step whose bytes were never overwritten (followers serve them without reading them back),
-- else 'h<hwm>'.
-- Returns {outcome, hwm, start, pushed}: outcome is written, gap or ended; this call added the
-- bytes [start, hwm); pushed is 1 when they were published with the notification.
local m, s, t = KEYS[1], KEYS[2], KEYS[3]
local v = redis.call('HMGET', m, 'hwm', 'end', 'ti_off', 'ti_ts', 'masked')
local hwm = tonumber(v[1] or '0')
if v[2] then return {'ended', hwm, hwm, 0} end
local off = tonumber(ARGV[1])
local len = tonumber(ARGV[3])
if off > hwm then return {'gap', hwm, hwm, 0} end
if off + len <= hwm then return {'written', hwm, hwm, 0} end
-- Entry ids are <first offset>-1: strictly increasing, and XREVRANGE finds an offset's entry.
-- Entries hold at most 256 KiB, so a read touches little more than it returns.
local skip = hwm - off
local at = hwm
local push = ARGV[4] == '0' and not v[5] and off + len - hwm <= tonumber(ARGV[9])
local added = {}
for i = 10, #ARGV do
  local piece = ARGV[i]
  local n = string.len(piece)
  if skip >= n then
    skip = skip - n
  else
    if skip > 0 then
      piece = string.sub(piece, skip + 1)
      skip = 0
    end
    redis.call('XADD', s, string.format('%d-1', at), 'd', piece)
    if push then added[#added + 1] = piece end
    at = at + string.len(piece)
  end
end
local start = hwm
hwm = at
local fields = {'hwm', string.format('%d', hwm)}
if ARGV[4] == '1' then
  fields[#fields + 1] = 'masked'
  fields[#fields + 1] = '1'
end
-- A time-index point at the first byte, every ARGV[7] bytes, and after ARGV[8] µs of silence;
-- the keys' expiry is renewed with it (so at least that often while output flows).
local ts = tonumber(ARGV[2])
local due = v[3] == false or start >= tonumber(v[3]) + tonumber(ARGV[7]) or ts >= tonumber(v[4]) + tonumber(ARGV[8])
if due and (v[4] == false or ts >= tonumber(v[4])) then
  redis.call('RPUSH', t, string.format('%d', start) .. ':' .. ARGV[2])
  fields[#fields + 1] = 'ti_off'
  fields[#fields + 1] = string.format('%d', start)
  fields[#fields + 1] = 'ti_ts'
  fields[#fields + 1] = ARGV[2]
  local ttl = tonumber(ARGV[5])
  redis.call('EXPIRE', m, ttl)
  redis.call('EXPIRE', s, ttl)
  redis.call('EXPIRE', t, ttl)
end
redis.call('HSET', m, unpack(fields))
if push then
  redis.call('PUBLISH', ARGV[6], 'd' .. string.format('%d', start) .. ':' .. table.concat(added))
  return {'written', hwm, start, 1}
end
redis.call('PUBLISH', ARGV[6], 'h' .. string.format('%d', hwm))
return {'written', hwm, start, 0}

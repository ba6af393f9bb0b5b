-- Replaces written bytes at an offset with as many others, through the overlay hash (stream
-- entries cannot change), and marks the step: its stored bytes no longer hash to what was sent.
-- KEYS: meta hash, stream, overlay hash.  ARGV: offset, bytes, ttl seconds, notify channel
-- (told 'o': followers stop serving the bytes they were pushed).
-- Returns {status, n}: ok, missing, refused (n = released prefix, or hwm when past it), or
-- inflate: the entry at n is stored as a zstd frame (field `z`), which Lua cannot change; the
-- caller puts its bytes in the overlay (HSETNX) and calls again. Nothing changed then.
local m, s, o = KEYS[1], KEYS[2], KEYS[3]
local v = redis.call('HMGET', m, 'hwm', 'rel')
if v[1] == false then return {'missing', 0} end
local hwm = tonumber(v[1])
local rel = tonumber(v[2] or '0')
local off = tonumber(ARGV[1])
local new = ARGV[2]
local stop = off + string.len(new)
if off < rel then return {'refused', rel} end
if stop > hwm then return {'refused', hwm} end
if stop == off then return {'ok', hwm} end

-- Calls f(id, start, fields) for each entry holding bytes of [off, stop), in order.
local function each(f)
  local from = redis.call('XREVRANGE', s, ARGV[1] .. '-1', '-', 'COUNT', 1)[1][1]
  while true do
    local entries = redis.call('XRANGE', s, from, '+', 'COUNT', 64)
    for _, e in ipairs(entries) do
      local start = tonumber(string.match(e[1], '^(%d+)'))
      if start >= stop then return end
      f(e[1], start, e[2])
      from = '(' .. e[1]
    end
    if #entries < 64 then return end
  end
end

local frame_at
each(function(id, start, fields)
  if not frame_at and fields[1] == 'z' and redis.call('HEXISTS', o, id) == 0 then frame_at = start end
end)
if frame_at then return {'inflate', frame_at} end
each(function(id, start, fields)
  local data = redis.call('HGET', o, id) or fields[2]
  local elen = string.len(data)
  local a = math.max(off, start)
  local b = math.min(stop, start + elen)
  if b > a then
    data = string.sub(data, 1, a - start) .. string.sub(new, a - off + 1, b - off) .. string.sub(data, b - start + 1)
    redis.call('HSET', o, id, data)
  end
end)
-- Marked even when later entries exist: reads without the script would skip the overlay.
redis.call('HSET', m, 'masked', '1')
redis.call('EXPIRE', o, tonumber(ARGV[3]))
redis.call('PUBLISH', ARGV[4], 'o')
return {'ok', hwm}

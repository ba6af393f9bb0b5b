-- Replaces written bytes at an offset with as many others, through the overlay hash (stream
-- entries cannot change), and marks the step: its stored bytes no longer hash to what was sent.
-- KEYS: meta hash, stream, overlay hash.  ARGV: offset, bytes, ttl seconds, notify channel
-- (told 'o': followers stop serving the bytes they were pushed).
-- Returns {status, n}: ok, missing, or refused (n = released prefix, or hwm when past it).
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
local first = redis.call('XREVRANGE', s, ARGV[1] .. '-1', '-', 'COUNT', 1)
local from = first[1][1]
local done = false
while not done do
  local entries = redis.call('XRANGE', s, from, '+', 'COUNT', 64)
  local last
  for _, e in ipairs(entries) do
    local id = e[1]
    local start = tonumber(string.match(id, '^(%d+)'))
    if start >= stop then
      done = true
      break
    end
    local data = redis.call('HGET', o, id) or e[2][2]
    local elen = string.len(data)
    local a = math.max(off, start)
    local b = math.min(stop, start + elen)
    if b > a then
      data = string.sub(data, 1, a - start) .. string.sub(new, a - off + 1, b - off) .. string.sub(data, b - start + 1)
      redis.call('HSET', o, id, data)
    end
    last = id
  end
  if #entries < 64 then done = true end
  if last then from = '(' .. last end
end
-- Marked even when later entries exist: reads without the script would skip the overlay.
redis.call('HSET', m, 'masked', '1')
redis.call('EXPIRE', o, tonumber(ARGV[3]))
redis.call('PUBLISH', ARGV[4], 'o')
return {'ok', hwm}

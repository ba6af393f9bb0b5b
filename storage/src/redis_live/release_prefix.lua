-- Drops the entries wholly below an offset (the archive holds them), records the mark and
-- publishes `r<upto>` (appends waiting for room take it as their cue).
-- KEYS: meta hash, stream, overlay hash.  ARGV: upto, notify channel.
local m, s, o = KEYS[1], KEYS[2], KEYS[3]
local v = redis.call('HMGET', m, 'hwm', 'rel')
if v[1] == false then return 0 end
local rel = tonumber(v[2] or '0')
if tonumber(ARGV[1]) <= rel then return 0 end
local first = redis.call('XREVRANGE', s, ARGV[1] .. '-1', '-', 'COUNT', 1)
if #first > 0 then
  local keep = first[1][1]
  redis.call('XTRIM', s, 'MINID', keep)
  if redis.call('EXISTS', o) == 1 then
    local keep_at = tonumber(string.match(keep, '^(%d+)'))
    for _, id in ipairs(redis.call('HKEYS', o)) do
      if tonumber(string.match(id, '^(%d+)')) < keep_at then redis.call('HDEL', o, id) end
    end
  end
end
redis.call('HSET', m, 'rel', ARGV[1])
redis.call('PUBLISH', ARGV[2], 'r' .. ARGV[1])
return 1

-- Appends chunks to one or more steps under the offset rule, atomically (one script call is one
-- group commit: under `appendfsync always` one fsync covers every step in it).
-- KEYS: each step's meta hash `tr:{job/step}:m`; its stream (`…:s`), time index (`…:t`) and
-- notify channel (`…:n`) share the hash tag.
-- ARGV: ttl seconds, index every bytes, index gap µs, most bytes pushed, most bytes a step may
-- hold above its released prefix (0: no limit); then per step: offset, timestamp µs, chunk
-- length, masked (0/1); then the chunks' bytes, in step order, as one run cut into pieces of at
-- most 256 KiB. A chunk that is whole pieces is added as those pieces, not copied in Lua unless
-- a resent prefix must be cut off; chunks sharing a piece are cut out of it. (Appends over
-- 64 KiB do not come here: see watched.rs.)
-- Each chunk becomes stream entries of at most 256 KiB with id `<first offset>-1`.
-- Publishes on the step's channel 'd<start>:<bytes>' when at most ARGV[4] bytes were added to a
-- step whose bytes were never overwritten (followers serve them without reading them back),
-- else 'h<hwm>'.
-- Returns per step {outcome, hwm, start, pushed}: outcome is written, gap, ended or full (the
-- step holds its most bytes above the released prefix: nothing was written; the archiver must
-- release some first); the call added the bytes [start, hwm); pushed is 1 when they were
-- published.
local ttl, every, gap, push_max, hold_max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local n = #KEYS
local arg, pos = 6 + 4 * n, 1

-- The next `len` bytes of the pieces, as a list of strings: whole pieces where they line up.
local function take(len)
  local out = {}
  while len > 0 do
    local piece = ARGV[arg]
    local left = string.len(piece) - pos + 1
    if pos == 1 and left <= len then
      out[#out + 1] = piece
    else
      out[#out + 1] = string.sub(piece, pos, pos + math.min(left, len) - 1)
    end
    if left <= len then
      arg, pos = arg + 1, 1
      len = len - left
    else
      pos = pos + len
      len = 0
    end
  end
  return out
end

local function append(m, off, ts_arg, len, masked, pieces)
  local ts = tonumber(ts_arg)
  local base = string.sub(m, 1, -2)
  local s, t, chan = base .. 's', base .. 't', base .. 'n'
  local v = redis.call('HMGET', m, 'hwm', 'end', 'ti_off', 'ti_ts', 'masked', 'rel')
  local hwm = tonumber(v[1] or '0')
  if v[2] then return {'ended', hwm, hwm, 0} end
  if off > hwm then return {'gap', hwm, hwm, 0} end
  if off + len <= hwm then return {'written', hwm, hwm, 0} end
  if hold_max > 0 and hwm - tonumber(v[6] or '0') >= hold_max then return {'full', hwm, hwm, 0} end
  -- Entry ids are <first offset>-1: strictly increasing, and XREVRANGE finds an offset's entry.
  -- Entries hold at most 256 KiB, so a read touches little more than it returns.
  local skip = hwm - off
  local at = hwm
  local push = masked == '0' and not v[5] and off + len - hwm <= push_max
  local added = {}
  for _, piece in ipairs(pieces) do
    local k = string.len(piece)
    if skip >= k then
      skip = skip - k
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
  if masked == '1' then
    fields[#fields + 1] = 'masked'
    fields[#fields + 1] = '1'
  end
  -- A time-index point at the first byte, every `every` bytes, and after `gap` µs of silence;
  -- the keys' expiry is renewed with it (so at least that often while output flows).
  local due = v[3] == false or start >= tonumber(v[3]) + every or ts >= tonumber(v[4]) + gap
  if due and (v[4] == false or ts >= tonumber(v[4])) then
    redis.call('RPUSH', t, string.format('%d', start) .. ':' .. ts_arg)
    fields[#fields + 1] = 'ti_off'
    fields[#fields + 1] = string.format('%d', start)
    fields[#fields + 1] = 'ti_ts'
    fields[#fields + 1] = ts_arg
    redis.call('EXPIRE', m, ttl)
    redis.call('EXPIRE', s, ttl)
    redis.call('EXPIRE', t, ttl)
  end
  redis.call('HSET', m, unpack(fields))
  if push then
    redis.call('PUBLISH', chan, 'd' .. string.format('%d', start) .. ':' .. table.concat(added))
    return {'written', hwm, start, 1}
  end
  redis.call('PUBLISH', chan, 'h' .. string.format('%d', hwm))
  return {'written', hwm, start, 0}
end

local out = {}
for i = 1, n do
  local d = 5 + 4 * (i - 1)
  local len = tonumber(ARGV[d + 3])
  out[i] = append(KEYS[i], tonumber(ARGV[d + 1]), ARGV[d + 2], len, ARGV[d + 4], take(len))
end
return out

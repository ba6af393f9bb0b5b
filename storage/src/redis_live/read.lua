-- Reads up to max bytes from an offset, across entries, through the overwrite overlay.
-- KEYS: meta hash, stream, overlay hash.  ARGV: offset, max.
-- Returns {status, n, bytes}: status ok (n = hwm), missing, released (n = released prefix), or
-- z: the entry holding the offset is stored as a zstd frame (field `z`, which Lua cannot
-- decompress) and has no replacement bytes; n is its first offset and bytes the frame. A read
-- that meets such an entry after others ends before it.
local m, s, o = KEYS[1], KEYS[2], KEYS[3]
local v = redis.call('HMGET', m, 'hwm', 'rel', 'masked')
if v[1] == false then return {'missing', 0, ''} end
local hwm = tonumber(v[1])
local rel = tonumber(v[2] or '0')
local off = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
if off < rel then return {'released', rel, ''} end
if off >= hwm or want <= 0 then return {'ok', hwm, ''} end
local first = redis.call('XREVRANGE', s, ARGV[1] .. '-1', '-', 'COUNT', 1)
if #first == 0 then return {'released', rel, ''} end
-- Only a marked step (masked or overwritten) can have replacement bytes.
local overlay = v[3] ~= false
local out = {}
local from = first[1][1]
-- Two entries per XRANGE (at most 512 KiB): only `want` bytes are needed.
while want > 0 do
  local entries = redis.call('XRANGE', s, from, '+', 'COUNT', 2)
  if #entries == 0 then break end
  for _, e in ipairs(entries) do
    local id = e[1]
    local start = tonumber(string.match(id, '^(%d+)'))
    local data = overlay and redis.call('HGET', o, id) or false
    if not data then
      if e[2][1] == 'z' then
        if #out > 0 then return {'ok', hwm, table.concat(out)} end
        return {'z', start, e[2][2]}
      end
      data = e[2][2]
    end
    local piece = string.sub(data, off - start + 1, off - start + want)
    out[#out + 1] = piece
    want = want - string.len(piece)
    off = off + string.len(piece)
    if want <= 0 then break end
    from = '(' .. id
  end
  if #entries < 2 then break end
end
return {'ok', hwm, table.concat(out)}

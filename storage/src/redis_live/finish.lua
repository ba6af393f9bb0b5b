-- Records a step's end once. KEYS: meta hash.  ARGV: end (JSON), notify channel.
-- Returns {status, end}: set (this end), exists (the end recorded before), or missing.
local m = KEYS[1]
if redis.call('EXISTS', m) == 0 then return {'missing', ''} end
if redis.call('HSETNX', m, 'end', ARGV[1]) == 1 then
  redis.call('PUBLISH', ARGV[2], 'e')
  return {'set', ARGV[1]}
end
return {'exists', redis.call('HGET', m, 'end')}

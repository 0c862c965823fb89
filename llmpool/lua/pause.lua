-- Pause an endpoint for every worker (a 429's Retry-After). Several workers see the same 429
-- burst with different Retry-After values: the longest pause wins, a shorter one never cuts it.
-- KEYS[1] pause key.  ARGV: milliseconds.
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('SET', KEYS[1], '1', 'PX', ms)
end
return 0

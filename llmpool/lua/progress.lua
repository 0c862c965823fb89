-- The endpoint is seen working (a hook for the server's own load signals, e.g. vLLM's metrics):
-- suspicion waits for a stretch without progress, so a busy server is never taken for a hung one.
-- KEYS: ttft hash.  ARGV: window s (a hash made here lives two of them, as first_token.lua's do).
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'progress_at', string.format('%d.%06d', tonumber(t[1]), tonumber(t[2])))
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(2 * tonumber(ARGV[1]) * 1000))
end
return 1

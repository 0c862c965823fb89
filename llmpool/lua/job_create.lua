-- Record a newly submitted job, unless one with this id exists (an idempotency key reused).
-- KEYS[1] job hash.  ARGV: queue, deadline, summary, ttl seconds.  Returns 1 if created, else 0.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('HSET', KEYS[1], 'state', 'queued', 'queue', ARGV[1], 'deadline', ARGV[2],
           'summary', ARGV[3], 'created_at', now, 'attempts', 0)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1

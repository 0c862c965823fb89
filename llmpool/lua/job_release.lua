-- Give a claimed job back to the queue (it waits for an LLM): not running, and this delivery
-- does not count toward the attempt cap, which exists for crash loops, not for waiting.
-- KEYS[1] job hash.  ARGV: ttl seconds.
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'waiting')
redis.call('HDEL', KEYS[1], 'lease_until', 'worker')
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1

-- Cancel a job that has not ended: queued, waiting (parked) or running. Its state becomes
-- `cancelled` (final: no claim, recovery or finish touches it again), it leaves every job set,
-- and its stream gets the `end` event. A running worker sees the state within a second
-- (llmpool.leases) and abandons its call; its later writes are refused like any lost run's.
-- KEYS: job hash, stream, running zset, parked zset, unpublished zset, history list.
-- ARGV: job id, error JSON, ttl, stream ttl, stream maxlen, history entry JSON.
-- Returns {'cancelled', previous state}, {'final', state} or {'unknown', ''}.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return {'unknown', ''}
end
if state == 'succeeded' or state == 'failed' or state == 'expired' or state == 'cancelled' then
  return {'final', state}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'error', ARGV[2], 'finished_at', string.format('%.6f', now))
redis.call('HDEL', KEYS[1], 'lease_until', 'payload', 'due_at', 'tool_checkpoint')  -- the tool loop's, done with
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'type', 'end', 'state', 'cancelled', 'data', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('RPUSH', KEYS[6], ARGV[6])
redis.call('EXPIRE', KEYS[6], ARGV[3])
return {'cancelled', state}

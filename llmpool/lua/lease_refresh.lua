-- Extend a long call's concurrency lease, and its half-open trial if it holds it.
-- A lease that already expired is not revived: its slot may have gone to another job.
-- A call still waiting for its first token keeps its awaiting mark as long (suspicion reads it).
-- KEYS: leases zset, trial, awaiting zset.  ARGV: job id, lease s.  Returns 1 if the lease was still held.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local job, lease = ARGV[1], tonumber(ARGV[2])
local expiry = tonumber(redis.call('ZSCORE', KEYS[1], job))
if not expiry or expiry <= now then
  redis.call('ZREM', KEYS[1], job)
  return 0
end
redis.call('ZADD', KEYS[1], string.format('%.6f', now + lease), job)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(last[2]) - now) * 1000) + 1)
if redis.call('ZSCORE', KEYS[3], job) and redis.call('PTTL', KEYS[3]) < lease * 1000 then
  redis.call('PEXPIRE', KEYS[3], math.ceil(lease * 1000))
end
if redis.call('GET', KEYS[2]) == job then
  redis.call('PEXPIRE', KEYS[2], math.ceil(lease * 1000))
end
return 1

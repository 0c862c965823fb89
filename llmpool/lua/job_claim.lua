-- Claim a chat job for one delivery: the only place a job moves to `running`.
-- KEYS: job hash, running zset, parked zset, unpublished zset, history list.
-- ARGV: job id, worker, lease seconds, max attempts, ttl seconds.
-- Returns {verdict, attempts, state, claim, calls, created_at, deadline, started_at}:
-- verdict is run | done | busy | exhausted. `claim` numbers this run: every later write of the run
-- (renew, park, finish) names it, so a run whose lease lapsed can no longer change the job.
-- Time comes from Redis so every worker on every host agrees on lease expiry.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local state = redis.call('HGET', KEYS[1], 'state')
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
local calls = tonumber(redis.call('HGET', KEYS[1], 'calls') or '0')

if state == 'succeeded' or state == 'failed' or state == 'expired' or state == 'cancelled' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  return {'done', attempts, state, 0, calls}
end
if state == 'running' then
  local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  if lease > now then
    -- The holder is alive; if it dies, the running set brings the job back once the lease lapses.
    redis.call('ZADD', KEYS[2], lease, ARGV[1])
    return {'busy', attempts, state, 0, calls}
  end
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
attempts = attempts + 1
if attempts > tonumber(ARGV[4]) then
  -- A crash loop: the task fails the job (with its end event) through job_finish.
  return {'exhausted', attempts - 1, state or 'queued', 0, calls}
end
local claim = redis.call('HINCRBY', KEYS[1], 'claims', 1)
-- Lua prints numbers with 14 digits; a fixed microsecond format is stored and returned alike.
local started = string.format('%.6f', now)
local lease_until = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'state', 'running', 'attempts', attempts, 'worker', ARGV[2],
           'lease_until', string.format('%.6f', lease_until), 'started_at', started)
redis.call('HSETNX', KEYS[1], 'created_at', started)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], lease_until, ARGV[1])
redis.call('RPUSH', KEYS[5], cjson.encode({event = 'claimed', claim = claim, worker = ARGV[2], at = now}))
redis.call('EXPIRE', KEYS[5], ARGV[5])
local times = redis.call('HMGET', KEYS[1], 'created_at', 'deadline')
return {'run', attempts, 'running', claim, calls, times[1] or '', times[2] or '', started}

-- Claim a chat job for one delivery: the only place a job moves to `running`.
-- KEYS[1] job hash.  ARGV: worker, lease seconds, max attempts, ttl seconds.
-- Returns {verdict, attempts, state}: verdict is run | done | busy | exhausted.
-- Time comes from Redis so every worker on every host agrees on lease expiry.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local state = redis.call('HGET', KEYS[1], 'state')
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')

if state == 'succeeded' or state == 'failed' or state == 'expired' or state == 'cancelled' then
  return {'done', attempts, state}
end
if state == 'running' then
  local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  if lease > now then
    return {'busy', attempts, state}
  end
end
attempts = attempts + 1
if attempts > tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'state', 'failed', 'attempts', attempts - 1, 'finished_at', now,
             'error', cjson.encode({type = 'too_many_attempts',
                                    message = 'job was delivered more times than allowed'}))
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return {'exhausted', attempts - 1, 'failed'}
end
redis.call('HSET', KEYS[1], 'state', 'running', 'attempts', attempts, 'worker', ARGV[1],
           'lease_until', now + tonumber(ARGV[2]), 'started_at', now)
redis.call('HSETNX', KEYS[1], 'created_at', now)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {'run', attempts, 'running'}

-- Claim a chat job for one delivery: the only place a job moves to `running`.
-- KEYS[1] job hash.  ARGV: worker, lease seconds, max attempts, ttl seconds.
-- Returns {verdict, attempts, state, created_at, deadline}: verdict is run | done | busy | exhausted;
-- the times (strings, "" when unknown) save the task a second read of the record.
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
-- Lua prints numbers with 14 digits; a fixed microsecond format is stored and returned alike.
local started = string.format('%.6f', now)
redis.call('HSET', KEYS[1], 'state', 'running', 'attempts', attempts, 'worker', ARGV[1],
           'lease_until', now + tonumber(ARGV[2]), 'started_at', started)
redis.call('HSETNX', KEYS[1], 'created_at', started)
redis.call('EXPIRE', KEYS[1], ARGV[4])
local times = redis.call('HMGET', KEYS[1], 'created_at', 'deadline')
return {'run', attempts, 'running', times[1] or '', times[2] or '', started}

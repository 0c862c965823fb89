-- Record a newly submitted job, unless one with this id exists (an idempotency key reused).
-- KEYS: job hash, unpublished zset, the memory-room mark.
-- ARGV: job id, queue, deadline, summary, ttl seconds, payload JSON, memory limit (a fraction of
--       maxmemory past which new jobs are refused; 0: no check), owner ('' for none: the API's
--       authenticated subject, who alone may read the job), the mark's life in ms.
-- INFO memory costs about as much as the rest of this script, so a reading that finds Redis under
-- half its maxmemory is trusted for the mark's life (tens of ms: no writer fills half a Redis in
-- that); near the limit, or with no maxmemory (CONFIG SET may set one any time), every submit reads.
-- Returns 1 if created, 0 if the id exists, -1 if Redis is past the memory limit (nothing written).
-- The job stays in `unpublished` until its message is confirmed on the broker, so a crash between
-- this and the publish is repaired by the sweep.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local limit = tonumber(ARGV[7] or '0')
if limit > 0 and not (KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1) then
  local info = redis.call('INFO', 'memory')
  local maxmemory = tonumber(string.match(info, 'maxmemory:(%d+)') or '0')
  local used = tonumber(string.match(info, 'used_memory:(%d+)') or '0')
  if maxmemory > 0 and used >= limit * maxmemory then
    return -1
  end
  if KEYS[3] and maxmemory > 0 and used < 0.5 * maxmemory then
    redis.call('SET', KEYS[3], '1', 'PX', ARGV[9])
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('HSET', KEYS[1], 'state', 'queued', 'queue', ARGV[2], 'deadline', ARGV[3],
           'summary', ARGV[4], 'created_at', string.format('%.6f', now), 'attempts', 0, 'claims', 0,
           'calls', 0, 'payload', ARGV[6])
if ARGV[8] and ARGV[8] ~= '' then
  redis.call('HSET', KEYS[1], 'owner', ARGV[8])
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], now, ARGV[1])
return 1

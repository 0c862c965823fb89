-- The sweep's one step: take due work off the running and parked sets and hand it back to a queue.
-- KEYS: running zset, parked zset, unpublished zset.
-- ARGV: key prefix of job hashes ("<prefix>:job:"), of history lists, max jobs, republish grace s,
--       ttl seconds.
-- Returns a flat list {id, queue, payload, why, ...} of jobs to publish now. Each is put in
-- `unpublished` before it is returned, so a sweep that dies before publishing is repaired by the next.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local limit = tonumber(ARGV[3])
local out = {}
local function hand_back(id, why)
  local job = ARGV[1] .. id
  local fields = redis.call('HMGET', job, 'state', 'queue', 'payload', 'lease_until')
  local state = fields[1]
  if not state or not fields[3] then
    return  -- expired record, or a job published without llmpool's record: nothing to rebuild from
  end
  if state == 'succeeded' or state == 'failed' or state == 'expired' or state == 'cancelled' then
    return
  end
  if state == 'running' and tonumber(fields[4] or '0') > now then
    redis.call('ZADD', KEYS[1], fields[4], id)  -- renewed since: not an orphan
    return
  end
  redis.call('HSET', job, 'state', 'queued')
  redis.call('HDEL', job, 'lease_until', 'worker', 'due_at')
  redis.call('ZADD', KEYS[3], now, id)
  local entry = cjson.encode({event = why, at = now})
  redis.call('RPUSH', ARGV[2] .. id, entry)
  redis.call('EXPIRE', ARGV[2] .. id, ARGV[5])
  table.insert(out, id)
  table.insert(out, fields[2])
  table.insert(out, fields[3])
  table.insert(out, why)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', KEYS[1], id)
  hand_back(id, 'lease_lapsed')
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', KEYS[2], id)
  hand_back(id, 'due')
end
-- Jobs whose message never reached the broker (or whose publish was never confirmed).
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]), 'LIMIT', 0, limit)) do
  local fields = redis.call('HMGET', ARGV[1] .. id, 'state', 'queue', 'payload')
  if fields[1] == 'queued' and fields[3] then
    redis.call('ZADD', KEYS[3], now, id)
    table.insert(out, id)
    table.insert(out, fields[2])
    table.insert(out, fields[3])
    table.insert(out, 'unpublished')
  else
    redis.call('ZREM', KEYS[3], id)
  end
end
return out

-- Park a running job in Redis until it is due again (it waits for an LLM or for admission).
-- Waiting does not count toward the attempt cap, which exists for crash loops; the calls it made
-- do count toward the job's call budget.
-- KEYS: job hash, running zset, parked zset, history list.
-- ARGV: job id, claim, delay seconds, calls made by this run, ttl seconds, history entries (JSON list).
-- Returns 1, or 0 when this run no longer holds the job.
local fields = redis.call('HMGET', KEYS[1], 'state', 'claims')
if fields[1] ~= 'running' or fields[2] ~= ARGV[2] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local due = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'state', 'waiting', 'due_at', string.format('%.6f', due))
redis.call('HDEL', KEYS[1], 'lease_until', 'worker')
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('HINCRBY', KEYS[1], 'calls', tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], due, ARGV[1])
for _, entry in ipairs(cjson.decode(ARGV[6])) do
  redis.call('RPUSH', KEYS[4], cjson.encode(entry))
end
redis.call('EXPIRE', KEYS[4], ARGV[5])
return 1

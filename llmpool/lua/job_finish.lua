-- End a job: its final state, the stored outcome and the stream's `end` event, all at once.
-- KEYS: job hash, stream, running zset, parked zset, unpublished zset, history list, then the
--       metric hashes the job's end counts in (none: it counts nothing here).
-- ARGV: job id, claim ("" when no run holds it), state, outcome field, outcome JSON, calls made,
--       ttl, stream ttl, stream maxlen, history entries (JSON list), and optionally the job's end
--       in the metrics: a JSON list of [metric key index from 7, field, amount, "int" | "float"],
--       added only when this call ends the job, so a job counts once, in the run that ended it.
-- Returns 1, or 0 when the job is already final or another run holds it (nothing is written).
local fields = redis.call('HMGET', KEYS[1], 'state', 'claims')
local state = fields[1]
if state == 'succeeded' or state == 'failed' or state == 'expired' or state == 'cancelled' then
  return 0
end
if ARGV[2] ~= '' and (state ~= 'running' or fields[2] ~= ARGV[2]) then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('HSET', KEYS[1], 'state', ARGV[3], ARGV[4], ARGV[5], 'finished_at', string.format('%.6f', now))
redis.call('HINCRBY', KEYS[1], 'calls', tonumber(ARGV[6]))
redis.call('HDEL', KEYS[1], 'lease_until', 'payload', 'due_at', 'tool_checkpoint')  -- the tool loop's, done with
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[9], '*', 'type', 'end', 'state', ARGV[3], 'data', ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[8])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
for _, entry in ipairs(cjson.decode(ARGV[10])) do
  redis.call('RPUSH', KEYS[6], cjson.encode(entry))
end
redis.call('EXPIRE', KEYS[6], ARGV[7])
for _, add in ipairs(cjson.decode(ARGV[11] or '[]')) do
  redis.call(add[4] == 'float' and 'HINCRBYFLOAT' or 'HINCRBY', KEYS[add[1]], add[2], add[3])
end
return 1

-- Checkpoint one completed round of a job's tool loop (llmpool.tool_loop), guarded by the run's claim:
-- the loop's state (messages appended so far, step records) replaces the last checkpoint, the
-- steps join the history and go to the stream as `step` events, all at once, so a run that takes
-- the job over resumes after the last round whose steps its readers saw.
-- KEYS: job hash, history list, stream.
-- ARGV: claim, checkpoint JSON, history entries (JSON list), step events (JSON list of JSON strings),
--       ttl, stream ttl, stream maxlen.
-- Returns 1, or 0 when this run no longer holds the job (nothing is written).
local fields = redis.call('HMGET', KEYS[1], 'state', 'claims')
if fields[1] ~= 'running' or fields[2] ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'tool_checkpoint', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
for _, entry in ipairs(cjson.decode(ARGV[3])) do
  redis.call('RPUSH', KEYS[2], cjson.encode(entry))
end
redis.call('EXPIRE', KEYS[2], ARGV[5])
for _, data in ipairs(cjson.decode(ARGV[4])) do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'type', 'step', 'data', data)
end
redis.call('EXPIRE', KEYS[3], ARGV[6])
return 1

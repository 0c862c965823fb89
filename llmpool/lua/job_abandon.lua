-- Undo a submit whose message could not be published: the record goes, so a retried idempotency
-- key submits afresh. Only a job no worker has claimed yet is removed.
-- KEYS: job hash, unpublished zset.  ARGV: job id.  Returns 1 if removed.
local fields = redis.call('HMGET', KEYS[1], 'state', 'claims')
if fields[1] ~= 'queued' or fields[2] ~= '0' then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1

-- Extend the claim leases of every job one worker process runs, in one round trip.
-- KEYS[1] running zset, KEYS[2..] job hashes.  ARGV[1] lease seconds, ARGV[2..] claim numbers and
-- job ids alternating (claim, id, claim, id, ...) in KEYS order.
-- Returns the ids of jobs this process no longer holds (finished, or lapsed and claimed again).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local until_ = now + tonumber(ARGV[1])
local lost = {}
for i = 2, #KEYS do
  local claim, id = ARGV[2 * i - 2], ARGV[2 * i - 1]
  local fields = redis.call('HMGET', KEYS[i], 'state', 'claims')
  if fields[1] == 'running' and fields[2] == claim then
    redis.call('HSET', KEYS[i], 'lease_until', string.format('%.6f', until_))
    redis.call('ZADD', KEYS[1], until_, id)
  else
    table.insert(lost, id)
  end
end
return lost

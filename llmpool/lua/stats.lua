-- Raw breaker, admission and TTFT state of several endpoints, read at one instant of Redis time.
-- KEYS: per endpoint, 6 in a row: breaker hash, trial, leases zset, pause, awaiting zset, ttft hash.
-- Returns {now, then per endpoint: breaker fields (flat), trial ms left, live leases, pause ms left,
-- calls waiting for a first token, when the oldest of them started ('' if none), the ttft fields
-- samples, p50, p95, p99, progress_at ('' when unknown)}; the Python side turns it into numbers,
-- so this stays a plain read.
local t = redis.call('TIME')
local now = string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
local out = {now}
for n = 1, #KEYS, 6 do
  out[#out + 1] = redis.call('HGETALL', KEYS[n])
  out[#out + 1] = redis.call('PTTL', KEYS[n + 1])
  out[#out + 1] = redis.call('ZCOUNT', KEYS[n + 2], '(' .. now, '+inf')
  out[#out + 1] = redis.call('PTTL', KEYS[n + 3])
  out[#out + 1] = redis.call('ZCARD', KEYS[n + 4])
  local oldest = redis.call('ZRANGE', KEYS[n + 4], 0, 0, 'WITHSCORES')
  out[#out + 1] = oldest[2] or ''
  local h = redis.call('HMGET', KEYS[n + 5], 'samples', 'p50', 'p95', 'p99', 'progress_at')
  for i = 1, 5 do h[i] = h[i] or '' end
  out[#out + 1] = h
end
return out

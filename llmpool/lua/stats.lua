-- Raw breaker and admission state of several endpoints, read at one instant of Redis time.
-- KEYS: per endpoint, 4 in a row: breaker hash, trial, leases zset, pause.
-- Returns {now, then per endpoint: breaker fields (flat), trial ms left, live leases, pause ms left};
-- the Python side turns it into numbers, so this stays a plain read.
local t = redis.call('TIME')
local now = string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
local out = {now}
for n = 1, #KEYS, 4 do
  out[#out + 1] = redis.call('HGETALL', KEYS[n])
  out[#out + 1] = redis.call('PTTL', KEYS[n + 1])
  out[#out + 1] = redis.call('ZCOUNT', KEYS[n + 2], '(' .. now, '+inf')
  out[#out + 1] = redis.call('PTTL', KEYS[n + 3])
end
return out

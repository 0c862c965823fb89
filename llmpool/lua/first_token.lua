-- A call's first token: its wait ends, and its TTFT goes into the endpoint's histogram.
-- KEYS: awaiting zset, ttft hash.
-- ARGV: job id, ttft s, window s, bucket base s, bucket ratio, buckets.
-- The hash holds two generations of `window` seconds: now<i> (this one) and old<i> (the one before)
-- count the TTFTs in bucket i (upper bound base * ratio^i; the last bucket takes anything slower),
-- `epoch` names the current generation, and every record recomputes `samples` (both generations),
-- `p50`, `p95`, `p99` (a bucket's upper bound), `progress_at` and `first_token_at` (now: a new
-- call was served, which admit.lua's overdue check reads). It lives two windows.
-- Returns the endpoint's samples after this one.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local job, ttft, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local base, ratio, buckets = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local H = KEYS[2]
local function fmt(x) return string.format('%.6f', x) end

redis.call('ZREM', KEYS[1], job)

-- A new generation: the current counts become the previous ones (or both go, after a gap).
local epoch = math.floor(now / window)
local stored = tonumber(redis.call('HGET', H, 'epoch') or '-1')
if stored ~= epoch then
  local fields = redis.call('HGETALL', H)
  local moved = {}
  for n = 1, #fields, 2 do
    local kind, idx = string.match(fields[n], '^(%a+)(%d+)$')
    if kind == 'now' or kind == 'old' then
      redis.call('HDEL', H, fields[n])
      if kind == 'now' and stored == epoch - 1 then moved['old' .. idx] = fields[n + 1] end
    end
  end
  for field, count in pairs(moved) do redis.call('HSET', H, field, count) end
  redis.call('HSET', H, 'epoch', epoch)
end

local index = 0
if ttft > base then
  index = math.min(buckets - 1, math.ceil(math.log(ttft / base) / math.log(ratio) - 1e-9))
end
redis.call('HINCRBY', H, 'now' .. index, 1)

local counts, total = {}, 0
for i = 0, buckets - 1 do counts[i] = 0 end
local fields = redis.call('HGETALL', H)
for n = 1, #fields, 2 do
  local kind, idx = string.match(fields[n], '^(%a+)(%d+)$')
  if kind == 'now' or kind == 'old' then
    idx = tonumber(idx)
    counts[idx] = counts[idx] + tonumber(fields[n + 1])
    total = total + tonumber(fields[n + 1])
  end
end
local function percentile(q)
  local rank = math.max(1, math.ceil(q * total - 1e-9))
  local seen = 0
  for i = 0, buckets - 1 do
    seen = seen + counts[i]
    if seen >= rank then return fmt(base * ratio ^ i) end
  end
  return fmt(base * ratio ^ (buckets - 1))
end
redis.call('HSET', H, 'samples', total, 'p50', percentile(0.5), 'p95', percentile(0.95), 'p99', percentile(0.99),
           'progress_at', fmt(now), 'first_token_at', fmt(now))
redis.call('PEXPIRE', H, math.ceil(2 * window * 1000))
return total

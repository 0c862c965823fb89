-- Settle one admitted call: breaker transition, lease release, token reservation trued up.
-- KEYS: breaker hash, trial, leases zset, rate tpm, awaiting zset, ttft hash.
-- ARGV: job id, outcome (success|failure|down|neutral), trial 0|1, reserved tokens, used tokens
--       ('' = unknown: keep the reservation), tpm, period s, max failures, window s,
--       failure rate, min calls, base open wait s, max open wait s, breaker ttl s, ttft window s,
--       ttft min samples.
-- Returns {the breaker state after: closed | open | half_open, the transition this call made:
-- opened (it tripped a closed breaker) | reopened (a failed trial) | closed (a good trial) | ''}.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local job, outcome, as_trial = ARGV[1], ARGV[2], ARGV[3] == '1'
local reserved, used = tonumber(ARGV[4]), tonumber(ARGV[5])
local tpm, period = tonumber(ARGV[6]), tonumber(ARGV[7])
local max_failures, window, rate = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local min_calls, base_wait, max_wait = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local B = KEYS[1]
local function fmt(x) return string.format('%.6f', x) end

redis.call('ZREM', KEYS[3], job)
local asked_at = tonumber(redis.call('ZSCORE', KEYS[5], job))  -- set while the call had no first token
redis.call('ZREM', KEYS[5], job)  -- a call that ended waits for no first token any more
local function touch_ttft()
  if redis.call('PTTL', KEYS[6]) < 0 then redis.call('PEXPIRE', KEYS[6], math.ceil(2 * tonumber(ARGV[15]) * 1000)) end
end
if outcome == 'success' then  -- an answer is progress: suspicion needs a stretch without any
  redis.call('HSET', KEYS[6], 'progress_at', fmt(now))
  touch_ttft()
elseif asked_at and not (outcome == 'neutral' and used == 0) then  -- used 0: it never reached the endpoint
  -- A call that ended without a first token after waiting longer than the endpoint's usual TTFT
  -- (cut at its own timeout, or by us because its hedge answered first) is evidence of silence:
  -- suspicion counts the endpoint unanswered since the earliest such wait after its last progress
  -- (`unanswered_since`), up to the latest (`unanswered_until`), so calls that are each cut short
  -- still add up to a hang. A quick error answer is no evidence.
  local h = redis.call('HMGET', KEYS[6], 'samples', 'p99', 'progress_at', 'unanswered_since')
  local usual = 0
  if tonumber(h[1] or '0') >= tonumber(ARGV[16]) and h[2] then usual = tonumber(h[2]) end
  local progress, since = tonumber(h[3] or '0'), tonumber(h[4] or '0')
  local from = math.max(asked_at, progress)
  if now - asked_at > usual then
    redis.call('HSET', KEYS[6], 'unanswered_until', fmt(now))
    if since == 0 or since < progress or from < since then  -- none yet, one from before the progress, or later
      redis.call('HSET', KEYS[6], 'unanswered_since', fmt(from))
    end
    touch_ttft()
  end
end

-- Tokens: give back what was reserved and not used (or charge the overrun), never below now,
-- so unused time is not banked as a future burst.
if tpm > 0 and used and used ~= reserved then
  local tat0 = math.max(tonumber(redis.call('GET', KEYS[4]) or 0), now)
  local tat = tat0 + (used - reserved) * period / tpm
  if tat > now then
    redis.call('SET', KEYS[4], fmt(tat), 'PX', math.ceil((tat - now) * 1000) + 1)
  else
    redis.call('DEL', KEYS[4])
  end
end

local function reported(state)
  if state ~= 'open' then return 'closed' end
  local f = redis.call('HMGET', B, 'opened_at', 'open_wait')
  if now < tonumber(f[1]) + tonumber(f[2]) then return 'open' end
  return 'half_open'
end

local holder = redis.call('GET', KEYS[2])
if holder == job then redis.call('DEL', KEYS[2]) end
local state = redis.call('HGET', B, 'state') or 'closed'
if outcome == 'neutral' then  -- the caller's own error says nothing about the endpoint
  return {reported(state), ''}
end
-- 'down': the connection was refused, nothing listens there. Unlike a 5xx or a timeout that is
-- certain, so it opens a closed breaker at once, whatever max_failures; otherwise a failure.
local down = outcome == 'down'
local failed = outcome == 'failure' or down

-- Failure window: 10 time buckets in the hash as fields w0..w9 = "bucket:calls:failures";
-- O(10) per call however busy the endpoint is, sliding in steps of window/10.
local width = window / 10
local cur = math.floor(now / width)
local function bucket(slot)
  local v = redis.call('HGET', B, 'w' .. slot)
  if not v then return nil end
  local idx, calls, fails = string.match(v, '^(%-?%d+):(%d+):(%d+)$')
  return tonumber(idx), tonumber(calls), tonumber(fails)
end
local idx, calls, fails = bucket(cur % 10)
if idx ~= cur then calls, fails = 0, 0 end
redis.call('HSET', B, 'w' .. (cur % 10), cur .. ':' .. (calls + 1) .. ':' .. (failed and fails + 1 or fails),
           'width', fmt(width))
local function window_counts()
  local total, bad = 0, 0
  for slot = 0, 9 do
    local i, c, f = bucket(slot)
    if i and i > cur - 10 and i <= cur then total, bad = total + c, bad + f end
  end
  return total, bad
end

local function open(wait)
  redis.call('HSET', B, 'state', 'open', 'opened_at', fmt(now), 'open_wait', fmt(wait))
  redis.call('HINCRBY', B, 'trips', 1)
end

local ready = state == 'open' and reported(state) == 'half_open'
local transition = ''
-- A trial whose lease expired still settles, unless another job has taken the trial since.
if as_trial and state == 'open' and (holder == job or (not holder and ready)) then
  if failed then  -- open again for twice as long, whether failures or suspicion opened it
    local wait = tonumber(redis.call('HGET', B, 'open_wait'))
    open(math.min(wait * 2, max_wait))
    redis.call('HINCRBY', B, 'failed_trials', 1)  -- the next trial waits longer for its first token
    transition = 'reopened'
  else  -- closed again: a fresh window, so old failures cannot trip it at once
    transition = 'closed'
    redis.call('HSET', B, 'state', 'closed', 'consecutive', 0, 'open_wait', fmt(base_wait))
    redis.call('HDEL', B, 'opened_at', 'opened_by', 'failed_trials',
               'w0', 'w1', 'w2', 'w3', 'w4', 'w5', 'w6', 'w7', 'w8', 'w9')
  end
elseif state == 'closed' then
  if not failed then
    redis.call('HSET', B, 'state', 'closed', 'consecutive', 0)
  else
    local consecutive = redis.call('HINCRBY', B, 'consecutive', 1)
    redis.call('HSET', B, 'state', 'closed')
    local total, bad = window_counts()
    -- Trips are judged on failures only: a success never opens the breaker.
    if down or consecutive >= max_failures or (total >= min_calls and bad >= rate * total) then
      open(base_wait)
      redis.call('HSET', B, 'opened_by', down and 'down' or 'failures')
      transition = 'opened'
    end
  end
end
-- Calls that were in flight when the breaker opened settle here without moving it.
redis.call('EXPIRE', B, ARGV[14])
return {reported(redis.call('HGET', B, 'state')), transition}

-- Admit one call to an endpoint: breaker permit + pause + concurrency lease + GCRA rpm + GCRA tpm.
-- Every part is checked before anything is written, so a refusal takes nothing (no trial, no
-- lease, no rate token); the only write on a refusal is dropping leases that already expired.
-- KEYS: breaker hash, trial, leases zset, rate rpm, rate tpm, pause.
-- ARGV: job id, tokens, lease s, max concurrency, rpm, tpm, burst (requests), burst (tokens),
--       period s, trial lease s, poll cap s, max failures.
-- Returns {allowed 0|1, trial 0|1, reason, retry_after}; retry_after is a string (Lua numbers
-- become integers in replies).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local job, tokens, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cap, rpm, tpm = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local burst, token_burst, period = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local trial_lease, poll_cap, max_failures = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
-- Lua's default number formatting keeps 14 digits (0.1 ms of an epoch time): keep microseconds.
local function fmt(x) return string.format('%.6f', x) end

local reason, wait = nil, 0
local function refuse(why, seconds)
  reason = reason or why  -- the first refusal names the cause, in the order checked
  wait = math.max(wait, seconds)  -- the call passes only once every part would pass
end

-- Breaker: open denies until opened_at + open_wait; then exactly one holder of the trial key.
local trial = false
local b = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'open_wait', 'consecutive')
if b[1] == 'open' then
  local ready = tonumber(b[2]) + tonumber(b[3])
  local holder = redis.call('GET', KEYS[2])
  if now < ready then
    refuse('open', ready - now)
  elseif holder and holder ~= job then
    refuse('trial_busy', math.min(redis.call('PTTL', KEYS[2]) / 1000, poll_cap))
  else
    trial = true
  end
end

local paused = redis.call('PTTL', KEYS[6])
if paused > 0 then refuse('paused', paused / 1000) end

-- Leases of dead workers expire here; a job re-admitted keeps its one member.
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', fmt(now))
local held = redis.call('ZSCORE', KEYS[3], job)
if cap > 0 and not held and redis.call('ZCARD', KEYS[3]) >= cap then
  -- A slot frees whenever any call ends, which we cannot foresee: poll no later than poll_cap.
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  refuse('concurrency', math.min(tonumber(first[2]) - now, poll_cap))
end

-- Probation: a closed endpoint that has started failing gets no more calls in flight than the
-- failures it has left before it opens, so a dying endpoint takes at most max_failures calls
-- fleet-wide instead of one per busy thread. A refused caller tries its next endpoint at once.
local fails = tonumber(b[4] or '0')
if b[1] ~= 'open' and fails > 0 then
  local live = redis.call('ZCARD', KEYS[3]) - (held and 1 or 0)
  if live >= max_failures - fails then
    refuse('probation', math.min(0.1, poll_cap))
  end
end

-- GCRA: allowed iff tat0 + c*i - now <= B*i. The check caps c at B so a call bigger than the
-- burst still passes once the limit is idle; it is charged in full, so the rate holds over time.
local function gcra(key, why, cost, interval, allowance)
  local tat0 = math.max(tonumber(redis.call('GET', key) or 0), now)
  local excess = tat0 + math.min(cost, allowance) * interval - now - allowance * interval
  if excess > 1e-6 then  -- tolerance: stored times are rounded to the microsecond
    refuse(why, excess)
  end
  return tat0 + cost * interval
end
local rpm_tat, tpm_tat
if rpm > 0 then rpm_tat = gcra(KEYS[4], 'rpm', 1, period / rpm, burst) end
if tpm > 0 and tokens > 0 then tpm_tat = gcra(KEYS[5], 'tpm', tokens, period / tpm, token_burst) end

if reason then
  return {0, 0, reason, fmt(wait)}
end

if trial then
  redis.call('SET', KEYS[2], job, 'PX', math.ceil(trial_lease * 1000))
end
redis.call('ZADD', KEYS[3], fmt(now + lease), job)
-- The set lives as long as its longest lease, so an idle endpoint leaves nothing behind.
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[3], math.ceil((tonumber(last[2]) - now) * 1000) + 1)
-- A tat in the past means "idle", the same as no key: expire it once it is reached.
if rpm_tat then
  redis.call('SET', KEYS[4], fmt(rpm_tat), 'PX', math.ceil((rpm_tat - now) * 1000) + 1)
end
if tpm_tat then
  redis.call('SET', KEYS[5], fmt(tpm_tat), 'PX', math.ceil((tpm_tat - now) * 1000) + 1)
end
return {1, trial and 1 or 0, 'ok', '0'}

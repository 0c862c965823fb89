-- Admit one call to an endpoint: suspicion + breaker permit + pause + concurrency lease + GCRA
-- rpm + GCRA tpm. Every part is checked before anything is written, so a refusal takes nothing
-- (no trial, no lease, no rate token); the only writes on a refusal are dropping leases (and
-- awaiting marks) that already expired, and opening the breaker of an endpoint found suspect.
-- KEYS: breaker hash, trial, leases zset, rate rpm, rate tpm, pause, awaiting zset, ttft hash.
-- ARGV: job id, tokens, lease s, max concurrency, rpm, tpm, burst (requests), burst (tokens),
--       period s, trial lease s, poll cap s, max failures, suspect factor, suspect floor s,
--       suspect max s, suspect wait s, ttft min samples, breaker ttl s, overdue factor (0 = the
--       caller has no other candidate: never overdue), probe suffix ('' = a trial is the job's
--       own call; else a probe holds it, under the job id + this suffix: llmpool.trial_probe).
-- Returns {allowed 0|1, trial 0|1, reason, retry_after, ttft samples, p95, p99, failed trials};
-- numbers are strings (Lua numbers become integers in replies), '' when unknown.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local job, tokens, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cap, rpm, tpm = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local burst, token_burst, period = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local trial_lease, poll_cap, max_failures = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local suspect_factor, suspect_floor, suspect_max = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
local suspect_wait, min_samples, breaker_ttl = tonumber(ARGV[16]), tonumber(ARGV[17]), ARGV[18]
local overdue_factor = tonumber(ARGV[19] or '0') or 0
local probe_suffix = ARGV[20] or ''
-- Lua's default number formatting keeps 14 digits (0.1 ms of an epoch time): keep microseconds.
local function fmt(x) return string.format('%.6f', x) end

local reason, wait = nil, 0
local function refuse(why, seconds)
  reason = reason or why  -- the first refusal names the cause, in the order checked
  wait = math.max(wait, seconds)  -- the call passes only once every part would pass
end

-- Leases of dead workers expire here; a job re-admitted keeps its one member.
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', fmt(now))

-- Suspicion: the endpoint has been asked and left unanswered longer than its usual first token
-- (suspect factor x its p99, within floor..max; the max while it has fewer than min_samples
-- TTFTs), while nothing on it made progress (a first token, an answer, or the server's own load
-- signal in `progress_at`) for as long: the server hangs, it is not just slow, for a slow server
-- under load still answers someone. Unanswered since: the oldest call still waiting for its first
-- token, or the earliest call since the last progress that ended without one after a long wait
-- (`unanswered_since`, settle.lua) if such calls ran on until the oldest waiting one started
-- (`unanswered_until`), so calls each cut short (hedged) still add up. A call must be waiting
-- now, or such calls must have been cut short within `after`, and the silence unbroken: old
-- silence on an idle endpoint proves nothing (nor does a single quick cut: it needs `after` of
-- silence in all). The breaker opens for suspect_wait, and then one trial decides.
-- Overdue, the soft kind: the same silence for just overdue_factor x its p99 TTFT (warm only), counting
-- only first tokens as progress (a new call served; old streams still ending do not show the server
-- takes new work), refuses a caller that has another candidate ('overdue': no breaker change, no
-- trial); the next first token ends it. The last candidate ignores it: a one-endpoint pool waits as before.
local h = redis.call('HMGET', KEYS[8], 'samples', 'p95', 'p99', 'progress_at', 'unanswered_since',
                     'unanswered_until', 'first_token_at')
local samples = tonumber(h[1] or '0') or 0
local warm = samples >= min_samples and h[3]
local suspect_after = suspect_max
if warm then suspect_after = math.min(math.max(suspect_factor * tonumber(h[3]), suspect_floor), suspect_max) end
local progress = tonumber(h[4] or '0')
local unanswered, unanswered_until = tonumber(h[5] or '0'), tonumber(h[6] or '0')
local cut = unanswered > 0 and unanswered >= progress  -- calls cut short since the last progress
-- Whether the endpoint has been silent longer than `after` since `last` progress (see above);
-- recent cuts count within suspect_after.
local function silent(after, last)
  if now - last <= after then return false end
  for _ = 1, 8 do  -- the oldest call still waiting, skipping marks whose lease is gone (a dead worker's)
    local oldest = redis.call('ZRANGE', KEYS[7], 0, 0, 'WITHSCORES')
    if #oldest == 0 then break end
    if redis.call('ZSCORE', KEYS[3], oldest[1]) then
      local since = tonumber(oldest[2])
      if cut and since <= unanswered_until then since = math.min(since, unanswered) end
      return now - since > after
    end
    redis.call('ZREM', KEYS[7], oldest[1])
  end
  return cut and now - unanswered_until <= suspect_after and now - unanswered > after
end
local function suspected() return silent(suspect_after, progress) end

-- Breaker: open denies until opened_at + open_wait; then exactly one holder of the trial key.
local trial = false
local b = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'open_wait', 'consecutive', 'opened_by',
                     'failed_trials')
if b[1] ~= 'open' and suspected() then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', fmt(now), 'open_wait', fmt(suspect_wait),
             'opened_by', 'suspect')
  redis.call('HINCRBY', KEYS[1], 'suspicions', 1)
  redis.call('EXPIRE', KEYS[1], breaker_ttl)
  b = {'open', fmt(now), fmt(suspect_wait), b[4], 'suspect', b[6]}
end
if b[1] == 'open' then
  local ready = tonumber(b[2]) + tonumber(b[3])
  local holder = redis.call('GET', KEYS[2])
  if now < ready then
    refuse(b[5] == 'suspect' and 'suspect' or 'open', ready - now)
  elseif holder and holder ~= job then
    refuse('trial_busy', math.min(redis.call('PTTL', KEYS[2]) / 1000, poll_cap))
  else
    trial = true
  end
end

-- A trial made by a probe is the probe's: its trial key, lease and first-token wait are under its
-- own id, so the job holds nothing here and, asking again, finds the trial busy like any other job.
local member = job
if trial and probe_suffix ~= '' then member = job .. probe_suffix end

local paused = redis.call('PTTL', KEYS[6])
if paused > 0 then refuse('paused', paused / 1000) end

local held = redis.call('ZSCORE', KEYS[3], member)
if cap > 0 and not held and redis.call('ZCARD', KEYS[3]) >= cap then
  -- A slot frees whenever any call ends, which we cannot foresee: poll no later than poll_cap.
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  refuse('concurrency', math.min(tonumber(first[2]) - now, poll_cap))
end

if overdue_factor > 0 and warm and b[1] ~= 'open' and silent(overdue_factor * tonumber(h[3]), tonumber(h[7] or '0')) then
  refuse('overdue', math.min(0.1, poll_cap))
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

local function answer(allowed, as_trial, why, seconds)
  return {allowed, as_trial, why, seconds, tostring(samples), h[2] or '', h[3] or '', b[6] or '0'}
end
if reason then
  return answer(0, 0, reason, fmt(wait))
end

if trial then
  redis.call('SET', KEYS[2], member, 'PX', math.ceil(trial_lease * 1000))
end
redis.call('ZADD', KEYS[3], fmt(now + lease), member)
-- The set lives as long as its longest lease, so an idle endpoint leaves nothing behind.
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[3], math.ceil((tonumber(last[2]) - now) * 1000) + 1)
-- The call waits for its first token from now on (first_token.lua and settle.lua end the wait).
redis.call('ZADD', KEYS[7], fmt(now), member)
redis.call('PEXPIRE', KEYS[7], math.max(redis.call('PTTL', KEYS[7]), math.ceil(lease * 1000) + 1))
-- A tat in the past means "idle", the same as no key: expire it once it is reached.
if rpm_tat then
  redis.call('SET', KEYS[4], fmt(rpm_tat), 'PX', math.ceil((rpm_tat - now) * 1000) + 1)
end
if tpm_tat then
  redis.call('SET', KEYS[5], fmt(tpm_tat), 'PX', math.ceil((tpm_tat - now) * 1000) + 1)
end
return answer(1, trial and 1 or 0, 'ok', '0')

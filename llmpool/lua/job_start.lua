-- Start a delivered job in one round trip: claim it (job_claim.lua) and, on its first run, admit
-- its call to the first candidate the worker chose (admit.lua), each with its own unchanged code.
-- Later runs (claim > 1) only claim: they may have calls and waits behind them, which the worker
-- weighs before it asks for an endpoint.
-- KEYS: job_claim's 5 keys, then admit's 8 keys.
-- ARGV: job_claim's 5 args; the job's own deadline ('' if none), the default deadline span s, the
--       request timeout s, the lease margin s, the lease cap s ('' = none); admit's 20 args, whose
--       lease (its 3rd) is computed here as llmpool.gate.RedisGate.admit does: the job's budget
--       (deadline - now, capped at the request timeout) plus the margin, within the cap.
-- Returns {job_claim's reply, admit's reply or {} when nothing was admitted (not a first run, or
-- the deadline has passed: the worker fails the job)}.
--@include job_claim
--@include admit
local claimed = job_claim({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]},
                          {ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]})
if claimed[1] ~= 'run' or tonumber(claimed[4]) ~= 1 then
  return {claimed, {}}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local deadline = tonumber(ARGV[6]) or tonumber(claimed[7]) or (tonumber(claimed[6]) + tonumber(ARGV[7]))
local budget = deadline - now
if budget <= 0 then
  return {claimed, {}}
end
local lease = math.min(budget, tonumber(ARGV[8])) + tonumber(ARGV[9])
if tonumber(ARGV[10]) then lease = math.min(lease, tonumber(ARGV[10])) end
local admit_args = {}
for n = 11, #ARGV do admit_args[#admit_args + 1] = ARGV[n] end
admit_args[3] = string.format('%.6f', lease)
return {claimed, admit({KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13]}, admit_args)}

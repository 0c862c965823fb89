-- Live leases per endpoint, for the least-loaded choice.  KEYS: leases zsets.
-- Counts only unexpired members (a dead worker's lease must not make an endpoint look busy),
-- without deleting anything: this runs on every selection and stays read-only.
local t = redis.call('TIME')
local now = string.format('(%d.%06d', tonumber(t[1]), tonumber(t[2]))
local counts = {}
for n, key in ipairs(KEYS) do
  counts[n] = redis.call('ZCOUNT', key, now, '+inf')
end
return counts

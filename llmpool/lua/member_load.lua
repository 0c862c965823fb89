-- Each group member's load for routing, in one round trip: its live leases (as in_flight.lua) and
-- the server's own figure the load pass stored (llmpool.server_load), '' when there is none.
-- KEYS: leases zset, server load string, for each member in turn. Read-only.
local t = redis.call('TIME')
local now = string.format('(%d.%06d', tonumber(t[1]), tonumber(t[2]))
local out = {}
for n = 1, #KEYS, 2 do
  out[n] = redis.call('ZCOUNT', KEYS[n], now, '+inf')
  out[n + 1] = redis.call('GET', KEYS[n + 1]) or ''
end
return out

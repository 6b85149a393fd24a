-- Count a team's live quota slots on Redis's clock (StateStore::quota_usage).
--
-- KEYS[1]  the team's quota set: zset, instance id -> slot expiry (ms, Redis clock)
--
-- Returns the number of slots that expire after now.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%.0f', now), '+inf')

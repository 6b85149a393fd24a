-- Count the live leases of one scope on Redis's clock (StateStore::lease_count).
--
-- KEYS[1]  lease set: zset, holder -> lease expiry (ms, Redis clock)
--
-- Returns the number of leases that expire after now.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%.0f', now), '+inf')

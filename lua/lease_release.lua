-- Drop a holder's leases (StateStore::lease_release). Idempotent; an emptied set disappears.
--
-- KEYS[i]  lease sets: zset, holder -> lease expiry
-- ARGV[1]  holder
--
-- Returns how many leases were dropped.

local dropped = 0
for _, key in ipairs(KEYS) do
  dropped = dropped + redis.call('ZREM', key, ARGV[1])
end
return dropped

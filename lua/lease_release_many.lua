-- Drop the leases of many holders in one call (StateStore::lease_release_many). Idempotent; an
-- emptied set disappears.
--
-- KEYS       every holder's lease sets, holder after holder
-- ARGV[2i-1] holder i's name
-- ARGV[2i]   how many of KEYS, after the previous holder's, are holder i's
--
-- Returns how many leases were dropped.

local dropped = 0
local first = 1
for i = 1, #ARGV, 2 do
  local last = first + tonumber(ARGV[i + 1]) - 1
  for k = first, last do
    dropped = dropped + redis.call('ZREM', KEYS[k], ARGV[i])
  end
  first = last + 1
end
return dropped

-- Extend a holder's leases, only if every one of them is still live (StateStore::lease_renew).
-- A lease that ran out or was released is never re-created: its place may be someone else's now.
--
-- KEYS[i]  lease sets: zset, holder -> lease expiry (ms, Redis clock)
-- ARGV[1]  holder
-- ARGV[2]  new time to live from now, ms
--
-- Returns 1 renewed in every set; 0 some lease was gone (nothing changed)

local function int(x) return string.format('%.0f', x) end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local holder = ARGV[1]

for _, key in ipairs(KEYS) do
  local expiry = tonumber(redis.call('ZSCORE', key, holder) or '')
  if not expiry or expiry <= now then
    return 0
  end
end

local expires = int(now + tonumber(ARGV[2]))
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', expires, holder)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', key, int(tonumber(last[2])))
end
return 1

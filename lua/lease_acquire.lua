-- Take a connection lease in every scope, or in none (StateStore::lease_acquire).
--
-- KEYS[i]    lease set of scope i: zset, holder -> lease expiry (ms, Redis clock)
-- ARGV[1]    holder
-- ARGV[2]    lease time to live, ms
-- ARGV[2+i]  cap of scope i: live leases it may hold
--
-- Returns {'acquired', 0, 0}                            a lease in every scope (renewed where held)
--         {'full', scope index from 0, live leases}     that scope is at its cap; nothing taken

local function int(x) return string.format('%.0f', x) end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local holder = ARGV[1]

-- Drop what crashed holders left, then check every scope before adding to any.
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now))
  local held = redis.call('ZCARD', key)
  -- A holder that already has its lease renews it: it takes no new place.
  if not redis.call('ZSCORE', key, holder) and held >= tonumber(ARGV[2 + i]) then
    return {'full', i - 1, held}
  end
end

local expires = int(now + tonumber(ARGV[2]))
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, expires, holder)
  -- The set lives as long as its last lease, so an idle scope leaves nothing behind.
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', key, int(tonumber(last[2])))
end
return {'acquired', 0, 0}

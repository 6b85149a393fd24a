-- Take connection leases for many requests in one call (StateStore::lease_acquire_many): for each
-- request in order, what lease_acquire.lua does (a lease in every one of its scopes, or in none).
--
-- KEYS       every request's lease sets, request after request: zset, holder -> lease expiry
--            (ms, Redis clock)
-- ARGV[1]    lease time to live, ms
-- then, per request: its holder, n (how many of KEYS, after the previous request's, are its
--            scopes), and the n scopes' caps
--
-- Returns two numbers per request: -1, 0                 a lease in every scope (renewed where held)
--                                  scope index from 0, live leases   that scope is at its cap;
--                                                                     nothing taken for it

local function int(x) return string.format('%.0f', x) end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local expires = int(now + tonumber(ARGV[1]))

local out = {}
-- Sets already swept of crashed holders' leases (once per call: the time does not move), and
-- sets that got a lease, each once, in first-seen order.
local swept = {}
local touched, seen = {}, {}
local first, a = 1, 2
while a <= #ARGV do
  local holder = ARGV[a]
  local n = tonumber(ARGV[a + 1])
  local full, full_held = nil, 0
  for i = 0, n - 1 do
    local key = KEYS[first + i]
    if not swept[key] then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now))
      swept[key] = true
    end
    local held = redis.call('ZCARD', key)
    -- A holder that already has its lease renews it: it takes no new place.
    if not redis.call('ZSCORE', key, holder) and held >= tonumber(ARGV[a + 2 + i]) then
      full, full_held = i, held
      break
    end
  end
  if full then
    out[#out + 1] = full
    out[#out + 1] = full_held
  else
    for i = 0, n - 1 do
      local key = KEYS[first + i]
      redis.call('ZADD', key, expires, holder)
      if not seen[key] then
        seen[key] = true
        touched[#touched + 1] = key
      end
    end
    out[#out + 1] = -1
    out[#out + 1] = 0
  end
  first = first + n
  a = a + 2 + n
end

-- Each set lives as long as its last lease.
for _, key in ipairs(touched) do
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', key, int(tonumber(last[2])))
end
return out

-- Extend the leases of many holders in one call (StateStore::lease_renew_many): for each holder,
-- what lease_renew.lua does (all its leases, only if every one is still live).
--
-- KEYS       every holder's lease sets, holder after holder: zset, holder -> lease expiry (ms,
--            Redis clock)
-- ARGV[1]    new time to live from now, ms
-- ARGV[2i]   holder i's name
-- ARGV[2i+1] how many of KEYS, after the previous holder's, are holder i's
--
-- Returns one entry per holder: 1 renewed in every set; 0 some lease was gone (nothing changed)

local function int(x) return string.format('%.0f', x) end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local expires = int(now + tonumber(ARGV[1]))

local renewed = {}
-- Sets that got a later expiry, each once, in first-seen order.
local touched, seen = {}, {}
local first = 1
for i = 2, #ARGV, 2 do
  local holder = ARGV[i]
  local last = first + tonumber(ARGV[i + 1]) - 1
  local live = true
  for k = first, last do
    local expiry = tonumber(redis.call('ZSCORE', KEYS[k], holder) or '')
    if not expiry or expiry <= now then
      live = false
      break
    end
  end
  if live then
    for k = first, last do
      redis.call('ZADD', KEYS[k], 'XX', expires, holder)
      if not seen[KEYS[k]] then
        seen[KEYS[k]] = true
        touched[#touched + 1] = KEYS[k]
      end
    end
    renewed[#renewed + 1] = 1
  else
    renewed[#renewed + 1] = 0
  end
  first = last + 1
end

-- Each set lives as long as its last lease.
for _, key in ipairs(touched) do
  local latest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', key, int(tonumber(latest[2])))
end
return renewed

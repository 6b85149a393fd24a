-- Take as many whole tokens as a GCRA bucket holds, up to a maximum (StateStore::rate_take), for
-- a caller that spends a batch locally. A port of Gcra::take in core/src/store/gcra.rs.
--
-- KEYS[1]  the bucket: string, its TAT (µs on Redis's clock), expiring when the TAT passes
-- ARGV[1]  emission interval, µs per token (>= 1)
-- ARGV[2]  tolerance, µs (a full bucket: burst * interval)
-- ARGV[3]  the most tokens to take
--
-- Returns the number of tokens taken.

local function int(x) return string.format('%.0f', x) end
local function div(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 end
  return q
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local max = tonumber(ARGV[3])

local tat = now
local stored = tonumber(redis.call('GET', KEYS[1]) or '')
if stored and stored > now then
  tat = stored
end
local credit = tolerance - (tat - now)
if credit < 0 then credit = 0 end

local taken = div(credit, interval)
if taken > max then taken = max end
if taken > 0 then
  local new_tat = tat + taken * interval
  redis.call('SET', KEYS[1], int(new_tat), 'PX', int(math.ceil((new_tat - now) / 1000)))
end
return taken

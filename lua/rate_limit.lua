-- Take `cost` tokens from a GCRA bucket if it holds them (StateStore::rate_limit).
-- A port of Gcra::check in core/src/store/gcra.rs: change the two together. All values are whole
-- microseconds below 2^53, so Lua's doubles compute them exactly.
--
-- KEYS[1]  the bucket: string, its theoretical arrival time (TAT, µs on Redis's clock); it
--          expires when the TAT passes, because an absent bucket and a full one are the same
-- ARGV[1]  emission interval, µs per token (>= 1)
-- ARGV[2]  tolerance, µs (a full bucket: burst * interval)
-- ARGV[3]  cost, tokens
--
-- Returns {allowed (1 | 0), whole tokens left, retry after in µs (0 when allowed; -1 never,
-- because the cost exceeds the bucket)}

local function int(x) return string.format('%.0f', x) end
-- floor(a / b) for non-negative integers, corrected where the float quotient rounds up.
local function div(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 end
  return q
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])

local tat = now
local stored = tonumber(redis.call('GET', KEYS[1]) or '')
if stored and stored > now then
  tat = stored
end
local used = tat - now
local credit = tolerance - used
if credit < 0 then credit = 0 end
local needed = cost * interval

if needed <= credit then
  if needed > 0 then
    local new_tat = tat + needed
    redis.call('SET', KEYS[1], int(new_tat), 'PX', int(math.ceil((new_tat - now) / 1000)))
  end
  return {1, div(credit - needed, interval), 0}
end

local retry = -1
if needed <= tolerance then
  retry = used + needed - tolerance
end
return {0, div(credit, interval), retry}

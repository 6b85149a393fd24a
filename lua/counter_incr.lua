-- Increment an attempt counter unless it is at its cap (StateStore::counter_incr). The window
-- starts at the first increment and is not moved by later ones.
--
-- KEYS[1]  the counter: string, an integer
-- ARGV[1]  cap
-- ARGV[2]  window, ms
--
-- Returns the new value; -1 when the counter is at its cap (unchanged)

local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current >= tonumber(ARGV[1]) then
  return -1
end
local value = redis.call('INCR', KEYS[1])
if value == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value

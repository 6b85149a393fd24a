-- Start a cooldown unless one is running (StateStore::cooldown_begin).
--
-- KEYS[1]  the cooldown: string, present while it runs
-- ARGV[1]  period, ms
--
-- Returns -1 when started; otherwise the ms left of the running one

if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return -1
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  -- A cooldown without an expiry would run forever: give it the period.
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return left

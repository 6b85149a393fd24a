-- Free an instance's quota slot and delete the deployment record only if it is that instance's,
-- so a late release of an old instance never touches a newer one (StateStore::release_instance).
--
-- KEYS[1]  deployment record of (team, challenge): string, the record's JSON
-- KEYS[2]  the team's quota set: zset, instance id -> slot expiry
-- ARGV[1]  instance id
--
-- Returns 1 the record was deleted; 0 no record of this instance; -1 the stored record cannot
-- be read (kept; the slot is freed all the same)

redis.call('ZREM', KEYS[2], ARGV[1])

local stored = redis.call('GET', KEYS[1])
if not stored then
  return 0
end
local ok, current = pcall(cjson.decode, stored)
if not ok or type(current) ~= 'table' then
  return -1
end
if current.instance ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1

-- Write a deployment record only over the version the writer read, and keep the instance's quota
-- slot in step with the new state (StateStore::update_deployment).
--
-- KEYS[1]  deployment record of (team, challenge): string, the record's JSON
-- KEYS[2]  the team's quota set: zset, instance id -> slot expiry (ms, Redis clock)
-- ARGV[1]  the new record's JSON without "version", "created_at_ms" and "updated_at_ms"
-- ARGV[2]  instance id the writer read
-- ARGV[3]  version the writer read
-- ARGV[4]  time to live of the record (and of the slot), ms
-- ARGV[5]  '1' when the new state holds a quota slot (extend it), '0' when not (free it)
--
-- Returns {'updated', new JSON}             written with version + 1
--         {'conflict', stored JSON | false}  another instance or version is stored (or none)
--         {'corrupt', stored}                the stored record cannot be read; nothing changed

local function int(x) return string.format('%.0f', x) end

local stored = redis.call('GET', KEYS[1])
if not stored then
  return {'conflict', false}
end
local ok, current = pcall(cjson.decode, stored)
if not ok or type(current) ~= 'table' or type(current.version) ~= 'number'
    or type(current.created_at_ms) ~= 'number' then
  return {'corrupt', stored}
end
if current.instance ~= ARGV[2] or current.version ~= tonumber(ARGV[3]) then
  return {'conflict', stored}
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[4])

local record = '{"version":' .. int(current.version + 1)
  .. ',"created_at_ms":' .. int(current.created_at_ms)
  .. ',"updated_at_ms":' .. int(now)
  .. ',' .. string.sub(ARGV[1], 2)
redis.call('SET', KEYS[1], record, 'PX', int(ttl))

if ARGV[5] == '1' then
  redis.call('ZADD', KEYS[2], int(now + ttl), ARGV[2])
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[2], int(tonumber(last[2])))
else
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return {'updated', record}

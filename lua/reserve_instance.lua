-- Reserve one slot of a team's instance quota and write the provisional deployment record, as one
-- atomic step (StateStore::reserve_instance).
--
-- KEYS[1]  deployment record of (team, challenge): string, the record's JSON
-- KEYS[2]  the team's quota set: zset, instance id -> slot expiry (ms, Redis clock)
-- ARGV[1]  the record's JSON without "version", "created_at_ms" and "updated_at_ms" (added here)
-- ARGV[2]  instance id
-- ARGV[3]  quota: how many live slots the team may hold
-- ARGV[4]  time to live of the slot and of the record, ms
--
-- Returns {'active', stored JSON, 0}     a record exists for (team, challenge); nothing changed
--         {'quota', false, live slots}   the team holds its quota; nothing changed
--         {'reserved', new JSON, 0}      slot taken; record written with version 1

-- Integers are formatted by hand: Lua's default number format loses digits past 14.
local function int(x) return string.format('%.0f', x) end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[4])

local existing = redis.call('GET', KEYS[1])
if existing then
  return {'active', existing, 0}
end

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', int(now))
local live = redis.call('ZCARD', KEYS[2])
if live >= tonumber(ARGV[3]) then
  return {'quota', false, live}
end

redis.call('ZADD', KEYS[2], int(now + ttl), ARGV[2])
-- The set lives exactly as long as its last slot, so an idle team leaves nothing behind.
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[2], int(tonumber(last[2])))

local record = '{"version":1,"created_at_ms":' .. int(now) .. ',"updated_at_ms":' .. int(now)
  .. ',' .. string.sub(ARGV[1], 2)
redis.call('SET', KEYS[1], record, 'PX', int(ttl))
return {'reserved', record, 0}

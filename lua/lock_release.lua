-- Release a lock only if the caller's token still holds it: compare-and-delete
-- (StateStore::lock_release). A holder whose lock expired cannot release its successor's.
--
-- KEYS[1]  the lock: string, the holder's token
-- ARGV[1]  the caller's token
--
-- Returns 1 released; 0 not held by this token

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0

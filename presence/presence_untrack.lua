-- presence_untrack.lua removes a connection from a topic's members.
--
-- KEYS[1]  updraft:{<topic>}:presence      hash: conn -> member JSON
-- KEYS[2]  updraft:{<topic>}:presence:exp  sorted set: conn scored by expiry (Unix ms)
-- ARGV[1]  conn
--
-- Returns the removed member's JSON, or false (nil) when conn was not a
-- member.

local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if not old then
  return false
end
redis.call('HDEL', KEYS[1], ARGV[1])
return old

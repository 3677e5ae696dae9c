-- presence_track.lua adds a connection to a topic's members, or updates it,
-- keeping its first join time, as one atomic step.
--
-- KEYS[1]  updraft:{<topic>}:presence      hash: conn -> member JSON
-- KEYS[2]  updraft:{<topic>}:presence:exp  sorted set: conn scored by expiry (Unix ms)
-- ARGV[1]  conn
-- ARGV[2]  the member JSON up to and including '"joined":' (encodeHead in redis.go)
-- ARGV[3]  joined (Unix ms), used when the member is new
-- ARGV[4]  expiry (Unix ms)
-- ARGV[5]  safety-net TTL of both keys (ms)
--
-- Returns 1 for a new member, 0 for an update.

local old = redis.call('HGET', KEYS[1], ARGV[1])
local joined = ARGV[3]
local new = 1
if old then
  new = 0
  -- The stored JSON ends with the join time: '"joined":<ms>}'.
  joined = string.match(old, '"joined":(%-?%d+)}$') or joined
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. joined .. '}')
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])

-- Lengthen, never shorten, the keys' TTL: a topic nobody writes to or
-- heartbeats vanishes, members and all.
local ttl = tonumber(ARGV[5])
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return new

-- presence_sweep.lua removes a topic's expired members and returns them.
-- A script runs alone, so each expired member is returned by exactly one
-- sweep, whichever node runs it.
--
-- KEYS[1]  updraft:{<topic>}:presence      hash: conn -> member JSON
-- KEYS[2]  updraft:{<topic>}:presence:exp  sorted set: conn scored by expiry (Unix ms)
-- ARGV[1]  now (Unix ms): members whose expiry is not after it are expired
--
-- Returns the removed members' JSON.

local out = {}
local batch = 500 -- bounds unpack's stack use
repeat
  local conns = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, batch)
  if #conns > 0 then
    local vals = redis.call('HMGET', KEYS[1], unpack(conns))
    for i = 1, #conns do
      if vals[i] then
        out[#out + 1] = vals[i]
      end
    end
    redis.call('ZREM', KEYS[2], unpack(conns))
    redis.call('HDEL', KEYS[1], unpack(conns))
  end
until #conns < batch
return out

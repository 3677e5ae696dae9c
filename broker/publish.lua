-- publish.lua assigns the next position on one topic, appends the message to
-- the topic's history and publishes it live, as one atomic step.
--
-- KEYS[1]  updraft:{<topic>}:meta     hash: epoch, seq
-- KEYS[2]  updraft:{<topic>}:history  stream: one entry "<seq>-0" per message,
--                                     field "p" = the encoded publication
-- ARGV[1]  epoch candidate, used when the topic starts a new epoch
-- ARGV[2]  history size (exact MAXLEN)
-- ARGV[3]  history TTL in milliseconds
-- ARGV[4]  the topic's channel, updraft:msg:{<topic>}
-- ARGV[5]  the encoded publication
--
-- Returns {epoch, seq}.

local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
local epoch = meta[1]
local lost = (tonumber(meta[2]) or 0) > 0 and redis.call('EXISTS', KEYS[2]) == 0
if not epoch or lost then
  -- A new topic, or its meta or history was lost (expiry, eviction, a Redis
  -- restart): start a new epoch, and drop any history left from the old one.
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end

local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local seqText = string.format('%d', seq)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], seqText .. '-0', 'p', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], epoch .. ':' .. seqText .. ':' .. ARGV[5])
return {epoch, seq}
